"""The ASGI application: :func:`create_app` wires the service, the token checker, the API and the pages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from lookalike import __version__
from lookalike.gallery.store import StoreBusyError, StoreError
from lookalike.service import api, pages
from lookalike.service.access import AccessLog, Record
from lookalike.service.auth import Sessions, TokenChecker
from lookalike.service.core import Service, ServiceError, gallery_name
from lookalike.service.limits import BUSY_RETRY_AFTER, DEFAULT_MAX_UPLOAD_MB, BodyLimit
from lookalike.service.schemas import openapi_document
from lookalike.service.security import HEADERS, HeadAsGet, SecurityHeaders, WrongTokens

log = logging.getLogger(__name__)
CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
         409: "conflict", 413: "too_large", 415: "unsupported_media_type", 422: "invalid_request",
         429: "too_many_requests"}


# What a person reading a page is told (the API answers JSON)
PAGE_MESSAGES = {400: "The form could not be read (a field far too long, or not a form): go back and try again.",
                 404: "There is no such page or search here. Check the address, or find the search in the list.",
                 405: "That page cannot be used that way: go back and use its form or links."}
NO_PHOTO = "No photo was chosen: choose a photo file and send the form again."

# error.code of a body or form field, or a query parameter, FastAPI refuses (missing, wrong type, out of range): the
# code the service gives when it refuses that field itself, so a field has one code whichever layer checked it
# (others: invalid_request)
FIELD_CODES = {"name": "bad_name", "verdict": "bad_verdict", "reviewer": "bad_reviewer", "note": "bad_note",
               "subject": "not_a_candidate", "top": "bad_top", "fpir": "bad_fpir", "mode": "bad_mode",
               "files": "no_files", "reviewed": "bad_reviewed", "ambiguous": "bad_ambiguous"}


def unavailable_message(db: str) -> str:
    """What a 503 says of a gallery that cannot be used: the gallery by its public name
    (:func:`~lookalike.service.core.gallery_name`), never a path or the error's own text (which names files on the
    server: the server's log gets it)."""
    return f"the gallery {gallery_name(db)} cannot be used now (the server's log says why); try again later"


def busy_message(db: str) -> str:
    """What a 503 ``store_busy`` says: the gallery by its public name, and when to try again (the lock's holder, a
    path, goes to the server's log only)."""
    return (f"the gallery {gallery_name(db)} is busy (another process is writing to it); try again in "
            f"{BUSY_RETRY_AFTER} s")


def error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    return "; ".join(_problem(e) for e in exc.errors()[:5]) or "invalid request"


def _validation_code(exc: RequestValidationError) -> str:
    """The error code of a refused request: that of its first problem's body field or query parameter
    (:data:`FIELD_CODES`), else ``invalid_request`` (another parameter, a path's id, a body that is not a JSON
    object)."""
    loc = tuple(exc.errors()[0].get("loc", ())) if exc.errors() else ()
    field = loc[1] if len(loc) > 1 and loc[0] in ("body", "query") else None
    return FIELD_CODES.get(field, "invalid_request") if isinstance(field, str) else "invalid_request"


def _problem(e: dict) -> str:
    """One validation error as a client reads it: where (a field, or the body) and what is wrong."""
    loc = e.get("loc", ())
    if e.get("type") == "json_invalid":  # loc: ("body", the character where parsing stopped)
        return f"body: not valid JSON ({e.get('ctx', {}).get('error', 'invalid')} at character {loc[-1]})"
    if tuple(loc) == ("body",) and e.get("type") in ("model_attributes_type", "model_type", "dict_type", "missing"):
        return "body: a JSON object ({...}) is needed"  # [], null, "x", or no body at all
    where = ".".join(str(x) for x in loc if x != "body") or "body"
    return f"{where}: {e.get('msg', 'invalid')}"


def create_app(service: Service, tokens: TokenChecker, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               access_log: Callable[[Record], None] | None = None) -> FastAPI:
    """The app over ``service``; ``tokens`` checks API tokens; request bodies are limited to ``max_upload_mb``;
    ``access_log`` gets a record of each request (:mod:`lookalike.service.access`)."""
    # redirect_slashes off: /api/subjects/ had been a 307 to an absolute URL built from the client's Host header
    app = FastAPI(title="lookalike", version=__version__, docs_url=None, redoc_url=None, redirect_slashes=False,
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
        return error(422, _validation_code(exc), _validation_message(exc))

    @app.exception_handler(pages.PageResponse)
    async def page_response(request: Request, exc: pages.PageResponse):
        return exc.response

    def store_answer(request: Request, code: str, message: str, headers: dict | None = None):
        """A 503 of the gallery's database: the error page for a page (no session looked up: the database is what
        failed), else JSON."""
        if pages.is_page(request):
            page = pages.render(request, "error.html", None, 503, message=f"{message[0].upper()}{message[1:]}.")
            page.headers.update(headers or {})
            return page
        return error(503, code, message, headers)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError):  # its message names server paths: the log's only
        log.error("gallery unavailable: %s", exc)
        return store_answer(request, "store_unavailable", unavailable_message(service.db))

    @app.exception_handler(StoreBusyError)
    async def store_busy(request: Request, exc: StoreBusyError):  # locked past the busy timeout: nothing written
        log.warning("gallery busy: %s", exc)
        return store_answer(request, "store_busy", busy_message(service.db), {"Retry-After": str(BUSY_RETRY_AFTER)})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a defect: logged by the server, answered in one line
        # answered outside every middleware (Starlette's ServerErrorMiddleware): the security headers are added here
        if pages.is_page(request):
            page = pages.render(request, "error.html", None, 500, message="Something went wrong on the server (it "
                                                                          "is logged). Try again.")
            page.headers.update(HEADERS)
            return page
        return error(500, "internal_error", "an unexpected error on the server (logged); try again", HEADERS)

    app.include_router(api.router)
    app.openapi = openapi_document(app, api.router)  # errors, answers and the bearer token (service.schemas)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, max_bytes=int(max_upload_mb * 2**20))
    app.add_middleware(SecurityHeaders)  # outside the body limit: its 413 (and 400) get the headers too
    if access_log is not None:
        app.add_middleware(AccessLog, sink=access_log)  # outermost: every answer, a refused body's 413 too
    return app
