"""A gallery database busy with another process's write (``lookalike enroll``, ``gallery prune-searches``): the
service answers 503 ``store_busy`` with ``Retry-After`` (an HTML page for the pages), writes nothing, and works again
once the lock is gone; and the search list counts its searches' reviews in one query. SQLite and PostgreSQL (skipped
without a server: ``LOOKALIKE_TEST_PG``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import FAST_MATCHER
from service_support import AUTH, TOKEN, new_pg_schema, orl_bytes

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from test_service_pages import csrf_of, login  # noqa: E402

from lookalike.gallery import Gallery, StoreBusyError, StoreError, is_postgres_url, open_store  # noqa: E402
from lookalike.service.app import create_app  # noqa: E402
from lookalike.service.auth import TokenChecker  # noqa: E402
from lookalike.service.core import Service, Upload  # noqa: E402
from lookalike.service.limits import BUSY_RETRY_AFTER  # noqa: E402

BUSY_S = 0.3  # the service's busy timeout here: a locked request fails fast


@contextmanager
def held(db: str) -> Iterator[None]:
    """Another connection holding a write lock, as ``lookalike enroll`` or ``gallery prune-searches`` does: SQLite's
    ``BEGIN IMMEDIATE``; PostgreSQL's EXCLUSIVE lock on the tables a subject or a verdict writes (readers pass)."""
    if is_postgres_url(db):
        import psycopg

        from lookalike.gallery.postgres import split_url

        conninfo, schema, _ = split_url(db)
        with psycopg.connect(conninfo) as conn:  # a transaction until the block ends
            conn.execute(f'SET search_path TO "{schema}"')
            conn.execute("LOCK TABLE subjects, searches, state IN EXCLUSIVE MODE")
            yield
            conn.rollback()
        return
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def busy_site(request, orl_dir: Path, tmp_path_factory):
    """A served gallery (three ORL people, one search) with a short busy timeout, in a folder whose name must not
    reach a client."""
    root = tmp_path_factory.mktemp(f"busy-{request.param}") / "private-folder"
    drop = None
    if request.param == "sqlite":
        db = str(root / "g.sqlite")
    else:
        db, drop = new_pg_schema()
    Gallery.create(db, matcher=FAST_MATCHER).close()
    service = Service(db, data_dir=root / "images", engines=1, busy_timeout=BUSY_S)
    for p in (1, 2, 3):
        service.add_images(f"s{p}", [Upload("1.pgm", orl_bytes(orl_dir, p, 1))], create=True)
    doc = service.identify(Upload("probe.pgm", orl_bytes(orl_dir, 2, 5)), top=3)
    client = TestClient(create_app(service, TokenChecker(TOKEN)), follow_redirects=False)
    face = doc["results"][0]["faces"][0]
    yield SimpleNamespace(db=db, root=root, service=service, client=client, search_id=face["search_id"],
                          top=face["candidates"][0]["subject"], result=doc)
    client.close()
    service.close()
    if drop:
        drop()


def assert_busy_json(r, site) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == str(BUSY_RETRY_AFTER) and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == "store_busy" and "busy" in error["message"], error
    assert "private-folder" not in error["message"] and str(site.root) not in error["message"], error
    assert "x-frame-options" in r.headers  # answered inside the middleware: the security headers too


def test_a_write_to_a_busy_database_is_a_503_with_retry_after(busy_site):
    """The API's writes wait the busy timeout, then a 503 store_busy (it had been a 500 internal_error after 60 s);
    reads still work (SQLite's WAL; PostgreSQL's EXCLUSIVE lock lets readers by); nothing was written; the same
    request succeeds once the lock is released."""
    c, sid = busy_site.client, busy_site.search_id
    review = {"subject": busy_site.top, "verdict": "match", "reviewer": "J. Doe", "note": ""}
    before = len(c.get(f"/api/searches/{sid}", headers=AUTH).json()["reviews"])
    with held(busy_site.db):
        assert_busy_json(c.post("/api/subjects", json={"name": "Busy Person"}, headers=AUTH), busy_site)
        assert_busy_json(c.post(f"/api/searches/{sid}/reviews", json=review, headers=AUTH), busy_site)
        assert_busy_json(c.delete("/api/subjects/s3", headers=AUTH), busy_site)  # had been 404 unknown_subject
        assert c.get("/api/searches", headers=AUTH).status_code == 200
        assert c.get("/api/subjects/Busy Person", headers=AUTH).status_code == 404
    assert len(c.get(f"/api/searches/{sid}", headers=AUTH).json()["reviews"]) == before
    assert c.post("/api/subjects", json={"name": "Busy Person"}, headers=AUTH).status_code == 201
    assert c.post(f"/api/searches/{sid}/reviews", json=review, headers=AUTH).status_code == 201
    assert c.get("/api/subjects/s3", headers=AUTH).status_code == 200  # not removed while busy


