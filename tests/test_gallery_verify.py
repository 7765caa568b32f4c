"""``lookalike gallery verify`` / :meth:`Gallery.verify`: an audit of every searched vector against the database, of
the stored embeddings, of a saved index and (``--photos``) of every enrolled photo, writing nothing."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER

from lookalike.cli import main
from lookalike.gallery import Gallery
from lookalike.gallery import gallery as gallery_module
from lookalike.gallery.vectors import vector_dir
from lookalike.matchers.cache import EmbeddingCache

N_IMAGES = 12  # orl_folders: s1..s4, 3 photos each


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingCache:
    return EmbeddingCache(tmp_path_factory.mktemp("cache") / "embeddings.sqlite")


def _enrolled(db: str, orl_folders: Path, cache: EmbeddingCache, index: str = "numpy") -> None:
    paths = sorted(orl_folders.glob("*/*"))
    with Gallery.create(db, matcher=FAST_MATCHER, index=index) as g:
        g.enroll([str(p) for p in paths], [p.parent.name for p in paths], cache=cache, workers=1, progress=False)


def _files(db: str) -> dict[str, tuple[bytes, int]]:
    """Every file of the gallery (database, vector files, saved index) with its bytes and modification time."""
    paths = [Path(db), *sorted(p for p in vector_dir(db).rglob("*") if p.is_file())]
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in paths}


def _overwrite_row_in_place(db: str) -> int:
    """Overwrite a row of ``vectors.npy`` that opening does not sample with another face's bytes, in place, and
    give the file back its modification time (size, mtime and inode unchanged); returns the row's image id."""
    n = len(np.load(vector_dir(db) / "ids.npy"))
    sampled = set(np.linspace(0, n - 1, gallery_module.SPOT_CHECKS).astype(int).tolist())
    row = next(r for r in range(n) if r not in sampled)
    path = vector_dir(db) / "vectors.npy"
    before = path.stat()
    v = np.load(path, mmap_mode="r")
    offset, size = v.offset, v.shape[1] * 4
    donor = (row + n // 2) % n  # another subject's face
    with open(path, "r+b") as f:
        f.seek(offset + donor * size)
        data = f.read(size)
        f.seek(offset + row * size)
        f.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    return int(np.load(vector_dir(db) / "ids.npy")[row])


def _verify(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    code = main(["gallery", "verify", "--no-progress", *args])
    return code, capsys.readouterr().out


def test_an_intact_gallery_verifies_and_nothing_is_written(tmp_path: Path, orl_folders: Path, cache: EmbeddingCache,
                                                           capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "g.sqlite")
    _enrolled(db, orl_folders, cache)
    path = vector_dir(db) / "vectors.npy"
    touched = path.stat().st_mtime_ns + 10**9  # as by a copy restored: an opening compares every row, then re-stamps
    os.utime(path, ns=(touched, touched))
    before = _files(db)
    code, out = _verify(capsys, "--db", db, "--photos")
    assert code == 0, out
    assert f"{N_IMAGES} faces compared with the database's embeddings" in out
    assert f"photos: {N_IMAGES} re-read, 0 missing, 0 unreadable, 0 changed" in out
    assert out.rstrip().endswith("intact: no problems found")
    assert _files(db) == before
    with Gallery.open(db) as g:  # the Python API, on a gallery opened (loaded) as a service opens it
        report = g.verify(photos=True)
    assert report.ok and report.faces == N_IMAGES and report.photos == N_IMAGES and not report.changed


@pytest.mark.parametrize("index", ["numpy", "hnsw:m=8"])
def test_a_row_overwritten_in_place_is_found_though_opening_misses_it(
        tmp_path: Path, orl_folders: Path, cache: EmbeddingCache, capsys: pytest.CaptureFixture, index: str) -> None:
    db = str(tmp_path / "g.sqlite")
    _enrolled(db, orl_folders, cache, index)
    image_id = _overwrite_row_in_place(db)
    with Gallery.open(db) as g:  # the stamps agree: four sampled rows checked, the damage not seen
        assert g.vectors_source_ == "file"
    before = _files(db)
    code, out = _verify(capsys, "--db", db)
    assert code == 1, out
    lines = out.splitlines()
    with Gallery.open_for_verify(db) as g:
        subject = g.store.get_image(image_id).subject
    assert [x for x in lines if x.startswith("problem: vector_row:")] == [
        f"problem: vector_row: image {image_id} ('{subject}'): its searched vector differs from its embedding in "
        "the database"]
    assert f"`lookalike gallery rebuild-vectors --db {db}`" in out
    approximate = index != "numpy"
    assert ("saved index: does not match" in out) == approximate  # hashed again, its stamp not trusted
    assert any(x.startswith("problem: index:") for x in lines) == approximate
    assert lines[-1] == ("NOT intact: 2 problems (index 1, vector_row 1)" if approximate
                         else "NOT intact: 1 problem (vector_row 1)")
    assert _files(db) == before  # not stamped again, not rewritten
    assert main(["gallery", "rebuild-vectors", "--db", db]) == 0
    capsys.readouterr()
    code, out = _verify(capsys, "--db", db)
    assert code == 0 and ("saved index: matches" in out) == approximate, out


def test_changed_missing_and_unreadable_photos_are_listed_with_photos(
        tmp_path: Path, orl_folders: Path, cache: EmbeddingCache, capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "g.sqlite")
    _enrolled(db, orl_folders, cache)
    changed, gone, pipe = orl_folders / "s1" / "1.pgm", orl_folders / "s2" / "2.pgm", orl_folders / "s3" / "3.pgm"
    with open(changed, "ab") as f:
        f.write(b"\0")
    gone.unlink()
    pipe.unlink()
    os.mkfifo(pipe)  # never opened (it would block): not a regular file
    code, out = _verify(capsys, "--db", db)
    assert code == 0, out  # the photos are not read without --photos
    code, out = _verify(capsys, "--db", db, "--photos")
    assert code == 1, out
    assert f"problem: photo_changed: {changed}: the file has changed since it was enrolled" in out
    assert f"problem: photo_missing: {gone}: the file is gone" in out
    assert f"problem: photo_unreadable: {pipe}: the file cannot be read" in out
    assert f"photos: {N_IMAGES} re-read, 1 missing, 1 unreadable, 1 changed" in out
    assert "409 image_file_changed" in out and "404 image_file_missing" in out
    code, out = _verify(capsys, "--db", db, "--photos", "--format", "json")
    report = json.loads(out)
    assert code == 1 and report["intact"] is False
    assert set(report) == {"gallery", "intact", "generation", "faces", "vectors", "index", "photos", "photos_absent",
                           "problems_by_kind", "changed_during_check", "seconds", "remedies", "problems"}
    assert report["faces"] == N_IMAGES and report["photos"] == N_IMAGES and report["gallery"] == db
    assert report["problems_by_kind"] == {"photo_changed": 1, "photo_missing": 1, "photo_unreadable": 1}
    assert set(report["remedies"]) == set(report["problems_by_kind"])
    assert {(p["kind"], p["path"], p["subject"]) for p in report["problems"]} == {
        ("photo_changed", str(changed), "s1"), ("photo_missing", str(gone), "s2"),
        ("photo_unreadable", str(pipe), "s3")}
    assert all(isinstance(p["image_id"], int) for p in report["problems"])


def _break_embedding(db: str, value: float) -> int:
    """Fill one stored embedding of a SQLite gallery with ``value``; returns its image id."""
    with sqlite3.connect(db) as conn:
        image_id, blob = conn.execute("SELECT image_id, vector FROM embeddings ORDER BY image_id LIMIT 1").fetchone()
        bad = np.full(len(blob) // 4, value, np.float32)
        conn.execute("UPDATE embeddings SET vector = ? WHERE image_id = ?", (bad.tobytes(), image_id))
    conn.close()
    return image_id


@pytest.mark.parametrize("value,problem", [(np.nan, "NaN or infinite"), (0.5, "not of unit length")])
def test_a_stored_embedding_that_is_not_finite_or_not_unit_is_found(
        tmp_path: Path, orl_folders: Path, cache: EmbeddingCache, capsys: pytest.CaptureFixture,
        value: float, problem: str) -> None:
    db = str(tmp_path / "g.sqlite")
    _enrolled(db, orl_folders, cache)
    image_id = _break_embedding(db, value)
    code, out = _verify(capsys, "--db", db, "--format", "json")
    report = json.loads(out)
    assert code == 1
    assert report["problems_by_kind"] == {"embedding": 1, "vector_row": 1}  # the files hold the enrolled vector
    embedding = next(p for p in report["problems"] if p["kind"] == "embedding")
    assert embedding["image_id"] == image_id and problem in embedding["message"]
    assert "gallery remove SUBJECT" in report["remedies"]["embedding"]


def test_vector_files_that_cannot_be_read_are_a_problem_not_an_error(
        tmp_path: Path, orl_folders: Path, cache: EmbeddingCache, capsys: pytest.CaptureFixture) -> None:
    db = str(tmp_path / "g.sqlite")
    _enrolled(db, orl_folders, cache)
    (vector_dir(db) / "vectors.npy").unlink()
    code, out = _verify(capsys, "--db", db)
    assert code == 1, out
    assert f"problem: vector_files: {vector_dir(db)}: vectors.npy is missing" in out
    assert "0 faces compared" in out and "rebuild-vectors" in out


@pytest.mark.parametrize("where,message", [("none.sqlite", "no gallery at"), ("folder", "no gallery at"),
                                           ("notes.txt", "is not a usable gallery database"),
                                           ("postgresql://nobody@127.0.0.1:1/x", "cannot connect")])
def test_a_bad_db_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture, where: str,
                                      message: str) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a database\n" * 100)
    db = where if "://" in where else str(tmp_path / where)
    assert main(["gallery", "verify", "--db", db, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lookalike: error:") and message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as e:  # a usage error, as everywhere
        main(["gallery", "verify"])
    assert e.value.code == 2


def test_a_postgresql_gallery_is_verified(pg_url: str, orl_folders: Path, cache: EmbeddingCache,
                                          capsys: pytest.CaptureFixture) -> None:
    import psycopg

    from lookalike.gallery.postgres import split_url

    _enrolled(pg_url, orl_folders, cache)
    code, out = _verify(capsys, "--db", pg_url, "--photos")
    assert code == 0 and "vectors: memory (read from the database)" in out, out
    assert f"photos: {N_IMAGES} re-read, 0 missing" in out
    conninfo, schema, _ = split_url(pg_url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema}"')
        image_id, blob = conn.execute("SELECT image_id, vector FROM embeddings ORDER BY image_id LIMIT 1").fetchone()
        conn.execute("UPDATE embeddings SET vector = %s WHERE image_id = %s",
                     (np.full(len(blob) // 4, np.inf, np.float32).tobytes(), image_id))
    (orl_folders / "s4" / "1.pgm").unlink()
    code, out = _verify(capsys, "--db", pg_url, "--photos", "--format", "json")
    report = json.loads(out)
    assert code == 1 and report["problems_by_kind"] == {"embedding": 1, "photo_missing": 1}
    assert report["problems"][0]["image_id"] == image_id
