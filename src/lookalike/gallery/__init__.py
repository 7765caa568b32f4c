"""A persistent gallery of enrolled faces: storage backends (SQLite, PostgreSQL) and the searchable Gallery."""

from __future__ import annotations

from lookalike.gallery.store import (
    GalleryStore,
    NoGalleryError,
    SchemaError,
    StoreBusyError,
    StoreError,
    VectorsMismatchError,
)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
BUSY_TIMEOUT = 60.0  # seconds a SQLite statement waits for another connection's write lock (sqlite3's busy timeout)


def is_postgres_url(url_or_path: str) -> bool:
    return str(url_or_path).startswith(POSTGRES_SCHEMES)


def display_db(url_or_path: str | object) -> str:
    """A gallery's database as messages show it: a PostgreSQL URL without its password, a path as it is."""
    text = str(url_or_path)
    if is_postgres_url(text):
        from lookalike.gallery.postgres import redact

        return redact(text)
    return text


def open_store(url_or_path: str, create: bool | None = None, meta: dict[str, str] | None = None,
               busy_timeout: float | None = None) -> GalleryStore:
    """A store by URL scheme: ``postgresql://...`` for PostgreSQL, anything else is a SQLite file path.

    ``create`` True: the gallery must be new; False: it must exist; None: either. A new gallery gets ``meta``
    in the transaction that creates it. ``busy_timeout``: seconds a statement waits for a lock another connection
    holds before it fails with :class:`StoreBusyError` (None: the backend's default, SQLite's
    :data:`BUSY_TIMEOUT`, PostgreSQL's server setting, by default no limit).
    """
    url_or_path = str(url_or_path)
    if is_postgres_url(url_or_path):
        from lookalike.gallery.postgres import PostgresStore

        return PostgresStore(url_or_path, create=create, meta=meta, busy_timeout=busy_timeout)
    if "://" in url_or_path:
        from lookalike.gallery.postgres import redact

        raise StoreError(f"unsupported gallery URL {redact(url_or_path)!r}: use a SQLite file path or postgresql://...")
    from lookalike.gallery.sqlite import SQLiteStore

    return SQLiteStore(url_or_path, create=create, meta=meta,
                       timeout=BUSY_TIMEOUT if busy_timeout is None else busy_timeout)


__all__ = ["EnrollReport", "Gallery", "GalleryStore", "NoGalleryError", "SchemaError", "StoreBusyError", "StoreError",
           "display_db", "SubjectLists", "VectorsMismatchError", "VerifyReport", "open_store"]


def __getattr__(name: str):
    # Gallery imports the embedding stack; load it on first use so the CLI's parser stays light.
    if name in ("EnrollReport", "Gallery", "SubjectLists"):
        from lookalike.gallery import gallery

        return getattr(gallery, name)
    if name == "VerifyReport":
        from lookalike.gallery.verify import VerifyReport

        return VerifyReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
