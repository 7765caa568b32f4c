"""What the OpenAPI document (``/openapi.json``) says the API answers: each operation's answer, its pictures' content
types, the errors it can give and the bearer token it needs.

Documentation only: every handler's answer is returned as it is built (:data:`AS_BUILT`), never filtered or converted
through these types, which describe the dicts the service builds (``TypedDict``: a key that is ``NotRequired`` is not
in every answer).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from http import HTTPStatus
from typing import Annotated, Any, Literal, NotRequired, get_args, get_origin

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from pydantic import Field, WithJsonSchema
from typing_extensions import TypedDict  # pydantic reads typing's only from Python 3.12

from lookalike.data.images import MIN_SIDE
from lookalike.data.names import ALIKE
from lookalike.gallery.store import VERDICTS
from lookalike.service.core import FPIRS, MANY_MODES, MAX_FILES, MAX_NAME, MAX_NOTE, MAX_TOP, MEDIA_TYPES
from lookalike.service.security import _caller_checks

ERROR_REF = "#/components/schemas/Error"
ERROR_SCHEMA = {
    "title": "Error", "type": "object", "required": ["error"],
    "description": "Every error the API answers (any 4xx or 5xx status).",
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "description": "short and stable, for programs (each status lists its codes)"},
        "message": {"type": "string", "description": "one line, for people"}}}},
}
BEARER = "bearer"  # the security scheme's name in the document
BEARER_SCHEME = {"type": "http", "scheme": "bearer",
                 "description": "An API token (`lookalike serve --create-token`, or LOOKALIKE_TOKEN) as "
                                "`Authorization: Bearer <token>`. Reads of the gallery, subjects, images, a "
                                "search's pictures and report also take the examiner pages' session cookie (the "
                                "search list and a search's JSON do not)."}

# error.code: what it means (the statuses each operation gives with them are in its own responses)
CODES = {
    "missing_token": "no `Authorization: Bearer` token",
    "bad_token": "the token is not valid (or revoked)",
    "too_many_wrong_tokens": "too many wrong tokens from this address lately; wait Retry-After seconds",
    "store_unavailable": "the gallery's database cannot be reached",
    "store_busy": "the gallery's database stayed locked by another process (lookalike enroll, gallery "
                  "prune-searches) past the busy timeout; nothing was written: wait Retry-After seconds and try again",
    "invalid_request": "a parameter or body field missing or invalid (the message names it)",
    "bad_request": "a body that cannot be read as multipart form data",
    "unsupported_media_type": "a JSON body sent without the content type application/json",
    "too_large": "the request body over --max-upload-mb, or a photo over --max-megapixels",
    "empty": "an empty file (0 bytes)",
    "not_an_image": "not an image by its first bytes (JPEG, PNG, GIF, BMP, TIFF, WebP, PGM/PPM, HEIC/HEIF, AVIF)",
    "too_small": f"an image under {MIN_SIDE} px on a side",
    "truncated": "an image cut short",
    "unreadable": "an image that cannot be decoded",
    "no_face": "no face found",
    "many_faces": "more faces than the operation takes",
    "many_files": "several photos in the field 'file' (use /api/identify/many)",
    "too_many_files": f"more than {MAX_FILES} photos",
    "no_files": "no photo in the multipart field 'files' (or a field 'files' that is not a file)",
    "bad_fpir": f"fpir is not one of {', '.join(map(str, FPIRS))}",
    "bad_top": f"top is not a whole number from 1 to {MAX_TOP}",
    "bad_mode": f"mode is missing or not one of {', '.join(MANY_MODES)}",
    "mode_unavailable": "mode=same-person needs a model whose disambiguator reads embeddings; the service's reads "
                        "images",
    "empty_gallery": "the gallery has no enrolled images yet",
    "bad_name": "a subject name missing, not a string, or breaking the naming rule (see SubjectIn.name)",
    "subject_exists": "a subject of that name exists",
    "name_looks_alike": f"a new subject's name looks like a live subject's ({ALIKE}); the message names them: enrol "
                        "under the existing name, or send similar_name_ok=true",
    "unknown_subject": "no such subject (or removed)",
    "duplicate_image": "the photo is already enrolled, or sent twice",
    "unknown_image": "no such image",
    "image_file_missing": "the enrolled image's file is missing or unreadable on the server",
    "image_file_changed": "the enrolled image's file has changed since it was enrolled",
    "unknown_search": "no such search",
    "bad_reviewed": "reviewed is not true or false",
    "bad_ambiguous": "ambiguous is not true or false",
    "bad_verdict": f"verdict is missing or not one of {', '.join(VERDICTS)}",
    "bad_reviewer": f"a reviewer name of 1-{MAX_NAME} printable characters is needed",
    "bad_note": f"a note is text (or null) of at most {MAX_NOTE} characters (UTF-8, no NUL)",
    "not_a_candidate": "the subject is missing, not a string, or not a candidate of the search",
}
ErrorTable = dict[int, tuple[str, ...]]  # status: the error codes given with it

# What operations can answer, by what they do (an operation's errors are the union of those that apply to it)
GUARDED: ErrorTable = {401: ("missing_token", "bad_token"), 429: ("too_many_wrong_tokens",),
                       503: ("store_unavailable", "store_busy")}  # every operation behind a token
INVALID: ErrorTable = {422: ("invalid_request",)}  # FastAPI's checks of parameters, ids and bodies (not FIELD_CODES')
JSON_BODY: ErrorTable = {413: ("too_large",), 415: ("unsupported_media_type",)}
MULTIPART: ErrorTable = {400: ("bad_request",), 413: ("too_large",)}
PHOTO: ErrorTable = {400: ("empty",), 413: ("too_large",), 415: ("not_an_image",),
                     422: ("too_small", "truncated", "unreadable", "no_face", "many_faces")}  # an uploaded photo
SEARCH: ErrorTable = {409: ("empty_gallery",), 422: ("bad_top", "bad_fpir")}
NAME: ErrorTable = {409: ("subject_exists", "name_looks_alike"), 422: ("bad_name",)}  # a subject created
FILES: ErrorTable = {413: ("too_many_files",), 422: ("no_files",)}  # photos in the multipart field 'files'
UNKNOWN_SUBJECT: ErrorTable = {404: ("unknown_subject",)}
UNKNOWN_IMAGE: ErrorTable = {404: ("unknown_image",)}
UNKNOWN_SEARCH: ErrorTable = {404: ("unknown_search",)}
QUEUE: ErrorTable = {422: ("bad_reviewed", "bad_ambiguous")}  # the search list's filters
IMAGE_FILE: ErrorTable = {404: ("image_file_missing",), 409: ("image_file_changed",)}  # an enrolled file shown
NO_FACE: ErrorTable = {404: ("no_face",)}  # an aligned face drawn

PNG = ("image/png",)
STORED = (*dict.fromkeys(MEDIA_TYPES.values()), "application/octet-stream")  # a file as uploaded, by its bytes


def _as_built(shape: type) -> Any:
    """``shape`` (dict or list[dict]) as a response model: validated and serialized as the handlers' ``-> dict``
    annotations had been (so answers do not change), with no schema of its own (the document's is the one given
    in ``responses``)."""
    return Annotated[shape, WithJsonSchema({})]


AS_BUILT = _as_built(dict)
AS_BUILT_LIST = _as_built(list[dict])


def error_responses(*tables: ErrorTable) -> dict[int, dict]:
    """The responses of the statuses in ``tables`` (merged), each an :data:`ERROR_SCHEMA` with its codes said."""
    merged: dict[int, list[str]] = {}
    for table in tables:
        for status, codes in table.items():
            said = merged.setdefault(status, [])
            said += [c for c in codes if c not in said]
    responses = {}
    for status in sorted(merged):
        said = "; ".join(f"`{c}`: {CODES[c]}" for c in merged[status])
        response = {"description": f"{HTTPStatus(status).phrase}. error.code: {said}",
                    "content": {"application/json": {"schema": {"$ref": ERROR_REF}}}}
        if status == 429:
            response["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
        if status == 503 and "store_busy" in merged[status]:
            response["headers"] = {"Retry-After": {"description": "seconds to wait (store_busy)",
                                                   "schema": {"type": "integer"}}}
        responses[status] = response
    return responses


def answers(model: Any, *errors: ErrorTable, status: int = 200) -> dict:
    """Route arguments for a JSON answer described by ``model`` (given as built: :data:`AS_BUILT`) and ``errors``."""
    many = get_origin(model) is list
    said = " ".join(inspect.getdoc(get_args(model)[0] if many else model).split()).split(". ")[0].rstrip(".") + "."
    said = f"A list, each item: {said[0].lower()}{said[1:]}" if many else said
    return {"response_model": AS_BUILT_LIST if many else AS_BUILT,
            "responses": {status: {"model": model, "description": said}, **error_responses(*errors)}}


def picture(media_types: tuple[str, ...], *errors: ErrorTable) -> dict:
    """Route arguments for an answer of image bytes of one of ``media_types``, and ``errors``."""
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {"responses": {200: {"description": "the image's bytes", "content": dict.fromkeys(media_types, binary)},
                          **error_responses(*errors)}}


def openapi_document(app: FastAPI, router: APIRouter) -> Callable[[], dict]:
    """``app.openapi`` for ``app``: FastAPI's document with :data:`ERROR_SCHEMA` in place of FastAPI's own 422 shape
    (the service never answers it), and the bearer scheme, required on every operation of ``router`` whose route
    checks its caller (:func:`~lookalike.service.security.caller_check`)."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = FastAPI.openapi(app)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            schemas["Error"] = ERROR_SCHEMA
            doc["components"]["securitySchemes"] = {BEARER: BEARER_SCHEME}
            for operations in doc["paths"].values():
                for operation in operations.values():
                    _tidy_responses(operation["responses"])
            for route in router.routes:
                if isinstance(route, APIRoute) and route.include_in_schema and any(_caller_checks(route.dependant)):
                    for method in route.methods:
                        doc["paths"][route.path_format][method.lower()]["security"] = [{BEARER: []}]
        return app.openapi_schema

    return openapi