def test_a_busy_database_is_an_error_page_on_the_pages(busy_site):
    """A verdict posted on the review page while the database is busy: the service's HTML error page with the 503
    and Retry-After, not JSON; the verdict is not recorded."""
    c, sid = busy_site.client, busy_site.search_id
    c.cookies.clear()
    login(c)  # a login writes its session: before the lock
    csrf = csrf_of(c.get(f"/review/{sid}").text)
    form = {"subject": busy_site.top, "verdict": "non-match", "reviewer": "Examiner B", "note": "", "csrf": csrf}
    before = len(busy_site.service.get_search(sid)["reviews"])
    with held(busy_site.db):
        assert c.get(f"/review/{sid}").status_code == 200  # reading goes on
        r = c.post(f"/review/{sid}", data=form)
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html"), r.text
    assert r.headers["retry-after"] == str(BUSY_RETRY_AFTER)
    assert "is busy" in r.text and "Cannot do that" in r.text and "private-folder" not in r.text
    assert len(busy_site.service.get_search(sid)["reviews"]) == before
    assert c.post(f"/review/{sid}", data=form).status_code == 303  # recorded once the lock is gone


def test_a_gallery_that_cannot_be_used_is_an_error_page_on_the_pages(busy_site, monkeypatch):
    """store_unavailable on a page: the error page (it had been the API's JSON), naming no server path."""
    c = busy_site.client
    c.cookies.clear()
    login(c)

    def unusable(*args, **kwargs):
        raise StoreError("/srv/private-folder/g.sqlite.vectors: damaged")

    monkeypatch.setattr(busy_site.service, "list_searches", unusable)
    r = c.get("/")
    assert r.status_code == 503 and r.headers["content-type"].startswith("text/html"), r.text
    assert "cannot be used now" in r.text and "private-folder" not in r.text and "retry-after" not in r.headers
    r = c.get("/api/searches", headers=AUTH)
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"


def test_the_openapi_document_lists_store_busy(busy_site):
    doc = busy_site.client.get("/openapi.json").json()
    for path, method in (("/api/subjects", "post"), ("/api/searches/{search_id}/reviews", "post"),
                         ("/api/searches", "get")):
        answer = doc["paths"][path][method]["responses"]["503"]
        assert "store_busy" in answer["description"] and "store_unavailable" in answer["description"]
        assert "Retry-After" in answer["headers"]
    assert "503" not in doc["paths"]["/api/health"]["get"]["responses"]


def test_a_store_refuses_a_lock_held_past_its_busy_timeout(db: str):
    """The store's own error, on both backends: a StoreBusyError (a StoreError: one line for the command line)."""
    Gallery.create(db, matcher=FAST_MATCHER).close()
    with open_store(db, create=False, busy_timeout=0.2) as store, held(db):
        with pytest.raises(StoreBusyError, match="busy|locked"):
            store.add_subject("Ann")
        assert store.get_subject("Ann") is None  # reads go on
    with open_store(db, create=False, busy_timeout=0.2) as store:
        store.add_subject("Ann")  # the lock gone: written


def test_review_counts_are_read_in_one_query(busy_site, monkeypatch):
    """Searches with 0, 1 and 3 reviews are listed with those counts; the store is asked as many times for a page of
    one search as for a page of four (it had been one query of reviews a search)."""
    service = busy_site.service
    store = service._all[0].gallery.store  # noqa: SLF001 (the engine's connection, spied on below)
    result = service.get_search(busy_site.search_id)["result"]
    wanted = {}
    for n in (0, 1, 3):
        sid = store.add_search(None, "0" * 40, result)
        for i in range(n):
            store.add_review(sid, busy_site.top, "inconclusive", f"Examiner {i}")
        wanted[sid] = n
    assert store.count_reviews([*wanted, 10**9]) == {**wanted, 10**9: 0}
    many = store.count_reviews(list(range(1, 2501)))  # more ids than one statement takes: several
    assert len(many) == 2500 and all(many[sid] == n for sid, n in wanted.items())
    listed = {s["id"]: s["reviews"] for s in service.list_searches(limit=1000)}
    assert {sid: listed[sid] for sid in wanted} == wanted
    for sid, n in listed.items():
        assert n == len(service.get_search(sid)["reviews"])

    calls = []
    monkeypatch.setattr(store, "_exec", lambda *a, _exec=store._exec: calls.append(a) or _exec(*a))  # noqa: SLF001
    asked = []
    for limit in (1, 4):
        calls.clear()
        assert len(service.list_searches(limit=limit)) == limit
        asked.append(len(calls))
    assert asked[0] == asked[1], asked
