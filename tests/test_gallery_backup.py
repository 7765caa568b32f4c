"""``lookalike gallery backup`` / :func:`lookalike.gallery.backup.backup`: a consistent copy of a SQLite gallery
(database, vector files, saved index) taken beside other connections, moved into place only when complete, then
audited as ``gallery verify`` audits."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER

from lookalike.cli import main
from lookalike.gallery import Gallery
from lookalike.gallery import backup as backup_module
from lookalike.gallery.vectors import read_vectors, vector_dir
from lookalike.matchers.base import l2_normalize
from lookalike.matchers.cache import EmbeddingCache

N_IMAGES = 12  # orl_folders: s1..s4, 3 photos each


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingCache:
    return EmbeddingCache(tmp_path_factory.mktemp("cache") / "embeddings.sqlite")


@pytest.fixture
def original(tmp_path: Path, orl_folders: Path, cache: EmbeddingCache) -> str:
    """An ORL gallery with a saved approximate index, a search and two verdicts on it (the audit trail)."""
    db = str(tmp_path / "g.sqlite")
    paths = sorted(orl_folders.glob("*/*"))
    with Gallery.create(db, matcher=FAST_MATCHER, index="hnsw:m=8") as g:
        g.enroll([str(p) for p in paths], [p.parent.name for p in paths], cache=cache, workers=1, progress=False)
        sid = g.store.add_search(b"probe bytes", "ab" * 20, {"candidates": ["s1", "s2"]})
        g.store.add_review(sid, "s1", "match", "Examiner A", "same scar")
        g.store.add_review(sid, "s2", "non-match", "Examiner B")
    return db


def _backup(capsys: pytest.CaptureFixture, db: str, out: str, *args: str) -> tuple[int, str, str]:
    code = main(["gallery", "backup", "--no-progress", "--db", db, "--out", out, *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _reviews(db: str) -> list[tuple]:
    with closing(sqlite3.connect(db)) as c:
        return c.execute("SELECT * FROM reviews ORDER BY id").fetchall()


def _left_beside(out: Path) -> list[str]:
    """Whatever a backup to ``out`` left in its folder (its staging folder included)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith((out.name, f".{out.name}")))


def test_the_copy_searches_as_the_original_and_keeps_the_audit_trail(original: str, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "backup" / "b.sqlite")
    (tmp_path / "backup").mkdir()
    code, text, _ = _backup(capsys, original, out)
    assert code == 0, text
    assert f"copied {original} to {out} at generation" in text
    assert "(copied)" in text and "enrolled photos" in text and "are not copied" in text
    assert f"{N_IMAGES} faces compared with the database's embeddings" in text
    assert "saved index: matches" in text and text.rstrip().endswith("intact: no problems found")
    with Gallery.open(original) as g, Gallery.open(out) as copy:
        assert copy.vectors_source_ == "file" and copy.index_source_ == "saved"  # copied and trusted, not rebuilt
        assert copy.generation_ == g.generation_ and copy.stats()["images"] == N_IMAGES
        probes = np.asarray(g.vectors_)
        mine, theirs = g.search(probes, k=4), copy.search(probes, k=4)
        for a, b in zip((mine.subjects, mine.scores, mine.paths), (theirs.subjects, theirs.scores, theirs.paths),
                        strict=True):
            assert np.array_equal(np.asarray(a), np.asarray(b))
        assert [s.id for s in copy.store.list_searches()] == [s.id for s in g.store.list_searches()]
    assert len(_reviews(out)) == 2 and _reviews(out) == _reviews(original)
    assert read_vectors(vector_dir(out)).changed == []  # the copies are stamped as lookalike's
    assert _left_beside(Path(out)) == ["b.sqlite", "b.sqlite.vectors"]


def test_json_output(original: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "b.sqlite")
    code, text, _ = _backup(capsys, original, out, "--format", "json")
    report = json.loads(text)
    assert code == 0 and report["intact"] and report["out"] == out and report["vectors"] == "copied"
    assert report["verify"]["faces"] == N_IMAGES and report["verify"]["index"] == "matches"