def _tidy_responses(responses: dict) -> None:
    """An operation's responses without the 422 FastAPI adds to any with parameters that lists none (an operation
    that can answer 422 lists it, as an :data:`ERROR_SCHEMA`), and without the title FastAPI puts beside an answer's
    ``$ref`` (where a client generator would make a second type of it)."""
    if "HTTPValidationError" in str(responses.get("422", "")):
        del responses["422"]
    for response in responses.values():
        for content in response.get("content", {}).values():
            if "$ref" in content.get("schema", {}):
                content["schema"].pop("title", None)


def about(text: str) -> Any:
    """A field's description in the document."""
    return Field(description=text)


# --- the answers --------------------------------------------------------------------------------------------------
class Health(TypedDict):
    """The service answers, and its version."""

    status: Literal["ok"]
    version: Annotated[str, about("the lookalike version serving")]


class ModelInfo(TypedDict):
    """The lookalike model that re-ranks the candidates."""

    matcher: str
    lowres: Annotated[int | None, about("the face width (px) its faces are degraded to; null: full resolution")]
    lowres_apply: Annotated[str, about("which faces are degraded: both, probes or gallery")]
    degrade: NotRequired[str]
    disambiguator: str
    selection: str
    normaliser: str
    weight: Annotated[float, about("the fusion weight")]
    validation_warning: NotRequired[Annotated[str | None, about(
        "why the model's validation split was too small for its figures to mean anything; null: it was not")]]


