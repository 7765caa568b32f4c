"""The gallery store in one SQLite file (WAL mode, foreign keys on, one transaction per batch)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lookalike.gallery import BUSY_TIMEOUT
from lookalike.gallery.sql import SQLStore, _Rows
from lookalike.gallery.store import NoGalleryError, StoreBusyError, StoreError

_BUSY = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)  # primary result codes of a lock not granted in time


class SQLiteStore(SQLStore):
    """A gallery in the SQLite file ``path``; ``create`` True: must be new, False: must exist, None: either;
    ``timeout``: seconds a statement waits for another connection's write lock (e.g. ``lookalike enroll`` writing
    beside a service) before it fails with :class:`~lookalike.gallery.store.StoreBusyError`."""

    ID = "INTEGER PRIMARY KEY AUTOINCREMENT"
    BLOB = "BLOB"
    WRITE_ERRORS = (sqlite3.Error, StoreBusyError)
    APPEND_ONLY = """
CREATE TRIGGER reviews_no_update BEFORE UPDATE ON reviews BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
CREATE TRIGGER reviews_no_delete BEFORE DELETE ON reviews BEGIN SELECT RAISE(ABORT, 'reviews are append-only'); END;
"""

    def __init__(self, path: str | Path, create: bool | None = None, meta: dict[str, str] | None = None,
                 timeout: float = BUSY_TIMEOUT) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        self.url = str(self.path)
        if create is False and not self.path.is_file():
            raise NoGalleryError(f"no gallery at {self.path} (create one with `lookalike enroll`)")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a gallery database file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One thread at a time, though not always the one that opened it (a web service's worker pool).
        self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._init_schema(create, meta)
        except sqlite3.DatabaseError as e:
            self._db.close()
            if not os.access(self.path.parent, os.W_OK) or not os.access(self.path, os.W_OK):
                raise StoreError(f"{self.path}: cannot open the gallery where it cannot be written (a read-only "
                                 "disk or folder: SQLite writes its -wal and -shm files beside it); copy it to a "
                                 "writable folder") from e
            raise StoreError(f"{self.path} is not a usable gallery database ({e})") from e
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _busy(self) -> Iterator[None]:
        """A lock another connection held past the busy timeout as a :class:`StoreBusyError` (the driver's
        OperationalError "database is locked" otherwise)."""
        try:
            yield
        except sqlite3.OperationalError as e:
            busy = self._busy_error(e)
            if busy is None:
                raise
            raise busy from e

    def _busy_error(self, e: sqlite3.OperationalError) -> StoreBusyError | None:
        """``e`` as a :class:`StoreBusyError` when it is a lock not granted in time, else None."""
        if getattr(e, "sqlite_errorcode", 0) & 0xFF not in _BUSY:
            return None
        return StoreBusyError(f"{self.path}: the database is locked by another connection (a write under way in "
                              f"another process; waited {self.timeout:g} s); try again later")

    def _exec(self, sql: str, params: tuple | list = ()) -> _Rows:
        try:  # not :meth:`_busy`: a context manager cost about 1 us a statement (the most frequent call here)
            cur = self._db.execute(sql, params)
            rows = cur.fetchall() if cur.description is not None else []
        except sqlite3.OperationalError as e:
            busy = self._busy_error(e)
            if busy is None:
                raise
            raise busy from e
        return _Rows(rows, cur.rowcount)

    def _write_keys(self, keys: list[tuple[int, str]]) -> None:
        with self._busy():
            self._db.executemany("UPDATE subjects SET lookalike_key = ? WHERE id = ?", [(k, i) for i, k in keys])

    @contextmanager
    def _outer_transaction(self, write: bool) -> Iterator[None]:
        with self._busy():
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield
            with self._busy():
                self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # a COMMIT refused as busy leaves it open
                self._db.execute("ROLLBACK")
            raise

    def _has_table(self, name: str) -> bool:
        row = self._exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    def _has_foreign_tables(self) -> bool:
        return self._exec("SELECT 1 FROM sqlite_master WHERE type = 'table'").fetchone() is not None
