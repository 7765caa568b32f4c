"""The ASGI application: :func:`create_app` wires the service, the token checker, the API and the pages."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from lookalike import __version__
from lookalike.gallery.store import StoreError
from lookalike.service import api, pages
from lookalike.service.access import AccessLog, Record
from lookalike.service.auth import Sessions, TokenChecker
from lookalike.service.core import Service, ServiceError
from lookalike.service.limits import DEFAULT_MAX_UPLOAD_MB, BodyLimit
from lookalike.service.schemas import openapi_document
from lookalike.service.security import HeadAsGet, SecurityHeaders, WrongTokens

CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
         429: "too_many_requests"}


# What a person reading a page is told (the API answers JSON)
PAGE_MESSAGES = {400: "The form could not be read (a field far too long, or not a form): go back and try again.",
                 404: "There is no such page or search here. Check the address, or find the search in the list.",
                 405: "That page cannot be used that way: go back and use its form or links."}
NO_PHOTO = "No photo was chosen: choose a photo file and send the form again."


def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(service: Service, tokens: TokenChecker, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               access_log: Callable[[Record], None] | None = None) -> FastAPI:
    """The app over ``service``; ``tokens`` checks API tokens; request bodies are limited to ``max_upload_mb``;
    ``access_log`` gets a record of each request (:mod:`lookalike.service.access`)."""
    app = FastAPI(title="lookalike", version=__version__, docs_url=None, redoc_url=None,
                  description="1:N face search with a candidate-list review page. Results are investigative "
                              "leads, not identifications.")
    app.state.service = service
    app.state.tokens = tokens
    app.state.sessions = Sessions(service.sessions_store)
    app.state.wrong_tokens = WrongTokens()

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        if exc.status == 429 and pages.is_page(request):  # the login form
            page = await pages.error_page(request, 429, f"{exc.message[0].upper()}{exc.message[1:]}.")
            page.headers.update(exc.headers or {})
            return page
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return error(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        if pages.is_page(request) and exc.status_code in PAGE_MESSAGES:
            return await pages.error_page(request, exc.status_code, PAGE_MESSAGES[exc.status_code])
        return error(exc.status_code, CODES.get(exc.status_code, "error"), str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        if pages.is_page(request) and request.method == "GET":  # e.g. /review/abc: an address typed wrong
            return await pages.error_page(request, 404, PAGE_MESSAGES[404])
        if pages.is_page(request):
            if {str(e["loc"][1]) for e in exc.errors() if len(e.get("loc", ())) > 1} & {"file", "files"}:
                return await pages.error_page(request, 422, NO_PHOTO)  # a browser's empty file input
            return await pages.error_page(request, 422, "The form was not complete or not valid "
                                                        f"({_validation_message(exc)}): go back and try again.")
        return error(422, "invalid_request", _validation_message(exc))

    @app.exception_handler(pages.PageResponse)
    async def page_response(request: Request, exc: pages.PageResponse):
        return exc.response

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):
        return error(503, "store_unavailable", str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a defect: logged by the server, answered in one line
        if pages.is_page(request):
            return pages.render(request, "error.html", None, 500, message="Something went wrong on the server (it "
                                                                          "is logged). Try again.")
        return error(500, "internal_error", "an unexpected error on the server (logged); try again")

    app.include_router(api.router)
    app.openapi = openapi_document(app, api.router)  # errors, answers and the bearer token (service.schemas)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, max_bytes=int(max_upload_mb * 2**20))
    if access_log is not None:
        app.add_middleware(AccessLog, sink=access_log)  # outermost: every answer, a refused body's 413 too
    return app