class SmallFaceModel(ModelInfo):
    """The model that searches small faces."""

    max_face_px: Annotated[int, about("faces at most this wide (px) are searched by this model")]


class SharpFaceModel(ModelInfo):
    """The model that searches sharp faces."""

    min_face_px: Annotated[int, about("faces at least this wide (px) are searched by this model")]


class Gallery(TypedDict):
    """The gallery behind the service."""

    gallery: Annotated[str, about("the gallery's database (a PostgreSQL URL is shown without its password)")]
    schema_version: Annotated[int, about("the gallery database's schema version")]
    subjects: int
    images: int
    matcher: str
    model: ModelInfo | None


class SubjectSummary(TypedDict):
    """A subject in a listing."""

    name: str
    created: Annotated[str, about("when it was created (ISO 8601, UTC)")]
    images: Annotated[int, about("its enrolled images with a face (the same as image_count; in a subject's own "
                                 "answer, `images` is the list of its image records)")]
    image_count: Annotated[int, about("its enrolled images with a face (in every subject answer)")]
    images_unusable: Annotated[int, about("its photos recorded as unusable (no face, unreadable)")]
    images_skipped: Annotated[int, about("images_unusable under its earlier name")]


class Image(TypedDict):
    """An enrolled image's record."""

    id: int
    subject: str
    sha1: Annotated[str, about("the SHA-1 of the file's bytes")]
    status: Annotated[str, about("ok, or why the photo is unusable (no_face, unreadable, ...)")]
    message: str
    detection: Annotated[str, about("how its face was found: detected, cnn (the CNN fallback) or central (taken as "
                                    "a pre-cropped face); empty for an unusable photo")]
    faces_in_photo: int
    box: Annotated[list[int] | None, about("the face's box: left, top, right, bottom (px)")]
    created: Annotated[str, about("when it was enrolled (ISO 8601, UTC)")]


