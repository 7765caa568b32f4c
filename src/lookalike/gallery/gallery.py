"""A persistent, searchable gallery of enrolled faces: enrol images per subject, search per subject.

The store (SQLite file or PostgreSQL) is the truth. The matrix of enrolled vectors is kept in step with it: beside
a SQLite gallery in ``G.sqlite.vectors/`` (checked against the store on every load: brought up to date when it is
older than the store, refused when it disagrees with it at the same generation), for PostgreSQL in process memory
only. :meth:`Gallery.refresh` (run at the start of every search) brings it up to date when the store's generation
moved, so a second process sees another's enrolment on its next search: by reading just the added rows when adding
is all that happened (the store records what each generation added), else by reloading it.

The search index is named by a spec (``numpy``, ``hnsw:m=32``...; :func:`lookalike.index.parse_index_spec`)
recorded in the store when the gallery is created. An approximate index is saved in ``G.sqlite.vectors/index/``
and reused while it matches the vectors; enrolment appends to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike import __version__
from lookalike.checks import check_int, check_paths, check_strings, check_vectors, non_unit_rows
from lookalike.data.images import ImageError, decode_image
from lookalike.data.names import lookalike_key, name_warnings
from lookalike.embed import embed_paths, preprocess_key, spawnable, worker_pool
from lookalike.gallery import display_db, open_store
from lookalike.gallery.store import (
    GalleryExistsError,
    GalleryStore,
    ImageRecord,
    NewImage,
    NoGalleryError,
    Snapshot,
    StoreError,
    VectorsMismatchError,
)
from lookalike.gallery.vectors import (
    VectorFiles,
    VectorFilesError,
    read_index,
    read_vectors,
    restamp,
    saved_generation,
    vector_dir,
    write_index,
    write_vectors,
)
from lookalike.gallery.verify import VerifyReport, verify_photos
from lookalike.index import (
    INDEXES,
    ApproximateIndex,
    Index,
    IndexMismatchError,
    build_index,
    format_index_spec,
    make_index,
    parse_index_spec,
)
from lookalike.io import WriteError
from lookalike.matchers import DEFAULT_MATCHER, MATCHERS, matcher_name
from lookalike.matchers.align import CNN_FALLBACK, Alignment, FaceAligner
from lookalike.matchers.cache import EmbeddingCache, content_key

FORMAT = "lookalike-gallery"
TRANSIENT = ("missing", "error")  # skip reasons that may succeed next time: never recorded in the gallery
SPOT_CHECKS = 4  # rows of saved vector files compared with the store on load (every row when they were changed)
CHECK_BLOCK = 50_000  # rows read from the store at a time when every row is compared
DEFAULT_INDEX = "numpy"  # also the index of galleries created before the spec was recorded


class GalleryFilesWarning(UserWarning):
    """The vector files beside a SQLite gallery could not be written (a full disk): searches use the database's
    vectors, and the files are written again on a later opening."""


@dataclass
class EnrollReport:
    """What :meth:`Gallery.enroll` did with each input image."""

    added: int = 0
    already_enrolled: int = 0  # same subject and content already in the gallery: no work done
    skipped: Counter = field(default_factory=Counter)  # reason -> images
    messages: list[str] = field(default_factory=list)  # one per skipped image
    duplicates: list[dict] = field(default_factory=list)  # images in the gallery whose bytes another subject has too
    computed: int = 0  # images embedded in this call (the rest came from the embedding cache)
    seconds: float = 0.0  # elapsed (wall-clock) time of the enrolment
    faces: Counter = field(default_factory=Counter)  # detection method ("detected", "cnn", "central") -> images added
    # the subject names' :func:`~lookalike.data.names.name_warnings` against the gallery's names before the enrolment
    name_warnings: list[str] = field(default_factory=list)

    def skip(self, reason: str, message: str) -> None:
        self.skipped[reason] += 1
        self.messages.append(message)

    def summary(self) -> dict:
        return {"added": self.added, "already_enrolled": self.already_enrolled,
                "skipped": dict(sorted(self.skipped.items())), "duplicates": len(self.duplicates),
                "computed": self.computed, "faces": dict(sorted(self.faces.items())), "seconds": round(self.seconds, 3)}

    def format(self) -> str:
        """A short summary for people."""
        skipped = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items())) or "none"
        return (f"added {self.added}, already enrolled {self.already_enrolled}, "
                f"skipped {sum(self.skipped.values())} ({skipped}), duplicates {len(self.duplicates)} "
                f"(same image under another subject), {format_seconds(self.seconds)} s")


def format_seconds(seconds: float) -> str:
    """An elapsed time for people: one decimal from a second up, two significant digits below (0.032, not 0.0)."""
    return f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.2g}"


@dataclass
class SubjectLists:
    """Per-subject candidate lists, best first: each subject once, represented by its best-matching image.

    Shapes (Q, K) with K = min(k, subjects in the gallery); ``vectors`` (Q, K, D).
    """

    subjects: np.ndarray  # object
    image_ids: np.ndarray  # int64
    scores: np.ndarray  # float32
    vectors: np.ndarray  # float32
    paths: np.ndarray  # object

    def __len__(self) -> int:
        return len(self.subjects)


def _differing_rows(saved: np.ndarray, ids: np.ndarray, stored: dict[int, np.ndarray]) -> np.ndarray:
    """The rows of ``saved`` (one vector per image of ``ids``, at least one) that differ from their image's
    ``stored`` vector, or whose image has none of their size: compared as one matrix, not row by row."""
    none = np.full(saved.shape[1], np.nan, np.float32)  # equal to nothing
    theirs = np.stack([v if (v := stored.get(i)) is not None and v.shape == none.shape else none for i in ids.tolist()])
    return np.flatnonzero((theirs != saved).any(axis=1))


def _index_spec(recorded: str | None, override: str | None, url: str) -> tuple[str, dict, bool]:
    """(kind, params) to search with and whether they are the gallery's own (``recorded``) rather than a
    session's ``override``."""
    try:
        own = parse_index_spec(recorded or DEFAULT_INDEX)
    except ValueError as e:
        if override is None:
            raise StoreError(f"{url}: the gallery's index cannot be built by this lookalike ({e}); open it with "
                             "another index") from None
        own = None
    kind, params = own if override is None else parse_index_spec(override)
    return kind, params, (kind, params) == own


# A gallery with vector files catches up on at most this many added rows, or a sixteenth of what it holds, by
# reading them from the store (with their vectors, ~20 us a row in SQLite); more, and a reload, which reads the
# rows without vectors (~1.2 us a row) and maps the files, is cheaper.
CATCH_UP_ROWS = 1000


