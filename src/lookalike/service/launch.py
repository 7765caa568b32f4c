"""``lookalike serve`` in a subprocess on 127.0.0.1, for tests and benchmarks that talk to it over HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: str, data_dir: Path, port: int, *extra: str, token: str, log: Path | None = None,
                 env: dict[str, str] | None = None, timeout: float = 90.0) -> subprocess.Popen:
    """``lookalike serve --db DB --data-dir DIR --port PORT --engines 1 EXTRA...`` (a later ``--engines`` in
    ``extra`` wins) with API token ``token``, waited for until ``/api/health`` answers; RuntimeError when it
    exits or does not answer within ``timeout`` seconds. Output goes to ``log`` (appended) or nowhere."""
    import httpx

    with open(log, "ab") if log else open(os.devnull, "wb") as out:  # the child keeps its own copy
        proc = subprocess.Popen([sys.executable, "-m", "lookalike.cli", "serve", "--db", db, "--data-dir",
                                 str(data_dir), "--port", str(port), "--engines", "1", *extra],
                                env={**os.environ, **(env or {}), "LOOKALIKE_TOKEN": token}, stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}" + (f"; see {log}" if log else ""))
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"server did not start in {timeout:.0f} s")


def stop_server(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate the server (kill it if it does not stop within ``timeout`` seconds)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
