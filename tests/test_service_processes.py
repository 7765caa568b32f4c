"""The service as real processes (``lookalike serve`` under uvicorn on 127.0.0.1): two servers on one PostgreSQL
database see each other's enrolments; a server killed with SIGKILL during enrolment loses nothing it
acknowledged and leaves nothing half-written; the body limit holds on a real socket."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import FAST_MATCHER
from service_support import AUTH, free_port, new_pg_schema, orl_bytes, pg_base, start_server, stop_server

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from lookalike.gallery import Gallery, open_store  # noqa: E402


def enrol(base: str, name: str, data: bytes, create: bool = True) -> httpx.Response:
    if create:
        httpx.post(f"{base}/api/subjects", json={"name": name}, headers=AUTH, timeout=60)
    return httpx.post(f"{base}/api/subjects/{name}/images", files=[("files", ("f.pgm", data))], headers=AUTH,
                      timeout=120)


def test_two_servers_on_one_postgres_database(orl_dir: Path, tmp_path: Path):
    pg_base()
    db, drop = new_pg_schema()
    Gallery.create(db, matcher=FAST_MATCHER).close()
    ports = free_port(), free_port()
    procs = []
    try:
        for i, port in enumerate(ports):
            procs.append(start_server(db, tmp_path / "images", port, log=tmp_path / f"server{i}.log"))
        a, b = (f"http://127.0.0.1:{p}" for p in ports)
        assert enrol(a, "s1", orl_bytes(orl_dir, 1, 1)).status_code == 201
        r = httpx.post(f"{b}/api/identify", files={"file": ("p.pgm", orl_bytes(orl_dir, 1, 2))}, headers=AUTH,
                       timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["results"][0]["faces"][0]["candidates"][0]["subject"] == "s1"
        assert enrol(b, "s2", orl_bytes(orl_dir, 2, 1)).status_code == 201  # and the other way round
        r = httpx.post(f"{a}/api/identify", files={"file": ("p.pgm", orl_bytes(orl_dir, 2, 2))}, headers=AUTH,
                       timeout=120)
        cands = r.json()["results"][0]["faces"][0]["candidates"]
        assert [c["subject"] for c in cands] == ["s2", "s1"]
        sid = r.json()["results"][0]["faces"][0]["search_id"]
        assert httpx.get(f"{b}/api/searches/{sid}", headers=AUTH).status_code == 200
        assert httpx.delete(f"{b}/api/subjects/s2", headers=AUTH).status_code == 200
        r = httpx.post(f"{a}/api/identify", files={"file": ("p.pgm", orl_bytes(orl_dir, 2, 2))}, headers=AUTH,
                       timeout=120)
        assert [c["subject"] for c in r.json()["results"][0]["faces"][0]["candidates"]] == ["s1"]
    finally:
        for p in procs:
            stop_server(p)
        drop()


def test_kill_during_enrolment_loses_nothing_acknowledged(orl_dir: Path, tmp_path: Path):
    db = str(tmp_path / "g.sqlite")
    Gallery.create(db, matcher=FAST_MATCHER).close()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_server(db, tmp_path / "images", port, log=tmp_path / "server.log")
    acked: list[tuple[str, str]] = []  # (subject, sha1) of every enrolment the server answered 201
    stop = threading.Event()

    def client() -> None:
        import hashlib

        for p in range(1, 41):
            for i in (1, 2, 3):
                if stop.is_set():
                    return
                data = orl_bytes(orl_dir, p, i)
                try:
                    r = enrol(base, f"s{p}", data, create=i == 1)
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    acked.append((f"s{p}", hashlib.sha1(data).hexdigest()))

    t = threading.Thread(target=client)
    t.start()
    deadline = time.time() + 120
    while len(acked) < 6 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the client is sending the next enrolment
    proc.wait()
    stop.set()
    t.join(60)
    assert len(acked) >= 6

    proc = start_server(db, tmp_path / "images", port, log=tmp_path / "server.log")
    try:
        with open_store(db, create=False) as store:
            images = store.list_images()
            snap = store.snapshot(store.get_meta()["matcher_name"], "full")
        pairs = [(i.subject, i.sha1) for i in images]
        assert len(pairs) == len(set(pairs))  # each image once
        assert set(acked) <= set(pairs)  # nothing acknowledged is lost
        assert all(i.status == "ok" and Path(i.path).is_file() for i in images)  # no half-written record
        assert len(snap.image_ids) == len(images)  # every image has its embedding
        # the restarted server searches all of them
        r = httpx.post(f"{base}/api/identify", files={"file": ("p.pgm", orl_bytes(orl_dir, 1, 9))}, headers=AUTH,
                       data={"top": "100"}, timeout=120)
        listed = {c["subject"] for c in r.json()["results"][0]["faces"][0]["candidates"]}
        assert listed == {s for s, _ in pairs}
        # an enrolment interrupted by the kill can be sent again
        missing = [(p, i) for p in range(1, 41) for i in (1, 2, 3) if (f"s{p}", _sha1(orl_bytes(orl_dir, p, i)))
                   not in set(pairs)][:1]
        for p, i in missing:
            r = enrol(base, f"s{p}", orl_bytes(orl_dir, p, i), create=True)
            assert r.status_code == 201, r.text
    finally:
        stop_server(proc)


def _sha1(data: bytes) -> str:
    import hashlib

    return hashlib.sha1(data).hexdigest()


def test_body_limit_on_a_real_socket(tmp_path: Path):
    db = str(tmp_path / "g.sqlite")
    Gallery.create(db, matcher=FAST_MATCHER).close()
    port = free_port()
    proc = start_server(db, tmp_path / "images", port, "--max-upload-mb", "1", log=tmp_path / "server.log")
    try:
        body = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
                + b"\xff\xd8\xff" + b"\0" * (3 << 20) + b"\r\n--x--\r\n")

        def chunks():
            for i in range(0, len(body), 1 << 16):
                yield body[i:i + 1 << 16]

        for content in (body, chunks()):
            r = httpx.post(f"http://127.0.0.1:{port}/api/identify", content=content, headers={
                **AUTH, "content-type": "multipart/form-data; boundary=x"}, timeout=60)
            assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    finally:
        stop_server(proc)
