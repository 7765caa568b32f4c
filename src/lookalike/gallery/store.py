"""The storage interface of a gallery: what :class:`~lookalike.gallery.gallery.Gallery` needs from a database.

Every change to the gallery's content (meta, subjects, images, embeddings) happens in one transaction that also
bumps the store's ``generation``, so a reader can tell cheaply whether what it holds in memory is stale. The
``searches`` and ``reviews`` tables are an append-only log kept for a web service; adding to them is not a
change to the gallery and leaves ``generation`` alone (otherwise every search would invalidate every cache).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

# Version of the database layout this code writes; older layouts are migrated on open, newer ones refused.
# 2: ``tokens`` (hashed API tokens of the web service).
# 3: ``sessions`` (the web service's page sessions, under a hash of their id).
# 4: ``changes`` (the images each generation added, so another process catches up without reloading everything).
# 5: ``derived`` (values computed from the vectors and kept for later processes: identify's calibrations).
# 6: ``recorded_by`` on searches and reviews (which API token ran or recorded them).
# 7: an index of searches by probe photo (its bytes kept once).
# 8: ``ambiguous`` on searches, indexed (the review queue lists the ambiguous ones without reading every result).
# 9: each subject's ``lookalike_key``, indexed, and the key's version (``state.key_version``; the keys recomputed on
#    open by a lookalike whose :data:`lookalike.data.names.KEY_VERSION` is newer).
SCHEMA_VERSION = 9

VERDICTS = ("match", "non-match", "inconclusive")


def search_face(result: dict) -> dict:
    """The searched face of a stored search's result (an identify document of one face; {} when it has none)."""
    faces = [f for r in result.get("results", []) for f in r.get("faces", [])]
    return faces[0] if faces else {}


def is_ambiguous(result: dict) -> bool:
    """Whether a stored search's face is ambiguous: its top candidate has a lookalike among its candidates (the
    identify document's ``ambiguous``)."""
    return bool(search_face(result).get("ambiguous", False))


class StoreError(ValueError):
    """A gallery database that cannot be used as asked (a one-line message for the user)."""


class StoreBusyError(StoreError):
    """The database stayed locked by another connection past the store's busy timeout (SQLite: another process's
    write transaction; PostgreSQL: a lock timeout, a serialization failure or a deadlock): nothing was written, and
    the same request may succeed later."""


class NoGalleryError(StoreError):
    """There is no gallery where one was expected."""


class SchemaError(StoreError):
    """The database was written by a newer ``lookalike`` (or is not a gallery)."""


class GalleryExistsError(StoreError):
    """A new gallery was asked for where one exists (another process may have just created it)."""


class SubjectExistsError(StoreError):
    """A new subject was asked for under a name a subject already has (another request may have just made it)."""


class VectorsMismatchError(StoreError):
    """The vector files beside a gallery disagree with its database at the same generation (corrupt, or another
    gallery's): refused rather than silently replaced; ``lookalike gallery rebuild-vectors`` rewrites them."""


@dataclass
class Subject:
    """An enrolled identity; ``removed`` is set (and its images deleted) by :meth:`GalleryStore.delete_subject`."""

    id: int
    name: str
    created: str
    removed: str | None = None
    n_images: int = 0  # images with an embedding (status "ok")
    n_skipped: int = 0  # images recorded with a skip reason


@dataclass
class NewImage:
    """One image to add: where it came from, its content hash, the crop record and (if ``ok``) its embedding."""

    subject: str
    path: str
    sha1: str
    status: str  # "ok" or a skip reason (no_face, unreadable, ...)
    message: str = ""
    method: str = ""  # how the face was found: "detected" or "central"
    n_faces: int = 0
    box: tuple[int, int, int, int] | None = None  # left, top, right, bottom
    landmarks: np.ndarray | None = None  # (5, 2) float32
    embedding: np.ndarray | None = None  # (D,) float32, only when status == "ok"


@dataclass
class ImageRecord:
    """A stored image (no embedding)."""

    id: int
    subject: str
    path: str
    sha1: str
    status: str
    message: str
    method: str
    n_faces: int
    box: tuple[int, int, int, int] | None
    landmarks: np.ndarray | None
    created: str


@dataclass
class Snapshot:
    """A consistent read of the searchable part of a gallery at one generation."""

    generation: int
    image_ids: np.ndarray  # (N,) int64, ascending
    subjects: np.ndarray  # (N,) object
    paths: np.ndarray  # (N,) object
    vectors: np.ndarray  # (N, D) float32, or (0, 0) when not asked for
    subject_ids: np.ndarray  # (N,) int64: the store's id of each row's subject (equal subjects, equal ids)