class Subject(TypedDict):
    """A subject and its images."""

    name: str
    created: Annotated[str, about("when it was created (ISO 8601, UTC)")]
    images: Annotated[list[Image], about("its image records, unusable photos' too (in a listing, `images` is a count: "
                                         "use image_count in both)")]
    image_count: Annotated[int, about("its enrolled images with a face (as in the listing)")]
    images_unusable: Annotated[int, about("its photos recorded as unusable (no face, unreadable)")]
    images_skipped: Annotated[int, about("images_unusable under its earlier name")]


class EnrolledFile(TypedDict):
    """One uploaded file of an enrolment."""

    file: Annotated[str, about("the client's file name (a label)")]
    image_id: int | None
    status: Annotated[str, about("ok, or why it was not enrolled")]


class Enrolment(TypedDict):
    """What an enrolment did."""

    subject: str
    added: int
    skipped: Annotated[dict[str, int], about("files not enrolled, by reason")]
    images: list[EnrolledFile]


class SubjectRemoved(TypedDict):
    """A subject removed, with its images."""

    subject: str
    removed_images: int


class ImageRemoved(TypedDict):
    """An image removed."""

    image_id: int
    subject: str
    removed: Annotated[bool, about("always true")]


class Decision(TypedDict):
    """Whether the person is enrolled, at the search's FPIR."""

    fpir: float
    threshold: Annotated[float | None, about("the final score the first candidate must reach; null: no decision "
                                             "(note says why)")]
    calibrated_on: NotRequired[Annotated[Literal["gallery", "gallery-sample", "model"] | None,
                                         about("where the threshold was set")]]
    enrolled: bool | None
    subject: Annotated[str | None, about("the subject decided on, when enrolled")]
    note: NotRequired[str]
    duplicates_left_out: NotRequired[Annotated[int, about("sampled faces enrolled under two names, left out of "
                                                          "the gallery's calibration")]]


class Candidate(TypedDict):
    """A subject on a candidate list, represented by its best-matching image."""

    rank: int
    subject: str
    image_id: int
    image: Annotated[str, about("the matched enrolled image")]
    base_score: Annotated[float, about("the matcher's score")]
    base_rank: int
    final_score: Annotated[float, about("the score the list is ordered by (non-increasing, but within a tie)")]
    lookalike_group: Annotated[int | None, about("candidates whose images match each other share a group")]
    batch_distance: NotRequired[Annotated[float, about("in batch mode: the order of the list (ascending)")]]
    tied_with: NotRequired[Annotated[list[int], about("the ranks this candidate ties with ([]: none); their order "
                                                      "says nothing")]]


