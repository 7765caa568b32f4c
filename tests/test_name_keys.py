"""Subjects' look-alike keys stored in the gallery (schema 9): a schema-8 gallery gets them on open, in one
transaction; a new :data:`~lookalike.data.names.KEY_VERSION` recomputes them; the service's 409 ``name_looks_alike``
and ``Gallery.enroll``'s name warnings are what they were, found by the keys' index without listing every name.
Each test runs on SQLite and on PostgreSQL (skipped without a server: ``LOOKALIKE_TEST_PG``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST_MATCHER

from lookalike.data.names import KEY_VERSION, lookalike_key, name_warnings
from lookalike.gallery import Gallery, open_store
from lookalike.gallery import sql as gallery_sql
from lookalike.gallery import store as gallery_store
from lookalike.gallery.sql import SQLStore
from lookalike.gallery.store import NewImage

CYRILLIC_ANN = "\u0410nn"  # Аnn: Cyrillic A (mixes scripts: enrolled with a warning, refused by the service)
CYRILLIC_ABC = "\u0410\u0412\u0421"  # АВС, all Cyrillic: looks like "ABC"
FULLWIDTH_BOB = "\uff22ob"  # Ｂob: not NFKC
LIVE = ["Ann", CYRILLIC_ANN, "ABC", FULLWIDTH_BOB, "Carl"]


def _gallery(db: str) -> None:
    """A gallery holding :data:`LIVE` and the removed "Zed"."""
    Gallery.create(db, matcher=FAST_MATCHER).close()
    with open_store(db) as s:
        for name in [*LIVE, "Zed"]:
            s.add_subject(name)
        s.delete_subject("Zed")


def _keys(s: SQLStore) -> dict[str, str | None]:
    return dict(s._exec("SELECT name, lookalike_key FROM subjects").fetchall())


def _as_schema_8(db: str) -> None:
    """Take the gallery back to schema 8's layout: no stored keys, no key version."""
    with open_store(db) as s:
        for statement in ("DROP INDEX subjects_lookalike_key", "ALTER TABLE subjects DROP COLUMN lookalike_key",
                          "ALTER TABLE state DROP COLUMN key_version", "UPDATE state SET schema_version = 8"):
            s._exec(statement)


def test_a_schema_8_gallery_gets_every_subjects_key_on_open(db: str) -> None:
    _gallery(db)
    _as_schema_8(db)
    with open_store(db) as s:
        gen = s.generation()
    with open_store(db) as s:  # migrated on opening; the generation stays (nothing a search reads changed)
        assert s.schema_version() == gallery_store.SCHEMA_VERSION == 9 and s.generation() == gen
        assert _keys(s) == {n: lookalike_key(n) for n in [*LIVE, "Zed"]}  # the removed subject's too
        assert s._exec("SELECT key_version FROM state").fetchone()[0] == KEY_VERSION
        assert s.subject_names_by_key(["ann"]) == sorted(["Ann", CYRILLIC_ANN])
        assert s.subject_names_by_key(["zed", "nobody"]) == []  # removed subjects are not returned
        s.add_subject("Dora")  # a new subject's key is stored with it
        assert _keys(s)["Dora"] == "dora" and s.subject_names_by_key(["dora"]) == ["Dora"]


