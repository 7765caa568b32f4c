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
from lookalike.data.names import ALIKE
from lookalike.service.core import FPIRS, MAX_NAME, MAX_NOTE, MAX_TOP, Service, ServiceError, Upload
from lookalike.service.pages import PathId, SearchId, report_response
from lookalike.service.schemas import (
    FILES,
    GUARDED,
    IMAGE_FILE,
    INVALID,
    JSON_BODY,
    MULTIPART,
    NAME,
    NO_FACE,
    PHOTO,
    PNG,
    QUEUE,
    SEARCH,
    STORED,
    UNKNOWN_IMAGE,
    UNKNOWN_SEARCH,
    UNKNOWN_SUBJECT,
    Enrolment,
    Gallery,
    Health,
    IdentifyDocument,
    Image,
    ImageRemoved,
    Review,
    Search,
    SearchSummary,
    Subject,
    SubjectRemoved,
    SubjectSummary,
    answers,
    error_responses,
    picture,
)
from lookalike.service.security import CallerFirst, require_reader, require_token

router = APIRouter(prefix="/api", route_class=CallerFirst)  # the caller is checked before a body is read
ImageId = PathId
SUBJECTS_PAGE = 1000  # subjects a listing returns unless asked for another page size


def service(request: Request) -> Service:
    return request.app.state.service


class SubjectIn(BaseModel):
    name: str = Field(description=f"1-{MAX_NAME} characters: letters, digits, spaces and . ' - _ , ( ); not "
                                  "starting with a dot or a space nor ending with a space; in its plain Unicode form "
                                  "(NFKC); not mixing Latin, Cyrillic and Greek letters (422 bad_name otherwise)",
                      json_schema_extra={"minLength": 1, "maxLength": MAX_NAME})  # checked by check_subject_name
    similar_name_ok: bool = Field(False, description=f"create the subject even though its name looks like a live "
                                                     f"subject's ({ALIKE}): it is another person (409 "
                                                     "name_looks_alike otherwise, naming the subjects it looks like)")


class ReviewIn(BaseModel):
    subject: str = Field(description="a candidate subject of the search")
    verdict: Literal["match", "non-match", "inconclusive"]
    reviewer: str = Field(description=f"who decided (1-{MAX_NAME} printable characters)",
                          json_schema_extra={"minLength": 1, "maxLength": MAX_NAME})  # checked by Service.add_review
    note: str | None = Field("", description=f"at most {MAX_NOTE} characters (null: none)",
                             json_schema_extra={"maxLength": MAX_NOTE})  # checked by Service.add_review


# fpir: one of the calibrated rates (a value a hair off one, as 0.0100000001, is taken as it: check_settings)
Fpir = Annotated[float, Form(description=f"the false-positive identification rate the decision is made at: one of "
                                         f"{', '.join(map(str, FPIRS))}",
                             json_schema_extra={"enum": list(FPIRS)})]


async def _uploads(files: list[UploadFile]) -> list[Upload]:
    return [Upload(f.filename or "upload", await f.read()) for f in files]


def _link_next(request: Request, response: Response, **cursor: object) -> None:
    """A ``Link: <...>; rel="next"`` header: this request's address with ``cursor`` (where the next page starts) in
    its query; relative (path and query), never the Host header a client sent, which a proxy or an attacker may
    set."""
    nxt = request.url.include_query_params(**cursor)
    response.headers["Link"] = f'<{nxt.path}?{nxt.query}>; rel="next"'


@router.get("/health", summary="whether the service answers, and its version (no token needed; HEAD too)",
            **answers(Health))
def health(request: Request) -> dict:
    return {"status": "ok", "version": __version__}


@router.get("/gallery", dependencies=[Depends(require_reader)], summary="the gallery behind the service",
            **answers(Gallery, GUARDED))
def gallery(request: Request) -> dict:
    return service(request).describe()


@router.post("/subjects", status_code=201, dependencies=[Depends(require_token)], summary="create a subject",
             **answers(Subject, GUARDED, JSON_BODY, INVALID, NAME, status=201))
def create_subject(body: SubjectIn, request: Request, response: Response) -> dict:
    created = service(request).create_subject(body.name, body.similar_name_ok)
    response.headers["Location"] = f"/api/subjects/{quote(created['name'], safe='')}"
    return created


@router.get("/subjects", dependencies=[Depends(require_reader)],
            summary=f"list the subjects by name, a page at a time (?limit=, default {SUBJECTS_PAGE}; a full page "
                    "carries a Link: <...>; rel=\"next\" header for the next one)",
            **answers(list[SubjectSummary], GUARDED, INVALID))
