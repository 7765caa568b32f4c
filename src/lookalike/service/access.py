"""The access log: one record per request (when, who, what, the answer), the service's account of who searched and
reviewed. ``who`` is the API token the request was allowed with (a stored token's id, or ``env:<fingerprint>`` for
``LOOKALIKE_TOKEN``), or, on a page, the token that opened the examiner's session; empty when none was."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import quote

Record = dict[str, object]


def note_caller(request, which: str) -> None:
    """Record which token a request was allowed with, for its access-log line."""
    request.state.caller = which


class AccessLog:
    """ASGI middleware: after each HTTP request, ``sink`` gets ``{time, method, path, status, who, ms}`` (the
    query string is left out: it may hold a subject's name prefix)."""

    def __init__(self, app, sink: Callable[[Record], None]) -> None:
        self.app, self.sink = app, sink

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0, status = time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.sink({"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "method": scope["method"],
                       "path": scope["path"], "status": status[0],
                       "who": str((scope.get("state") or {}).get("caller", "")),
                       "ms": round(1000 * (time.perf_counter() - t0), 1)})


def access_sink(target: str) -> Callable[[Record], None] | None:
    """Where ``serve --access-log`` writes: ``-`` a line a request on standard error (the path percent-encoded again,
    so that a request cannot write a line break or a terminal's escape codes into the log), ``none`` nowhere, else JSON
    lines appended to that file (opened now, so a path that cannot be written fails at start-up)."""
    if target == "none":
        return None
    if target == "-":
        return lambda r: print(f"{r['time']} {r['status']} {r['method']} {quote(str(r['path']))} "
                               f"who={r['who'] or '-'} {r['ms']} ms", file=sys.stderr, flush=True)
    try:
        f: IO[str] = open(Path(target), "a", encoding="utf-8")  # noqa: SIM115 (open for the server's life)
    except OSError as e:
        raise ValueError(f"--access-log {target}: cannot be written ({e.strerror or e})") from None
    lock = threading.Lock()

    def write(r: Record) -> None:
        with lock:
            f.write(json.dumps(r) + "\n")
            f.flush()

    return write
