"""The JSON API (``/api/...``): subjects, images, identification, searches and reviews.

Every write and every search needs ``Authorization: Bearer <token>``; reads take the token or a page session.
Errors are ``{"error": {"code": ..., "message": ...}}`` with a 4xx status.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from lookalike import __version__
from lookalike.service.core import MAX_TOP, Service, ServiceError, Upload
from lookalike.service.pages import SearchId, report_response
from lookalike.service.security import CallerFirst, require_reader, require_token

router = APIRouter(prefix="/api", route_class=CallerFirst)  # the caller is checked before a body is read
ImageId = Annotated[int, Field(ge=1, le=2**62)]
SUBJECTS_PAGE = 1000  # subjects a listing returns unless asked for another page size


def service(request: Request) -> Service:
    return request.app.state.service


class SubjectIn(BaseModel):
    name: str = Field(description="1-100 characters: letters, digits, spaces and . ' - _ , ( )")


class ReviewIn(BaseModel):
    subject: str = Field(description="a candidate subject of the search")
    verdict: Literal["match", "non-match", "inconclusive"]
    reviewer: str = Field(description="who decided")
    note: str = ""


async def _uploads(files: list[UploadFile]) -> list[Upload]:
    return [Upload(f.filename or "upload", await f.read()) for f in files]


def _link_next(request: Request, response: Response, **cursor: object) -> None:
    """A ``Link: <...>; rel="next"`` header: this request's address with ``cursor`` (where the next page starts) in
    its query; relative (path and query), never the Host header a client sent, which a proxy or an attacker may
    set."""
    nxt = request.url.include_query_params(**cursor)
    response.headers["Link"] = f'<{nxt.path}?{nxt.query}>; rel="next"'


@router.get("/health", summary="whether the service answers, and its version (no token needed; HEAD too)")
def health(request: Request) -> dict:
    return {"status": "ok", "version": __version__}


@router.get("/gallery", dependencies=[Depends(require_reader)], summary="the gallery behind the service")
def gallery(request: Request) -> dict:
    return service(request).describe()


@router.post("/subjects", status_code=201, dependencies=[Depends(require_token)], summary="create a subject")
def create_subject(body: SubjectIn, request: Request, response: Response) -> dict:
    created = service(request).create_subject(body.name)
    response.headers["Location"] = f"/api/subjects/{quote(created['name'], safe='')}"
    return created


@router.get("/subjects", dependencies=[Depends(require_reader)],
            summary=f"list the subjects by name, a page at a time (?limit=, default {SUBJECTS_PAGE}; a full page "
                    "carries a Link: <...>; rel=\"next\" header for the next one)")
def list_subjects(request: Request, response: Response, prefix: Annotated[str, Query(max_length=100)] = "",
                  after: Annotated[str | None, Query(max_length=100)] = None,
                  limit: Annotated[int, Query(ge=1, le=100_000)] = SUBJECTS_PAGE) -> list[dict]:
    page = service(request).list_subjects(prefix, after, limit)
    if len(page) == limit:  # there may be more: say where the next page starts
        _link_next(request, response, after=page[-1]["name"], limit=limit)
    return page


@router.get("/subjects/{name}", dependencies=[Depends(require_reader)], summary="a subject and its images")
def get_subject(name: str, request: Request) -> dict:
    return service(request).get_subject(name)


@router.delete("/subjects/{name}", dependencies=[Depends(require_token)],
               summary="remove a subject (its images and embeddings are deleted)")
def delete_subject(name: str, request: Request) -> dict:
    return service(request).delete_subject(name)


@router.post("/subjects/{name}/images", status_code=201, dependencies=[Depends(require_token)],
             summary="enrol face photos of a subject (multipart field 'files', one face each)")
async def add_images(name: str, request: Request, response: Response, files: Annotated[list[UploadFile], File()],
                     precropped: Annotated[bool, Form()] = False) -> dict:
    uploads = await _uploads(files)
    added = await run_in_threadpool(service(request).add_images, name, uploads, precropped)
    response.headers["Location"] = f"/api/subjects/{quote(name, safe='')}"  # the subject, with its images
    return added


@router.get("/images/{image_id}", dependencies=[Depends(require_reader)], summary="an enrolled image's record")
def image_info(image_id: ImageId, request: Request) -> dict:
    return service(request).image_info(image_id)


@router.delete("/images/{image_id}", dependencies=[Depends(require_token)], summary="remove an enrolled image")
def remove_image(image_id: ImageId, request: Request) -> dict:
    return service(request).remove_image(image_id)


@router.get("/images/{image_id}/file", dependencies=[Depends(require_reader)], summary="the image as uploaded",
            response_class=Response)
def image_file(image_id: ImageId, request: Request) -> Response:
    data, media = service(request).image_bytes(image_id)
    return Response(data, media_type=media)


@router.get("/images/{image_id}/photo.png", dependencies=[Depends(require_reader)],
            summary="the image as a PNG (at most 800 px)", response_class=Response)
def image_photo(image_id: ImageId, request: Request) -> Response:
    return Response(service(request).image_png(image_id, face=False), media_type="image/png")


@router.get("/images/{image_id}/face.png", dependencies=[Depends(require_reader)],
            summary="the image's aligned face chip as a PNG", response_class=Response)
def image_face(image_id: ImageId, request: Request) -> Response:
    return Response(service(request).image_png(image_id, face=True), media_type="image/png")


Caller = Annotated[str, Depends(require_token)]  # which API token: recorded with the searches and verdicts made


@router.post("/identify", summary="search every face of a photo; the identify JSON document, each face with its "
                                  "search_id")
async def identify(request: Request, caller: Caller, file: Annotated[UploadFile, File()],
                   top: Annotated[int, Form(ge=1, le=MAX_TOP)] = 20, fpir: Annotated[float, Form()] = 0.01,
                   precropped: Annotated[bool, Form()] = False) -> dict:
    if len((await request.form()).getlist("file")) > 1:  # FastAPI would take the last one and say nothing
        raise ServiceError(422, "many_files", "one photo a search in the field 'file'; send several to "
                                              "/api/identify/many (field 'files')")
    (upload,) = await _uploads([file])
    return await run_in_threadpool(service(request).identify, upload, top, fpir, precropped, caller)


@router.post("/identify/many",
             summary="search several photos together (multipart field 'files'; mode 'batch': every face re-ranked "
                     "together, each with its search_id; 'same-person': one template of the photos' faces)")
async def identify_many(request: Request, caller: Caller, files: Annotated[list[UploadFile], File()],
                        mode: Annotated[Literal["batch", "same-person"], Form()],
                        top: Annotated[int, Form(ge=1, le=MAX_TOP)] = 20, fpir: Annotated[float, Form()] = 0.01,
                        precropped: Annotated[bool, Form()] = False) -> dict:
    uploads = await _uploads(files)
    return await run_in_threadpool(service(request).identify_many, uploads, mode, top, fpir, precropped, caller)


@router.get("/searches", dependencies=[Depends(require_token)], summary="the latest searches")
def list_searches(request: Request, response: Response, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  before: Annotated[int | None, Query(ge=1, le=2**62)] = None) -> list[dict]:
    page = service(request).list_searches(limit, before)
    if len(page) == limit:  # there may be older ones: the next page starts before this one's last (oldest) id
        _link_next(request, response, before=page[-1]["id"], limit=limit)
    return page


@router.get("/searches/{search_id}", dependencies=[Depends(require_token)],
            summary="a search: its candidate list and its reviews")
def get_search(search_id: SearchId, request: Request) -> dict:
    return service(request).get_search(search_id)


@router.get("/searches/{search_id}/probe", dependencies=[Depends(require_reader)],
            summary="the probe photo as uploaded", response_class=Response)
def probe_file(search_id: SearchId, request: Request) -> Response:
    data, media = service(request).probe(search_id)
    return Response(data, media_type=media)


@router.get("/searches/{search_id}/photo.png", dependencies=[Depends(require_reader)],
            summary="the probe photo as a PNG", response_class=Response)
def probe_photo(search_id: SearchId, request: Request) -> Response:
    return Response(service(request).probe_png(search_id, face=False), media_type="image/png")


@router.get("/searches/{search_id}/face.png", dependencies=[Depends(require_reader)],
            summary="the searched face, aligned, as a PNG", response_class=Response)
def probe_face(search_id: SearchId, request: Request) -> Response:
    return Response(service(request).probe_png(search_id, face=True), media_type="image/png")


@router.get("/searches/{search_id}/report.html", dependencies=[Depends(require_reader)],
            summary="the search as a self-contained HTML case report (faces inline, verdicts, audit trail)",
            response_class=HTMLResponse)
def search_report(search_id: SearchId, request: Request) -> HTMLResponse:
    return report_response(service(request), search_id)


@router.post("/searches/{search_id}/reviews", status_code=201,
             summary="append a verdict on a candidate to the audit table (with the API token that recorded it)")
def add_review(search_id: SearchId, body: ReviewIn, request: Request, response: Response, caller: Caller) -> dict:
    review = service(request).add_review(search_id, body.subject, body.verdict, body.reviewer, body.note, caller)
    response.headers["Location"] = f"/api/searches/{search_id}"  # the search, with its reviews
    return review
