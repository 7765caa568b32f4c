"""Request checks shared by the API and the pages: bearer tokens, page sessions, CSRF, response headers."""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from fastapi import Request, params
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute

from lookalike.service.access import note_caller
from lookalike.service.auth import ENV_TOKEN, SESSION_COOKIE, Session, bearer
from lookalike.service.core import ServiceError

# Pages use only this origin's scripts, styles and images (no inline script, no framing).
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class SecurityHeaders:
    """ASGI middleware adding :data:`HEADERS` to every response (placed outside the body limit, so that a 413 decided
    from ``Content-Length`` has them too)."""

    def __init__(self, app) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *[(k, v) for k, v in self.headers if k not in present]]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadAsGet:
    """ASGI middleware: a HEAD request is answered as its GET is, headers only (uptime checks send HEAD; FastAPI's
    GET routes had answered it 405)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message):
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class WrongTokens:
    """Wrong tokens by client address: an address that gave ``limit`` of them within ``window`` seconds is refused
    (429) until the oldest is that old, so a guessed LOOKALIKE_TOKEN costs six seconds a guess, not a millisecond
    (it had answered 1,176 guesses a second). At most ``max_clients`` addresses are remembered (the least recent
    dropped)."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_clients: int = 10_000) -> None:
        self.limit, self.window, self.max_clients = limit, window, max_clients
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, who: str, now: float | None = None) -> float:
        """Seconds before ``who`` may try a token again (0: now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._seen.get(who)
            while times and times[0] <= now - self.window:
                times.popleft()
            return times[0] + self.window - now if times and len(times) >= self.limit else 0.0

    def wrong(self, who: str, now: float | None = None) -> None:
        """Count a wrong token from ``who``."""
        with self._lock:
            self._seen.setdefault(who, deque()).append(time.monotonic() if now is None else now)
            self._seen.move_to_end(who)
            while len(self._seen) > self.max_clients:
                self._seen.popitem(last=False)


T = TypeVar("T")
CHECKED = "lookalike.caller_checks"  # the request scope's key: the caller checks it has passed, with their results


def caller_check(check: Callable[[Request], Awaitable[T]]) -> Callable[[Request], Awaitable[T]]:
    """``check``, a dependency that says who is calling from the request's headers alone (a token, a session
    cookie), run at most once a request (its result kept in the request's scope) and, on a :class:`CallerFirst`
    route, before the request's body is read."""

    @functools.wraps(check)
    async def once(request: Request) -> T:
        passed = request.scope.setdefault(CHECKED, {})
        if once not in passed:
            passed[once] = await check(request)
        return passed[once]

    once.caller_check = True
    return once


class CallerFirst(APIRoute):
    """A route that runs its :func:`caller_check` dependencies before it reads the request's body. FastAPI reads and
    parses the body (a multipart upload of up to ``--max-upload-mb``, spooled to a temporary file) before it runs any
    dependency, so a request without a token had cost the server the whole upload before its 401. A route taking a
    JSON body then checks the request's content type (:func:`require_json`)."""

    def get_route_handler(self) -> Callable[[Request], Awaitable]:
        handler = super().get_route_handler()
        checks = list(dict.fromkeys(_caller_checks(self.dependant)))
        if self.body_field is not None and not isinstance(self.body_field.field_info, params.Form):
            checks.append(require_json)
        if not checks:
            return handler

        async def checked_first(request: Request):
            for check in checks:
                await check(request)
            return await handler(request)

        return checked_first


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` header says JSON (``application/json``, or ``application/<name>+json``)."""
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def require_json(request: Request) -> None:
    """A ServiceError 415 unless the request says its body is JSON (FastAPI had validated a text/plain, form or
    untyped body as bytes: 422 "Input should be a valid dictionary")."""
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        got = f"got {content_type.split(';')[0].strip()[:100]!r}" if content_type else "none was given"
        raise ServiceError(415, "unsupported_media_type", f"the body must be JSON, sent with Content-Type: "
                                                          f"application/json ({got})")


def _caller_checks(dependant) -> Iterator[Callable]:
    """The :func:`caller_check` dependencies of a route (or of its dependencies), in the order FastAPI runs them."""
    for d in dependant.dependencies:
        if getattr(d.call, "caller_check", False):
            yield d.call
        else:
            yield from _caller_checks(d)


async def token_match(request: Request, token: str | None) -> str | None:
    """Which valid token ``token`` is (:meth:`TokenChecker.match`), or None; a ServiceError 429 for an address that
    gave too many wrong ones lately (:class:`WrongTokens`)."""
    if not token:
        return None
    wrong, who = request.app.state.wrong_tokens, request.client.host if request.client else ""
    if (wait := wrong.wait(who)) > 0:
        raise ServiceError(429, "too_many_wrong_tokens", f"too many wrong tokens from this address; try again in "
                                                         f"{math.ceil(wait)} s", {"Retry-After": str(math.ceil(wait))})
    state = request.app.state
    which = await run_in_threadpool(state.service.ask_tokens, state.tokens.match, token)
    if which is None:
        wrong.wrong(who)
    return which


async def token_ok(request: Request, token: str | None) -> bool:
    return await token_match(request, token) is not None


@caller_check
async def require_token(request: Request) -> str:
    """``Authorization: Bearer <token>`` with a valid token (401 otherwise): which token it is
    (:meth:`~lookalike.service.auth.TokenChecker.match`), what the searches and verdicts it makes record."""
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise ServiceError(401, "missing_token", "this needs an API token: Authorization: Bearer <token>")
    which = await token_match(request, token)
    if which is None:
        raise ServiceError(401, "bad_token", "the API token is not valid")
    note_caller(request, which)
    return which


def page_session(request: Request) -> Session | None:
    """The logged-in page session of this request, if any (its token not checked again: see :func:`live_session`)."""
    s = request.app.state.sessions.get(request.cookies.get(SESSION_COOKIE))
    return s if s is not None and s.authenticated else None


async def live_session(request: Request) -> Session | None:
    """:func:`page_session` whose login token is still valid; a session of a revoked token is ended. (One opened
    with ``LOOKALIKE_TOKEN`` is valid only where that same value is set: not on a server of the same gallery that
    has none or another, but it lives on where it is.)"""
    s = await run_in_threadpool(page_session, request)
    state = request.app.state
    if s is not None and not await run_in_threadpool(state.service.ask_tokens, state.tokens.alive, s.token):
        if not s.token.startswith(ENV_TOKEN):
            await run_in_threadpool(request.app.state.sessions.drop, request.cookies.get(SESSION_COOKIE))
        return None
    return s


@caller_check
async def require_reader(request: Request) -> None:
    """A valid bearer token or a logged-in page session (for reads and the pictures on pages)."""
    if request.headers.get("authorization") is None and (session := await live_session(request)) is not None:
        note_caller(request, session.token)
        return
    await require_token(request)


def set_session_cookie(request: Request, response, sid: str, max_age: int, name: str = SESSION_COOKIE) -> None:
    """HttpOnly, SameSite=Strict; Secure when the page was served over HTTPS."""
    response.set_cookie(name, sid, max_age=max_age, httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