def list_subjects(request: Request, response: Response, prefix: Annotated[str, Query(max_length=100)] = "",
                  after: Annotated[str | None, Query(max_length=100)] = None,
                  limit: Annotated[int, Query(ge=1, le=100_000)] = SUBJECTS_PAGE) -> list[dict]:
    page = service(request).list_subjects(prefix, after, limit)
    if len(page) == limit:  # there may be more: say where the next page starts
        _link_next(request, response, after=page[-1]["name"], limit=limit)
    return page


@router.get("/subjects/{name}", dependencies=[Depends(require_reader)], summary="a subject and its images",
            **answers(Subject, GUARDED, UNKNOWN_SUBJECT))
def get_subject(name: str, request: Request) -> dict:
    return service(request).get_subject(name)


@router.delete("/subjects/{name}", dependencies=[Depends(require_token)],
               summary="remove a subject (its images and embeddings are deleted)",
               **answers(SubjectRemoved, GUARDED, UNKNOWN_SUBJECT))
def delete_subject(name: str, request: Request) -> dict:
    return service(request).delete_subject(name)


@router.post("/subjects/{name}/images", status_code=201, dependencies=[Depends(require_token)],
             summary="enrol face photos of a subject (multipart field 'files', one face each)",
             **answers(Enrolment, GUARDED, INVALID, MULTIPART, PHOTO, UNKNOWN_SUBJECT, FILES,
                       {409: ("duplicate_image",)}, status=201))
async def add_images(name: str, request: Request, response: Response, files: Annotated[list[UploadFile], File()],
                     precropped: Annotated[bool, Form()] = False) -> dict:
    uploads = await _uploads(files)
    added = await run_in_threadpool(service(request).add_images, name, uploads, precropped)
    response.headers["Location"] = f"/api/subjects/{quote(added['subject'], safe='')}"  # the subject, its images
    return added


@router.get("/images/{image_id}", dependencies=[Depends(require_reader)], summary="an enrolled image's record",
            **answers(Image, GUARDED, INVALID, UNKNOWN_IMAGE))
def image_info(image_id: ImageId, request: Request) -> dict:
    return service(request).image_info(image_id)


@router.delete("/images/{image_id}", dependencies=[Depends(require_token)], summary="remove an enrolled image",
               **answers(ImageRemoved, GUARDED, INVALID, UNKNOWN_IMAGE))
def remove_image(image_id: ImageId, request: Request) -> dict:
    return service(request).remove_image(image_id)


@router.get("/images/{image_id}/file", dependencies=[Depends(require_reader)], summary="the image as uploaded",
            response_class=Response, **picture(STORED, GUARDED, INVALID, UNKNOWN_IMAGE, IMAGE_FILE))
def image_file(image_id: ImageId, request: Request) -> Response:
    data, media = service(request).image_bytes(image_id)
    return Response(data, media_type=media)


@router.get("/images/{image_id}/photo.png", dependencies=[Depends(require_reader)],
            summary="the image as a PNG (at most 800 px)", response_class=Response,
            **picture(PNG, GUARDED, INVALID, UNKNOWN_IMAGE, IMAGE_FILE))
def image_photo(image_id: ImageId, request: Request) -> Response:
    return Response(service(request).image_png(image_id, face=False), media_type="image/png")


@router.get("/images/{image_id}/face.png", dependencies=[Depends(require_reader)],
            summary="the image's aligned face chip as a PNG", response_class=Response,
            **picture(PNG, GUARDED, INVALID, UNKNOWN_IMAGE, IMAGE_FILE, NO_FACE))
def image_face(image_id: ImageId, request: Request) -> Response:
    return Response(service(request).image_png(image_id, face=True), media_type="image/png")


Caller = Annotated[str, Depends(require_token)]  # which API token: recorded with the searches and verdicts made


@router.post("/identify", summary="search every face of a photo; the identify JSON document, each face with its "
                                  "search_id",
             **answers(IdentifyDocument, GUARDED, INVALID, MULTIPART, PHOTO, SEARCH, {422: ("many_files",)}))
async def identify(request: Request, caller: Caller, file: Annotated[UploadFile, File()],
                   top: Annotated[int, Form(ge=1, le=MAX_TOP)] = 20, fpir: Fpir = 0.01,
                   precropped: Annotated[bool, Form()] = False) -> dict:
    if len((await request.form()).getlist("file")) > 1:  # FastAPI would take the last one and say nothing
        raise ServiceError(422, "many_files", "one photo a search in the field 'file'; send several to "
                                              "/api/identify/many (field 'files')")
    (upload,) = await _uploads([file])
    return await run_in_threadpool(service(request).identify, upload, top, fpir, precropped, caller)


