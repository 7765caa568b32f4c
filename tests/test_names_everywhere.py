"""Look-alike subject names handled alike everywhere: the service refuses a new name that looks like a live subject's
(409 name_looks_alike, unless confirmed), ``Gallery.enroll`` reports the command line's name warnings, ``train``
shows them even when it then fails; plus prune-searches' plurals and the service's 503 without server paths."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from conftest import FAST_MATCHER
from service_support import AUTH, TOKEN, orl_bytes, png_copy, state

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from test_service_pages import login  # noqa: E402

from lookalike.cli import main  # noqa: E402
from lookalike.data.names import name_warnings  # noqa: E402
from lookalike.gallery import Gallery, open_store  # noqa: E402
from lookalike.gallery.vectors import vector_dir  # noqa: E402
from lookalike.matchers.cache import EmbeddingCache  # noqa: E402
from lookalike.service.app import create_app  # noqa: E402
from lookalike.service.auth import TokenChecker  # noqa: E402
from lookalike.service.core import Service, Upload  # noqa: E402

CYRILLIC_ABC = "\u0410\u0412\u0421"  # АВС: Cyrillic capitals A, VE, ES (one script; it looks like "ABC")


@pytest.fixture(scope="module")
def site(orl_dir: Path, tmp_path_factory):
    """A served SQLite gallery holding "Ann" (ORL s1, one photo): (client, service, db, data folder)."""
    root = tmp_path_factory.mktemp("names")
    db = str(root / "g.sqlite")
    Gallery.create(db, matcher=FAST_MATCHER).close()
    service = Service(db, data_dir=root / "images", engines=1)
    service.add_images("Ann", [Upload("1.pgm", orl_bytes(orl_dir, 1, 1))], create=True)
    client = TestClient(create_app(service, TokenChecker(TOKEN)), follow_redirects=False)
    yield client, service, db, root / "images"
    client.close()
    service.close()


def _refused(r, *named: str) -> str:
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "name_looks_alike"
    assert all(n in error["message"] for n in named) and "similar_name_ok=true" in error["message"]
    return error["message"]


def test_the_api_refuses_a_new_name_that_looks_like_a_subjects_until_confirmed(site):
    client, service, db, data_dir = site
    before = state(db, data_dir)
    message = _refused(client.post("/api/subjects", json={"name": "ann"}, headers=AUTH), "'ann'", "'Ann'")
    assert "1 existing subject: 'Ann'" in message and "enrol the photos under the existing name" in message
    assert state(db, data_dir) == before  # nothing written
    r = client.post("/api/subjects", json={"name": "ann", "similar_name_ok": True}, headers=AUTH)
    assert r.status_code == 201 and r.json()["name"] == "ann"
    message = _refused(client.post("/api/subjects", json={"name": "ANN"}, headers=AUTH), "'ANN'")
    assert "2 existing subjects: 'Ann', 'ann'" in message
    # names that differ beyond ASCII are shown with their code points
    assert client.post("/api/subjects", json={"name": "ABC"}, headers=AUTH).status_code == 201
    message = _refused(client.post("/api/subjects", json={"name": CYRILLIC_ABC}, headers=AUTH), "'ABC'")
    assert f"{CYRILLIC_ABC!r} (U+0410 CYRILLIC CAPITAL LETTER A, U+0412 CYRILLIC CAPITAL LETTER VE" in message
    # an exact name is as before: 409 subject_exists; a flag that is not a boolean is an invalid request
    assert client.post("/api/subjects", json={"name": "Ann"}, headers=AUTH).json()["error"]["code"] == "subject_exists"
    r = client.post("/api/subjects", json={"name": "Bob", "similar_name_ok": "maybe"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_photos_of_an_existing_subject_are_added_by_its_exact_name(site, orl_dir: Path):
    client, service, _, _ = site
    r = client.post("/api/subjects/Ann/images", headers=AUTH,
                    files=[("files", ("2.pgm", orl_bytes(orl_dir, 1, 2), "application/octet-stream"))])
    assert r.status_code == 201 and r.json()["added"] == 1, r.text


def test_removed_subjects_block_no_look_alike_and_are_re_created_as_before(site):
    client, service, _, _ = site
    assert client.post("/api/subjects", json={"name": "Zed"}, headers=AUTH).status_code == 201
    assert client.delete("/api/subjects/Zed", headers=AUTH).status_code == 200
    assert client.post("/api/subjects", json={"name": "Zed"}, headers=AUTH).status_code == 201  # re-created
    assert client.delete("/api/subjects/Zed", headers=AUTH).status_code == 200
    assert client.post("/api/subjects", json={"name": "zed"}, headers=AUTH).status_code == 201  # a removed "Zed"
    # re-creating the removed "Zed" beside the live "zed" makes two subjects that look alike: refused likewise
    _refused(client.post("/api/subjects", json={"name": "Zed"}, headers=AUTH), "'zed'")


def test_the_openapi_document_lists_the_refusal_and_the_flag(site):
    client = site[0]
    doc = client.get("/openapi.json").json()
    assert "`name_looks_alike`" in doc["paths"]["/api/subjects"]["post"]["responses"]["409"]["description"]
    flag = doc["components"]["schemas"]["SubjectIn"]["properties"]["similar_name_ok"]
    assert flag["type"] == "boolean" and flag["default"] is False and "name_looks_alike" in flag["description"]


def test_the_enrol_page_shows_the_refusal_and_offers_to_confirm(site, orl_dir: Path):
    client, service, _, _ = site
    client.cookies.clear()
    csrf = login(client)
    photo = [("files", ("a.pgm", orl_bytes(orl_dir, 2, 1), "image/x-portable-graymap"))]
    assert 'name="similar_name_ok"' not in client.get("/enrol").text  # offered only when a name was refused
    r = client.post("/enrol", files=photo, data={"csrf": csrf, "name": "aNN"})
    assert r.status_code == 409 and "looks like" in r.text and "&#39;Ann&#39;" in r.text
    assert 'name="similar_name_ok" value="true"' in r.text and 'value="aNN"' in r.text
    assert "aNN" not in [s["name"] for s in service.list_subjects()]
    r = client.post("/enrol", files=photo, data={"csrf": csrf, "name": "aNN", "similar_name_ok": "true"})
    assert r.status_code == 303 and r.headers["location"] == "/enrol?subject=aNN"
    more = [("files", ("b.pgm", png_copy(orl_dir, 1, 3), "image/png"))]  # the page's existing name: photos added
    r = client.post("/enrol", files=more, data={"csrf": csrf, "name": "Ann"})
    assert r.status_code == 303 and r.headers["location"] == "/enrol?subject=Ann"


def test_gallery_enroll_reports_the_name_warnings_without_printing(tmp_path: Path, orl_dir: Path, capsys):
    db = str(tmp_path / "g.sqlite")
    paths = [str(orl_dir / f"s{p}" / "1.pgm") for p in (1, 2, 3)]
    with Gallery.create(db, matcher=FAST_MATCHER) as g:
        first = g.enroll(paths[:2], ["Ann", "Bob"], cache=EmbeddingCache(None), workers=1, progress=False)
        second = g.enroll(paths[2:], ["ann"], cache=EmbeddingCache(None), workers=1, progress=False)
    assert first.name_warnings == []
    assert second.name_warnings == name_warnings(["ann"], ["Ann", "Bob"]) and len(second.name_warnings) == 1
    assert second.name_warnings[0].endswith("in the gallery already: 'Ann'")
    assert capsys.readouterr() == ("", "")


def test_the_enroll_command_lists_the_reports_name_warnings(tmp_path: Path, orl_dir: Path, capsys, monkeypatch):
    """The command prints what Gallery.enroll reported (it does not work the warnings out a second time)."""
    import lookalike.gallery.gallery as gallery_module

    (tmp_path / "faces" / "Ann").mkdir(parents=True)
    (tmp_path / "faces" / "Ann" / "1.pgm").write_bytes(orl_bytes(orl_dir, 1, 1))
    monkeypatch.setattr(gallery_module, "name_warnings", lambda names, existing: ["reported by Gallery.enroll"])
    assert main(["enroll", "--gallery", str(tmp_path / "faces"), "--db", str(tmp_path / "g.sqlite"), "--matcher",
                 FAST_MATCHER, "--cache", "none", "--workers", "1", "--no-progress", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["names"] == ["reported by Gallery.enroll"]
    assert "name: reported by Gallery.enroll" in err.splitlines()


def test_train_shows_the_name_warnings_when_training_then_fails(tmp_path: Path, orl_dir: Path, capsys):
    """Three people ("Ann", "ann", "Bob") are too few to train: the error comes with the names' warnings."""
    with open(tmp_path / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows([str(orl_dir / f"s{p}" / f"{n}.pgm"), name] for p, name in ((1, "Ann"), (2, "ann"), (3, "Bob"))
                    for n in (1, 2))
    assert main(["train", "--data", str(tmp_path / "train.csv"), "--model", str(tmp_path / "m.lkm"), "--matcher",
                 FAST_MATCHER, "--cache", "none", "--workers", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "too few people to train a model" in err
    listed = [line for line in err.splitlines() if line.startswith("name: ")]
    assert len(listed) == 1 and listed[0].startswith("name: 'Ann', 'ann' look alike")
    assert "names: 1 warning (" in err and not (tmp_path / "m.lkm").exists()


def test_prune_searches_counts_one_search_in_the_singular(tmp_path: Path, capsys):
    db = str(tmp_path / "g.sqlite")
    Gallery.create(db, matcher=FAST_MATCHER).close()
    with open_store(db) as s:
        s.add_search(b"photo" * 100, "a" * 40, {})
    assert main(["gallery", "prune-searches", "--db", db, "--older-than", "0", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete 1 search made before" in out and "and 1 probe photo no search shows" in out, out
    assert "kept 0 reviewed searches made before then" in out and "and 0 newer ones; 0 photos still" in out, out


def test_a_503_names_no_server_path(orl_dir: Path, tmp_path: Path, caplog):
    """The gallery made unusable behind a running service (another process removes a subject, and the vector files
    beside the database are damaged): 503 store_unavailable naming the gallery by its file name only; the reason,
    with the paths, goes to the server's log."""
    db = str(tmp_path / "private-folder" / "g.sqlite")
    Gallery.create(db, matcher=FAST_MATCHER).close()
    service = Service(db, data_dir=tmp_path / "images", engines=1)
    try:
        for p in (1, 2):
            service.add_images(f"s{p}", [Upload("1.pgm", orl_bytes(orl_dir, p, 1))], create=True)
        client = TestClient(create_app(service, TokenChecker(TOKEN)))
        assert client.get("/api/gallery", headers=AUTH).status_code == 200
        with open_store(db) as store:
            store.delete_subject("s1")  # the service reloads its vectors at the next request
        (vector_dir(db) / "state.json").write_text("{not json")
        with caplog.at_level(logging.ERROR, logger="lookalike.service.app"):
            r = client.get("/api/gallery", headers=AUTH)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        message = r.json()["error"]["message"]
        assert "g.sqlite" in message and "private-folder" not in message and str(tmp_path) not in message, message
        assert str(vector_dir(db)) in caplog.text  # the operator is told where
    finally:
        service.close()