def test_the_migration_is_one_transaction(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration that fails while filling the keys leaves schema 8 as it was: the next open migrates it (a column
    added without its keys would have made that open fail: duplicate column)."""
    _gallery(db)
    _as_schema_8(db)

    def failing(name: str) -> str:
        if name == "Carl":
            raise RuntimeError("stopped while filling the keys")
        return lookalike_key(name)

    monkeypatch.setattr(gallery_sql, "lookalike_key", failing)
    with pytest.raises(RuntimeError, match="stopped while filling"):
        open_store(db)
    monkeypatch.undo()
    with open_store(db) as s:
        assert s.schema_version() == 9 and _keys(s) == {n: lookalike_key(n) for n in [*LIVE, "Zed"]}


def test_the_keys_are_recomputed_when_the_key_version_changes(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _gallery(db)
    monkeypatch.setattr(gallery_sql, "KEY_VERSION", KEY_VERSION + 1)
    monkeypatch.setattr(gallery_sql, "lookalike_key", str.upper)  # another key
    with open_store(db) as s:
        gen = s.generation()
        assert _keys(s)["Ann"] == "ANN" and s._exec("SELECT key_version FROM state").fetchone()[0] == KEY_VERSION + 1
        assert s.subject_names_by_key(["ANN"]) == ["Ann"]
    monkeypatch.undo()
    with open_store(db) as s:  # an older lookalike leaves a newer one's keys (no rewriting back and forth)
        assert _keys(s)["Ann"] == "ANN" and s.generation() == gen
        assert s._exec("SELECT key_version FROM state").fetchone()[0] == KEY_VERSION + 1


def test_subjects_added_without_a_key_get_one_on_open(db: str) -> None:
    """An older lookalike still running after the migration adds subjects without a key (it knows no such column):
    the next open gives them theirs, so the look-alike check sees them."""
    _gallery(db)
    with open_store(db) as s:
        s.add_subject("ann  smith")
        s._exec("UPDATE subjects SET lookalike_key = NULL WHERE name = 'ann  smith'")  # as the older process left it
        assert s.subject_names_by_key([lookalike_key("Ann Smith")]) == []
    with open_store(db) as s:
        assert s.subject_names_by_key([lookalike_key("Ann Smith")]) == ["ann  smith"]


def test_many_keys_are_looked_up_in_chunks(db: str) -> None:
    Gallery.create(db, matcher=FAST_MATCHER).close()
    names = [f"Person {i:04d}" for i in range(1234)]  # more keys than one query takes (sql._CHUNK)
    with open_store(db) as s:
        s.add_images([NewImage(n, f"/x/{i}", f"{i:040d}", "no_face") for i, n in enumerate(names)], "m", "p")
        assert s.subject_names_by_key([lookalike_key(n) for n in names] + ["nobody"]) == sorted(names)


@pytest.fixture
def no_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading every live subject's name fails (what the look-alike checks had done on each call)."""
    def listing(*_args):
        raise AssertionError("every subject's name was read")

    monkeypatch.setattr(Gallery, "subjects", listing)
    monkeypatch.setattr(SQLStore, "subject_names", listing)


def test_the_service_refuses_look_alikes_as_before_without_reading_every_name(db: str, tmp_path: Path,
                                                                              no_listing) -> None:
    pytest.importorskip("fastapi")
    from lookalike.service.core import Service, ServiceError, lookalike_refusal

    _gallery(db)
    service = Service(db, data_dir=tmp_path / "images", engines=1)
    try:
        for name, alike in (("ann", ["Ann", CYRILLIC_ANN]), (CYRILLIC_ABC, ["ABC"]), ("BOB", [FULLWIDTH_BOB]),
                            ("carl", ["Carl"])):
            with pytest.raises(ServiceError) as refused:
                service.create_subject(name)
            expected = lookalike_refusal(name, alike)
            assert (refused.value.status, refused.value.code) == (409, "name_looks_alike")
            assert str(refused.value) == str(expected)
        assert service.create_subject("zed")["name"] == "zed"  # a removed "Zed" blocks nothing
        assert service.create_subject("ann", similar_name_ok=True)["name"] == "ann"
        with pytest.raises(ServiceError, match="1 existing subject: 'zed'"):
            service.create_subject("Zed")  # re-creating the removed "Zed" beside the live "zed": refused likewise
        assert service.create_subject("Dora")["name"] == "Dora"
    finally:
        service.close()


def test_enroll_gives_the_same_name_warnings_without_reading_every_name(db: str, no_listing) -> None:
    _gallery(db)
    new = ["ann", "Ann", "\uff21\uff22\uff23", "Bob", "zed", "Dora", "dora", "Eve"]  # ＡＢＣ: fullwidth
    expected = name_warnings(new, LIVE)  # against every live name, as before
    assert len(expected) >= 5 and any("in the gallery already: 'ABC'" in w for w in expected)
    with Gallery.open(db) as g:  # missing photos: skipped, so nothing is embedded
        report = g.enroll([f"/nonexistent/{i}.pgm" for i in range(len(new))], new, workers=1, progress=False)
    assert report.name_warnings == expected


def test_names_that_differ_only_in_white_space_look_alike(db: str) -> None:
    """A page shows "Ann  Smith" as "Ann Smith" (HTML collapses white space): their keys are one (KEY_VERSION 2);
    a gallery whose keys were stored by version 1 gets them again on open, so the stored key finds the look-alike."""
    assert lookalike_key("Ann  Smith") == lookalike_key(" ann\tsmith ") == lookalike_key("ANN SMITH") == "ann smith"
    assert lookalike_key("Ann-Smith") != lookalike_key("Ann Smith")
    Gallery.create(db, matcher=FAST_MATCHER).close()
    with open_store(db) as s:
        s.add_subject("Ann  Smith")
        s._exec("UPDATE subjects SET lookalike_key = 'ann  smith'")  # as version 1 stored it
        s._exec("UPDATE state SET key_version = 1")
    with open_store(db) as s:
        assert s.subject_names_by_key([lookalike_key("Ann Smith")]) == ["Ann  Smith"]