class Gallery:
    """Enrolled faces in a store, searchable per subject. Use :meth:`create` or :meth:`open`.

    ``index`` is the spec of the search index in use (the gallery's own, or a session's override).
    Learned state (trailing underscore) mirrors the store at ``generation_``: ``image_ids_`` (N,), ``subjects_``
    (N,) and ``paths_`` (N,) of each vector row, ``vectors_`` (N, D) and the search ``index_`` (None while the
    gallery is empty); ``vectors_source_`` and ``index_source_`` (``saved``: loaded from the vectors folder,
    ``built``: built in this process) say where they came from.
    """

    def __init__(self, store: GalleryStore, index: str | None = None, rebuild_vectors: bool = False,
                 load: bool = True) -> None:
        meta = store.get_meta()
        if meta.get("format") != FORMAT:
            raise StoreError(f"{store.url} holds no lookalike gallery settings (was it created by Gallery.create?)")
        self.store = store
        self._kind, self._params, own = _index_spec(meta.get("index"), index, store.url)
        self.index = format_index_spec(self._kind, self._params)
        self.matcher = meta["matcher"]
        self.matcher_name = meta["matcher_name"]
        self.aligner = FaceAligner.from_settings(json.loads(meta["aligner_params"]))
        if self.aligner.name != meta["aligner"]:
            raise StoreError(f"{store.url}: aligner {meta['aligner']!r} cannot be rebuilt by this lookalike "
                             f"(got {self.aligner.name!r})")
        self.lowres = int(meta["lowres"]) if meta.get("lowres") else None
        self.preprocess = meta["preprocess"]
        self.dim = int(meta["dim"]) if meta.get("dim") else None
        if own and self.dim is not None:
            self._check_index_dim(self.dim, "open it with another index (Gallery.open(path, index='numpy'))")
        path, elsewhere = getattr(store, "path", None), getattr(store, "vectors_dir", None)
        self.vector_dir = vector_dir(path) if path is not None else Path(elsewhere) if elsewhere else None
        # an approximate index of the gallery's own spec is kept beside its vectors; exact ones need no state
        self._saves_index = own and self.vector_dir is not None and issubclass(INDEXES[self._kind], ApproximateIndex)
        self.generation_ = -1
        self.vectors_source_ = self.index_source_ = ""
        self.index_: Index | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._vectors_buf: np.ndarray | None = None  # the growable storage behind vectors_ (see _append_vectors)
        if load:
            self._load(read_files=not rebuild_vectors)
        else:  # nothing loaded (generation -1): the first search or refresh loads the vectors as open does
            self.image_ids_ = np.zeros(0, np.int64)
            self.subjects_ = self.paths_ = np.zeros(0, object)
            self.vectors_ = np.zeros((0, self.dim or 0), np.float32)
            self._code_subjects(self.image_ids_)

    # --- lifecycle -------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path_or_url: str | Path, matcher: str | None = None, lowres: int | None = None,
               aligner: FaceAligner | None = None, index: str = DEFAULT_INDEX) -> Gallery:
        """A new, empty gallery recording the matcher, aligner and preprocessing every image will go through, and
        the search ``index`` spec (``numpy``, ``faiss``: exact; ``hnsw``, ``ivf``, ``pq`` with parameters, e.g.
        ``hnsw:m=32,ef_search=128``: approximate, re-scored exactly)."""
        matcher = matcher or DEFAULT_MATCHER
        if matcher not in MATCHERS:
            raise ValueError(f"unknown matcher {matcher!r}; choose one of {MATCHERS}")
        if lowres is not None and (isinstance(lowres, bool) or not isinstance(lowres, int) or lowres < 2):
            raise ValueError(f"lowres must be a face width in pixels (>= 2), got {lowres!r}")
        index = format_index_spec(*parse_index_spec(index))
        aligner = aligner or FaceAligner()
        meta = {"format": FORMAT, "matcher": matcher, "matcher_name": matcher_name(matcher),
                "aligner": aligner.name,
                "aligner_params": json.dumps(aligner.settings()),
                "lowres": "" if lowres is None else str(lowres), "preprocess": preprocess_key(lowres), "dim": "",
                "index": index, "created_by": f"lookalike {__version__}"}
        return cls._on(open_store(str(path_or_url), create=True, meta=meta))

    @classmethod
    def open(cls, path_or_url: str | Path, index: str | None = None, busy_timeout: float | None = None) -> Gallery:
        """An existing gallery, searched with its own index; ``index`` (a spec) overrides it for this object only:
        built in memory, never saved, the gallery's record unchanged. ``busy_timeout``: see
        :func:`~lookalike.gallery.open_store`.

        Raises :class:`VectorsMismatchError` when the vector files beside a SQLite gallery disagree with its
        database at the same generation (see :meth:`rebuild_vectors`).
        """
        return cls._on(open_store(str(path_or_url), create=False, busy_timeout=busy_timeout), index)

    @classmethod
    def open_or_create(cls, path_or_url: str | Path, matcher: str | None = None, lowres: int | None = None,
                       geometry: FaceAligner | None = None, central_fraction: float | None = None,
                       cnn_fallback: bool | None = None, index: str | None = None) -> Gallery:
        """The gallery at ``path_or_url``, or a new one: each setting given (``matcher``, ``lowres``, a model's chip
        ``geometry``, the fallbacks for undetected faces ``central_fraction`` and ``cnn_fallback``, ``index``) is
        a new gallery's, and must match an existing gallery's (a one-line ValueError if not); None: an existing
        gallery's own, a new one's default. The one place the enrol command and the service open their gallery."""
        try:
            gallery = cls.open(path_or_url)
        except NoGalleryError:
            # a model's geometry only: its training data's fallbacks describe that data, not this gallery's photos
            default = FaceAligner()
            aligner = (geometry or default).with_fallback(
                default.central_fraction if central_fraction is None else central_fraction,
                CNN_FALLBACK if cnn_fallback is None else cnn_fallback)
            try:
                return cls.create(path_or_url, matcher=matcher, lowres=lowres, aligner=aligner,
                                  index=index or DEFAULT_INDEX)
            except GalleryExistsError:  # another process created it meanwhile: open it, and check it, as found
                gallery = cls.open(path_or_url)
        try:
            own = gallery.aligner
            wrong = ([f"--central-fraction {own.central_fraction:g}"]
                     if central_fraction is not None and central_fraction != own.central_fraction else [])
            if cnn_fallback is not None and cnn_fallback != own.cnn_fallback:
                wrong.append("--cnn-fallback" if own.cnn_fallback else "--no-cnn-fallback")
            if wrong:
                raise ValueError(f"{gallery.store.url} was created with {' and '.join(wrong)} (its fallbacks for "
                                 "undetected faces, kept for good): drop the option")
            aligner = (geometry or own).with_fallback(own.central_fraction, own.cnn_fallback)
            gallery.check_compatible(matcher or gallery.matcher, aligner.name,
                                     preprocess_key(lowres) if lowres is not None else gallery.preprocess)
            if index is not None and parse_index_spec(index) != parse_index_spec(gallery.index):
                raise ValueError(f"{gallery.store.url} searches with the index {gallery.index!r}; --index sets the "
                                 "index of a new gallery only")
        except ValueError:
            gallery.close()
            raise
        return gallery

    @classmethod
    def rebuild_vectors(cls, path_or_url: str | Path, index: str | None = None) -> Gallery:
        """An existing gallery whose vector files (and saved index) are rewritten from its database without
        reading the old ones: the remedy when :meth:`open` refuses them."""
        return cls._on(open_store(str(path_or_url), create=False), index, rebuild_vectors=True)

    @classmethod
    def open_for_verify(cls, path_or_url: str | Path) -> Gallery:
        """An existing gallery opened for :meth:`verify` beside any running process: its settings read, its vectors
        not loaded, so that nothing is checked, refused, stamped or rewritten on opening (a later search loads them
        as :meth:`open` does)."""
        return cls._on(open_store(str(path_or_url), create=False), load=False)

    @classmethod
    def _on(cls, store: GalleryStore, index: str | None = None, rebuild_vectors: bool = False,
            load: bool = True) -> Gallery:
        """A gallery over an open store, which is closed if that fails."""
        try:
            return cls(store, index, rebuild_vectors, load)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check_compatible(self, matcher: str, aligner: str, preprocess: str) -> None:
        """Raise ValueError when probes made with (matcher, aligner, preprocess) cannot be searched here.

        ``matcher`` is a short name (``torch``, ``dlib``) or a matcher cache name; ``aligner`` is
        :attr:`FaceAligner.name`; ``preprocess`` is :func:`lookalike.embed.preprocess_key`.
        """
        name = matcher_name(matcher) if matcher in MATCHERS else matcher
        pairs = (("matcher", name, self.matcher_name), ("aligner", aligner, self.aligner.name),
                 ("preprocess", preprocess, self.preprocess))
        wrong = [f"{what} {theirs!r} (probe) vs {ours!r} (gallery)" for what, theirs, ours in pairs if theirs != ours]
        if wrong:
            raise ValueError(f"probe pipeline does not match the gallery {self.store.url}: " + "; ".join(wrong))

    # --- reading ---------------------------------------------------------------------------------------
    def subjects(self) -> list[str]:
        """Names of the enrolled (not removed) subjects, sorted."""
        return self.store.subject_names()  # names only: 100,000 subjects in 0.2-0.3 s, where listing them took 0.6 s

    def subjects_alike(self, names: Iterable[str]) -> list[str]:
        """Names of the enrolled (not removed) subjects whose :func:`~lookalike.data.names.lookalike_key` one of
        ``names`` has (the names themselves too, if enrolled), sorted: by the database's index of the keys, without
        reading every name."""
        return self.store.subject_names_by_key({lookalike_key(n) for n in names})

    def images(self, subject: str) -> list[ImageRecord]:
        """The stored images of one subject (skipped ones too, with their reason)."""
        s = self.store.get_subject(subject)
        if s is None or s.removed is not None:
            raise ValueError(f"subject {subject!r} is not in the gallery" if s is None
                             else f"subject {subject!r} was removed (at {s.removed})")
        return self.store.list_images(subject)

    def stats(self) -> dict:
        """Counts and settings. ``images_unusable``: images recorded as failing in a way a rerun would repeat (no
        face, truncated, not decodable), kept so that a rerun does not read them again; what an enrolment left out
        without recording it (files that are not images, broken links, repeats, missing files) is counted in that
        enrolment's report only."""
        n = self.store.count_subjects()
        self.refresh()
        return {"store": self.store.url, "schema_version": self.store.schema_version(),
                "generation": self.generation_, "subjects": n["subjects"], "subjects_searchable": n["searchable"],
                "subjects_removed": n["removed"], "images": n["images"], "images_unusable": n["skipped"],
                "vectors": len(self.image_ids_),
                "vectors_source": self.vectors_source_, "index": self.index, "index_source": self.index_source_,
                "matcher": self.matcher, "matcher_name": self.matcher_name, "aligner": self.aligner.name,
                "preprocess": self.preprocess, "dim": self.dim}

    # --- checking -------------------------------------------------------------------------------------
    def verify(self, photos: bool = False, progress: bool = False) -> VerifyReport:
        """Audit the gallery, writing nothing: every row of the vectors it searches (the vector files, or the matrix
        in memory when it keeps none) compared with the database's embeddings, each of those finite and of unit
        length, and a saved approximate index matched with the vectors (hashed again, the files' stamps not
        trusted); with ``photos``, every enrolled face's photo re-read and its SHA-1 compared with the one recorded
        at enrolment. Runs beside other processes using the gallery (``changed``: one changed it meanwhile)."""
        t0 = time.perf_counter()
        report = VerifyReport(display_db(self.store.url))
        rewrite = ("rewrite the vector files and saved index from the database: `lookalike gallery rebuild-vectors "
                   f"--db {report.gallery}`")
        if self.vector_dir is None:
            rewrite = "open the gallery again (its vectors are read from the database)"
        snap, vectors = self._vectors_to_verify(report, rewrite)
        bar = tqdm(total=len(snap.image_ids), desc="verify: vectors", unit="face", disable=not progress, leave=False)
        start = 0
        with bar:
            for ids, stored, differ in self._compared_blocks(snap.image_ids, vectors, np.arange(len(snap.image_ids))):
                self._verify_embeddings(report, ids, stored)
                for row in (start + differ).tolist():
                    image_id = int(snap.image_ids[row])
                    what = "differs from its embedding in" if image_id in stored else "has no embedding in"
                    report.problem("vector_row", f"image {image_id} ({snap.subjects[row]!r}): its searched vector "
                                   f"{what} the database", rewrite, image_id=image_id, subject=str(snap.subjects[row]),
                                   path=str(snap.paths[row]))
                start += len(ids)
                bar.update(len(ids))
        report.faces = len(snap.image_ids) if vectors is not None else 0
        report.index = self._verify_index(report, vectors, rewrite)
        if photos:
            verify_photos(self.store, report, progress)
        report.changed = self.store.generation() != report.generation
        report.seconds = time.perf_counter() - t0
        return report

    def _vectors_to_verify(self, report: VerifyReport, rewrite: str) -> tuple[Snapshot, np.ndarray | None]:
        """(the store's rows without their vectors, the matrix searched for them: None when the vector files are
        unusable, a problem then in ``report``), read without writing anything."""
        if self.vector_dir is None:
            report.vectors = "memory (read from the database)"
            if self.generation_ < 0:  # opened for verify: read what an opening would load, without an index
                snap = self.store.snapshot(self.matcher_name, self.preprocess)
                report.generation = snap.generation
                return snap, snap.vectors
            self.refresh()
            report.generation = self.generation_
            return Snapshot(self.generation_, self.image_ids_, self.subjects_, self.paths_, np.zeros((0, 0)),
                            self.subject_codes_), np.asarray(self.vectors_)
        report.vectors = str(self.vector_dir)
        for _ in range(3):  # files and database read at different generations while another process wrote
            snap = self.store.snapshot(self.matcher_name, self.preprocess, with_vectors=False)
            report.generation = snap.generation
            try:
                saved, problem = read_vectors(self.vector_dir), ""
            except VectorFilesError as e:
                saved, problem = None, str(e)
            if saved is not None:
                gen = saved.state["generation"]
                if gen != snap.generation and self.store.generation() != snap.generation:
                    continue
                problem = (f"saved at generation {gen}, the database is at {snap.generation} (an enrolment stopped "
                           "before writing them: an opening rewrites them)" if gen < snap.generation
                           else self._files_disagreement(saved, snap))
                if not problem:
                    return snap, saved.vectors
            break
        report.problem("vector_files", f"{self.vector_dir}: " + (problem or "no vector files saved"), rewrite)
        return snap, None

    def _verify_embeddings(self, report: VerifyReport, ids: np.ndarray, stored: dict[int, np.ndarray]) -> None:
        """Problems with the database's embeddings of ``ids`` (``stored``): of another dimension, not finite, not
        of unit length."""
        remedy = (f"remove the subject (`lookalike gallery remove SUBJECT --db {report.gallery}`) and enrol its "
                  "photos again")
        dim = self.dim or next((len(v) for v in stored.values()), 0)
        good = [i for i in ids.tolist() if i in stored and stored[i].shape == (dim,)]
        bad = {i: f"its stored embedding has {stored[i].size} values, the gallery's have {dim}"
               for i in ids.tolist() if i in stored and stored[i].shape != (dim,)}
        if good:
            not_finite, off = non_unit_rows(np.stack([stored[i] for i in good]).astype(np.float32))
            bad.update({i: "its stored embedding holds NaN or infinite values" for i in np.asarray(good)[not_finite]})
            bad.update({i: "its stored embedding is not of unit length" for i in np.asarray(good)[off]})
        for image_id, message in sorted(bad.items()):
            report.problem("embedding", f"image {image_id}: {message}", remedy, image_id=int(image_id))

    def _verify_index(self, report: VerifyReport, vectors: np.ndarray | None, rewrite: str) -> str:
        """What the saved approximate index is ("matches", or why there is none to check); a problem in ``report``
        when it does not match the vectors or its spec."""
        if not self._saves_index:
            exact = not issubclass(INDEXES[self._kind], ApproximateIndex)
            return "none (exact search)" if exact else "none saved (built in memory by each process)"
        if vectors is None or not len(vectors):
            return "not checked (no vectors)"
        try:
            self._saved_index(vectors, trust_stamp=False)
        except FileNotFoundError:
            return "none saved (built and saved when the gallery is next opened)"
        except (OSError, ValueError) as e:
            folder, message = str(self.vector_dir / "index"), " ".join(str(e).split())
            report.problem("index", message if folder in message else f"{folder}: {message}", rewrite)
            return "does not match"
        return "matches"

    # --- values computed from the vectors, kept for later processes ----------------------------------
    def derived(self, name: str, key: dict) -> dict | None:
        """The value saved by :meth:`save_derived` under ``name`` for ``key`` (the settings it was computed with);
        None when there is none, it is unreadable, or it was saved for another key."""
        try:
            saved = json.loads(self.store.get_derived(name) or "{}")
        except ValueError:
            return None
        ok = isinstance(saved, dict) and saved.get("key") == key and isinstance(saved.get("value"), dict)
        return saved["value"] if ok else None

    def save_derived(self, name: str, key: dict, value: dict) -> None:
        """Keep ``value`` (e.g. identify's calibration) in the gallery's database, for every later process on any
        machine; a database this process cannot write to is left as it is (the value is computed again)."""
        self.store.put_derived(name, json.dumps({"key": key, "value": value}))

    # --- the vectors, kept in step with the store ------------------------------------------------------
    def refresh(self) -> bool:
        """Reload the vectors if the store changed since they were loaded; True if it did.

        Beside a SQLite gallery the saved vector files are used when they agree with the store. Files older than
        the store (an enrolment stopped between its database commit and the file write) are rewritten from the
        store; files at the store's generation (or newer) that disagree with it on count, dimension, matcher,
        preprocessing, image ids or spot-checked values are refused with :class:`VectorsMismatchError`.
        """
        self._flush()
        gen = self.store.generation()
        if gen == self.generation_:
            return False
        if not self._catch_up():
            self._load()
        return True

    def _catch_up(self) -> bool:
        """Append the images other processes added since :attr:`generation_` (read by id, not the whole gallery)
        when adding is all that changed; False when a reload is needed instead: something else changed, the
        change records are gone, or the new rows' ids are not all above the loaded ones (in PostgreSQL two
        enrolments can commit out of id order, and the vectors are kept in id order)."""
        if self.generation_ < 0 or not len(self.image_ids_):
            return False
        gen, added = self.store.changes_since(self.generation_)
        if added is None or (self.vector_dir is not None and len(added) > max(CATCH_UP_ROWS,
                                                                              len(self.image_ids_) // 16)):
            return False  # many rows: a reload reads the vectors from the files, faster than rows from the store
        snap = self.store.snapshot(self.matcher_name, self.preprocess, image_ids=added)
        matrix = None
        if len(snap.image_ids):
            if snap.image_ids[0] <= self.image_ids_[-1] or snap.vectors.shape[1] != self.dim:
                return False
            matrix = self._saved_matrix(gen, snap)
            self._pending.append((snap.image_ids, snap.subjects, snap.paths, snap.vectors))
            self._flush(matrix)
        self.generation_ = gen
        if matrix is None and self.vector_dir is not None and saved_generation(self.vector_dir) != gen:
            self._save()  # files behind (e.g. the enrolling process did not know its generation): append the rows
        return True

    def _saved_matrix(self, gen: int, added: Snapshot) -> np.ndarray | None:
        """The vector files' (memory-mapped, shared between processes) matrix when the enrolling process has already
        written them at ``gen`` holding exactly our rows followed by ``added``'s; else None (then the new rows are
        appended to a private copy)."""
        if self.vector_dir is None:
            return None
        try:
            saved = read_vectors(self.vector_dir)
        except VectorFilesError:
            return None
        if saved is None:
            return None
        st, n, ours = saved.state, len(self.image_ids_), (self.matcher_name, self.preprocess)
        same = (st["generation"] == gen and (st["matcher"], st.get("preprocess")) == ours
                and np.array_equal(saved.ids, np.concatenate([self.image_ids_, added.image_ids]))
                and np.array_equal(saved.vectors[n:], added.vectors))
        return saved.vectors if same else None

    def _load(self, read_files: bool = True) -> None:
        """Load the vectors (the saved files unless ``read_files`` is False, else the store) and the index."""
        if self.dim is None:  # another process may have enrolled the first face (and set dim) since we opened
            dim = self.store.get_meta().get("dim")
            self.dim = int(dim) if dim else None
        files = self.vector_dir is not None
        snap = self.store.snapshot(self.matcher_name, self.preprocess, with_vectors=not files)
        vectors, why = self._saved_vectors(snap) if files and read_files else (None, "rebuild asked")
        if vectors is not None:
            source = "file"
        else:
            if files:
                snap = self.store.snapshot(self.matcher_name, self.preprocess)
            vectors = snap.vectors if len(snap.image_ids) else np.zeros((0, self.dim or 0), np.float32)
            source = f"store (vector files rebuilt: {why})" if files else "store"
        self.generation_ = snap.generation
        self.image_ids_, self.subjects_, self.paths_ = snap.image_ids, snap.subjects, snap.paths
        self.vectors_, self.vectors_source_ = vectors, source
        self._code_subjects(snap.subject_ids)
        self._open_index(reuse=source == "file")
        if source != "file":
            self._save(append=read_files)  # a rebuild asked for rewrites the files whole
        elif self.index_source_ == "built":
            self._save_index()

    def _saved_vectors(self, snap: Snapshot) -> tuple[np.ndarray | None, str]:
        """(the saved matrix, "") when it agrees with the store snapshot; (None, why) when it is absent or older
        than the store, or the store moved while it was read: then it is rebuilt from the store.

        Raises :class:`VectorsMismatchError` when files at the snapshot's generation (or newer) disagree with it.
        """
        try:
            saved = read_vectors(self.vector_dir)
        except VectorFilesError as e:
            saved, gen, problem = None, e.generation, str(e)
        else:
            if saved is None:
                return None, "none saved"
            gen, problem = saved.state["generation"], ""
        if gen is not None and gen < snap.generation:
            return None, f"saved at generation {gen}, the database is at {snap.generation}"
        problem = problem or self._disagreement(saved, snap)
        if not problem:
            if saved.changed:  # every row agreed: the files are ours again (a copy restored, a file touched)
                restamp(self.vector_dir, saved.state)
            return saved.vectors, ""
        if self.store.generation() != snap.generation:
            return None, "the database changed while they were read"
        raise VectorsMismatchError(
            f"{self.vector_dir}: vector files disagree with the database ({' '.join(problem.split())}); rewrite "
            f"them with `lookalike gallery rebuild-vectors --db {self.store.url}`")

    def _disagreement(self, saved: VectorFiles, snap: Snapshot) -> str:
        """How readable saved vector files disagree with the store snapshot ("" when they agree)."""
        problem = self._files_disagreement(saved, snap)
        if problem or not len(snap.image_ids):
            return problem
        # a few rows, or every row when the files were written by something else since (state.json's stamps):
        # a row overwritten in place had been searched unchecked
        rows = (np.arange(len(snap.image_ids)) if saved.changed else
                np.unique(np.linspace(0, len(snap.image_ids) - 1, SPOT_CHECKS).astype(int)))
        for ids, _, differ in self._compared_blocks(snap.image_ids, saved.vectors, rows):
            if len(differ):
                return (f"saved vector of image {int(ids[differ[0]])} differs from the database's"
                        + (f" ({' and '.join(saved.changed)} changed since lookalike wrote them)"
                           if saved.changed else ""))
        return ""

    def _compared_blocks(self, image_ids: np.ndarray, vectors: np.ndarray | None,
                         rows: np.ndarray) -> Iterator[tuple[np.ndarray, dict[int, np.ndarray], np.ndarray]]:
        """The ``rows`` of ``vectors`` (one per image of ``image_ids``) compared with the store's embeddings,
        ``CHECK_BLOCK`` rows at a time: (the block's image ids, their stored embeddings, the positions in the block
        of the rows that differ; none compared without ``vectors``)."""
        for start in range(0, len(rows), CHECK_BLOCK):
            block = rows[start:start + CHECK_BLOCK]
            ids = image_ids[block]
            stored = self.store.get_embeddings(ids.tolist(), self.matcher_name, self.preprocess)
            yield ids, stored, (np.zeros(0, np.int64) if vectors is None else
                                _differing_rows(np.asarray(vectors[block]), ids, stored))

    def _files_disagreement(self, saved: VectorFiles, snap: Snapshot) -> str:
        """How readable saved vector files' state and image ids disagree with the store snapshot ("" when they
        agree; their values are not compared)."""
        st = saved.state
        for key, ours in (("generation", snap.generation), ("matcher", self.matcher_name),
                          ("preprocess", self.preprocess), ("count", len(snap.image_ids))):
            if st.get(key) != ours:
                return f"saved {key} {st.get(key)!r}, the database's {ours!r}"
        if self.dim is not None and st["dim"] != self.dim and len(snap.image_ids):
            return f"saved dim {st['dim']}, the database's {self.dim}"
        if not np.array_equal(saved.ids, snap.image_ids):
            return "saved image ids differ from the database's"
        return ""

    def _save(self, append: bool = True) -> None:
        """Write the vector files (then the index) beside a SQLite gallery, unless the store moved on meanwhile;
        ``append``: only the new rows when the saved files hold the others (see :func:`write_vectors`)."""
        if self.vector_dir is None:
            return
        gen = self.generation_
        state = {"generation": gen, "matcher": self.matcher_name, "preprocess": self.preprocess,
                 "dim": int(self.vectors_.shape[1]) if len(self.vectors_) else int(self.dim or 0)}
        try:
            if write_vectors(self.vector_dir, self.image_ids_, self.vectors_, state, self._still_at(gen), append):
                self._save_index()
        except WriteError as e:  # the database holds every enrolled face: the files beside it are only a copy
            warnings.warn(f"{e}; the gallery's database is complete, and its vector files are written again when the "
                          "gallery is next opened with room on the disk", GalleryFilesWarning, stacklevel=2)

    def _save_index(self) -> None:
        if self._saves_index and self.index_ is not None:
            write_index(self.vector_dir, self.index_, self._still_at(self.generation_))

    def _still_at(self, gen: int) -> Callable[[], bool]:
        """Whether the store is still at ``gen`` (checked under the vectors folder's lock before writing)."""
        return lambda: self.store.generation() == gen

    def _open_index(self, reuse: bool) -> None:
        """The search index over ``vectors_``: the saved one when ``reuse`` and it was built for exactly these
        vectors with this spec, else built (``index_source_`` says which)."""
        if reuse and self._saves_index and len(self.vectors_):
            try:
                self.index_ = self._saved_index()
                self.index_source_ = "saved"
                return
            except (OSError, ValueError):  # none, unreadable, or for other vectors or settings: rebuild it
                pass
        self._build_index()

    def _saved_index(self, vectors: np.ndarray | None = None, trust_stamp: bool = True) -> Index:
        """The index saved for ``vectors`` (default: ``vectors_``) with the gallery's spec (see :func:`read_index`)."""
        index = read_index(self.vector_dir, self.vectors_ if vectors is None else vectors, trust_stamp)
        want = make_index(self._kind, index.dim, **self._params)
        if (index.kind, index.params()) != (want.kind, want.params()):
            raise IndexMismatchError(f"saved index is {index.kind} {index.params()}, the gallery's {self.index}")
        return index

    def _build_index(self) -> None:
        self.index_ = build_index(self._kind, self.vectors_, **self._params) if len(self.vectors_) else None
        self.index_source_ = "built" if self.index_ is not None else ""

    def _code_subjects(self, keys: np.ndarray) -> None:
        """An integer code per row's subject (equal subjects, equal codes), for consolidating search results.

        ``keys``: an integer per row, equal exactly for rows of the same subject (the store's subject ids, or the
        codes of before): sorting integers, not names, takes 0.05 s for a million faces instead of 0.4 s."""
        _, first, codes = np.unique(np.asarray(keys, np.int64), return_index=True, return_inverse=True)
        self.subject_codes_ = codes.astype(np.int64).ravel()
        self._subject_names = self.subjects_[first]
        self._subject_code: dict[str, int] | None = None  # name -> code, made when rows are appended

    def _append_vectors(self, vectors: np.ndarray) -> None:
        """``vectors_`` extended by ``vectors`` in a buffer with room to grow (a quarter more each time it is
        full), so an enrolment copies the new rows, not a million old ones."""
        old = np.asarray(self.vectors_).reshape(-1, vectors.shape[1])
        n, need = len(old), len(old) + len(vectors)
        buf = self._vectors_buf
        if buf is None or old.base is not buf or len(buf) < need:  # none yet, loaded or rewritten since, or full
            buf = np.empty((max(need, n + n // 4, 1024), vectors.shape[1]), np.float32)
            buf[:n] = old
            self._vectors_buf = buf
        buf[n:need] = vectors
        self.vectors_ = buf[:need]

    def _code_new_subjects(self, subjects: np.ndarray) -> None:
        """Extend :attr:`subject_codes_` by the codes of appended rows (new subjects get new codes) without
        re-coding every row: at a million faces that sort took about a second per enrolment."""
        if self._subject_code is None:
            self._subject_code = {str(s): i for i, s in enumerate(self._subject_names.tolist())}
        code = self._subject_code
        new = np.fromiter((code.setdefault(str(s), len(code)) for s in subjects), np.int64, len(subjects))
        self.subject_codes_ = np.concatenate([self.subject_codes_, new])

    def _flush(self, matrix: np.ndarray | None = None) -> None:
        """Append the vectors enrolled by this object (or caught up on) since the last search to the index (rebuilt
        instead when it would be better so: see :meth:`lookalike.index.Index.outgrown`). ``matrix``: the whole
        matrix with the new rows already in it (the shared vector files), instead of appending to ours."""
        if not self._pending:
            return
        ids, subjects, paths, vectors = (np.concatenate([p[i] for p in self._pending]) for i in range(4))
        self._pending = []
        self.image_ids_ = np.concatenate([self.image_ids_, ids])
        self.subjects_ = np.concatenate([self.subjects_, subjects])
        self.paths_ = np.concatenate([self.paths_, paths])
        if matrix is not None:
            self.vectors_ = matrix
        else:
            self._append_vectors(vectors)
        self._code_new_subjects(subjects)
        if self.index_ is None or self.index_.outgrown(len(self.vectors_)):
            self._build_index()
        else:  # the index searches our matrix (or the shared files) in place: no second copy of the vectors
            self.index_.add_in_place(vectors, self.vectors_)

    # --- writing ---------------------------------------------------------------------------------------
    def enroll(self, paths: list[str] | np.ndarray, subjects: list[str] | np.ndarray,
               cache: EmbeddingCache | None = None, workers: int = 2, progress: bool = True,
               chunk_size: int = 256, engine: str = "local", ray_address: str | None = None,
               started: float | None = None) -> EnrollReport:
        """Enrol ``paths[i]`` as ``subjects[i]``; each chunk of images is embedded then stored in one transaction.

        An image already enrolled under the same subject (same content) is not processed again, so an
        interrupted enrolment resumes. Images whose bytes are also enrolled under another subject are
        enrolled and listed in ``duplicates`` (a likely labelling error worth checking). ``engine="ray"`` runs
        detection, alignment and embedding on Ray (``ray_address``: an existing cluster) through the same cache.
        ``started``: the :func:`time.perf_counter` time the enrolment began, when that was before this call (a
        command that listed the folder and opened the gallery first); the report's ``seconds`` count from it.
        The report's ``name_warnings`` say which names are not in plain Unicode form, mix scripts or look like
        another (given or already enrolled); nothing is printed.
        """
        t0 = time.perf_counter() if started is None else started
        paths = [os.path.abspath(p) for p in check_paths(paths)]  # stored paths stay valid from any working directory
        subjects = check_strings(subjects, "subjects")  # None or 11 had been enrolled as "None" or "11"
        if len(paths) != len(subjects):
            raise ValueError(f"{len(paths)} paths but {len(subjects)} subjects")
        for p, s in zip(paths, subjects, strict=True):
            if not s.strip() or "\x00" in s:
                raise ValueError(f"{p}: subject name {s!r} is empty or contains NUL")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        current = matcher_name(self.matcher)
        if current != self.matcher_name:
            raise ValueError(f"the gallery was enrolled with {self.matcher_name!r} but matcher {self.matcher!r} "
                             f"is now {current!r}: create a new gallery")
        cache = cache if cache is not None else EmbeddingCache(None)
        report = EnrollReport(name_warnings=name_warnings(subjects, self.subjects_alike(subjects)))  # before enrolling
        keys = [content_key(p) for p in tqdm(paths, desc="enroll: hash", disable=not progress, leave=False)]
        todo, enrolled, others = self._plan(paths, subjects, keys, report)
        bar = tqdm(total=len(todo), desc="enroll", unit="img", disable=not progress or not todo)
        # one pool of embedding processes for every chunk (each loads the models once)
        shared = engine == "local" and workers > 1 and len(todo) > chunk_size and spawnable()
        with bar, worker_pool(self.matcher, self.aligner, self.lowres, workers) if shared else nullcontext() as pool:
            for s in range(0, len(todo), chunk_size):  # the bar closed on Ctrl-C too: a message after it has its line
                chunk = todo[s:s + chunk_size]
                stored = self._enroll_chunk([paths[i] for i in chunk], [subjects[i] for i in chunk],
                                            [keys[i] for i in chunk], cache, workers, report, engine, ray_address,
                                            pool)
                enrolled.extend(chunk[j] for j in stored)
                bar.update(len(chunk))
        if todo:
            self._flush()
            self._save()
        report.duplicates = [{"path": paths[i], "subject": subjects[i], "also_under": others[i]}
                             for i in sorted(enrolled) if i in others]
        report.seconds = time.perf_counter() - t0
        return report

    def _plan(self, paths: list[str], subjects: list[str], keys: list[str],
              report: EnrollReport) -> tuple[list[int], list[int], dict[int, list[str]]]:
        """(indices of the images to process, indices already enrolled, the other subjects whose images have the
        same bytes, by index); counts the rest (unreadable, repeated, recorded as unusable)."""
        stored: dict[tuple[str, str], str] = {}
        owners: dict[str, set[str]] = {}
        for sha1, subject, _id, status in self.store.find_content([k for k in keys if not k.startswith("missing:")]):
            stored[(subject, sha1)] = status
            owners.setdefault(sha1, set()).add(subject)
        for k, s in zip(keys, subjects, strict=True):
            owners.setdefault(k, set()).add(s)
        todo, enrolled, first, others = [], [], {}, {}
        for i, (p, s, k) in enumerate(zip(paths, subjects, keys, strict=True)):
            if k.startswith("missing:"):
                report.skip("missing", f"{p}: cannot read the file")
                continue
            if owners[k] - {s}:
                others[i] = sorted(owners[k] - {s})
            if (s, k) in first:
                report.skip("repeated", f"{p}: same image as {paths[first[(s, k)]]} for subject {s!r}")
                continue
            first[(s, k)] = i
            if (s, k) not in stored:
                todo.append(i)
            elif stored[(s, k)] == "ok":
                report.already_enrolled += 1
                enrolled.append(i)
            else:
                report.skip(stored[(s, k)], f"{p}: {stored[(s, k)]} (recorded when first enrolled)")
        return todo, enrolled, others

    def _enroll_chunk(self, paths: list[str], subjects: list[str], keys: list[str], cache: EmbeddingCache,
                      workers: int, report: EnrollReport, engine: str = "local",
                      ray_address: str | None = None, pool=None) -> list[int]:
        """Embed and store one chunk; returns the positions in it of the images now in the gallery (added, or
        enrolled meanwhile by another process)."""
        emb = embed_paths(paths, self.matcher, self.aligner, self.lowres, cache, workers, progress=False,
                          engine=engine, ray_address=ray_address, pool=pool)
        report.computed += emb.computed
        aligned = cache.get_alignments(keys, self.aligner.name)
        if emb.ok.any():
            dim = emb.vectors.shape[1]
            if self.dim is None:
                self._check_index_dim(dim)
                gen = self.store.set_meta({"dim": str(dim)})
                self.generation_ = gen if gen == self.generation_ + 1 else -1
                self.dim = dim
            elif dim != self.dim:
                raise ValueError(f"matcher produced {dim}-d embeddings, the gallery holds {self.dim}-d ones")
        records, positions = [], []
        for j, (p, s, k) in enumerate(zip(paths, subjects, keys, strict=True)):
            status, msg = str(emb.status[j]), emb.messages.get(j, f"{p}: {emb.status[j]}")
            if status in TRANSIENT:
                report.skip(status, msg)
                continue
            positions.append(j)
            al = aligned.get(k, ("", "", None))[2] if status == "ok" else None
            records.append(NewImage(s, p, k, status, "" if status == "ok" else msg, str(emb.method[j]),
                                    int(emb.n_faces[j]), al.box if al else None, al.landmarks if al else None,
                                    emb.vectors[j] if status == "ok" else None))
        if not records:
            return []
        before = self.generation_
        result = self.store.add_images(records, self.matcher_name, self.preprocess)
        new, in_gallery = [], []
        for j, rec, image_id in zip(positions, records, result.image_ids, strict=True):
            if image_id is None:  # enrolled meanwhile by another process
                report.already_enrolled += 1
                in_gallery.append(j)
            elif rec.status == "ok":
                report.added += 1
                report.faces[rec.method] += 1
                new.append((image_id, rec))
                in_gallery.append(j)
            else:
                report.skip(rec.status, rec.message)
        if before >= 0 and result.generation == before + 1:
            self.generation_ = result.generation
            if new:
                self._pending.append((np.asarray([i for i, _ in new], np.int64),
                                      np.asarray([r.subject for _, r in new], dtype=object),
                                      np.asarray([r.path for _, r in new], dtype=object),
                                      np.stack([r.embedding for _, r in new]).astype(np.float32)))
        else:  # someone else wrote too: this chunk's rows come with theirs on the next refresh (by id, or a reload)
            self._flush()
        return in_gallery

    def _check_index_dim(self, dim: int, remedy: str = "create the gallery with another index (e.g. numpy)") -> None:
        """A one-line :class:`StoreError` naming ``remedy`` when the gallery's index cannot hold ``dim``-d vectors
        (e.g. ``pq:m=3`` for 128-d ones): checked before the first faces are stored (they had been, and the gallery
        was left unopenable), and on opening a gallery left so."""
        try:
            make_index(self._kind, dim, **self._params)
        except ValueError as e:
            raise StoreError(f"{self.store.url}: the index {self.index!r} cannot hold {dim}-d embeddings ({e}); "
                             f"{remedy}") from None

    def add_embeddings(self, subjects: list[str] | np.ndarray, vectors: np.ndarray, source: str = "embedding") -> int:
        """Add faces already embedded with this gallery's matcher and preprocessing (``vectors`` (N, D), one row per
        ``subjects[i]``), without images: for measuring with vectors computed elsewhere (each is stored with the
        path ``<source>/<row>`` and a hash of its vector); they must be finite and of unit length (a one-line
        ValueError otherwise). Nothing checks that they came from the gallery's matcher. Returns the faces added: a
        vector a subject already has is not added again."""
        subjects = check_strings(subjects, "subjects")
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or len(vectors) != len(subjects):
            raise ValueError(f"expected one (D,) vector per subject, got {vectors.shape} for {len(subjects)} subjects")
        if self.dim is not None and vectors.shape[1] != self.dim:
            raise ValueError(f"{vectors.shape[1]}-d vectors, the gallery holds {self.dim}-d ones")
        vectors = check_vectors(vectors, "vectors")
        if self.dim is None:
            self._check_index_dim(vectors.shape[1])
            self.store.set_meta({"dim": str(vectors.shape[1])})
        start = len(self.image_ids_)
        added = self.store.add_images([NewImage(str(s), f"{source}/{start + i}", hashlib.sha1(v.tobytes()).hexdigest(),
                                                "ok", method=source, embedding=v)
                                       for i, (s, v) in enumerate(zip(subjects, vectors, strict=True))],
                                      self.matcher_name, self.preprocess)
        self.refresh()
        return sum(i is not None for i in added.image_ids)

    def remove(self, subject: str) -> int:
        """Remove a subject: delete its images and embeddings (the name stays, marked removed). Returns the
        number of images deleted; ValueError if the subject is unknown or already removed."""
        self._flush()
        before = self.generation_
        try:
            n = self.store.delete_subject(subject)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        if self.store.generation() == before + 1:
            keep = self.subjects_ != subject
            self.generation_ += 1
            self.image_ids_, self.subjects_, self.paths_ = (self.image_ids_[keep], self.subjects_[keep],
                                                            self.paths_[keep])
            self.vectors_ = np.asarray(self.vectors_)[keep]
            self._code_subjects(self.subject_codes_[keep])
            self._build_index()
            self._save()
        else:
            self.generation_ = -1
        return n

    @staticmethod
    def enrolled_bytes(record: ImageRecord) -> bytes:
        """An enrolled image's file as it was enrolled: :class:`~lookalike.data.images.ImageError` (``missing``)
        when the file is gone or unreadable, (``changed``) when its bytes are no longer the ones enrolled (the
        SHA-1 recorded then), so a replaced or edited file is never shown or used as the enrolled face."""
        try:
            if not stat.S_ISREG(os.stat(record.path).st_mode):  # a named pipe would block the reading thread
                raise ImageError("changed", f"{record.path}: no longer the enrolled file (not a regular file now); "
                                            "remove the image and enrol the file again")
            data = Path(record.path).read_bytes()
        except OSError as e:
            raise ImageError("missing", f"{record.path}: the enrolled file is no longer readable "
                                        f"({e.strerror or e})") from None
        if hashlib.sha1(data).hexdigest() != record.sha1:
            raise ImageError("changed", f"{record.path}: the file has changed since it was enrolled (its bytes are "
                                        "not the ones enrolled); remove the image and enrol the file again")
        return data

    def enrolled_chip(self, record: ImageRecord) -> np.ndarray:
        """An enrolled image's aligned face chip (full resolution), cut from its file (:meth:`enrolled_bytes`) with
        the landmarks stored at enrolment. :class:`~lookalike.data.images.ImageError` when the file is unreadable
        or changed now; ValueError when the image has no aligned face (it was skipped)."""
        if record.box is None or record.landmarks is None:
            raise ValueError(f"image {record.id} has no aligned face ({record.status})")
        alignment = Alignment(record.method or "detected", record.n_faces, record.box, record.landmarks)
        image = decode_image(self.enrolled_bytes(record), record.path)
        return self.aligner.chip(image, alignment)

    # --- searching -------------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, k: int = 20) -> SubjectLists:
        """The ``k`` best subjects for each probe vector (L2-normalised embeddings of this gallery's matcher),
        each subject scored by its best-matching image."""
        self.refresh()
        check_int(k, "k")
        n = len(self.image_ids_)
        if n == 0:
            raise ValueError(f"the gallery {self.store.url} has no enrolled images")
        q = check_vectors(vectors, "probe vectors", self.dim)  # a probe 100 times too long had scored 100.0
        n_subjects = int(self.subject_codes_.max()) + 1
        kk = min(int(k), n_subjects)
        fetch = min(n, max(4 * kk, kk + 16))
        while True:
            scores, rows = self.index_.search(q, fetch)
            firsts = []
            for r in range(len(q)):
                _, first = np.unique(self.subject_codes_[rows[r]], return_index=True)
                firsts.append(np.sort(first)[:kk])
            if fetch >= n or all(len(f) == kk for f in firsts):
                break
            fetch = min(n, 2 * fetch)
        pos = np.stack(firsts) if len(q) else np.zeros((0, kk), np.int64)
        picked = np.take_along_axis(rows, pos, axis=1)
        return SubjectLists(subjects=self.subjects_[picked], image_ids=self.image_ids_[picked],
                            scores=np.take_along_axis(scores, pos, axis=1).astype(np.float32),
                            vectors=np.asarray(self.vectors_)[picked].astype(np.float32),
                            paths=self.paths_[picked])