@dataclass
class SearchRecord:
    id: int
    created: str
    probe_sha1: str
    result: dict
    probe: bytes | None = None
    recorded_by: str = ""  # the API token that ran it ("3", or "env:..." for LOOKALIKE_TOKEN); "" before schema 6
    ambiguous: bool = False  # :func:`is_ambiguous` of its result, stored with it (schema 8)


@dataclass
class PruneReport:
    """What :meth:`GalleryStore.prune_searches` deleted (on a dry run: would delete) and kept."""

    before: str  # searches created before this time (ISO 8601, UTC) that no examiner reviewed are deleted
    dry_run: bool
    searches_deleted: int
    photos_deleted: int  # probe photos that no search shows any more, their bytes deleted
    photo_bytes_deleted: int  # the bytes of those photos (with any older copies of them)
    reviewed_kept: int  # searches created before ``before`` that were reviewed: the audit trail refers to them
    newer_kept: int  # searches created at or after ``before``
    photos_moved: int  # photos kept for a remaining search of them, moved from a deleted search that had held them


@dataclass
class ReviewRecord:
    id: int
    search_id: int
    subject: str
    verdict: str
    reviewer: str
    note: str
    created: str
    recorded_by: str = ""  # the API token it was recorded with (the reviewer name is what the examiner typed)


@dataclass
class SessionRecord:
    """A page session of the web service, under the SHA-256 of its id (the cookie's value is never stored)."""

    key: str
    csrf: str
    expires: float  # seconds since the epoch
    authenticated: bool
    token: str  # which token logged it in (see lookalike.service.auth.TokenChecker.match)
    reviewer: str


@dataclass
class TokenRecord:
    """A hashed API token of the web service (the token itself is never stored)."""

    id: int
    label: str
    salt: str
    hash: str
    created: str


@dataclass
class AddResult:
    """What :meth:`GalleryStore.add_images` did: the new ids (None where the image was already there)."""

    image_ids: list[int | None] = field(default_factory=list)
    generation: int = 0


