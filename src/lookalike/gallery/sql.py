"""The gallery store in SQL, shared by the SQLite and PostgreSQL backends (which differ only in connections,
column types and placeholders). Queries are written with ``?`` placeholders."""

from __future__ import annotations

import json
from abc import abstractmethod
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import numpy as np

from lookalike.data.names import KEY_VERSION, lookalike_key
from lookalike.gallery import store as _store
from lookalike.gallery.store import (
    AddResult,
    GalleryExistsError,
    GalleryStore,
    ImageRecord,
    NewImage,
    NoGalleryError,
    PruneReport,
    ReviewRecord,
    SchemaError,
    SearchRecord,
    SessionRecord,
    Snapshot,
    Subject,
    SubjectExistsError,
    TokenRecord,
    check_verdict,
    is_ambiguous,
)

TABLES = ("state", "meta", "subjects", "images", "embeddings", "searches", "reviews", "tokens", "sessions",
          "changes", "derived")

# {ID}: auto-increment primary key that never reuses ids; {BLOB}: bytes column.
SCHEMA = """
CREATE TABLE state (id INTEGER PRIMARY KEY CHECK (id = 1), schema_version INTEGER NOT NULL,
    generation BIGINT NOT NULL);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE subjects (id {ID}, name TEXT NOT NULL UNIQUE, created TEXT NOT NULL, removed TEXT);
CREATE TABLE images (id {ID}, subject_id BIGINT NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
    path TEXT NOT NULL, sha1 TEXT NOT NULL, status TEXT NOT NULL, message TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '', n_faces INTEGER NOT NULL DEFAULT 0, box TEXT, landmarks {BLOB},
    created TEXT NOT NULL, UNIQUE (subject_id, sha1));
CREATE INDEX images_sha1 ON images (sha1);
CREATE TABLE embeddings (image_id BIGINT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    matcher TEXT NOT NULL, preprocess TEXT NOT NULL, vector {BLOB} NOT NULL,
    PRIMARY KEY (image_id, matcher, preprocess));
CREATE TABLE searches (id {ID}, created TEXT NOT NULL, probe_sha1 TEXT NOT NULL, probe {BLOB},
    result TEXT NOT NULL);
CREATE TABLE reviews (id {ID}, search_id BIGINT NOT NULL REFERENCES searches(id), subject TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('match', 'non-match', 'inconclusive')), reviewer TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '', created TEXT NOT NULL);
CREATE INDEX reviews_search ON reviews (search_id);
""" + "{TOKENS}"

# API tokens of the web service: a per-token salt and sha256(salt + token), never the token.
TOKENS = """CREATE TABLE tokens (id {ID}, label TEXT NOT NULL DEFAULT '', salt TEXT NOT NULL, hash TEXT NOT NULL,
    created TEXT NOT NULL);
"""

# Page sessions of the web service, under the SHA-256 of the session id (the cookie's value is never stored).
SESSIONS = """CREATE TABLE sessions (id_hash TEXT PRIMARY KEY, csrf TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL,
    authenticated INTEGER NOT NULL, token TEXT NOT NULL DEFAULT '', reviewer TEXT NOT NULL DEFAULT '');
"""

# What each generation changed: the ids of the images it added (a JSON list), or NULL for any other change (a
# removal, meta): a process behind by additions only reads the added rows instead of the whole gallery.
CHANGES = """CREATE TABLE changes (generation BIGINT PRIMARY KEY, added TEXT);
"""
KEEP_CHANGES = 10_000  # generations of changes kept; a process further behind reloads everything

