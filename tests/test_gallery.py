"""The persistent gallery: stores (SQLite, PostgreSQL), enrolment, removal, per-subject search, the vector files
kept in step with the store, crash safety and the ``enroll`` / ``gallery`` commands."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER, PERSON_COUNTS, write_synthetic

from lookalike.cli import main
from lookalike.gallery import Gallery, SchemaError, StoreError, VectorsMismatchError, open_store
from lookalike.gallery import gallery as gallery_module
from lookalike.gallery import sql as gallery_sql
from lookalike.gallery import store as gallery_store
from lookalike.gallery.vectors import vector_dir
from lookalike.matchers.align import FaceAligner
from lookalike.matchers.cache import EmbeddingCache

SRC = Path(__file__).resolve().parents[1] / "src"
N_IMAGES = sum(PERSON_COUNTS.values())


# --- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingCache:
    """One embedding cache for the module's tests (the synthetic faces are the same in every test)."""
    return EmbeddingCache(tmp_path_factory.mktemp("cache") / "embeddings.sqlite")


def _table(root: Path) -> tuple[list[str], list[str]]:
    paths = sorted(root.glob("*/*"))
    return [str(p) for p in paths], [p.parent.name for p in paths]


def _create(db: str, **kw) -> Gallery:
    return Gallery.create(db, matcher=FAST_MATCHER, **kw)


def _enrolled(db: str, face_folders: Path, cache: EmbeddingCache) -> Gallery:
    g = _create(db)
    paths, subjects = _table(face_folders)
    g.enroll(paths, subjects, cache=cache, workers=1, progress=False, chunk_size=8)
    return g


def _brute_force(g: Gallery, q: np.ndarray) -> list[tuple[str, float]]:
    """Every subject scored by its best image, best first (reference for search)."""
    snap = g.store.snapshot(g.matcher_name, g.preprocess)
    sims = snap.vectors @ q
    best = {}
    for s, v in zip(snap.subjects, sims, strict=True):
        best[s] = max(best.get(s, -np.inf), float(v))
    return sorted(best.items(), key=lambda x: -x[1])


# --- enrolment, removal --------------------------------------------------------------------------------------
def test_enroll_then_reenroll_does_no_work(db: str, face_folders: Path) -> None:
    cache = EmbeddingCache(None)
    g = _create(db)
    paths, subjects = _table(face_folders)
    r = g.enroll(paths, subjects, cache=cache, workers=1, progress=False, chunk_size=8)
    assert (r.added, r.already_enrolled, sum(r.skipped.values()), len(r.duplicates)) == (N_IMAGES, 0, 0, 0)
    assert r.computed == N_IMAGES
    assert g.subjects() == sorted(PERSON_COUNTS)
    s = g.stats()
    assert (s["subjects"], s["images"], s["vectors"], s["dim"]) == (len(PERSON_COUNTS), N_IMAGES, N_IMAGES, 128)
    assert [im.path for im in g.images("p09")] == sorted(str(p) for p in (face_folders / "p09").iterdir())
    im = g.images("p09")[0]
    assert im.status == "ok" and im.method in ("detected", "central") and len(im.sha1) == 40
    assert im.box is not None and im.landmarks.shape == (5, 2)
    gen = g.store.generation()
    again = g.enroll(paths, subjects, cache=cache, workers=1, progress=False)
    assert (again.added, again.already_enrolled, again.computed) == (0, N_IMAGES, 0)
    assert g.store.generation() == gen  # nothing changed
    g.close()
    with Gallery.open(db) as g2:
        assert g2.stats()["images"] == N_IMAGES


def test_remove_subject_and_remove_twice_is_an_error(db: str, face_folders: Path,
        cache: EmbeddingCache) -> None:
    with _enrolled(db, face_folders, cache) as g:
        assert g.remove("p09") == PERSON_COUNTS["p09"]
        assert "p09" not in g.subjects()
        assert g.stats()["vectors"] == N_IMAGES - PERSON_COUNTS["p09"]
        assert "p09" not in set(g.search(g.vectors_[:3], k=100).subjects.ravel())
        with pytest.raises(ValueError, match="'p09' was already removed"):
            g.remove("p09")
        with pytest.raises(ValueError, match="'nobody' is not in the gallery"):
            g.remove("nobody")
        with pytest.raises(ValueError, match="was removed"):
            g.images("p09")
        # a removed subject can be enrolled again
        paths = sorted(str(p) for p in (face_folders / "p09").iterdir())
        assert g.enroll(paths, ["p09"] * len(paths), cache=cache, workers=1, progress=False).added == len(paths)
        assert "p09" in g.subjects()


def test_skips_duplicates_and_repeats_are_reported(db: str, face_folders: Path, tmp_path: Path,
        cache: EmbeddingCache) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    same = face_folders / "p00" / "0.png"
    paths = [str(same), str(same), str(tmp_path / "empty.png"), str(tmp_path / "text.png"),
             str(tmp_path / "gone.png"), str(same)]
    subjects = ["a", "a", "a", "a", "a", "b"]
    with _create(db) as g:
        r = g.enroll(paths, subjects, cache=cache, workers=1, progress=False)
        assert r.added == 2  # "a" and "b" each get the image once
        assert dict(r.skipped) == {"repeated": 1, "empty": 1, "unreadable": 1, "missing": 1}
        assert len(r.messages) == 4 and any("gone.png" in m for m in r.messages)
        # the image under "a" and under "b" (the repeat under "a" is skipped, not a third duplicate)
        assert [(d["subject"], d["also_under"]) for d in r.duplicates] == [("a", ["b"]), ("b", ["a"])]
        # deterministic failures are recorded and not retried; the missing file is retried
        again = g.enroll(paths, subjects, cache=cache, workers=1, progress=False)
        assert (again.added, again.already_enrolled, again.computed) == (0, 2, 0)
        assert again.skipped["empty"] == 1 and again.skipped["missing"] == 1
        assert g.stats()["images_unusable"] == 2


def test_hostile_subject_names_are_stored_verbatim(db: str, face_folders: Path, tmp_path: Path,
        cache: EmbeddingCache) -> None:
    names = ["Robert'); DROP TABLE subjects;--", "../../../etc/passwd", "a|b\\c", "x\" OR 1=1 --", "Zoë 李"]
    paths = [str(p) for p in sorted(face_folders.glob("*/*"))[:len(names)]]
    before = set(tmp_path.iterdir())
    with _create(db) as g:
        assert g.enroll(paths, names, cache=cache, workers=1, progress=False).added == len(names)
        assert g.subjects() == sorted(names)
        assert {im.subject for im in g.store.list_images()} == set(names)
        res = g.search(g.vectors_[:1], k=10)
        assert set(res.subjects[0]) == set(names)
        assert g.remove(names[0]) == 1 and g.subjects() == sorted(names[1:])
    created = set(tmp_path.iterdir()) - before
    assert created <= {tmp_path / "g.sqlite", tmp_path / "g.sqlite.vectors", tmp_path / "g.sqlite-wal",
                       tmp_path / "g.sqlite-shm"}
    assert not (tmp_path.parent / "etc").exists()