class GalleryStore(ABC):
    """A gallery database: meta key/values, subjects, images with crop records, embeddings, and the service log.

    Every method is one transaction. Opening migrates an older schema and refuses a newer one.
    """

    url: str

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> GalleryStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- state -------------------------------------------------------------------------------------------
    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def generation(self) -> int:
        """Bumped by every change to the gallery's content; never decreases."""

    @abstractmethod
    def get_meta(self) -> dict[str, str]: ...

    @abstractmethod
    def set_meta(self, values: dict[str, str]) -> int:
        """Insert or replace key/values; returns the new generation."""

    # --- subjects ----------------------------------------------------------------------------------------
    @abstractmethod
    def add_subject(self, name: str, new: bool = False) -> int:
        """The id of subject ``name``, created (or restored after removal) if needed; ``new``: a
        :class:`SubjectExistsError` if it exists (not removed), decided in the same transaction."""

    @abstractmethod
    def get_subject(self, name: str) -> Subject | None:
        """The subject (removed ones too), or None if it was never enrolled."""

    @abstractmethod
    def list_subjects(self, include_removed: bool = False, prefix: str = "", after: str | None = None,
                      limit: int | None = None) -> list[Subject]:
        """Subjects by name, with their image counts: those whose name starts with ``prefix``, after the name
        ``after`` (to page through), at most ``limit``."""

    @abstractmethod
    def subject_names(self) -> list[str]:
        """The names of the subjects not removed, sorted as :meth:`list_subjects` sorts them (no image counts)."""

    @abstractmethod
    def subject_names_by_key(self, keys: Iterable[str]) -> list[str]:
        """The names of the subjects not removed whose :func:`~lookalike.data.names.lookalike_key` is one of
        ``keys``, sorted (by the stored keys' index: no listing)."""

    @abstractmethod
    def count_subjects(self) -> dict[str, int]:
        """``subjects`` (not removed), ``searchable`` (of those, with an image), ``removed``, ``images`` and
        ``skipped`` (of the subjects not removed), counted in the database (no listing)."""

    @abstractmethod
    def delete_subject(self, name: str) -> int:
        """Delete the subject's images and embeddings and mark it removed; returns the images deleted.

        Raises :class:`KeyError` when the subject is unknown or already removed.
        """

    # --- images and embeddings ---------------------------------------------------------------------------
    @abstractmethod
    def add_images(self, images: list[NewImage], matcher: str, preprocess: str) -> AddResult:
        """Add images (creating their subjects) and their embeddings in ONE transaction.

        An image whose (subject, sha1) is already stored is left as it is (its id is None in the result).
        """

    @abstractmethod
    def list_images(self, subject: str | None = None) -> list[ImageRecord]:
        """Stored images (of one subject, or all), by id."""

    @abstractmethod
    def find_content(self, sha1s: list[str]) -> list[tuple[str, str, int, str]]:
        """(sha1, subject, image id, status) for every stored image with one of these content hashes."""

    @abstractmethod
    def remove_images(self, image_ids: list[int]) -> int:
        """Delete images (and their embeddings); returns how many were deleted."""

    @abstractmethod
    def snapshot(self, matcher: str, preprocess: str, with_vectors: bool = True,
                 image_ids: np.ndarray | None = None) -> Snapshot:
        """Every embedded image of non-removed subjects (or those of ``image_ids``), by id, read in one transaction
        (``vectors`` is (0, 0) without ``with_vectors``)."""

    @abstractmethod
    def changes_since(self, generation: int) -> tuple[int, np.ndarray | None]:
        """(the current generation, the ids of the images added since ``generation``), or (current, None) when
        something else changed meanwhile (a removal, meta) or the record of a generation is gone: then reload."""

    @abstractmethod
    def get_image(self, image_id: int) -> ImageRecord | None:
        """One stored image by id (None when there is none)."""

    @abstractmethod
    def get_embeddings(self, image_ids: list[int], matcher: str, preprocess: str) -> dict[int, np.ndarray]: ...

    # --- service log (append-only) -----------------------------------------------------------------------
    @abstractmethod
    def add_search(self, probe: bytes | None, probe_sha1: str, result: dict, recorded_by: str = "") -> int: ...

    @abstractmethod
    def get_search(self, search_id: int, with_probe: bool = False) -> SearchRecord | None: ...

    @abstractmethod
    def list_searches(self, limit: int = 100, before: int | None = None, reviewed: bool | None = None,
                      ambiguous: bool | None = None) -> list[SearchRecord]:
        """The latest searches first (without probe bytes); ``before``: only those with a smaller id; ``reviewed``:
        only those with (True) or without (False) a review; ``ambiguous``: only those whose :func:`is_ambiguous` is
        that (None: either)."""

    @abstractmethod
    def adjacent_search(self, search_id: int, newer: bool = False, reviewed: bool | None = None) -> int | None:
        """The id of the nearest search older than ``search_id`` (``newer``: newer), only those with (``reviewed``
        True) or without (False) a review; None when there is none."""

    @abstractmethod
    def add_review(self, search_id: int, subject: str, verdict: str, reviewer: str, note: str = "",
                   recorded_by: str = "") -> int: ...

    @abstractmethod
    def list_reviews(self, search_id: int | None = None) -> list[ReviewRecord]:
        """Reviews in the order they were made (of one search, or all)."""

    @abstractmethod
    def count_reviews(self, search_ids: list[int]) -> dict[int, int]:
        """How many reviews each of ``search_ids`` has (0 for one without, or unknown), in one query."""

    @abstractmethod
    def prune_searches(self, before: str, dry_run: bool = False) -> PruneReport:
        """Delete, in one transaction, the searches created before ``before`` (ISO 8601, UTC) that no examiner
        reviewed, and the probe photos no remaining search shows (a photo another search still shows is kept for it);
        reviewed searches are kept (their reviews are the append-only audit trail). ``dry_run``: only count."""

    @abstractmethod
    def add_token(self, label: str, salt: str, digest: str) -> int:
        """Record a hashed API token; returns its id."""

    @abstractmethod
    def list_tokens(self) -> list[TokenRecord]: ...

    @abstractmethod
    def revoke_token(self, token_id: int) -> bool:
        """Delete a token (it stops working at once, and so do the page sessions it opened); False if unknown."""

    @abstractmethod
    def put_session(self, record: SessionRecord, now: float) -> None:
        """Insert or replace a page session; sessions expired by ``now`` (seconds since the epoch) are deleted."""

    @abstractmethod
    def get_session(self, key: str) -> SessionRecord | None: ...

    @abstractmethod
    def drop_session(self, key: str) -> None: ...

    @abstractmethod
    def get_derived(self, name: str) -> str | None:
        """The value saved under ``name`` by :meth:`put_derived`, or None."""

    @abstractmethod
    def put_derived(self, name: str, value: str) -> bool:
        """Save ``value`` under ``name`` (replacing it) without a new generation; False when the database could not
        be written (read-only, locked past the timeout): a derived value can always be computed again."""


def check_verdict(verdict: str) -> str:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return verdict
