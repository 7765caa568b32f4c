"""The examiner's pages: log in, the search list, the review page, identify (upload a probe), enrol.

Pages need a session: log in with an API token (``/login``) to get an HttpOnly, SameSite=Strict cookie. Every
form carries the session's CSRF token in a hidden field, checked on POST.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from lookalike import __version__
from lookalike.service.access import note_caller
from lookalike.service.auth import (
    ENV_TOKEN,
    LOGIN_COOKIE,
    LOGIN_SECONDS,
    SESSION_COOKIE,
    Session,
    csrf_ok,
    login_form_session,
    new_login_value,
)
from lookalike.service.core import VERDICTS, Service, ServiceError, Upload, ranked_by, search_face
from lookalike.service.security import (
    CallerFirst,
    caller_check,
    live_session,
    page_session,
    set_session_cookie,
    token_match,
)
from lookalike.ties import TIE_EXPLANATION, lead_tie, tie_note

router = APIRouter(include_in_schema=False, route_class=CallerFirst)


def whole_number(value: object) -> object:
    """An id as written in a path: digits only (pydantic alone had read ``1.0`` as 1, so ``/api/images/1.0`` had
    answered as image 1)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise PydanticCustomError("id_digits", "an id is a whole number written in digits")
    return value


PathId = Annotated[int, BeforeValidator(whole_number), Field(ge=1, le=2**62)]  # an id in a path (64-bit integers)
SearchId = PathId  # a search's id
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals.update(tie_note=tie_note, lead_tie=lead_tie, tie_explanation=TIE_EXPLANATION)


def service(request: Request) -> Service:
    return request.app.state.service


def render(request: Request, template: str, session: Session | None, status: int = 200, **context) -> HTMLResponse:
    flash = session.flash[:] if session is not None else []
    if session is not None:
        session.flash.clear()
    return templates.TemplateResponse(request, template, {"session": session, "csrf": session.csrf if session else "",
                                                      "flash": flash, **context}, status_code=status)


def to_login(request: Request) -> RedirectResponse:
    """To the login page, coming back here after; a form posted without a live session says that it was not saved."""
    query = {"next": request.url.path, **({"unsaved": "1"} if request.method == "POST" else {})}
    return RedirectResponse(f"/login?{urlencode(query)}", status_code=303)


def safe_next(path: str | None) -> str:
    """A local path to go to after logging in (never another site)."""
    return path if path and path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def is_page(request: Request) -> bool:
    """Whether ``request`` is for a page a person reads (not the JSON API, its schema or a static file)."""
    path = request.url.path
    return not (path == "/api" or path.startswith(("/api/", "/static/")) or path == "/openapi.json")


async def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    """An error a person reads: the page's frame (with the menu when logged in) around ``message``."""
    session = await run_in_threadpool(page_session, request)
    return render(request, "error.html", session, status, message=message)


def forbidden(request: Request, session: Session | None) -> HTMLResponse:
    return render(request, "error.html", session, 403, message="The form expired or did not come from this site "
                                                               "(CSRF check failed). Reload the page and try again.")


class PageResponse(Exception):
    """Raised by a page dependency to answer with ``response`` instead of the page (the app returns it)."""

    def __init__(self, response: Response) -> None:
        super().__init__("page answered early")
        self.response = response


@caller_check
async def logged_in(request: Request) -> Session:
    """The page's session; not logged in (or its token revoked since): to the login page, coming back here after."""
    session = await live_session(request)
    if session is None:
        raise PageResponse(to_login(request))
    note_caller(request, session.token)
    return session


LoggedIn = Annotated[Session, Depends(logged_in)]


async def posted_form(request: Request, session: LoggedIn, csrf: Annotated[str, Form()] = "") -> Session:
    """:func:`logged_in` (checked before the form is read) for a form post, whose hidden CSRF field must be the
    session's (else 403)."""
    if not csrf_ok(session, csrf):
        raise PageResponse(forbidden(request, session))
    return session


FormPost = Annotated[Session, Depends(posted_form)]