def test_bad_enrol_input_is_a_clear_error(tmp_path: Path, face_folders: Path) -> None:
    with _create(str(tmp_path / "g.sqlite")) as g:
        with pytest.raises(ValueError, match="2 paths but 1 subjects"):
            g.enroll(["a", "b"], ["x"], progress=False)
        with pytest.raises(ValueError, match="empty"):
            g.enroll(["a"], ["  "], progress=False)
    with pytest.raises(ValueError, match="unknown matcher"):
        Gallery.create(str(tmp_path / "h.sqlite"), matcher="nope")
    with pytest.raises(StoreError, match="already holds a gallery"):
        _create(str(tmp_path / "g.sqlite"))
    with pytest.raises(StoreError, match="no gallery at"):
        Gallery.open(str(tmp_path / "missing.sqlite"))
    assert not (tmp_path / "missing.sqlite").exists()


# --- search --------------------------------------------------------------------------------------------------
def test_search_returns_each_subject_once_with_its_best_image(db: str, face_folders: Path,
        cache: EmbeddingCache) -> None:
    with _enrolled(db, face_folders, cache) as g:
        rng = np.random.default_rng(0)
        target = g.image_ids_.tolist().index(g.store.list_images("p09")[2].id)
        q = g.vectors_[target] + 0.05 * rng.normal(size=128).astype(np.float32)
        q = (q / np.linalg.norm(q)).astype(np.float32)
        res = g.search(np.stack([q, g.vectors_[0]]), k=5)
        assert res.subjects.shape == res.image_ids.shape == res.scores.shape == res.paths.shape == (2, 5)
        assert res.vectors.shape == (2, 5, 128)
        assert res.subjects[0, 0] == "p09" and res.image_ids[0, 0] == g.image_ids_[target]
        expect = _brute_force(g, q)[:5]
        assert res.subjects[0].tolist() == [s for s, _ in expect]
        np.testing.assert_allclose(res.scores[0], [v for _, v in expect], rtol=1e-5)
        for j in range(5):  # each candidate is represented by its own best image
            assert res.subjects[0, j] == g.subjects_[g.image_ids_.tolist().index(res.image_ids[0, j])]
            np.testing.assert_allclose(res.vectors[0, j] @ q, res.scores[0, j], rtol=1e-5)
            assert res.paths[0, j] in {im.path for im in g.images(res.subjects[0, j])}
        for row in res.subjects:
            assert len(set(row)) == len(row)
        everyone = g.search(q[None], k=1000)
        assert everyone.subjects.shape == (1, len(PERSON_COUNTS))  # K' = min(k, subjects)
        assert np.all(np.diff(everyone.scores[0]) <= 0)


def test_search_input_is_checked(tmp_path: Path, face_folders: Path, cache: EmbeddingCache) -> None:
    with _create(str(tmp_path / "e.sqlite")) as empty:
        with pytest.raises(ValueError, match="no enrolled images"):
            empty.search(np.zeros((1, 128), np.float32))
    with _enrolled(str(tmp_path / "g.sqlite"), face_folders, cache) as g:
        for bad, msg in ((np.zeros(128), "2-D"), (np.zeros((1, 64)), "dimension 64"),
                         (np.full((1, 128), np.nan), "NaN"), (np.array([["a"] * 128]), "numeric")):
            with pytest.raises(ValueError, match=msg):
                g.search(bad)
        for k in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match="positive integer"):
                g.search(g.vectors_[:1], k=k)
        assert g.search(np.zeros((0, 128), np.float32), k=3).subjects.shape == (0, 3)


def test_check_compatible_names_both_sides(tmp_path: Path) -> None:
    with _create(str(tmp_path / "g.sqlite"), lowres=16) as g:
        g.check_compatible(FAST_MATCHER, FaceAligner().name, "lowres16-chip17")
        with pytest.raises(ValueError, match=r"preprocess 'full' \(probe\) vs 'lowres16-chip17' \(gallery\)"):
            g.check_compatible(FAST_MATCHER, FaceAligner().name, "full")
        with pytest.raises(ValueError, match=r"matcher 'other-net' \(probe\) vs 'dlib-resnet-v1' \(gallery\)"):
            g.check_compatible("other-net", FaceAligner().name, "lowres16-chip17")
        with pytest.raises(ValueError, match="aligner"):
            g.check_compatible(FAST_MATCHER, FaceAligner(0.9).name, "lowres16-chip17")


def test_two_galleries_on_one_store_see_each_others_changes(db: str, face_folders: Path,
        cache: EmbeddingCache) -> None:
    paths, subjects = _table(face_folders)
    first = [i for i, s in enumerate(subjects) if s != "p09"]
    with _create(db) as a:
        a.enroll([paths[i] for i in first], [subjects[i] for i in first], cache=cache, workers=1, progress=False)
        with Gallery.open(db) as b:
            probe = a.vectors_[:1]
            assert "p09" not in set(b.search(probe, k=100).subjects[0])
            rest = [i for i, s in enumerate(subjects) if s == "p09"]
            a.enroll([paths[i] for i in rest], [subjects[i] for i in rest], cache=cache, workers=1, progress=False)
            assert "p09" in set(b.search(probe, k=100).subjects[0])
            b.remove("p00")
            assert "p00" not in set(a.search(probe, k=100).subjects[0])
            assert a.stats()["vectors"] == b.stats()["vectors"] == N_IMAGES - 1


def _same_as_a_fresh_load(g: Gallery) -> None:
    with Gallery.open(g.store.url) as fresh:
        fresh.refresh()
        assert np.array_equal(g.image_ids_, fresh.image_ids_) and np.array_equal(g.vectors_, fresh.vectors_)
        assert list(g.subjects_) == list(fresh.subjects_) and list(g.paths_) == list(fresh.paths_)
        code_of = dict(zip(g.subjects_, g.subject_codes_, strict=True))  # one code per subject, distinct
        assert [code_of[s] for s in g.subjects_] == list(g.subject_codes_)
        assert len(set(code_of.values())) == len(code_of)


