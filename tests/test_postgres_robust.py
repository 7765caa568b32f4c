"""PostgreSQL galleries under concurrency and lost connections; passwords never shown."""

from __future__ import annotations

import threading

import pytest
from service_support import new_pg_schema

from lookalike.gallery import display_db, open_store
from lookalike.gallery.store import StoreError, SubjectExistsError


@pytest.fixture
def pg_url():
    url, drop = new_pg_schema()
    yield url
    drop()


def _terminate(store) -> None:
    """End ``store``'s connection from the server side, as an administrator (or a server restart) does."""
    import psycopg

    from lookalike.gallery.postgres import split_url

    pid = store._conn.info.backend_pid  # noqa: SLF001
    with psycopg.connect(split_url(store._conninfo)[0], autocommit=True) as admin:  # noqa: SLF001
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_lost_connection_is_one_503_worth_of_error_then_reconnects(pg_url):
    store = open_store(pg_url, create=True)
    try:
        store.add_subject("ann")
        g = store.generation()
        _terminate(store)
        assert store.generation() == g  # a read on its own: asked again on a new connection
        _terminate(store)
        store.add_subject("bob")  # lost before the write began (nothing done): begun again on a new connection
        with pytest.raises(StoreError, match="the database connection was lost"), \
                store._transaction(write=True):  # noqa: SLF001
            _terminate(store)  # lost inside a write: not repeated blindly, one line (the service: a 503)
            store._exec("INSERT INTO subjects (name, created) VALUES (?, ?)", ("cat", "now"))  # noqa: SLF001
        store.add_subject("dan")  # the next call connects again
        assert [s.name for s in store.list_subjects()] == ["ann", "bob", "dan"]
    finally:
        store.close()


def _at_once(calls) -> list:
    """Run the ``calls`` in threads released together; each one's result, or the repr of its error."""
    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except SubjectExistsError:
            results[i] = "exists"
        except Exception as e:  # noqa: BLE001
            results[i] = repr(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_two_writers_creating_one_subject_get_one_row(pg_url):
    """Two services (or enrolments) naming the same new subject at the same moment: one creates it, the other is
    told it exists (new=True) or gets the same subject; never a duplicate-key error."""
    open_store(pg_url, create=True).close()
    for new in (True, False):
        stores = [open_store(pg_url, create=False) for _ in range(4)]
        results = _at_once([lambda s=s, new=new: s.add_subject(f"race-{new}", new=new) for s in stores])
        for s in stores:
            s.close()
        ids = [r for r in results if isinstance(r, int)]
        if new:
            assert len(ids) == 1 and results.count("exists") == 3, results
        else:
            assert len(ids) == 4 and len(set(ids)) == 1, results


def test_two_first_enrolments_into_a_new_gallery_both_open_it(pg_url):
    from lookalike.gallery import Gallery

    def make() -> None:
        Gallery.open_or_create(pg_url, matcher="dlib").close()

    assert _at_once([make, make]) == [None, None]


@pytest.mark.parametrize("url", ["postgresql://u:secret@db.example/g", "postgresql://u@db.example/g?password=secret",
                                 "postgresql://u@db.example/g?sslmode=require&password=secret&schema=x"])
def test_a_password_is_never_shown(url):
    shown = display_db(url)
    assert "secret" not in shown and "***" in shown and shown.startswith("postgresql://u")
    assert display_db("gallery.sqlite") == "gallery.sqlite"


def test_a_service_answers_after_its_connections_are_ended(pg_url, tmp_path):
    """An administrator ending the service's database connections (or PostgreSQL restarting): the next requests
    are answered (the service connects again), never a 500 for ever."""
    from fastapi.testclient import TestClient
    from service_support import AUTH, TOKEN

    from lookalike.gallery import Gallery
    from lookalike.service.app import create_app
    from lookalike.service.auth import TokenChecker
    from lookalike.service.core import Service

    Gallery.create(pg_url, matcher="dlib").close()
    service = Service(pg_url, data_dir=tmp_path / "images", engines=1)
    try:
        client = TestClient(create_app(service, TokenChecker(TOKEN)))
        assert client.post("/api/subjects", json={"name": "ann"}, headers=AUTH).status_code == 201
        for store in (service._all[0].gallery.store, service.sessions_store):  # noqa: SLF001
            _terminate(store)
        r = client.get("/api/subjects", headers=AUTH)
        assert r.status_code == 200 and [s["name"] for s in r.json()] == ["ann"]
        assert client.post("/api/subjects", json={"name": "bob"}, headers=AUTH).status_code == 201
        assert client.post("/api/subjects", json={"name": "bob"}, headers=AUTH).status_code == 409
        assert client.get("/login").status_code == 200
    finally:
        service.close()
