"""On-disk cache of alignments and embeddings (SQLite), keyed by image content.

An alignment is keyed by (image content hash, aligner settings); an embedding by (image content hash, aligner
settings, matcher name, preprocessing key): two aligners can cut different chips from one photo (another fallback for
an undetected face), so each has its own embeddings. Each finished batch is committed, so an interrupted run resumes
without losing finished work, and a second run reuses everything.

A cache written before embeddings recorded their aligner (``user_version`` 1) is migrated when opened: each old
embedding goes to the one aligner its image was aligned by; an image aligned by several has its embeddings dropped
(which aligner's chip they came from is unknown), to be embedded again.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import numpy as np

from lookalike.matchers.align import Alignment

DEFAULT_CACHE = Path.home() / ".cache" / "lookalike" / "embeddings.sqlite"

EMBEDDINGS = """CREATE TABLE IF NOT EXISTS embeddings (
    image TEXT NOT NULL, aligner TEXT NOT NULL, matcher TEXT NOT NULL, preprocess TEXT NOT NULL,
    vector BLOB NOT NULL, PRIMARY KEY (image, aligner, matcher, preprocess))"""
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS alignments (
    image TEXT NOT NULL, aligner TEXT NOT NULL, status TEXT NOT NULL, message TEXT,
    method TEXT, n_faces INTEGER, geometry BLOB, PRIMARY KEY (image, aligner));
{EMBEDDINGS};
"""
VERSION = 2  # user_version: 1 = embeddings without their aligner
OLD_EMBEDDINGS = ["image", "matcher", "preprocess", "vector"]


def content_key(path: str | Path) -> str:
    """SHA-1 of the file's bytes (the empty-file hash for a 0-byte file; 'missing:<path>' if unreadable)."""
    h = hashlib.sha1()
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # never open a named pipe (it would block)
            return f"missing:{path}"
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return f"missing:{path}"
    return h.hexdigest()


COLUMNS = {"alignments": ["image", "aligner", "status", "message", "method", "n_faces", "geometry"],
           "embeddings": ["image", "aligner", "matcher", "preprocess", "vector"]}


class CacheError(ValueError):
    """The cache file cannot be used (corrupt, not a lookalike cache, read-only): names the file and the remedy."""


def _cache_errors(method):
    """Turn SQLite and file errors inside an EmbeddingCache method into one CacheError naming the file."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.Error, OSError) as e:
            if "disk is full" in str(e) or getattr(e, "errno", None) == errno.ENOSPC:  # nothing wrong with the file
                raise CacheError(f"embedding cache {self.path}: the disk is full; free some space and rerun (the "
                                 "cache keeps what is done)") from e
            raise CacheError(f"embedding cache {self.path}: unusable ({e}); pass --cache none, another "
                             f"--cache path, or delete the file") from e

    return wrapper


class EmbeddingCache:
    """Alignments and embeddings on disk; ``path=None`` keeps them in memory only.

    Opening checks that the file is a lookalike cache and writable, so a bad file fails before any work.
    """

    @_cache_errors
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path else None
        if self.path:
            if self.path.is_dir():
                raise OSError(f"{self.path} is a folder")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path) if self.path else ":memory:", timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._migrate()
        self._db.executescript(SCHEMA)
        for table, columns in COLUMNS.items():
            have = [r[1] for r in self._db.execute(f"PRAGMA table_info({table})")]
            if have != columns:
                raise sqlite3.DatabaseError(f"table {table} has columns {have}, not a lookalike cache")
        with self._db:  # a write now, so that a read-only file fails here rather than after the first batch
            self._db.execute(f"PRAGMA user_version = {VERSION}")

    def close(self) -> None:
        self._db.close()

    def _migrate(self) -> None:
        """Give a version-1 cache's embeddings their aligner (see the module's docstring), in one transaction."""
        if [r[1] for r in self._db.execute("PRAGMA table_info(embeddings)")] != OLD_EMBEDDINGS:
            return
        self._db.execute("BEGIN IMMEDIATE")  # the renames and copies too (DDL opens no transaction by itself)
        with self._db:  # commits, or rolls all of it back
            self._db.execute("ALTER TABLE embeddings RENAME TO embeddings_v1")
            self._db.execute(EMBEDDINGS)
            self._db.execute(
                "INSERT INTO embeddings SELECT e.image, a.aligner, e.matcher, e.preprocess, e.vector "
                "FROM embeddings_v1 e JOIN (SELECT image, MIN(aligner) AS aligner FROM alignments GROUP BY image "
                "HAVING COUNT(DISTINCT aligner) = 1) a ON a.image = e.image")
            self._db.execute("DROP TABLE embeddings_v1")

    @_cache_errors
    def get_alignments(self, keys: list[str], aligner: str) -> dict[str, tuple[str, str, Alignment | None]]:
        """key -> (status, message, alignment) for the keys already seen."""
        out = {}
        for chunk in _chunks(sorted(set(keys)), 500):
            q = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT image, status, message, method, n_faces, geometry FROM alignments "
                f"WHERE aligner = ? AND image IN ({q})", [aligner, *chunk])
            for image, status, message, method, n_faces, geometry in rows:
                al = Alignment.from_row(method, n_faces, geometry) if status == "ok" else None
                out[image] = (status, message, al)
        return out

    @_cache_errors
    def ok_keys(self) -> set[str]:
        """Content keys of every image some aligner has read successfully (they decode)."""
        return {r[0] for r in self._db.execute("SELECT DISTINCT image FROM alignments WHERE status = 'ok'")}

    @_cache_errors
    def get_embeddings(self, keys: list[str], aligner: str, matcher: str, preprocess: str) -> dict[str, np.ndarray]:
        """key -> vector for the keys embedded from ``aligner``'s chip by ``matcher`` after ``preprocess``."""
        out = {}
        for chunk in _chunks(sorted(set(keys)), 500):
            q = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT image, vector FROM embeddings WHERE aligner = ? AND matcher = ? AND preprocess = ? "
                f"AND image IN ({q})", [aligner, matcher, preprocess, *chunk])
            for image, blob in rows:
                out[image] = np.frombuffer(blob, np.float32).copy()
        return out

    @_cache_errors
    def put(self, aligner: str, matcher: str, preprocess: str,
            results: list[tuple[str, str, str, Alignment | None, np.ndarray | None]]) -> None:
        """Store (key, status, message, alignment, embedding) rows in one transaction."""
        with self._db:
            for key, status, message, al, emb in results:
                if key.startswith("missing:") or status == "error":  # transient: retried next run
                    continue
                if al is not None:
                    method, n_faces, geometry = al.to_row()
                else:
                    method, n_faces, geometry = None, None, None
                self._db.execute("INSERT OR REPLACE INTO alignments VALUES (?,?,?,?,?,?,?)",
                                 (key, aligner, status, message, method, n_faces, geometry))
                if emb is not None:
                    self._db.execute("INSERT OR REPLACE INTO embeddings VALUES (?,?,?,?,?)",
                                     (key, aligner, matcher, preprocess, np.asarray(emb, np.float32).tobytes()))


def _chunks(items: list, n: int):
    for i in range(0, len(items), n):
        yield items[i:i + n]