@router.post("/identify/many",
             summary="search several photos together (multipart field 'files'; mode 'batch': every face re-ranked "
                     "together, each with its search_id; 'same-person': one template of the photos' faces; a "
                     "photo that cannot be used is reported in place)",
             **answers(IdentifyDocument, GUARDED, INVALID, MULTIPART, SEARCH, FILES,
                       {409: ("mode_unavailable",), 422: ("bad_mode", "no_face")}))
async def identify_many(request: Request, caller: Caller,
                        mode: Annotated[Literal["batch", "same-person"], Form()],  # refused before files, as the core
                        files: Annotated[list[UploadFile], File()],
                        top: Annotated[int, Form(ge=1, le=MAX_TOP)] = 20, fpir: Fpir = 0.01,
                        precropped: Annotated[bool, Form()] = False) -> dict:
    uploads = await _uploads(files)
    return await run_in_threadpool(service(request).identify_many, uploads, mode, top, fpir, precropped, caller)


@router.get("/searches", dependencies=[Depends(require_token)],
            summary="the latest searches, newest first, a page at a time (?limit=, default 100; ?before=: ids below "
                    "it; ?reviewed=, ?ambiguous=: only those; a full page carries a Link: <...>; rel=\"next\" "
                    "header for the next one, with the same filters)",
            **answers(list[SearchSummary], GUARDED, INVALID, QUEUE))
def list_searches(request: Request, response: Response, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
                  reviewed: Annotated[bool | None, Query(description=(
                      "true: only searches with a verdict recorded (any verdict on any candidate); false: only those "
                      "awaiting review (no verdict); left out: both (422 bad_reviewed otherwise)"))] = None,
                  ambiguous: Annotated[bool | None, Query(description=(
                      "true: only searches whose top candidate has a lookalike among the candidates (the summary's "
                      "`ambiguous`); false: only those without; left out: both (422 bad_ambiguous otherwise)"))] = None,
                  ) -> list[dict]:
    page = service(request).list_searches(limit, before, reviewed, ambiguous)
    if len(page) == limit:  # there may be older ones: the next page starts before this one's last (oldest) id
        _link_next(request, response, before=page[-1]["id"], limit=limit)  # the filters kept, as the client sent them
    return page


@router.get("/searches/{search_id}", dependencies=[Depends(require_token)],
            summary="a search: its candidate list and its reviews", **answers(Search, GUARDED, INVALID, UNKNOWN_SEARCH))
def get_search(search_id: SearchId, request: Request) -> dict:
    return service(request).get_search(search_id)


@router.get("/searches/{search_id}/probe", dependencies=[Depends(require_reader)],
            summary="the probe photo as uploaded", response_class=Response,
            **picture(STORED, GUARDED, INVALID, UNKNOWN_SEARCH))
def probe_file(search_id: SearchId, request: Request) -> Response:
    data, media = service(request).probe(search_id)
    return Response(data, media_type=media)


@router.get("/searches/{search_id}/photo.png", dependencies=[Depends(require_reader)],
            summary="the probe photo as a PNG", response_class=Response,
            **picture(PNG, GUARDED, INVALID, UNKNOWN_SEARCH))
def probe_photo(search_id: SearchId, request: Request) -> Response:
    return Response(service(request).probe_png(search_id, face=False), media_type="image/png")


@router.get("/searches/{search_id}/face.png", dependencies=[Depends(require_reader)],
            summary="the searched face, aligned, as a PNG", response_class=Response,
            **picture(PNG, GUARDED, INVALID, UNKNOWN_SEARCH, NO_FACE))
def probe_face(search_id: SearchId, request: Request) -> Response:
    return Response(service(request).probe_png(search_id, face=True), media_type="image/png")


@router.get("/searches/{search_id}/report.html", dependencies=[Depends(require_reader)],
            summary="the search as a self-contained HTML case report (faces inline, verdicts, audit trail)",
            response_class=HTMLResponse, responses=error_responses(GUARDED, INVALID, UNKNOWN_SEARCH))
def search_report(search_id: SearchId, request: Request) -> HTMLResponse:
    return report_response(service(request), search_id)


@router.post("/searches/{search_id}/reviews", status_code=201,
             summary="append a verdict on a candidate to the audit table (with the API token that recorded it)",
             **answers(Review, GUARDED, JSON_BODY, INVALID, UNKNOWN_SEARCH,
                       {422: ("bad_verdict", "bad_reviewer", "bad_note", "not_a_candidate")}, status=201))
def add_review(search_id: SearchId, body: ReviewIn, request: Request, response: Response, caller: Caller) -> dict:
    review = service(request).add_review(search_id, body.subject, body.verdict, body.reviewer, body.note, caller)
    response.headers["Location"] = f"/api/searches/{search_id}"  # the search, with its reviews
    return review
