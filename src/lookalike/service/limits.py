"""The service's limits: the request-size limit, enforced while the body streams in (before any of it is parsed
or spooled), the pixel limit of an uploaded photo, and how long a request waits for a busy database."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException

DEFAULT_MAX_UPLOAD_MB = 20
# A photo's pixels, decoded: a 60 KB PNG can hold 62 MP, whose search took 9 s and 1.1 GB here. 40 MP holds a
# 36 MP camera's photo; ``serve --max-megapixels`` raises it up to the loader's own limit (images.MAX_PIXELS).
DEFAULT_MAX_MEGAPIXELS = 40
# Seconds a request's statement waits for the gallery's database while another process writes to it (``lookalike
# enroll``, ``gallery prune-searches``), as SQLite's own default (lookalike.gallery.BUSY_TIMEOUT); then it is answered
# 503 ``store_busy`` with ``Retry-After: BUSY_RETRY_AFTER`` (``serve --busy-timeout``).
DEFAULT_BUSY_TIMEOUT = 60.0
BUSY_RETRY_AFTER = 5


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit (an HTTPException, so that body parsers pass it
    on unchanged and it is answered 413)."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


class BodyLimit:
    """ASGI middleware: a request whose ``Content-Length`` or received body exceeds ``max_bytes`` is answered
    413 as soon as that is known (the body is counted chunk by chunk as the app reads it)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await _error(send, 400, "bad_request", "invalid Content-Length header")
                return
            if too_big:
                await _error(send, 413, "too_large", self._message())
                return
        seen = 0
        started = False

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self._message())
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _error(send, 413, "too_large", self._message())

    def _message(self) -> str:
        return f"request body larger than the {self.max_bytes / 2**20:g} MB limit"


async def _error(send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