# --- login --------------------------------------------------------------------------------------------
UNSAVED = ("What you submitted was not saved: your session had ended (logged out, expired, or its token revoked). "
           "Log in, then enter it again.")


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/", unsaved: str = "") -> HTMLResponse:
    """The login form. A visitor without a session gets its form's CSRF value in a cookie of its own (compared with
    the form's on posting), not a session in the database: visits that never log in write nothing."""
    session = request.app.state.sessions.get(request.cookies.get(SESSION_COOKIE))
    visitor = None
    if session is None:
        visitor = request.cookies.get(LOGIN_COOKIE) or new_login_value()
        session = login_form_session(visitor)
    response = render(request, "login.html", session, next=safe_next(next), error=UNSAVED if unsaved else "")
    if visitor is not None:
        set_session_cookie(request, response, visitor, LOGIN_SECONDS, LOGIN_COOKIE)
    return response


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, token: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "",
                next: Annotated[str, Form()] = "/"):
    sessions = request.app.state.sessions
    old_sid = request.cookies.get(SESSION_COOKIE)
    session = await run_in_threadpool(sessions.get, old_sid)
    if session is None and request.cookies.get(LOGIN_COOKIE):
        session = login_form_session(request.cookies[LOGIN_COOKIE])
    if not csrf_ok(session, csrf):
        return forbidden(request, session)
    which = await token_match(request, token.strip())
    if which is None:
        return render(request, "login.html", session, 401, next=safe_next(next), error="That token is not valid.")
    await run_in_threadpool(sessions.drop, old_sid)  # a fresh session id after login (no session fixation)
    sid, _ = await run_in_threadpool(sessions.new, True, which)
    response = RedirectResponse(safe_next(next), status_code=303)
    set_session_cookie(request, response, sid, sessions.seconds)
    response.delete_cookie(LOGIN_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = ""):
    session = page_session(request)
    if session is not None and not csrf_ok(session, csrf):
        return forbidden(request, session)
    request.app.state.sessions.drop(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- searches and review --------------------------------------------------------------------------------
SEARCH_LIST_PAGE = 200  # searches the search list shows at a time, newest first


def either_if_blank(value: object) -> object:
    """A filter of the search list as its form sends it: blank (the "All" choice) is no filter."""
    return None if value == "" else value


# a filter of the search list: true, false (as the API reads them), or blank or left out: either
Filter = Annotated[bool | None, BeforeValidator(either_if_blank), Query()]


def search_list_address(before: int | None = None, reviewed: bool | None = None,
                        ambiguous: bool | None = None) -> str:
    """The search list's address with its filters and ``before`` cursor (those given)."""
    query = {k: str(v).lower() if isinstance(v, bool) else v
             for k, v in (("reviewed", reviewed), ("ambiguous", ambiguous), ("before", before)) if v is not None}
    return f"/?{urlencode(query)}" if query else "/"


def shown_searches(reviewed: bool | None, ambiguous: bool | None) -> str:
    """What the search list shows, in words: ``searches``, ``ambiguous searches awaiting review``, ..."""
    kind = {True: "ambiguous ", False: "unambiguous ", None: ""}[ambiguous]
    return f"{kind}searches" + {True: " with a verdict", False: " awaiting review", None: ""}[reviewed]


@router.get("/", response_class=HTMLResponse)
def search_list(request: Request, session: LoggedIn, before: Annotated[PathId | None, Query()] = None,
                reviewed: Filter = None, ambiguous: Filter = None):
    """The searches, newest first, a page at a time; ``before``: those older than that search id (the API's
    cursor: a full page links to the next, from its oldest search's id); ``reviewed``, ``ambiguous``: only those
    (the API's filters), kept in the page's links."""
    searches = service(request).list_searches(SEARCH_LIST_PAGE, before, reviewed, ambiguous)
    older = searches[-1]["id"] if len(searches) == SEARCH_LIST_PAGE else None
    return render(request, "searches.html", session, searches=searches, before=before, reviewed=reviewed,
                  ambiguous=ambiguous, filtered=reviewed is not None or ambiguous is not None,
                  shown=shown_searches(reviewed, ambiguous), newest=search_list_address(None, reviewed, ambiguous),
                  older=older and search_list_address(older, reviewed, ambiguous))


@router.get("/review/{search_id}", response_class=HTMLResponse)
def review(request: Request, search_id: SearchId, session: LoggedIn):
    return review_page(request, session, search_id)


def review_page(request: Request, session: Session, search_id: int, status: int = 200, refused: dict | None = None):
    """The review page; ``refused``: a verdict the service refused (its fields and ``error``), shown on its
    candidate's card with what was typed kept."""
    try:
        search = service(request).get_search(search_id)
    except ServiceError as e:
        return render(request, "error.html", session, e.status, message=e.message)
    view = search_view(search)
    queue = service(request).search_neighbours(search_id)
    refused = refused or {}
    on_a_card = any(c["subject"] == refused.get("subject") for c in view["face"]["candidates"])
    return render(request, "review.html", session, status, verdicts=VERDICTS, refused=refused,
                  error="" if on_a_card else refused.get("error", ""), queue=queue,
                  awaiting_list=search_list_address(reviewed=False), **view)


def token_label(which: str) -> str:
    """Which API token a search or verdict came with, for people: ``API token #3``, ``LOOKALIKE_TOKEN``, or ``—``
    (recorded before galleries kept it)."""
    if not which:
        return "—"
    return "LOOKALIKE_TOKEN" if which.startswith(ENV_TOKEN) else f"API token #{which}"


def search_view(search: dict) -> dict:
    """What the review page and the case report show of a stored search: the search, its result, its face (the
    candidates), what ranked it (:func:`~lookalike.service.core.ranked_by`), the probe photo's name and the verdicts
    by candidate subject."""
    result = search["result"]
    search = {**search, "recorded_with": token_label(search.get("recorded_by", "")),
              "reviews": [{**r, "recorded_with": token_label(r.get("recorded_by", ""))} for r in search["reviews"]]}
    reviews: dict[str, list[dict]] = {}
    for r in search["reviews"]:
        reviews.setdefault(r["subject"], []).append(r)
    face = search_face(result) or {"candidates": []}
    return {"search": search, "result": result, "face": face, "ranked_by": ranked_by(result, face),
            "photo": result["results"][0]["photo"] if result["results"] else "", "reviews": reviews}


@router.get("/review/{search_id}/report.html", response_class=HTMLResponse)
def review_report(request: Request, search_id: SearchId, session: LoggedIn):
    try:
        return report_response(service(request), search_id)
    except ServiceError as e:
        return render(request, "error.html", session, e.status, message=e.message)


def report_response(svc: Service, search_id: int) -> HTMLResponse:
    """The search for the case record: one self-contained HTML file (faces inline, no links back to the service) with
    the probe, the candidate list, the decision, every verdict and what produced them; downloaded, printable. Raises
    :class:`ServiceError` for an unknown search."""
    view = search_view(svc.get_search(search_id))
    images = {"probe_face": _inline(lambda: svc.probe_png(search_id, face=True)),
              "probe_photo": _inline(lambda: svc.probe_png(search_id, face=False))}
    for c in view["face"]["candidates"]:
        images[c["image_id"]] = _inline(lambda i=c["image_id"]: svc.image_png(i, face=True))
    written = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    html = templates.get_template("report.html").render(images=images, version=__version__, written=written, **view)
    return HTMLResponse(html, headers={"Content-Disposition": f'attachment; filename="search-{search_id}-report.html"'})


def _inline(render_png) -> str:
    """A PNG as a data: URL for a self-contained page ("" when the image is gone, e.g. its subject removed since)."""
    try:
        return "data:image/png;base64," + base64.b64encode(render_png()).decode()
    except ServiceError:
        return ""


@router.post("/review/{search_id}", response_class=HTMLResponse)
async def record_verdict(request: Request, search_id: SearchId, session: FormPost, subject: Annotated[str, Form()] = "",
                         verdict: Annotated[str, Form()] = "", reviewer: Annotated[str, Form()] = "",
                         note: Annotated[str, Form()] = ""):
    try:
        await run_in_threadpool(service(request).add_review, search_id, subject, verdict, reviewer, note,
                                session.token)
    except ServiceError as e:
        refused = {"subject": subject, "verdict": verdict, "reviewer": reviewer, "note": note, "error": e.message}
        return review_page(request, session, search_id, e.status, refused)
    session.reviewer = reviewer.strip()
    await run_in_threadpool(request.app.state.sessions.save, request.cookies.get(SESSION_COOKIE), session)
    session.flash.append(f"Recorded: {subject} — {verdict} (by {reviewer.strip()}).")
    return RedirectResponse(f"/review/{search_id}", status_code=303)


# --- identify and enrol -------------------------------------------------------------------------------
@router.get("/identify", response_class=HTMLResponse)
def identify_form(request: Request, session: LoggedIn):
    return render(request, "identify.html", session, top=20, fpir=0.01, precropped=False)


@router.post("/identify", response_class=HTMLResponse)
async def identify(request: Request, file: Annotated[UploadFile, File()], session: FormPost,
                   top: Annotated[int, Form()] = 20, fpir: Annotated[float, Form()] = 0.01,
                   precropped: Annotated[bool, Form()] = False):
    upload = Upload(file.filename or "upload", await file.read())
    try:
        doc = await run_in_threadpool(service(request).identify, upload, top, fpir, precropped, session.token)
    except ServiceError as e:
        return render(request, "identify.html", session, e.status, error=e.message, top=top, fpir=fpir,
                      precropped=precropped)
    ids = [f["search_id"] for r in doc["results"] for f in r["faces"]]
    if len(ids) > 1:
        session.flash.append(f"{len(ids)} faces in the photo: searches " + ", ".join(f"#{i}" for i in ids)
                             + " (see the search list).")
    return RedirectResponse(f"/review/{ids[0]}", status_code=303)


ENROL_PAGE_SUBJECTS = 200  # subjects listed on the enrol page (a prefix narrows them; a gallery may hold millions)


def subjects_context(svc: Service, prefix: str = "") -> dict:
    """The enrol page's subject list: the first :data:`ENROL_PAGE_SUBJECTS` by name (starting with ``prefix``)
    and how many subjects there are."""
    prefix = prefix.strip()[:100]
    return {"subjects": svc.list_subjects(prefix, limit=ENROL_PAGE_SUBJECTS), "n_subjects": svc.count_subjects(),
            "prefix": prefix, "page_size": ENROL_PAGE_SUBJECTS}


@router.get("/enrol", response_class=HTMLResponse)
def enrol_form(request: Request, session: LoggedIn, prefix: str = "", subject: str = ""):
    """The enrol form and the subject list; ``subject``: that subject's enrolled photos too (where enrolling
    lands)."""
    svc = service(request)
    shown = None
    if subject:
        try:
            shown = svc.get_subject(subject)
        except ServiceError as e:
            return render(request, "enrol.html", session, e.status, error=e.message, **subjects_context(svc, prefix))
    return render(request, "enrol.html", session, shown=shown, name=subject, **subjects_context(svc, prefix))


@router.post("/enrol", response_class=HTMLResponse)
async def enrol(request: Request, files: Annotated[list[UploadFile], File()], session: FormPost,
                name: Annotated[str, Form()] = "", precropped: Annotated[bool, Form()] = False,
                similar_name_ok: Annotated[bool, Form()] = False):
    svc = service(request)
    uploads = [Upload(f.filename or "upload", await f.read()) for f in files if f.filename or f.size]
    try:
        report = await run_in_threadpool(svc.add_images, name, uploads, precropped, True, similar_name_ok)
    except ServiceError as e:  # a name that looks like a subject's: the form offers to confirm it (photos again)
        context = await run_in_threadpool(subjects_context, svc)
        return render(request, "enrol.html", session, e.status, error=e.message, name=name, precropped=precropped,
                      confirm_similar=e.code == "name_looks_alike" or similar_name_ok,
                      similar_name_ok=similar_name_ok, **context)
    added = [f"{i['file']} (image #{i['image_id']})" for i in report["images"] if i.get("image_id")]
    session.flash.append(f"Enrolled {report['added']} photo(s) of {report['subject']}: " + ", ".join(added) + ".")
    return RedirectResponse(f"/enrol?subject={quote(report['subject'], safe='')}", status_code=303)