class Face(TypedDict):
    """One searched face (or a same-person template) and its candidate list."""

    index: Annotated[int, about("the face's place in its photo, left to right, from 0")]
    box: Annotated[list[float], about("left, top, right, bottom (px); [] for a template")]
    face_px: NotRequired[Annotated[int, about("the face's width in the photo (px); not for a template")]]
    detection: Literal["detected", "detected (cnn)", "pre-cropped", "template"]
    faces_in_photo: int
    template_of: NotRequired[Annotated[list[str], about("a template's photos")]]
    probe_lowres: NotRequired[Annotated[int | None, about("the width the face was degraded to; null: none")]]
    resolution_note: NotRequired[Annotated[str | None, about("when the face does not fit what it was searched as")]]
    status: Literal["searched"]
    candidate_list_length: int
    candidates: Annotated[list[Candidate], about("best first")]
    ambiguous: Annotated[bool, about("the first candidate has a lookalike among the candidates")]
    decision: Decision
    search_id: NotRequired[Annotated[int, about("the search stored for this face (not for a template, nor in a "
                                                "stored search's own result)")]]


class PhotoResult(TypedDict):
    """One photo searched: its faces, or why it could not be used."""

    photo: Annotated[str, about("the client's file name (a label)")]
    status: Annotated[str, about("ok, or why the photo could not be used (not_an_image, no_face, many_faces, ...)")]
    message: NotRequired[str]
    in_template: NotRequired[Annotated[bool, about("same-person mode: the photo's face is in the template")]]
    faces: list[Face]


class Batch(TypedDict):
    """How a batch was searched."""

    reranked_together: bool
    note: Annotated[str | None, about("why the faces were searched one by one")]
    setting: Annotated[dict[str, float] | None, about("the model's k-reciprocal setting: k1, k2, lam")]
    faces: int


class IdentifyDocument(TypedDict):
    """The `lookalike identify --format json` document (README, "The user's path"). An answer of this version has
    every field below save `batch` (batch mode) and those marked there as optional; `lookalike_version`,
    `small_face_model`, `sharp_face_model`, `face_px`, `probe_lowres`, `resolution_note`, `calibrated_on`, `tied_with`
    and `duplicates_left_out` are not required because a search stored by an earlier build lacks them."""

    schema_version: Literal[1]
    lookalike_version: NotRequired[str]
    gallery: str
    model: ModelInfo | None
    small_face_model: NotRequired[SmallFaceModel | None]
    sharp_face_model: NotRequired[SharpFaceModel | None]
    fpir: float
    top: int
    results: list[PhotoResult]
    timing: Annotated[dict[str, float], about("seconds by stage; {} when no face was searched")]
    batch: NotRequired[Batch]


class SearchSummary(TypedDict):
    """A stored search in the list of searches."""

    id: int
    created: Annotated[str, about("when it was searched (ISO 8601, UTC)")]
    photo: str
    face: int | None
    top_subject: str | None
    ambiguous: bool
    decision: Decision | None
    candidates: Annotated[int, about("how many")]
    reviews: Annotated[int, about("how many verdicts")]
    ranked_by: Literal["small-face model", "sharp-face model", "lookalike model", "base matcher"]


class Review(TypedDict):
    """A verdict in the audit table."""

    id: int
    search_id: int
    subject: str
    verdict: Literal[VERDICTS]  # type: ignore[valid-type]
    reviewer: Annotated[str, about("the name the examiner typed")]
    note: str
    created: Annotated[str, about("ISO 8601, UTC")]
    recorded_by: Annotated[str, about("the API token it came with: a stored token's id, or env:<fingerprint> for "
                                      "LOOKALIKE_TOKEN; empty before gallery schema 6")]


class Search(TypedDict):
    """A stored search: its result, as stored, and its reviews."""

    id: int
    created: Annotated[str, about("ISO 8601, UTC")]
    probe_sha1: str
    result: Annotated[IdentifyDocument, about("the document of this one face")]
    recorded_by: Annotated[str, about("the API token that ran it (see Review)")]
    reviews: list[Review]
