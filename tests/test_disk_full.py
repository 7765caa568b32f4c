"""A full disk: one line naming the file, nothing half-written left, nothing enrolled lost."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from conftest import FAST_MATCHER

from lookalike.io import WriteError, atomic_write


def test_a_failed_write_names_the_file_and_leaves_it_as_it_was(tmp_path: Path):
    target = tmp_path / "model.lkm"
    target.write_text("the earlier model")
    with pytest.raises(WriteError) as e, atomic_write(target) as f:
        f.write("half")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(e.value) == f"cannot write {target}: the disk is full" and isinstance(e.value, OSError)
    assert target.read_text() == "the earlier model" and [p.name for p in tmp_path.iterdir()] == ["model.lkm"]


def test_numpys_short_write_on_a_full_disk_is_said_as_such(tmp_path: Path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6, 512))
    with pytest.raises(WriteError, match="cannot write .*v.npy: the disk is full$"), \
            atomic_write(tmp_path / "v.npy", "wb"):
        raise OSError("51200 requested and 21472 written")  # what ndarray.tofile raises, without an errno


def test_an_enrolment_whose_vector_files_cannot_be_written_is_kept(orl_dir: Path, tmp_path: Path, capsys,
                                                                 monkeypatch):
    """The database holds the enrolled faces; the files beside it are a copy: a full disk when writing them is a
    warning, the enrolment counts stand, and searches work from the database."""
    import json

    from lookalike.cli import main
    from lookalike.gallery import gallery as gallery_module

    def full(folder, *a, **k):
        raise WriteError(folder / "vectors.npy", OSError(errno.ENOSPC, "No space left on device"))

    people = tmp_path / "people"
    for p in (1, 2, 3):
        (people / f"s{p}").mkdir(parents=True)
        for i in (1, 2):
            (people / f"s{p}" / f"{i}.pgm").write_bytes((orl_dir / f"s{p}" / f"{i}.pgm").read_bytes())
    monkeypatch.setattr(gallery_module, "write_vectors", full)
    db = tmp_path / "g.sqlite"
    assert main(["enroll", "--gallery", str(people), "--db", str(db), "--matcher", FAST_MATCHER, "--cache", "none",
                 "--no-progress", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["added"] == 6
    assert "lookalike: warning: cannot write" in err and "the disk is full; the gallery's database is complete" in err
    assert main(["identify", str(orl_dir / "s2" / "5.pgm"), "--db", str(db), "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["results"][0]["faces"][0]["candidates"][0]["subject"] == "s2"
    monkeypatch.undo()  # room again: the next opening writes the files
    assert main(["gallery", "stats", "--db", str(db)]) == 0
    assert (tmp_path / "g.sqlite.vectors" / "vectors.npy").exists() and "warning" not in capsys.readouterr().err


def test_a_full_cache_is_not_called_unusable(tmp_path: Path, monkeypatch):
    from lookalike.matchers.cache import CacheError, EmbeddingCache

    cache = EmbeddingCache(tmp_path / "c.sqlite")

    class Full:
        def execute(self, *a, **k):
            raise sqlite3.OperationalError("database or disk is full")

        def __getattr__(self, name):
            return getattr(cache._db, name)  # noqa: SLF001

    monkeypatch.setattr(cache, "_db", Full())
    with pytest.raises(CacheError) as e:
        cache.ok_keys()
    assert "the disk is full; free some space and rerun" in str(e.value) and "delete" not in str(e.value)


def test_a_gallery_on_a_read_only_disk_is_said_as_such(tmp_path: Path, monkeypatch):
    import os

    from lookalike.gallery.sqlite import SQLiteStore
    from lookalike.gallery.store import StoreError

    SQLiteStore(tmp_path / "g.sqlite", create=True).close()

    def unable(self, *a, **k):
        raise sqlite3.OperationalError("unable to open database file")  # what SQLite says on a read-only mount

    monkeypatch.setattr(SQLiteStore, "_init_schema", unable)
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK)
    with pytest.raises(StoreError, match="cannot open the gallery where it cannot be written"):
        SQLiteStore(tmp_path / "g.sqlite", create=False)
    monkeypatch.setattr(os, "access", lambda path, mode: True)
    with pytest.raises(StoreError, match="is not a usable gallery database"):
        SQLiteStore(tmp_path / "g.sqlite", create=False)