def test_another_galleries_additions_are_caught_up_without_a_reload(db: str, face_folders: Path,
        cache: EmbeddingCache, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gallery behind by other processes' enrolments reads only the added rows (mapping the shared vector files
    when the enrolling process wrote them, else bringing them up to date); a removal, or added rows whose ids are
    not above the ones it holds (PostgreSQL ids can commit out of order), make it reload everything."""
    from lookalike.gallery.vectors import saved_generation

    paths, subjects = _table(face_folders)

    def enroll(g: Gallery, *people: str) -> None:
        rows = [i for i, s in enumerate(subjects) if s in people]
        g.enroll([paths[i] for i in rows], [subjects[i] for i in rows], cache=cache, workers=1, progress=False,
                 chunk_size=2)

    def counting_loads(g: Gallery) -> list:
        loads, real = [], g._load
        monkeypatch.setattr(g, "_load", lambda *x, **k: (loads.append(1), real(*x, **k))[1])
        return loads

    with _create(db) as a:
        enroll(a, *[s for s in PERSON_COUNTS if s not in ("p08", "p09", "p10", "p11", "p12", "p13")])
        with Gallery.open(db) as b:
            b.refresh()
            a_loads, b_loads = counting_loads(a), counting_loads(b)
            enroll(a, "p08")  # several generations (chunks of 2)
            enroll(a, "p09")
            probe = a.vectors_[-1:]
            assert b.search(probe, k=1).subjects[0, 0] == "p09" and b_loads == []
            assert b.generation_ == a.store.generation()
            if b.vector_dir is not None:  # the enrolling gallery wrote the files: b maps them, no private copy
                assert isinstance(b.vectors_, np.memmap) and np.shares_memory(b.index_.vectors, b.vectors_)
            _same_as_a_fresh_load(b)
            a.store.add_subject("p10")  # as the service creates a subject: a's next enrolment finds the store moved
            enroll(a, "p10")
            assert "p10" in set(b.search(probe, k=100).subjects[0]) and "p10" in set(a.search(probe, k=100).subjects[0])
            assert a_loads == b_loads == [] and a.generation_ == b.generation_ == a.store.generation()
            if b.vector_dir is not None:  # the files were behind: brought up to date (appended), not rewritten
                assert saved_generation(b.vector_dir) == a.store.generation()
                with Gallery.open(db) as fresh:
                    fresh.refresh()
                    assert fresh.vectors_source_ == "file"
            _same_as_a_fresh_load(b)
            _same_as_a_fresh_load(a)
            a.remove("p00")
            assert "p00" not in set(b.search(probe, k=100).subjects[0]) and b_loads == [1]
            _same_as_a_fresh_load(b)
            b.image_ids_[-1] += 10**6  # as if b held a row committed above the ids of the next enrolment
            enroll(a, "p11")
            assert "p11" in set(b.search(probe, k=100).subjects[0]) and b_loads == [1, 1]
            _same_as_a_fresh_load(b)
            monkeypatch.setattr(gallery_module, "CATCH_UP_ROWS", 0)  # more rows than that beside vector files: reload
            enroll(a, "p12", "p13")  # 3 rows, more than a sixteenth of b's
            assert {"p12", "p13"} <= set(b.search(probe, k=100).subjects[0])
            assert b_loads == ([1, 1, 1] if b.vector_dir is not None else [1, 1])
            _same_as_a_fresh_load(b)


# --- the vector files beside a SQLite gallery ------------------------------------------------------------------
def _break_count(d: Path) -> None:
    state = json.loads((d / "state.json").read_text())
    (d / "state.json").write_text(json.dumps({**state, "count": state["count"] - 1}))


def _break_generation(d: Path) -> None:
    state = json.loads((d / "state.json").read_text())
    (d / "state.json").write_text(json.dumps({**state, "generation": state["generation"] - 1}))


def _break_row(d: Path) -> None:
    v = np.load(d / "vectors.npy")
    v[0] = -v[0]
    np.save(d / "vectors.npy", v)


def _break_ids(d: Path) -> None:
    ids = np.load(d / "ids.npy")
    np.save(d / "ids.npy", ids[::-1].copy())


def _truncate(d: Path) -> None:
    data = (d / "vectors.npy").read_bytes()
    (d / "vectors.npy").write_bytes(data[:len(data) // 2])


@pytest.mark.parametrize("damage", [lambda d: (d / "state.json").unlink(), _break_generation],
                         ids=["no-state", "older-generation"])
def test_vector_files_missing_or_older_than_the_store_are_rebuilt(tmp_path: Path, face_folders: Path,
                                                                   damage, cache: EmbeddingCache) -> None:
    db = str(tmp_path / "g.sqlite")
    with _enrolled(db, face_folders, cache) as g:
        probe = g.vectors_[:4].copy()
        expect = g.search(probe, k=5)
    with Gallery.open(db) as g:
        assert g.vectors_source_ == "file"
        assert isinstance(g.vectors_, np.memmap)
    damage(vector_dir(db))
    with Gallery.open(db) as g:
        assert g.vectors_source_.startswith("store (vector files rebuilt")
        got = g.search(probe, k=5)
        np.testing.assert_array_equal(got.image_ids, expect.image_ids)
        np.testing.assert_allclose(got.scores, expect.scores, rtol=1e-6)
    with Gallery.open(db) as g:
        assert g.vectors_source_ == "file"  # rewritten in good order


@pytest.mark.parametrize("damage,problem", [
    (lambda d: (d / "vectors.npy").unlink(), "vectors.npy is missing"),
    (_truncate, "vectors.npy is unreadable"),
    (_break_count, f"ids.npy is int64 ({N_IMAGES},), state.json says {N_IMAGES - 1} int64 ids"),
    (_break_row, "saved vector of image"),
    (_break_ids, "saved image ids differ"),
    (lambda d: (d / "state.json").write_text("{not json"), "unreadable state.json"),
], ids=["no-vectors", "truncated", "count", "row", "ids", "bad-json"])
def test_vector_files_that_disagree_at_the_stores_generation_are_refused(
        tmp_path: Path, face_folders: Path, damage, problem: str, cache: EmbeddingCache,
        capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "g.sqlite")
    _enrolled(db, face_folders, cache).close()
    damage(vector_dir(db))
    with pytest.raises(VectorsMismatchError, match="rebuild-vectors") as e:
        Gallery.open(db)
    assert problem in str(e.value) and str(vector_dir(db)) in str(e.value) and "\n" not in str(e.value)
    assert main(["gallery", "stats", "--db", db]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lookalike: error: {vector_dir(db)}: vector files disagree with the database")
    assert f"`lookalike gallery rebuild-vectors --db {db}`" in err and err.count("\n") == 1
    assert main(["gallery", "rebuild-vectors", "--db", db]) == 0
    assert f"rewrote {vector_dir(db)} from the database: {N_IMAGES} vectors" in capsys.readouterr().out
    with Gallery.open(db) as g:
        assert g.vectors_source_ == "file" and len(g.image_ids_) == N_IMAGES
        np.testing.assert_array_equal(g.vectors_, g.store.snapshot(g.matcher_name, g.preprocess).vectors)


# --- schema versions -------------------------------------------------------------------------------------------
def test_newer_schema_is_refused(db: str, capsys: pytest.CaptureFixture) -> None:
    _create(db).close()
    with open_store(db) as s:
        s._exec("UPDATE state SET schema_version = 99")
    with pytest.raises(SchemaError, match="schema version 99, newer than this lookalike reads"):
        Gallery.open(db)
    assert main(["gallery", "stats", "--db", db]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lookalike: error:") and "upgrade lookalike" in err and err.count("\n") == 1


def test_older_schema_is_migrated_on_open(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _create(db).close()
    gen = open_store(db).generation()
    v = gallery_store.SCHEMA_VERSION
    monkeypatch.setattr(gallery_store, "SCHEMA_VERSION", v + 1)
    monkeypatch.setattr(gallery_sql, "MIGRATIONS", {**gallery_sql.MIGRATIONS,
                                                    v: ["ALTER TABLE subjects ADD COLUMN note TEXT"]})
    with open_store(db) as s:  # a migration changes nothing a search reads: the generation stays
        assert s.schema_version() == v + 1 and s.generation() == gen
        s._exec("SELECT note FROM subjects")


def test_subjects_are_listed_by_prefix_and_page_and_counted_without_a_listing(db: str) -> None:
    from lookalike.gallery.store import NewImage

    _create(db).close()
    with open_store(db) as s:
        v = np.ones(4, np.float32) / 2
        for name in ("ann", "anna", "bob", "Ann", "zoë", "annex"):
            s.add_subject(name)
        s.add_images([NewImage("anna", "/x/1", "1" * 40, "ok", embedding=v), NewImage("anna", "/x/2", "2" * 40, "ok",
                      embedding=v), NewImage("bob", "/x/3", "3" * 40, "no_face", message="none")], "m", "p")
        s.delete_subject("annex")
        names = lambda **kw: [x.name for x in s.list_subjects(**kw)]  # noqa: E731
        everyone = names()
        assert sorted(everyone) == everyone and set(everyone) == {"ann", "anna", "bob", "Ann", "zoë"}
        assert names(prefix="ann") == ["ann", "anna"] and names(prefix="ann", include_removed=True)[-1] == "annex"
        assert names(prefix="zo") == ["zoë"] and names(prefix="%") == [] and names(prefix="_nn") == []
        pages, after = [], None
        while page := names(after=after, limit=2):  # paging by the last name seen gives everyone once, in order
            pages.append(page)
            after = page[-1]
        assert [n for p in pages for n in p] == everyone and len(pages) == 3
        assert [x.n_images for x in s.list_subjects(prefix="anna")] == [2]
        assert s.count_subjects() == {"subjects": 5, "searchable": 1, "removed": 1, "images": 2, "skipped": 1}


def test_page_sessions_are_kept_by_hash_and_expire(db: str) -> None:
    """The service's page sessions in the store: upserted, read back, dropped; expired ones deleted on a write;
    a session write changes nothing a search depends on (the generation)."""
    from lookalike.gallery.store import SessionRecord

    _create(db).close()
    with open_store(db) as s:
        gen = s.generation()
        s.put_session(SessionRecord("a" * 64, "csrf-a", 1000.0, False, "", ""), now=500.0)
        s.put_session(SessionRecord("b" * 64, "csrf-b", 2000.0, True, "env", "Examiner A"), now=500.0)
        assert s.get_session("a" * 64) == SessionRecord("a" * 64, "csrf-a", 1000.0, False, "", "")
        s.put_session(SessionRecord("a" * 64, "csrf-a", 3000.0, True, "7", "Examiner B"), now=500.0)  # replaced
        assert s.get_session("a" * 64) == SessionRecord("a" * 64, "csrf-a", 3000.0, True, "7", "Examiner B")
        s.put_session(SessionRecord("c" * 64, "csrf-c", 4000.0, False, "", ""), now=2500.0)  # b expired: deleted
        assert s.get_session("b" * 64) is None and s.get_session("c" * 64) is not None
        s.drop_session("a" * 64)
        s.drop_session("never-there")
        assert s.get_session("a" * 64) is None and s.generation() == gen


def test_a_schema_2_gallery_gets_its_sessions_changes_and_derived_tables(db: str) -> None:
    from lookalike.gallery.store import SessionRecord

    _create(db).close()
    with open_store(db) as s:
        s._exec("DROP TABLE sessions")
        s._exec("DROP TABLE changes")
        s._exec("DROP TABLE derived")
        s._exec("ALTER TABLE searches DROP COLUMN recorded_by")
        s._exec("ALTER TABLE reviews DROP COLUMN recorded_by")
        s._exec("DROP INDEX searches_probe")
        s._exec("DROP INDEX searches_ambiguous")
        s._exec("ALTER TABLE searches DROP COLUMN ambiguous")
        s._exec("DROP INDEX subjects_lookalike_key")
        s._exec("ALTER TABLE subjects DROP COLUMN lookalike_key")
        s._exec("ALTER TABLE state DROP COLUMN key_version")
        s._exec("UPDATE state SET schema_version = 2")
        gen = s.generation()
    with open_store(db) as s:  # migrated on opening
        assert s.schema_version() == gallery_store.SCHEMA_VERSION == 9
        sid = s.add_search(None, "x" * 40, {"results": []}, recorded_by="3")
        s.add_review(sid, "ann", "match", "Examiner A", recorded_by="env:abc")
        assert s.get_search(sid).recorded_by == "3" and s.list_reviews(sid)[0].recorded_by == "env:abc"
        s.put_session(SessionRecord("k" * 64, "c", 9e9, True, "1", ""), now=0.0)
        assert s.get_session("k" * 64).authenticated
        assert s.get_derived("calibration") is None and s.put_derived("calibration", '{"a": 1}')
        assert s.put_derived("calibration", '{"a": 2}') and s.get_derived("calibration") == '{"a": 2}'  # replaced
        assert s.generation() == gen and s.changes_since(gen)[1].size == 0  # nothing since: nothing to read
        s.add_subject("ann")  # a subject without images adds nothing a search reads; a removal is a reload
        assert s.changes_since(gen)[0] == gen + 1 and s.changes_since(gen)[1].size == 0
        s.delete_subject("ann")
        assert s.changes_since(gen) == (gen + 2, None) and s.changes_since(gen - 1)[1] is None


def test_not_a_gallery_is_refused(tmp_path: Path) -> None:
    from lookalike.matchers.cache import EmbeddingCache

    EmbeddingCache(tmp_path / "cache.sqlite").close()
    with pytest.raises(SchemaError, match="not a lookalike gallery"):
        Gallery.open(str(tmp_path / "cache.sqlite"))
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable gallery database"):
        Gallery.open(str(tmp_path / "junk.sqlite"))
    with pytest.raises(StoreError, match="unsupported gallery URL"):
        open_store("mysql://x/y")


# --- the service log -------------------------------------------------------------------------------------------
def _one_face(ambiguous: bool) -> dict:
    """A stored search's result of one face (the identify document's shape), ``ambiguous`` or not."""
    return {"results": [{"photo": "p.jpg", "faces": [{"candidates": [{"subject": "x"}], "ambiguous": ambiguous}]}]}


def test_searches_are_filtered_by_review_and_ambiguity_and_neighbours_found(db: str) -> None:
    """The review queue in the store: ``list_searches`` by ``reviewed`` and ``ambiguous`` (the result's flag, kept in
    a column) with the ``before`` cursor, newest first; ``adjacent_search`` gives the nearest older or newer search,
    or the nearest older one awaiting review."""
    _create(db).close()
    with open_store(db) as s:
        flags = [False, True, False, True, False, False]  # ambiguous, by search
        ids = [s.add_search(None, f"{i:040d}", _one_face(a)) for i, a in enumerate(flags)]
        for i in (1, 2, 5):  # reviewed (twice for one)
            s.add_review(ids[i], "x", "match", "ann")
        s.add_review(ids[2], "x", "non-match", "bob")
        listed = lambda **kw: [r.id for r in s.list_searches(**kw)]  # noqa: E731
        newest_first = ids[::-1]
        assert listed() == newest_first
        assert listed(reviewed=True) == [ids[5], ids[2], ids[1]]
        assert listed(reviewed=False) == [ids[4], ids[3], ids[0]]
        assert listed(ambiguous=True) == [ids[3], ids[1]]
        assert listed(ambiguous=False) == [ids[5], ids[4], ids[2], ids[0]]
        assert listed(reviewed=False, ambiguous=True) == [ids[3]]
        assert listed(reviewed=False, before=ids[3]) == [ids[0]] and listed(reviewed=False, limit=1) == [ids[4]]
        assert [r.ambiguous for r in s.list_searches()] == flags[::-1] and s.get_search(ids[3]).ambiguous
        assert s.adjacent_search(ids[3]) == ids[2] and s.adjacent_search(ids[3], newer=True) == ids[4]
        assert s.adjacent_search(ids[3], reviewed=False) == ids[0] and s.adjacent_search(ids[0], reviewed=False) is None
        assert s.adjacent_search(ids[0]) is None and s.adjacent_search(ids[5], newer=True) is None


def test_the_ambiguous_filter_reads_an_index_not_every_result(tmp_path: Path) -> None:
    """"Ambiguous only", newest first, is a range of the index on (ambiguous, id): SQLite's plan searches the index
    instead of scanning the searches (each row holding its result's JSON)."""
    db = str(tmp_path / "g.sqlite")
    _create(db).close()
    with open_store(db) as s:
        where, params = gallery_sql._search_filter(before=10, ambiguous=True)
        plan = " ".join(str(r[-1]) for r in s._exec("EXPLAIN QUERY PLAN SELECT id FROM searches" + where
                                                     + " ORDER BY id DESC LIMIT 200", params).fetchall())
    assert "USING COVERING INDEX searches_ambiguous" in plan and "SCAN" not in plan, plan


def test_a_schema_7_gallery_gets_its_searches_marked_ambiguous(db: str) -> None:
    """Opening a gallery of schema 7 (no ``ambiguous`` column) adds the column and its index and sets it from each
    stored search's result."""
    _create(db).close()
    with open_store(db) as s:
        flags = [True, False, True] * 400  # more than one chunk of the migration's
        ids = [s.add_search(None, f"{i:040d}", _one_face(a)) for i, a in enumerate(flags)]
        s._exec("DROP INDEX searches_ambiguous")
        s._exec("ALTER TABLE searches DROP COLUMN ambiguous")
        s._exec("DROP INDEX subjects_lookalike_key")
        s._exec("ALTER TABLE subjects DROP COLUMN lookalike_key")
        s._exec("ALTER TABLE state DROP COLUMN key_version")
        s._exec("UPDATE state SET schema_version = 7")
        gen = s.generation()
    with open_store(db) as s:
        assert s.schema_version() == gallery_store.SCHEMA_VERSION == 9 and s.generation() == gen
        marked = [i for i, a in zip(ids, flags, strict=True) if a][::-1]
        assert [r.id for r in s.list_searches(limit=2000, ambiguous=True)] == marked
        assert s.get_search(ids[0]).ambiguous and not s.get_search(ids[1]).ambiguous


def test_searches_and_reviews_are_an_append_only_log(db: str) -> None:
    with open_store(db) as s:
        gen = s.generation()
        sid = s.add_search(b"\x89PNG...", "ab" * 20, {"candidates": ["x", "y"]})
        s.add_review(sid, "x", "non-match", "alice", "different ears")
        s.add_review(sid, "y", "match", "bob")
        assert s.get_search(sid, with_probe=True).probe == b"\x89PNG..."
        assert s.get_search(sid).result == {"candidates": ["x", "y"]}
        assert [r.verdict for r in s.list_reviews(sid)] == ["non-match", "match"]
        assert [x.id for x in s.list_searches()] == [sid]
        with pytest.raises(ValueError, match="verdict"):
            s.add_review(sid, "x", "maybe", "alice")
        with pytest.raises(KeyError):
            s.add_review(sid + 100, "x", "match", "alice")
        with pytest.raises(Exception, match="append-only"):
            s._exec("UPDATE reviews SET verdict = 'match'")
        with pytest.raises(Exception, match="append-only"):
            s._exec("DELETE FROM reviews")
        assert len(s.list_reviews()) == 2 and s.generation() == gen


def test_a_probe_photo_searched_again_is_stored_once(db: str) -> None:
    """Each face of a group photo is a search, and a photo may be sent again: its bytes are kept with the first
    search only, and every search of it reads them back."""
    photo = b"\x89PNG" + bytes(range(256)) * 400
    with open_store(db) as s:
        ids = [s.add_search(photo, "cd" * 20, {"face": i}) for i in range(5)]
        other = s.add_search(b"another photo", "ef" * 20, {"face": 0})
        assert all(s.get_search(i, with_probe=True).probe == photo for i in ids)
        assert s.get_search(other, with_probe=True).probe == b"another photo"
        assert s._exec("SELECT COUNT(*) FROM searches WHERE probe IS NOT NULL").fetchone()[0] == 2
        assert s.get_search(ids[3]).result == {"face": 3} and s.get_search(ids[3]).probe is None


OLD = "2000-01-01T00:00:00.000+00:00"  # a search made long ago


def _old_searches(db: str) -> tuple[dict[str, int], dict[str, bytes]]:
    """Searches of five photos (A-E), some made long ago, some reviewed: ids by name, photos by letter."""
    photos = {k: k.encode() * (1000 * (i + 1)) for i, k in enumerate("ABCDE")}
    ids = {}
    with open_store(db) as s:
        for name in ("a1", "a2", "a3", "b1", "b2", "c1", "d1", "e1", "e2"):
            ids[name] = s.add_search(photos[name[0].upper()], name[0] * 40, {"face": name})
        for name in ("b1", "e2"):
            s.add_review(ids[name], "x", "match", "alice")
        old = [ids[n] for n in ("a1", "a2", "b1", "b2", "c1", "e1", "e2")]
        s._exec(f"UPDATE searches SET created = ? WHERE id IN ({','.join('?' * len(old))})", [OLD, *old])
    return ids, photos


def test_unreviewed_old_searches_are_pruned_with_their_photos(db: str, capsys: pytest.CaptureFixture) -> None:
    """``gallery prune-searches``: old searches no examiner reviewed go, with the photos no search shows any more;
    reviewed ones stay (the audit trail refers to them), and a photo a deleted search held for a kept one is moved to
    it (A: kept for a newer search, E: for a reviewed one; B's bytes stay with its reviewed search; C goes)."""
    ids, photos = _old_searches(db)
    expected = {"dry_run": False, "searches_deleted": 5, "photos_deleted": 1, "photo_bytes_deleted": len(photos["C"]),
                "reviewed_kept": 2, "newer_kept": 2, "photos_moved": 2}
    with open_store(db) as s:
        before = s._exec("SELECT id, probe FROM searches ORDER BY id").fetchall()
    assert main(["gallery", "prune-searches", "--db", db, "--older-than", "30", "--dry-run", "--format", "json"]) == 0
    dry = json.loads(capsys.readouterr().out)
    assert {k: dry[k] for k in expected} == {**expected, "dry_run": True} and dry["before"] > OLD
    with open_store(db) as s:
        assert s._exec("SELECT id, probe FROM searches ORDER BY id").fetchall() == before  # a dry run changes nothing
    assert main(["gallery", "prune-searches", "--db", db, "--older-than", "30", "--format", "json"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert {k: done[k] for k in expected} == expected
    kept = ("a3", "b1", "d1", "e2")
    with open_store(db) as s:
        assert sorted(r.id for r in s.list_searches()) == sorted(ids[n] for n in kept)
        for name in kept:
            assert s.get_search(ids[name], with_probe=True).probe == photos[name[0].upper()], name
        assert len(s.list_reviews()) == 2
        assert s._exec("SELECT COUNT(*) FROM searches WHERE probe IS NOT NULL").fetchone()[0] == 4  # one copy each
        s.add_search(photos["A"], "a" * 40, {"face": "a4"})  # a photo sent again: still kept once
        assert s._exec("SELECT COUNT(*) FROM searches WHERE probe IS NOT NULL").fetchone()[0] == 4
    assert main(["gallery", "prune-searches", "--db", db, "--older-than", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "deleted 0 searches" in out and "kept 2 reviewed searches" in out and "and 3 newer ones" in out, out
    assert main(["gallery", "prune-searches", "--db", db, "--older-than", "0"]) == 0  # every unreviewed search
    assert "deleted 3 searches" in capsys.readouterr().out


def test_a_search_made_while_a_pruning_deletes_its_photo_keeps_the_photo(pg_url: str) -> None:
    """PostgreSQL: a search of a photo whose only holder a pruning is deleting waits for the pruning and then stores
    the photo itself (it had seen the holder before the pruning committed and stored none: its probe was lost); a
    verdict on a search being pruned waits, then finds it gone."""
    import threading

    with open_store(pg_url) as pruner, open_store(pg_url) as searcher:
        holder = pruner.add_search(b"photo", "a" * 40, {})
        other = pruner.add_search(b"other", "b" * 40, {})
        done: dict[str, object] = {}

        def search() -> None:
            done["search"] = searcher.add_search(b"photo", "a" * 40, {})

        def review() -> None:
            try:
                searcher.add_review(other, "x", "match", "alice")
            except KeyError as e:
                done["review"] = e

        for work, doomed in ((search, holder), (review, other)):
            with pruner._transaction(write=True):
                pruner._exec("LOCK TABLE searches IN EXCLUSIVE MODE")  # as prune_searches holds it
                t = threading.Thread(target=work)
                t.start()
                t.join(1.0)
                pruner._exec("DELETE FROM searches WHERE id = ?", (doomed,))
            t.join(30)
        assert searcher.get_search(done["search"], with_probe=True).probe == b"photo"
        assert isinstance(done["review"], KeyError) and pruner.list_reviews() == []


def test_prune_searches_refuses_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Negative, huge or non-numeric days, and a gallery that does not exist: exit 2 with a one-line error."""
    db = str(tmp_path / "g.sqlite")
    open_store(db).close()

    def run(argv: list[str]) -> int:
        try:
            return main(["gallery", "prune-searches", *argv])
        except SystemExit as e:  # argparse's error: its usage line, then the error line
            return e.code

    for argv, said in ((["--db", db, "--older-than", "-1"], "expected a number of days from 0 to 100000, got -1"),
                       (["--db", db, "--older-than", "nan"], "expected a number of days"),
                       (["--db", db, "--older-than", "1e9"], "got 1e9"),
                       (["--db", db, "--older-than", "ten"], "got 'ten'"),
                       (["--db", db], "--older-than"),
                       (["--db", str(tmp_path / "none.sqlite"), "--older-than", "30"], "no gallery at")):
        assert run(argv) == 2, argv
        err = capsys.readouterr().err
        assert said in err and err.splitlines()[-1].count("error:") == 1 and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "none.sqlite").exists()


# --- crash safety ----------------------------------------------------------------------------------------------
KILL_SCRIPT = """
import sys
sys.path.insert(0, {src!r})
from pathlib import Path
from lookalike.gallery import Gallery
from lookalike.gallery import NoGalleryError
paths = sorted(str(p) for p in Path({root!r}).glob("*/*"))
try:
    g = Gallery.open({db!r})
except NoGalleryError:
    g = Gallery.create({db!r}, matcher={matcher!r})
r = g.enroll(paths, [Path(p).parent.name for p in paths], workers=1, progress=False, chunk_size=4)
print(r.added, r.already_enrolled)
"""


def _count_images(db: str) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM images").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_kill_during_enrol_leaves_a_consistent_gallery_that_resumes(tmp_path: Path) -> None:
    root, n = tmp_path / "faces", 48
    for i in range(n):
        (root / f"s{i // 4:03d}").mkdir(parents=True, exist_ok=True)
        write_synthetic(root / f"s{i // 4:03d}" / f"{i}.png", 1000 + i)
    db = str(tmp_path / "g.sqlite")
    script = KILL_SCRIPT.format(src=str(SRC), root=str(root), db=db, matcher=FAST_MATCHER)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _count_images(db) < 8 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "enrolment finished before it could be killed: " + proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Gallery.open(db) as g:
        n_images = len(g.store.list_images())
        assert 8 <= n_images < n and n_images % 4 == 0  # whole chunks only
        snap = g.store.snapshot(g.matcher_name, g.preprocess)
        assert len(g.image_ids_) == len(snap.image_ids) == n_images == g.stats()["images"]
        np.testing.assert_array_equal(g.vectors_, snap.vectors)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    added, already = map(int, done.stdout.split())
    assert (added, already) == (n - n_images, n_images)
    with Gallery.open(db) as g:
        assert g.vectors_source_ == "file"
        assert len(g.image_ids_) == len(g.store.list_images()) == n


def test_another_process_enrolment_is_seen_on_the_next_search(pg_url: str, face_folders: Path,
        cache: EmbeddingCache) -> None:
    with _create(pg_url) as g:
        paths, subjects = _table(face_folders)
        g.enroll(paths[:1], subjects[:1], cache=cache, workers=1, progress=False)
        probe = g.vectors_[:1].copy()
        assert g.search(probe, k=100).subjects.shape == (1, 1)
        script = KILL_SCRIPT.format(src=str(SRC), root=str(face_folders), db=pg_url, matcher=FAST_MATCHER)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [str(N_IMAGES - 1), "1"]
        res = g.search(probe, k=100)
        assert res.subjects.shape == (1, len(PERSON_COUNTS))
        assert len(g.image_ids_) == N_IMAGES


# --- real faces ------------------------------------------------------------------------------------------------
def test_orl_probe_finds_its_subject(tmp_path: Path, orl_folders: Path, orl_dir: Path, cache: EmbeddingCache) -> None:
    with _enrolled(str(tmp_path / "g.sqlite"), orl_folders, cache) as g:
        from lookalike.embed import embed_paths

        probes = [orl_dir / s / "9.pgm" for s in ("s1", "s2", "s3", "s4")]
        emb = embed_paths(probes, g.matcher, g.aligner, g.lowres, cache=cache, workers=1, progress=False)
        res = g.search(emb.vectors, k=4)
        assert res.subjects[:, 0].tolist() == ["s1", "s2", "s3", "s4"]


# --- command line ----------------------------------------------------------------------------------------------
def test_cli_enroll_list_stats_remove(face_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        cache: EmbeddingCache) -> None:
    db = str(tmp_path / "g.sqlite")
    args = ["enroll", "--gallery", str(face_folders), "--db", db, "--matcher", FAST_MATCHER, "--cache", str(cache.path),
            "--workers", "1", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"added {N_IMAGES}, already enrolled 0, skipped 0" in out
    assert main(args[:-3] + ["--workers", "1", "--no-progress", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["added"] == 0 and report["already_enrolled"] == N_IMAGES
    assert main(["gallery", "list", "--db", db, "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {x["subject"]: x["images"] for x in listed} == PERSON_COUNTS
    assert main(["gallery", "list", "--db", db]) == 0
    assert "| p09 | 5 | 0 |" in capsys.readouterr().out
    assert main(["gallery", "stats", "--db", db, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == N_IMAGES
    assert main(["gallery", "remove", "p09", "--db", db]) == 0
    assert "5 images deleted" in capsys.readouterr().out
    for bad, msg in ((["gallery", "remove", "p09", "--db", db], "already removed"),
                     (["gallery", "list", "--db", str(tmp_path / "none.sqlite")], "no gallery at"),
                     (args + ["--lowres", "16"], "preprocess"),
                     (["enroll", "--gallery", str(tmp_path / "nope"), "--db", db], "dataset folder not found"),
                     (["gallery", "stats", "--db", "postgresql://nobody@127.0.0.1:1/x"], "cannot connect")):
        assert main(bad) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("lookalike: error:") and msg in err and err.count("\n") == 1, err


def test_cli_enroll_from_a_csv_manifest(face_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        cache: EmbeddingCache) -> None:
    rows = ["path,identity"] + [f"{p},{p.parent.name}" for p in sorted(face_folders.glob("p0[0-2]/*"))]
    rows.append(f"{face_folders / 'p03' / '0.png'},\"../../x; DROP TABLE images\"")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    db = str(tmp_path / "g.sqlite")
    assert main(["enroll", "--gallery", str(tmp_path / "m.csv"), "--db", db, "--matcher", FAST_MATCHER,
                 "--cache", str(cache.path), "--workers", "1", "--no-progress"]) == 0
    assert "added 4" in capsys.readouterr().out
    assert main(["gallery", "list", "--db", db, "--format", "json"]) == 0
    assert "../../x; DROP TABLE images" in [x["subject"] for x in json.loads(capsys.readouterr().out)]


def test_cli_help_lists_gallery_commands(capsys: pytest.CaptureFixture) -> None:
    for argv in (["enroll", "--help"], ["gallery", "remove", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "--db" in capsys.readouterr().out


def test_enroll_lists_what_the_loader_left_out(tmp_path: Path, face_folders: Path, capsys) -> None:
    """Entries no image can come from (a text file, a broken link, a nested folder, a photo outside any identity
    folder) are counted and listed by enroll, as embed and benchmark list them: nothing vanishes unsaid."""
    (face_folders / "p05" / "readme.txt").write_text("not an image")
    (face_folders / "p06" / "gone.png").symlink_to(face_folders / "p06" / "nowhere.png")
    (face_folders / "p06" / "nested").mkdir()
    (face_folders / "stray.png").write_bytes((face_folders / "p07" / "0.png").read_bytes())
    args = ["enroll", "--gallery", str(face_folders), "--db", str(tmp_path / "g.sqlite"), "--matcher", FAST_MATCHER,
            "--cache", "none", "--workers", "1", "--no-progress", "--format", "json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["added"] == sum(PERSON_COUNTS.values())
    assert out["skipped"] == {"broken_link": 1, "nested_folder": 1, "outside_identity_folder": 1,
                              "skipped_non_image_files": 1}
    assert sum("stray.png" in m for m in out["messages"]) == 1


def _enroll_args(face_folders: Path, db: str, cache: str, *more: str) -> list[str]:
    return ["enroll", "--gallery", str(face_folders), "--db", db, "--matcher", FAST_MATCHER, "--cache", cache,
            "--workers", "1", "--no-progress", *more]


def test_enroll_counts_the_duplicates_it_lists_on_every_run(tmp_path: Path, face_folders: Path, capsys) -> None:
    """A duplicate is an image in the gallery whose bytes another subject has too: a repeat skipped under the same
    subject, or a photo with no face under two names (in neither's gallery), is not one. The count is the lines
    listed, on the first run and on a rerun; ``gallery stats`` names what it counts (``images_unusable``: the images
    recorded as failing, not every skip of an enrolment)."""
    from PIL import Image

    same = face_folders / "p05" / "0.png"
    (face_folders / "p05" / "again.png").write_bytes(same.read_bytes())  # a repeat under p05: skipped
    (face_folders / "p06" / "copy.png").write_bytes(same.read_bytes())  # under p06 too: a duplicate, both listed
    for person in ("p07", "p08"):  # no face, under two names
        Image.new("RGB", (64, 64), (128, 128, 128)).save(face_folders / person / "blank.png")
    (face_folders / "p09" / "notes.txt").write_text("not a photo")
    db = str(tmp_path / "g.sqlite")
    for _ in range(2):
        assert main(_enroll_args(face_folders, db, str(tmp_path / "c.sqlite"))) == 0
        out, err = capsys.readouterr()
        listed = sorted(line.split(" (")[0] for line in err.splitlines() if line.startswith("duplicate: "))
        assert listed == [f"duplicate: {same}", f"duplicate: {face_folders / 'p06' / 'copy.png'}"]
        assert "duplicates 2 (same image under another subject)" in out
        assert "skipped 4 (no_face 2, repeated 1, skipped_non_image_files 1)" in out
    assert main(["gallery", "stats", "--db", db, "--format", "json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert "images_skipped" not in stats and stats["images_unusable"] == 2  # the two recorded no_face photos


def test_enroll_reports_its_elapsed_time_when_every_image_comes_from_the_cache(tmp_path: Path, face_folders: Path,
                                                                             capsys, monkeypatch) -> None:
    """Every face from the embedding cache: the time reported is the enrolment's, counted from before the folder is
    listed and the gallery opened (it had been the enrolment call's alone, printed as 0.0 s). Checked by the order of
    events, not by how long they took."""
    import lookalike.benchmark

    cache = str(tmp_path / "c.sqlite")
    assert main(_enroll_args(face_folders, str(tmp_path / "first.sqlite"), cache)) == 0
    capsys.readouterr()
    seen: dict[str, float] = {}
    listing, enrolling = lookalike.benchmark.load_dataset, Gallery.enroll

    def load_dataset(*a, **kw):
        seen["listed"] = time.perf_counter()
        return listing(*a, **kw)

    def enroll(self, *a, **kw):
        seen["started"], seen["called"] = kw["started"], time.perf_counter()
        return enrolling(self, *a, **kw)

    monkeypatch.setattr(lookalike.benchmark, "load_dataset", load_dataset)
    monkeypatch.setattr(Gallery, "enroll", enroll)
    start = time.perf_counter()
    assert main(_enroll_args(face_folders, str(tmp_path / "second.sqlite"), cache, "--format", "json")) == 0
    wall = time.perf_counter() - start
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["computed"]) == (N_IMAGES, 0)
    assert start <= seen["started"] <= seen["listed"] <= seen["called"]  # counted from before the listing
    rounding = 5e-4  # the JSON's 3 decimals
    assert seen["called"] - seen["started"] - rounding <= report["seconds"] <= wall + rounding, (report, seen, wall)
    from lookalike.gallery.gallery import format_seconds  # the table's figure

    assert (format_seconds(0.0321), format_seconds(0.004), format_seconds(0.5), format_seconds(12.34)) == (
        "0.032", "0.004", "0.5", "12.3")


def test_a_line_break_in_a_file_name_does_not_split_console_lines(tmp_path: Path, face_folders: Path, capsys) -> None:
    """enroll's duplicate and skip lines and identify's table write a control character in a name as its escape."""
    odd = face_folders / "p05" / "new\nline.png"
    odd.write_bytes((face_folders / "p06" / "0.png").read_bytes())  # p06's photo under p05: a duplicate
    (face_folders / "p05" / "x\x1b[2K.txt").write_text("not an image")
    db = str(tmp_path / "g.sqlite")
    assert main(["enroll", "--gallery", str(face_folders), "--db", db, "--matcher", FAST_MATCHER, "--cache", "none",
                 "--workers", "1", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "new\\nline.png" in err and "x\\x1b[2K.txt" in err and "new\nline" not in err and "\x1b" not in err
    assert main(["identify", str(odd), "--db", db]) == 0
    table = capsys.readouterr().out
    assert "new\\nline.png" in table and "new\nline" not in table


def _lookalike_folders(root: Path, orl_dir: Path, names: dict[str, str]) -> Path:
    """``root/<name>/<n>.pgm``: three photos of the ORL person ``names[name]`` under each folder name."""
    import shutil

    for name, person in names.items():
        (root / name).mkdir(parents=True)
        for n in (1, 2, 3):
            shutil.copy(orl_dir / person / f"{n}.pgm", root / name / f"{n}.pgm")
    return root


def test_enroll_warns_about_subject_names_that_look_alike(tmp_path: Path, orl_dir: Path, capsys,
                                                          cache: EmbeddingCache) -> None:
    """"Ann", "Аnn" (Cyrillic А) and "Ａｎｎ" (fullwidth) are enrolled as given, as three subjects, and warned about in
    one counted, listed block naming their code points beyond ASCII; a later "ann" collides with the gallery's names."""
    cyrillic, fullwidth = "\u0410nn", "\uff21\uff4e\uff4e"
    first = _lookalike_folders(tmp_path / "first", orl_dir, {"Ann": "s1", cyrillic: "s2", fullwidth: "s3", "Bob": "s4"})
    db, cache_arg = str(tmp_path / "g.sqlite"), str(cache.path)
    assert main(_enroll_args(first, db, cache_arg, "--format", "json")) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["added"] == 12 and report["name_warnings"] == 3 == len(report["names"])
    listed = [line for line in err.splitlines() if line.startswith("name: ")]
    assert listed == [f"name: {w}" for w in report["names"]]
    mixed, plain, group = report["names"]
    assert mixed.startswith(f"{cyrillic!r} (U+0410 CYRILLIC CAPITAL LETTER A) mixes cyrillic and latin letters")
    assert plain.startswith(f"{fullwidth!r} (U+FF21 FULLWIDTH LATIN CAPITAL LETTER A, U+FF4E FULLWIDTH LATIN SMALL "
                            "LETTER N) is not in its plain Unicode form (NFKC: 'Ann')")
    assert group.startswith(f"'Ann', {cyrillic!r} (U+0410") and fullwidth in group and "Bob" not in group
    assert "in the gallery already" not in group
    assert main(["gallery", "list", "--db", db, "--format", "json"]) == 0
    assert sorted(x["subject"] for x in json.loads(capsys.readouterr().out)) == sorted(["Ann", cyrillic, fullwidth,
                                                                                      "Bob"])
    second = _lookalike_folders(tmp_path / "second", orl_dir, {"ann": "s5", "Carl": "s6"})
    assert main(_enroll_args(second, db, cache_arg)) == 0
    out, err = capsys.readouterr()
    assert "added 6," in out and "names: 1 warning (" in out
    listed = [line for line in err.splitlines() if line.startswith("name: ")]
    assert len(listed) == 1 and listed[0].startswith(f"name: 'Ann', 'ann', {cyrillic!r} (U+0410")
    assert listed[0].endswith(f"in the gallery already: 'Ann', {cyrillic!r}, {fullwidth!r}")
    assert main(_enroll_args(second, str(tmp_path / "other.sqlite"), cache_arg, "--format", "json")) == 0
    assert json.loads(capsys.readouterr().out)["name_warnings"] == 0  # "ann" and "Carl" alone: nothing to warn of