def test_a_write_transaction_held_open_on_the_original(original: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """Another connection holds the write lock while the backup runs and commits a verdict from a thread: the backup
    completes, and the copy has the audit trail before or after that verdict, never half of it."""
    before = _reviews(original)
    writer = sqlite3.connect(original, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO reviews (search_id, subject, verdict, reviewer, created) "
                   "SELECT id, 's3', 'inconclusive', 'Examiner C', 'now' FROM searches")
    writer.execute("INSERT INTO reviews (search_id, subject, verdict, reviewer, created) "
                   "SELECT id, 's4', 'non-match', 'Examiner C', 'now' FROM searches")
    done = threading.Timer(0.5, lambda: writer.execute("COMMIT"))
    done.start()
    try:
        code, text, _ = _backup(capsys, original, str(tmp_path / "b.sqlite"))
    finally:
        done.join()
        writer.close()
    after = _reviews(original)
    assert len(after) == len(before) + 2
    assert code == 0, text
    assert _reviews(str(tmp_path / "b.sqlite")) in (before, after)


def test_a_verdict_committed_during_the_database_copy_is_not_half_in_it(
        original: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database is copied in many steps in one read transaction: a verdict committed by another connection
    after the first step is not in the copy (the state when the copy began), and the copy is intact."""
    before = _reviews(original)
    monkeypatch.setattr(backup_module, "PAGES_PER_STEP", 1)
    committed = []

    class CommitOnFirstStep(backup_module.tqdm):
        def refresh(self, *args, **kwargs):
            if not committed:
                with closing(sqlite3.connect(original, isolation_level=None)) as c:
                    c.execute("INSERT INTO reviews (search_id, subject, verdict, reviewer, created) "
                              "SELECT id, 's3', 'match', 'Examiner D', 'now' FROM searches")
                committed.append(True)
            return super().refresh(*args, **kwargs)

    monkeypatch.setattr(backup_module, "tqdm", CommitOnFirstStep)
    report = backup_module.backup(original, tmp_path / "b.sqlite", progress=True)
    assert committed and len(_reviews(original)) == len(before) + 1
    assert report.ok and _reviews(str(tmp_path / "b.sqlite")) == before


def test_faces_enrolled_between_the_vector_files_and_the_database_copy(
        original: str, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The vector files are copied first; faces committed before the database is copied are in the copy's database,
    and the copy's vector files are brought up to date from it: the copy opens and verifies, every face searched."""
    copy_vectors = backup_module.copy_vectors

    def then_enrol(folder: Path, to: Path):
        generation = copy_vectors(folder, to)
        with Gallery.open(original) as g:
            vectors = l2_normalize(np.random.default_rng(0).standard_normal((3, g.dim))).astype(np.float32)
            assert g.add_embeddings(["late 1", "late 2", "late 3"], vectors, source="test") == 3
        return generation

    monkeypatch.setattr(backup_module, "copy_vectors", then_enrol)
    out = str(tmp_path / "b.sqlite")
    code, text, _ = _backup(capsys, original, out)
    assert code == 0, text
    assert "rebuilt" in text and f"{N_IMAGES + 3} faces compared" in text
    with Gallery.open(out) as copy:
        assert copy.vectors_source_ == "file" and len(copy.image_ids_) == N_IMAGES + 3
        assert {"late 1", "late 2", "late 3"} <= set(copy.subjects())


@pytest.mark.parametrize("where", ["_copy_database", "Gallery.open"])
def test_an_interrupted_backup_leaves_nothing(original: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "Gallery.open":  # the database and vector files copied, the copy being opened
        monkeypatch.setattr(Gallery, "open", classmethod(lambda cls, *a, **k: interrupt()))
    else:
        monkeypatch.setattr(backup_module, where, interrupt)
    out = tmp_path / "b.sqlite"
    code, _, _ = _backup(capsys, original, str(out))
    assert code == 130
    assert _left_beside(out) == []


def test_an_existing_out_is_refused(original: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "b.sqlite"
    out.write_bytes(b"an older backup")
    code, text, err = _backup(capsys, original, str(out))
    assert code == 2 and text == ""
    assert err.count("\n") == 1 and "b.sqlite exists" in err and "rm -r" in err
    assert out.read_bytes() == b"an older backup" and _left_beside(out) == ["b.sqlite"]
    out.unlink()
    vector_dir(out).mkdir()  # an orphaned vector folder is not overwritten either
    code, _, err = _backup(capsys, original, str(out))
    assert code == 2 and "b.sqlite.vectors exists" in err and _left_beside(out) == ["b.sqlite.vectors"]


def test_an_out_that_names_no_file_or_lies_in_the_vector_folder_is_refused(original: str,
                                                                           capsys: pytest.CaptureFixture) -> None:
    for out, says in (("", "names no file"), (".", "names no file"),
                      (str(vector_dir(Path(original)) / "b.sqlite"), "inside the gallery's own vector folder")):
        code, text, err = _backup(capsys, original, out)
        assert code == 2 and text == "" and err.count("\n") == 1 and says in err, (out, err)
    assert not (vector_dir(Path(original)) / "b.sqlite").exists()


def test_a_postgresql_url_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, text, err = _backup(capsys, "postgresql://ann:secret@db.example/gallery", str(tmp_path / "b.sqlite"))
    assert code == 2 and text == "" and err.count("\n") == 1
    assert "pg_dump" in err and "&vectors=DIR" in err and "secret" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_or_foreign_database_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _backup(capsys, str(tmp_path / "none.sqlite"), str(tmp_path / "b.sqlite"))
    assert code == 2 and "no gallery at" in err and err.count("\n") == 1
    other = tmp_path / "other.sqlite"
    with closing(sqlite3.connect(other, isolation_level=None)) as c:
        c.execute("CREATE TABLE t (x)")
    code, _, err = _backup(capsys, str(other), str(tmp_path / "b.sqlite"))
    assert code == 2 and "not a usable gallery database" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"]


def test_the_copy_of_a_damaged_original_reports_it(original: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    """An embedding in the original's database that is not of unit length is copied as it is, and the copy's audit
    finds it: exit status 1, with verify's remedy, and the copy (the audit trail) is kept."""
    with closing(sqlite3.connect(original, isolation_level=None)) as c:
        image_id, blob = c.execute("SELECT image_id, vector FROM embeddings ORDER BY image_id LIMIT 1").fetchone()
        c.execute("UPDATE embeddings SET vector = ? WHERE image_id = ?",
                  ((np.frombuffer(blob, np.float32) * 2).tobytes(), image_id))
    out = str(tmp_path / "b.sqlite")
    code, text, err = _backup(capsys, original, out)
    assert code == 1, text + err
    assert "problem: " in text and "remedy (" in text and "NOT intact" in text
    assert _reviews(out) == _reviews(original)