# Values computed from the gallery's vectors and kept for later processes (identify's calibrations), as JSON under a
# name; writing one changes nothing a search reads, so it leaves the generation alone.
DERIVED = """CREATE TABLE derived (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Which API token ran each search and recorded each verdict (the token's id, or "env:<fingerprint>" for
# LOOKALIKE_TOKEN): the audit trail's provenance, which the reviewer name, typed by the examiner, is not.
PROVENANCE = """ALTER TABLE searches ADD COLUMN recorded_by TEXT NOT NULL DEFAULT '';
ALTER TABLE reviews ADD COLUMN recorded_by TEXT NOT NULL DEFAULT '';
"""

# Searches of one probe photo (a group photo's faces, the same photo sent again) keep its bytes once: later ones store
# NULL and read the first's (found by this index). Pruning a search that holds them moves them to one that stays.
PROBE_INDEX = """CREATE INDEX searches_probe ON searches (probe_sha1);
"""

# Whether a search's face is ambiguous (is_ambiguous of its result), kept beside the result and indexed with the id:
# the review queue's "ambiguous only", newest first, is an index range, where reading each result's JSON had taken
# 27 ms for 200 of 100,000 searches (1% ambiguous) on SQLite against 0.1 ms (and longer the larger the results).
AMBIGUOUS = """ALTER TABLE searches ADD COLUMN ambiguous INTEGER NOT NULL DEFAULT 0;
CREATE INDEX searches_ambiguous ON searches (ambiguous, id);
"""

# Each subject's lookalike_key (removed subjects' too), indexed: a new name's look-alikes are one indexed query, where
# every live name had been read and keyed (2.3 s at 1,000,000 subjects: benchmarks/lookalike_check.py).
# ``state.key_version`` is the KEY_VERSION the keys were computed by (0: not yet, a gallery migrated from schema 8);
# opening recomputes them (SQLStore._update_keys, which also builds KEY_INDEX) when it is older than KEY_VERSION.
LOOKALIKE_KEYS = """ALTER TABLE subjects ADD COLUMN lookalike_key TEXT;
ALTER TABLE state ADD COLUMN key_version INTEGER NOT NULL DEFAULT 0;
"""
KEY_INDEX = """CREATE INDEX subjects_lookalike_key ON subjects (lookalike_key);
"""

_CHUNK = 500


def _mark_ambiguous(store: SQLStore) -> None:
    """Set ``ambiguous`` on the searches stored before there was the column, from their results, a chunk at a time."""
    last = 0
    while rows := store._exec("SELECT id, result FROM searches WHERE id > ? ORDER BY id LIMIT ?",
                              (last, _CHUNK)).fetchall():
        marked = [int(i) for i, result in rows if is_ambiguous(json.loads(result))]
        if marked:
            store._exec(f"UPDATE searches SET ambiguous = 1 WHERE id IN ({','.join('?' * len(marked))})", marked)
        last = int(rows[-1][0])


# What takes a database from version v to v + 1: statements ({ID} and {BLOB} as in SCHEMA) and functions of the store
# run in the same transaction. None changes what a search reads, so a migration leaves the generation (and the vector
# files beside a gallery) alone.
MIGRATIONS: dict[int, list[str | Callable[[SQLStore], None]]] = {
    1: [TOKENS], 2: [SESSIONS], 3: [CHANGES], 4: [DERIVED], 5: [PROVENANCE], 6: [PROBE_INDEX],
    7: [AMBIGUOUS, _mark_ambiguous], 8: [LOOKALIKE_KEYS]}

# A search with a verdict on it (in a query of ``searches``)
_REVIEWED = "EXISTS (SELECT 1 FROM reviews r WHERE r.search_id = searches.id)"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _chunks(items: list, n: int = _CHUNK) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";\n") if s.strip()]


class SQLStore(GalleryStore):
    """:class:`GalleryStore` over a DB-API connection; subclasses supply the dialect."""

    ID: str
    BLOB: str
    APPEND_ONLY: str  # DDL making ``reviews`` append-only
    WRITE_ERRORS: tuple[type[Exception], ...]  # the driver's errors of a write that could not be made

    def _init_schema(self, create: bool | None, meta: dict[str, str] | None = None) -> None:
        """Create (``create`` True or None) or check (False or None) the tables; migrate older layouts.

        A new gallery gets ``meta`` in the same transaction that creates it.
        """
        with self._transaction(write=True):
            self._lock_schema()
            present = [t for t in TABLES if self._has_table(t)]
            if "state" not in present:
                if present or self._has_foreign_tables():
                    raise SchemaError(f"{self.url} is not a lookalike gallery (it holds other tables; for "
                                      f"PostgreSQL, name a schema of the gallery's own with ?schema=NAME)")
                if create is False:
                    raise NoGalleryError(f"no gallery in {self.url} (create one with `lookalike enroll`)")
                later = (TOKENS + SESSIONS + CHANGES + DERIVED + PROVENANCE + PROBE_INDEX + AMBIGUOUS + LOOKALIKE_KEYS
                         + KEY_INDEX)
                schema = SCHEMA.replace("{TOKENS}", later).format(ID=self.ID, BLOB=self.BLOB)
                for s in _statements(schema) + _statements(self.APPEND_ONLY):
                    self._exec(s)
                self._exec("INSERT INTO state (id, schema_version, generation, key_version) VALUES (1, ?, 0, ?)",
                           (_store.SCHEMA_VERSION, KEY_VERSION))
                for k, v in (meta or {}).items():
                    self._exec("INSERT INTO meta (key, value) VALUES (?, ?)", (str(k), str(v)))
                return
            if create is True:
                raise GalleryExistsError(f"{self.url} already holds a gallery")
            (version,) = self._exec("SELECT schema_version FROM state WHERE id = 1").fetchone()
            if version > _store.SCHEMA_VERSION:
                raise SchemaError(f"{self.url} has gallery schema version {version}, newer than this lookalike "
                                  f"reads ({_store.SCHEMA_VERSION}): upgrade lookalike")
            for v in range(version, _store.SCHEMA_VERSION):
                for s in MIGRATIONS[v]:
                    if callable(s):
                        s(self)
                        continue
                    for statement in _statements(s.format(ID=self.ID, BLOB=self.BLOB)):
                        self._exec(statement)
                self._exec("UPDATE state SET schema_version = ? WHERE id = 1", (v + 1,))
            self._update_keys()

    def _update_keys(self) -> None:
        """Recompute every subject's ``lookalike_key`` (:data:`LOOKALIKE_KEYS`) when they were computed by an older
        :data:`~lookalike.data.names.KEY_VERSION` (or not yet), in the opening transaction: the names read in one
        query, the keys that differ written in one batch, then :data:`KEY_INDEX` built (a migration of 1,000,000
        subjects on SQLite took 5.0 s so, 7.8 s with the index kept up to date). Nothing a search reads changes: the
        generation stays. With the keys of this version or a newer one (a newer lookalike's: left as they are), only
        the subjects without a key get one: those an older lookalike still running after the migration added."""
        if self._exec("SELECT key_version FROM state WHERE id = 1").fetchone()[0] >= KEY_VERSION:
            rows = self._exec("SELECT id, name FROM subjects WHERE lookalike_key IS NULL").fetchall()
            if rows:
                self._write_keys([(sid, lookalike_key(name)) for sid, name in rows])
            return
        rows = self._exec("SELECT id, name, lookalike_key FROM subjects").fetchall()
        self._exec("DROP INDEX IF EXISTS subjects_lookalike_key")
        self._write_keys([(sid, key) for sid, name, old in rows if (key := lookalike_key(name)) != old])
        self._exec(KEY_INDEX.strip())
        self._exec("UPDATE state SET key_version = ? WHERE id = 1", (KEY_VERSION,))

    _depth = 0  # open nested transactions (0: none)

    # --- dialect ---------------------------------------------------------------------------------------
    @abstractmethod
    def _exec(self, sql: str, params: tuple | list = ()): ...

    @abstractmethod
    def _write_keys(self, keys: list[tuple[int, str]]) -> None:
        """Set the ``lookalike_key`` of subjects by id: (id, key) pairs, written as one batch."""

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[None]:
        """One transaction; a nested call joins the transaction already open."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        with self._outer_transaction(write):
            self._depth = 1
            try:
                yield
            finally:
                self._depth = 0

    @abstractmethod
    @contextmanager
    def _outer_transaction(self, write: bool) -> Iterator[None]:
        """Begin, then commit (or roll back on an exception): the dialect's own transaction."""

    @abstractmethod
    def _has_table(self, name: str) -> bool: ...

    @abstractmethod
    def _has_foreign_tables(self) -> bool:
        """Whether the database (schema) already holds tables that are not ours."""

    def _lock_schema(self) -> None:
        """Serialise concurrent creation (no-op where the write transaction already does)."""

    def _hold_searches(self, exclusive: bool = False) -> None:
        """Order writers of searches and reviews against :meth:`prune_searches` (``exclusive``), which waits for
        those under way and holds new ones until it commits (no-op where write transactions are serial already)."""

    def _bump(self, added: list[int] | None = None) -> int:
        """The next generation, recorded with what it changed: ``added`` image ids, or None for anything else.

        Called last in a writing transaction: the state row's lock, held to the commit, orders generations as
        their transactions commit, so a reader that sees generation g sees the record of every generation <= g."""
        gen = int(self._exec("UPDATE state SET generation = generation + 1 WHERE id = 1 RETURNING generation")
                  .fetchone()[0])
        self._exec("INSERT INTO changes (generation, added) VALUES (?, ?)",
                   (gen, None if added is None else json.dumps(added)))
        self._exec("DELETE FROM changes WHERE generation <= ?", (gen - KEEP_CHANGES,))
        return gen

    def changes_since(self, generation: int) -> tuple[int, np.ndarray | None]:
        with self._transaction():
            gen = int(self._exec("SELECT generation FROM state WHERE id = 1").fetchone()[0])
            rows = self._exec("SELECT added FROM changes WHERE generation > ? AND generation <= ? ORDER BY generation",
                              (int(generation), gen)).fetchall()
        if generation > gen or len(rows) != gen - generation or any(r[0] is None for r in rows):
            return gen, None
        return gen, np.asarray([i for r in rows for i in json.loads(r[0])], np.int64)

    # --- state -----------------------------------------------------------------------------------------
    def schema_version(self) -> int:
        with self._transaction():
            return int(self._exec("SELECT schema_version FROM state WHERE id = 1").fetchone()[0])

    def generation(self) -> int:
        with self._transaction():
            return int(self._exec("SELECT generation FROM state WHERE id = 1").fetchone()[0])

    def get_meta(self) -> dict[str, str]:
        with self._transaction():
            return dict(self._exec("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: dict[str, str]) -> int:
        with self._transaction(write=True):
            for k, v in values.items():
                self._exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                           "SET value = excluded.value", (str(k), str(v)))
            return self._bump()

    # --- subjects --------------------------------------------------------------------------------------
    def _subject_id(self, name: str, new: bool = False) -> int:
        """The subject's id, inserted (or restored, created again now) if needed; one statement inserts, so two
        writers naming the same new subject at once get the same row (the second waits for the first's commit), never
        a duplicate-key error. ``new``: :class:`SubjectExistsError` if it existed and was not removed."""
        inserted = self._exec("INSERT INTO subjects (name, created, lookalike_key) VALUES (?, ?, ?) "
                              "ON CONFLICT (name) DO NOTHING RETURNING id",
                              (name, now(), lookalike_key(name))).fetchone()
        if inserted is not None:
            return int(inserted[0])
        sid, removed = self._exec("SELECT id, removed FROM subjects WHERE name = ?", (name,)).fetchone()
        if removed is not None:  # created again: from now (the row, and so the name the audit trail gives, stays)
            self._exec("UPDATE subjects SET removed = NULL, created = ? WHERE id = ?", (now(), sid))
        elif new:
            raise SubjectExistsError(f"subject {name!r} already exists")
        return int(sid)

    def add_subject(self, name: str, new: bool = False) -> int:
        with self._transaction(write=True):
            sid = self._subject_id(_check_name(name), new)
            self._bump(added=[])  # a subject without images: nothing a search reads
            return sid

    _SUBJECTS = ("SELECT s.id, s.name, s.created, s.removed, "
                 "COALESCE(SUM(CASE WHEN i.status = 'ok' THEN 1 ELSE 0 END), 0), "
                 "COALESCE(SUM(CASE WHEN i.status <> 'ok' THEN 1 ELSE 0 END), 0) "
                 "FROM {subjects} s LEFT JOIN images i ON i.subject_id = s.id ")  # {subjects}: a table or a query

    def get_subject(self, name: str) -> Subject | None:
        with self._transaction():
            row = self._exec(self._SUBJECTS.format(subjects="subjects")
                             + "WHERE s.name = ? GROUP BY s.id, s.name, s.created, s.removed",
                             (name,)).fetchone()
        return Subject(*row[:4], int(row[4]), int(row[5])) if row else None

    def list_subjects(self, include_removed: bool = False, prefix: str = "", after: str | None = None,
                      limit: int | None = None) -> list[Subject]:
        where, params = [] if include_removed else ["removed IS NULL"], []
        if prefix:
            where.append("substr(name, 1, ?) = ?")
            params += [len(prefix), prefix]
        if after is not None:
            where.append("name > ?")
            params.append(after)
        # the subjects first (by the name index, so a page of a million is quick), then their image counts
        chosen = ("SELECT id, name, created, removed FROM subjects" + (" WHERE " + " AND ".join(where) if where else "")
                  + " ORDER BY name" + (" LIMIT ?" if limit is not None else ""))
        params += [int(limit)] if limit is not None else []
        with self._transaction():
            rows = self._exec(self._SUBJECTS.format(subjects=f"({chosen})")
                              + "GROUP BY s.id, s.name, s.created, s.removed ORDER BY s.name", params).fetchall()
        return [Subject(*r[:4], int(r[4]), int(r[5])) for r in rows]

    def subject_names(self) -> list[str]:
        with self._transaction():
            rows = self._exec("SELECT name FROM subjects WHERE removed IS NULL ORDER BY name").fetchall()
        return [r[0] for r in rows]

    def subject_names_by_key(self, keys: Iterable[str]) -> list[str]:
        names: list[str] = []
        with self._transaction():
            for chunk in _chunks(sorted(set(keys))):  # by the key's index, _CHUNK keys a query
                names += [r[0] for r in self._exec("SELECT name FROM subjects WHERE removed IS NULL AND lookalike_key "
                                                   f"IN ({','.join('?' * len(chunk))})", chunk).fetchall()]
        return sorted(names)

    def count_subjects(self) -> dict[str, int]:
        with self._transaction():
            removed, live = (int(x) for x in self._exec(
                "SELECT COALESCE(SUM(CASE WHEN removed IS NULL THEN 0 ELSE 1 END), 0), "
                "COALESCE(SUM(CASE WHEN removed IS NULL THEN 1 ELSE 0 END), 0) FROM subjects").fetchone())
            searchable, images, skipped = (int(x) for x in self._exec(
                "SELECT COUNT(DISTINCT CASE WHEN i.status = 'ok' THEN i.subject_id END), "
                "COALESCE(SUM(CASE WHEN i.status = 'ok' THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN i.status <> 'ok' THEN 1 ELSE 0 END), 0) "
                "FROM images i JOIN subjects s ON s.id = i.subject_id WHERE s.removed IS NULL").fetchone())
        return {"subjects": live, "searchable": searchable, "removed": removed, "images": images,
                "skipped": skipped}

    def delete_subject(self, name: str) -> int:
        with self._transaction(write=True):
            row = self._exec("SELECT id, removed FROM subjects WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise KeyError(f"subject {name!r} is not in the gallery")
            if row[1] is not None:
                raise KeyError(f"subject {name!r} was already removed (at {row[1]})")
            n = self._exec("DELETE FROM images WHERE subject_id = ?", (row[0],)).rowcount
            self._exec("UPDATE subjects SET removed = ? WHERE id = ?", (now(), row[0]))
            self._bump()
            return int(n)

    # --- images and embeddings -------------------------------------------------------------------------
    def add_images(self, images: list[NewImage], matcher: str, preprocess: str) -> AddResult:
        out = AddResult()
        with self._transaction(write=True):
            ids: dict[str, int] = {}
            for im in images:
                sid = ids.get(im.subject)
                if sid is None:
                    sid = ids[im.subject] = self._subject_id(_check_name(im.subject))
                box = json.dumps([int(x) for x in im.box]) if im.box is not None else None
                marks = np.asarray(im.landmarks, np.float32).tobytes() if im.landmarks is not None else None
                row = self._exec(
                    "INSERT INTO images (subject_id, path, sha1, status, message, method, n_faces, box, landmarks, "
                    "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (subject_id, sha1) DO NOTHING "
                    "RETURNING id",
                    (sid, im.path, im.sha1, im.status, im.message, im.method, int(im.n_faces), box, marks,
                     now())).fetchone()
                image_id = int(row[0]) if row else None
                if image_id is not None and im.status == "ok":
                    if im.embedding is None:
                        raise ValueError(f"{im.path}: status ok but no embedding")
                    self._exec("INSERT INTO embeddings (image_id, matcher, preprocess, vector) VALUES (?, ?, ?, ?)",
                               (image_id, matcher, preprocess, np.asarray(im.embedding, np.float32).tobytes()))
                out.image_ids.append(image_id)
            out.generation = self._bump(added=[i for i in out.image_ids if i is not None])
        return out

    _IMAGES = ("SELECT i.id, s.name, i.path, i.sha1, i.status, i.message, i.method, i.n_faces, i.box, i.landmarks, "
               "i.created FROM images i JOIN subjects s ON s.id = i.subject_id ")

    def list_images(self, subject: str | None = None) -> list[ImageRecord]:
        with self._transaction():
            rows = self._exec(self._IMAGES + ("WHERE s.name = ? ORDER BY i.id" if subject is not None
                                              else "ORDER BY i.id"),
                              (subject,) if subject is not None else ()).fetchall()
        return [_image_record(r) for r in rows]

    def find_content(self, sha1s: list[str]) -> list[tuple[str, str, int, str]]:
        out = []
        with self._transaction():
            for chunk in _chunks(sorted(set(sha1s))):
                q = ",".join("?" * len(chunk))
                out += self._exec(f"SELECT i.sha1, s.name, i.id, i.status FROM images i JOIN subjects s "
                                  f"ON s.id = i.subject_id WHERE i.sha1 IN ({q})", chunk).fetchall()
        return [(a, b, int(c), d) for a, b, c, d in out]

    def remove_images(self, image_ids: list[int]) -> int:
        n = 0
        with self._transaction(write=True):
            for chunk in _chunks([int(i) for i in image_ids]):
                q = ",".join("?" * len(chunk))
                n += self._exec(f"DELETE FROM images WHERE id IN ({q})", chunk).rowcount
            self._bump()
        return n

    def snapshot(self, matcher: str, preprocess: str, with_vectors: bool = True,
                 image_ids: np.ndarray | None = None) -> Snapshot:
        query = (f"SELECT i.id, i.subject_id, s.name, i.path{', e.vector' if with_vectors else ''} FROM images i "
                 "JOIN subjects s ON s.id = i.subject_id "
                 "JOIN embeddings e ON e.image_id = i.id WHERE s.removed IS NULL AND i.status = 'ok' "
                 "AND e.matcher = ? AND e.preprocess = ? ")
        with self._transaction():
            gen = int(self._exec("SELECT generation FROM state WHERE id = 1").fetchone()[0])
            if image_ids is None:
                rows = self._exec(query + "ORDER BY i.id", (matcher, preprocess)).fetchall()
            else:
                rows = []
                for chunk in _chunks(sorted({int(i) for i in image_ids})):
                    rows += self._exec(query + f"AND i.id IN ({','.join('?' * len(chunk))}) ORDER BY i.id",
                                       (matcher, preprocess, *chunk)).fetchall()
        ids, subject_ids = (np.fromiter((r[c] for r in rows), np.int64, len(rows)) for c in (0, 1))
        subjects = np.asarray([r[2] for r in rows], dtype=object)
        paths = np.asarray([r[3] for r in rows], dtype=object)
        vectors = (np.stack([np.frombuffer(bytes(r[4]), np.float32) for r in rows]) if rows and with_vectors
                   else np.zeros((0, 0), np.float32))
        return Snapshot(gen, ids, subjects, paths, vectors, subject_ids)

    def get_image(self, image_id: int) -> ImageRecord | None:
        with self._transaction():
            rows = self._exec(self._IMAGES + "WHERE i.id = ?", (int(image_id),)).fetchall()
        return _image_record(rows[0]) if rows else None

    def get_embeddings(self, image_ids: list[int], matcher: str, preprocess: str) -> dict[int, np.ndarray]:
        out = {}
        with self._transaction():
            for chunk in _chunks([int(i) for i in image_ids]):
                q = ",".join("?" * len(chunk))
                for i, blob in self._exec(f"SELECT image_id, vector FROM embeddings WHERE matcher = ? AND "
                                          f"preprocess = ? AND image_id IN ({q})", [matcher, preprocess, *chunk]):
                    out[int(i)] = np.frombuffer(bytes(blob), np.float32).copy()
        return out

    # --- service log -----------------------------------------------------------------------------------
    def add_search(self, probe: bytes | None, probe_sha1: str, result: dict, recorded_by: str = "") -> int:
        with self._transaction(write=True):
            self._hold_searches()  # a pruning must not delete the photo's holder between this check and the insert
            if probe is not None and self._exec("SELECT 1 FROM searches WHERE probe_sha1 = ? AND probe IS NOT NULL "
                                                "LIMIT 1", (probe_sha1,)).fetchone():
                probe = None  # kept once (PROBE_INDEX): a 20-face photo sent 20 times had stored 400 copies
            return int(self._exec("INSERT INTO searches (created, probe_sha1, probe, result, recorded_by, ambiguous) "
                                  "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                                  (now(), probe_sha1, probe, json.dumps(result), recorded_by,
                                   int(is_ambiguous(result)))).fetchone()[0])

    def get_search(self, search_id: int, with_probe: bool = False) -> SearchRecord | None:
        with self._transaction():
            row = self._exec(f"SELECT id, created, probe_sha1, result, recorded_by, ambiguous"
                             f"{', probe' if with_probe else ''} FROM searches WHERE id = ?",
                             (int(search_id),)).fetchone()
            probe = None
            if row is not None and with_probe:
                probe = row[6]
                if probe is None:  # its photo's bytes, kept with an earlier search (PROBE_INDEX)
                    first = self._exec("SELECT probe FROM searches WHERE probe_sha1 = ? AND probe IS NOT NULL "
                                       "LIMIT 1", (row[2],)).fetchone()
                    probe = first[0] if first else None
        if row is None:
            return None
        probe = bytes(probe) if probe is not None else None
        return SearchRecord(int(row[0]), row[1], row[2], json.loads(row[3]), probe, row[4], bool(row[5]))

    def list_searches(self, limit: int = 100, before: int | None = None, reviewed: bool | None = None,
                      ambiguous: bool | None = None) -> list[SearchRecord]:
        where, params = _search_filter(before, None, reviewed, ambiguous)
        with self._transaction():
            rows = self._exec("SELECT id, created, probe_sha1, result, recorded_by, ambiguous FROM searches" + where
                              + " ORDER BY id DESC LIMIT ?", (*params, int(limit))).fetchall()
        return [SearchRecord(int(r[0]), r[1], r[2], json.loads(r[3]), None, r[4], bool(r[5])) for r in rows]

    def adjacent_search(self, search_id: int, newer: bool = False, reviewed: bool | None = None) -> int | None:
        where, params = _search_filter(None if newer else search_id, search_id if newer else None, reviewed)
        with self._transaction():
            row = self._exec(f"SELECT id FROM searches{where} ORDER BY id {'ASC' if newer else 'DESC'} LIMIT 1",
                             params).fetchone()
        return None if row is None else int(row[0])

    def add_review(self, search_id: int, subject: str, verdict: str, reviewer: str, note: str = "",
                   recorded_by: str = "") -> int:
        check_verdict(verdict)
        if not reviewer:
            raise ValueError("a review needs a reviewer")
        with self._transaction(write=True):
            self._hold_searches()  # nor the search between this check and the insert
            if self._exec("SELECT 1 FROM searches WHERE id = ?", (int(search_id),)).fetchone() is None:
                raise KeyError(f"no search {search_id}")
            return int(self._exec("INSERT INTO reviews (search_id, subject, verdict, reviewer, note, created, "
                                  "recorded_by) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
                                  (int(search_id), subject, verdict, reviewer, note, now(), recorded_by)
                                  ).fetchone()[0])

    def list_reviews(self, search_id: int | None = None) -> list[ReviewRecord]:
        sql = "SELECT id, search_id, subject, verdict, reviewer, note, created, recorded_by FROM reviews "
        with self._transaction():
            rows = self._exec(sql + ("WHERE search_id = ? ORDER BY id" if search_id is not None else "ORDER BY id"),
                              (int(search_id),) if search_id is not None else ()).fetchall()
        return [ReviewRecord(int(r[0]), int(r[1]), *r[2:]) for r in rows]

    def count_reviews(self, search_ids: list[int]) -> dict[int, int]:
        ids = [int(i) for i in dict.fromkeys(search_ids)]
        counts = dict.fromkeys(ids, 0)
        with self._transaction():
            for chunk in _chunks(ids, 1000):  # one query for a page of searches (the API's at most 1,000)
                counts.update((int(i), int(n)) for i, n in self._exec(
                    f"SELECT search_id, COUNT(*) FROM reviews WHERE search_id IN ({','.join('?' * len(chunk))}) "
                    "GROUP BY search_id", chunk))
        return counts


    _UNREVIEWED_BEFORE = f"created < ? AND NOT {_REVIEWED}"

    def prune_searches(self, before: str, dry_run: bool = False) -> PruneReport:
        with self._transaction(write=not dry_run):
            if not dry_run:
                self._hold_searches(exclusive=True)
            reviewed, newer = (int(x) for x in self._exec(
                f"SELECT COALESCE(SUM(CASE WHEN created < ? AND {_REVIEWED} THEN 1 ELSE 0 END), 0), "
                "COALESCE(SUM(CASE WHEN created >= ? THEN 1 ELSE 0 END), 0) FROM searches",
                (before, before)).fetchone())
            doomed = self._UNREVIEWED_BEFORE
            rows = self._exec(f"SELECT id, probe_sha1, CASE WHEN probe IS NULL THEN -1 ELSE length(probe) END, "
                              f"CASE WHEN {doomed} THEN 1 ELSE 0 END FROM searches WHERE probe_sha1 IN "
                              f"(SELECT probe_sha1 FROM searches WHERE {doomed})", (before, before)).fetchall()
            moves, photos, photo_bytes = _photos_of_pruned([(int(a), b, int(c), bool(d)) for a, b, c, d in rows])
            n = sum(1 for r in rows if r[3])
            if not dry_run:
                for to, held_by in moves:
                    self._exec("UPDATE searches SET probe = (SELECT probe FROM searches WHERE id = ?) WHERE id = ?",
                               (held_by, to))
                n = self._exec(f"DELETE FROM searches WHERE {doomed}", (before,)).rowcount
        return PruneReport(before, dry_run, int(n), photos, photo_bytes, reviewed, newer, len(moves))

    def add_token(self, label: str, salt: str, digest: str) -> int:
        with self._transaction(write=True):
            return int(self._exec("INSERT INTO tokens (label, salt, hash, created) VALUES (?, ?, ?, ?) RETURNING id",
                                  (label, salt, digest, now())).fetchone()[0])

    def list_tokens(self) -> list[TokenRecord]:
        with self._transaction():
            rows = self._exec("SELECT id, label, salt, hash, created FROM tokens ORDER BY id").fetchall()
        return [TokenRecord(int(r[0]), *r[1:]) for r in rows]

    def revoke_token(self, token_id: int) -> bool:
        with self._transaction(write=True):
            return self._exec("DELETE FROM tokens WHERE id = ?", (int(token_id),)).rowcount > 0

    def put_session(self, record: SessionRecord, now: float) -> None:
        r = record
        with self._transaction(write=True):
            self._exec("DELETE FROM sessions WHERE expires < ?", (float(now),))
            self._exec("INSERT INTO sessions (id_hash, csrf, expires, authenticated, token, reviewer) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id_hash) DO UPDATE SET csrf = excluded.csrf, "
                       "expires = excluded.expires, authenticated = excluded.authenticated, "
                       "token = excluded.token, reviewer = excluded.reviewer",
                       (r.key, r.csrf, float(r.expires), int(r.authenticated), r.token, r.reviewer))

    def get_session(self, key: str) -> SessionRecord | None:
        with self._transaction():
            row = self._exec("SELECT id_hash, csrf, expires, authenticated, token, reviewer FROM sessions "
                             "WHERE id_hash = ?", (key,)).fetchone()
        return None if row is None else SessionRecord(row[0], row[1], float(row[2]), bool(row[3]), row[4], row[5])

    def drop_session(self, key: str) -> None:
        with self._transaction(write=True):
            self._exec("DELETE FROM sessions WHERE id_hash = ?", (key,))

    # --- derived values --------------------------------------------------------------------------------
    def get_derived(self, name: str) -> str | None:
        with self._transaction():
            row = self._exec("SELECT value FROM derived WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def put_derived(self, name: str, value: str) -> bool:
        try:
            with self._transaction(write=True):
                self._exec("INSERT INTO derived (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                           "SET value = excluded.value", (name, value))
        except self.WRITE_ERRORS:
            return False
        return True


def _search_filter(before: int | None = None, after: int | None = None, reviewed: bool | None = None,
                   ambiguous: bool | None = None) -> tuple[str, list]:
    """(`` WHERE ...`` or "", its parameters) choosing searches with an id below ``before`` and above ``after``, with
    (``reviewed`` True) or without (False) a review, and ``ambiguous`` or not (None: no condition)."""
    where, params = [], []
    for condition, value in (("id < ?", before), ("id > ?", after), ("ambiguous = ?", ambiguous)):
        if value is not None:
            where.append(condition)
            params.append(int(value))
    if reviewed is not None:
        where.append(_REVIEWED if reviewed else f"NOT {_REVIEWED}")
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _photos_of_pruned(rows: list[tuple[int, str, int, bool]]) -> tuple[list[tuple[int, int]], int, int]:
    """What pruning does to probe photos, from (search id, photo SHA-1, bytes held or -1, deleted) of every search of
    a photo that a deleted search shows: the moves (a kept search, the deleted search holding the photo's bytes) for
    photos a kept search shows and no kept search holds; how many photos are deleted and their bytes (every copy a
    deleted search held, but a moved one)."""
    by_photo: dict[str, list[tuple[int, str, int, bool]]] = defaultdict(list)
    for r in rows:
        by_photo[r[1]].append(r)
    moves, photos, photo_bytes = [], 0, 0
    for searches in by_photo.values():
        kept = sorted(r[0] for r in searches if not r[3])
        held = [r for r in searches if r[3] and r[2] >= 0]  # copies held by deleted searches
        photo_bytes += sum(r[2] for r in held)
        if not kept:
            photos += bool(held)
        elif held and not any(r[2] >= 0 for r in searches if not r[3]):
            moves.append((kept[0], held[0][0]))
            photo_bytes -= held[0][2]
    return moves, photos, photo_bytes


def _image_record(r) -> ImageRecord:
    return ImageRecord(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], int(r[7]),
                       tuple(json.loads(r[8])) if r[8] else None,
                       np.frombuffer(bytes(r[9]), np.float32).reshape(5, 2).copy() if r[9] else None, r[10])


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a subject name must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ValueError(f"a subject name cannot contain NUL characters: {name!r}")
    return name


class _Rows:
    """A fully read result (so no statement stays open inside a transaction)."""

    def __init__(self, rows: list, rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list:
        return self.rows

    def __iter__(self):
        return iter(self.rows)
