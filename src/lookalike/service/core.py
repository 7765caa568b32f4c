"""What the web service does, without HTTP: subjects, uploads, enrolment, identification, searches, reviews.

Every operation checks its input and raises :class:`ServiceError` (an HTTP status, a short code and a one-line
message) for anything a client got wrong; nothing is written before every check of a request has passed.
Database and face work runs on one of a small pool of :class:`Engine` objects (each with its own store
connection, in-memory vector index and matcher), refreshed from the store at checkout, so several processes
on one database see each other's changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import queue
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import numpy as np
from PIL import Image, ImageDraw

from lookalike.checks import check_int, check_range
from lookalike.data.images import MAX_PIXELS, ImageError, decode_image, degrade, encode_png, sniff_image_type
from lookalike.data.names import ALIKE, code_points, lookalikes, mixed_scripts, plain_form, shown
from lookalike.data.screen import is_utf8
from lookalike.gallery import Gallery, display_db, is_postgres_url, open_store
from lookalike.gallery.store import (
    VERDICTS,
    GalleryStore,
    NoGalleryError,
    StoreError,
    SubjectExistsError,
    search_face,
)
from lookalike.identify import Identifier, prepare_gallery, result_document, searches_templates
from lookalike.matchers.cache import EmbeddingCache
from lookalike.model import LookalikeModel, check_model_fits_db
from lookalike.service.files import ImageFiles
from lookalike.service.limits import DEFAULT_BUSY_TIMEOUT, DEFAULT_MAX_MEGAPIXELS
from lookalike.summary import counted

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_NAME = 100
DEFAULT_MAX_PIXELS = DEFAULT_MAX_MEGAPIXELS * 1_000_000
NAME_PUNCTUATION = set(" .'-_,()")
MAX_FILES = 20  # images per enrolment request
MAX_FACES = 20  # faces searched per probe photo
FPIRS = (0.001, 0.01, 0.1)
MAX_TOP = 100
MANY_MODES = ("batch", "same-person")  # how POST /api/identify/many searches several photos
MAX_NOTE = 2000
PHOTO_SIDE = 800  # longest side of the PNG renditions of photos
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "bmp": "image/bmp",
               "tiff": "image/tiff", "webp": "image/webp", "pnm": "image/x-portable-anymap", "heif": "image/heic",
               "avif": "image/avif"}


class ServiceError(Exception):
    """A request the service refuses: ``status`` (4xx), ``code`` (short, stable) and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


@dataclass
class Upload:
    """An uploaded file: the client's file name (a label only, never a path) and its bytes."""

    name: str
    data: bytes


def check_subject_name(name: object) -> str:
    """A new subject's name: 1-100 characters, letters, digits, spaces and . ' - _ , ( ) only, not starting with
    a dot (so no path, markup or SQL fragment can be a name); in its plain Unicode form (NFKC) and not mixing Latin,
    Cyrillic and Greek letters, so no two subjects' names look the same on a page."""
    if not isinstance(name, str):
        raise ServiceError(422, "bad_name", "a subject name must be a string")
    if not name or name != name.strip():
        raise ServiceError(422, "bad_name", "a subject name must be non-empty, without leading/trailing spaces")
    if len(name) > MAX_NAME:
        raise ServiceError(422, "bad_name", f"a subject name is at most {MAX_NAME} characters")
    bad = sorted({c for c in name if not (c.isalnum() or c in NAME_PUNCTUATION)})
    if bad:
        raise ServiceError(422, "bad_name", f"a subject name may hold letters, digits, spaces and . ' - _ , ( ) "
                                            f"only; got {''.join(bad)!r}")
    if name.startswith("."):
        raise ServiceError(422, "bad_name", "a subject name cannot start with a dot")
    if plain_form(name) != name:  # fullwidth letters, ligatures, superscripts: a second "Ann"
        raise ServiceError(422, "bad_name", f"a subject name must be in its plain form (Unicode NFKC): "
                                            f"{plain_form(name)!r}, not {name!r}")
    scripts = mixed_scripts(name)
    if scripts:  # "Аnn" with a Cyrillic А shows as "Ann" on every page
        raise ServiceError(422, "bad_name", f"a subject name mixes {' and '.join(scripts).lower()} letters "
                                            "that look alike; write it in one script")
    return name


SIMILAR_NAME_OK = "similar_name_ok"  # the field that confirms a new name that looks like a subject's


def lookalike_refusal(name: str, alike: list[str]) -> ServiceError:
    """The 409 ``name_looks_alike`` for a new subject ``name`` that looks like the live subjects ``alike``: which,
    and how to go on (enrol under the existing name, or confirm with :data:`SIMILAR_NAME_OK`)."""
    existing = f"{counted(len(alike), 'existing subject')}: {', '.join(map(shown, alike))}"
    return ServiceError(409, "name_looks_alike", f"a new subject {shown(name)} looks like {existing} ({ALIKE}), so "
                                                 "candidate lists would show them alike; if it is the same person, "
                                                 "enrol the photos under the existing name; if it is another person, "
                                                 f"confirm with {SIMILAR_NAME_OK}=true to create {name!r} anyway")


def label(name: str | None) -> str:
    """A safe label for an upload's client-side file name (its last component, printable, short)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = "".join(c for c in base if c.isprintable())[:120]
    return base or "upload"


def check_kind(upload: Upload) -> str:
    """An upload's image format by its magic bytes (before any decoder sees it), or a 4xx ServiceError."""
    if not upload.data:
        raise ServiceError(400, "empty", f"{label(upload.name)}: empty file (0 bytes)")
    kind = sniff_image_type(upload.data)
    if kind is None:
        raise ServiceError(415, "not_an_image", f"{label(upload.name)}: not an image (accepted: JPEG, PNG, GIF, "
                                                "BMP, TIFF, WebP, PGM/PPM, HEIC/HEIF, AVIF)")
    return kind


def check_image(upload: Upload, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, np.ndarray]:
    """(format, decoded image) of an upload: type by magic bytes first (:func:`check_kind`), then the loader's
    checks, with the service's pixel limit (a small file can decode to a huge image, and a search's cost grows with
    its pixels)."""
    kind = check_kind(upload)
    try:
        return kind, decode_image(upload.data, label(upload.name), max_pixels)
    except ImageError as e:
        status = 413 if e.reason == "too_large" else 422
        raise ServiceError(status, e.reason, str(e)) from None


def check_max_pixels(max_pixels: int) -> int:
    """The service's pixel limit: a whole number from 1 to the loader's own limit, or a ValueError."""
    if check_int(max_pixels, "the pixel limit") > MAX_PIXELS:
        raise ValueError(f"the pixel limit must be at most the loader's {MAX_PIXELS:,} pixels "
                         f"({MAX_PIXELS / 1e6:g} MP), got {max_pixels!r}")
    return max_pixels


def check_settings(top: int, fpir: float) -> float:
    """A search's ``top`` and ``fpir`` checked (a 422 ServiceError otherwise); the FPIR as its calibrated value
    (0.0100000001 is searched and recorded as 0.01)."""
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise ServiceError(422, "bad_top", f"top must be an integer from 1 to {MAX_TOP}")
    for f in FPIRS:
        if np.isclose(fpir, f):
            return f
    raise ServiceError(422, "bad_fpir", f"fpir must be one of {', '.join(map(str, FPIRS))}")


def no_face_message(name: str, precropped: bool) -> str:
    """Why a photo gives no face to search or enrol, and what to do."""
    if precropped:
        return (f"{name}: no face found, even as a pre-cropped one (its centre is blank, or the gallery aligns no "
                "undetected faces: --central-fraction 0)")
    return (f"{name}: no face found (if the photo is a tightly cropped face, search it as one: the page's 'tightly "
            "cropped face' box, precropped=true in the API)")


def photo_faces(ident: Identifier, upload: Upload, image: np.ndarray, precropped: bool,
                by_size: bool = True) -> tuple[dict, list]:
    """(the photo's result header, its faces) for a decoded upload; a 422 ServiceError when no face is found (a
    photo without a detected face is searched whole only when ``precropped``) or it has more than MAX_FACES.
    ``by_size``: see :meth:`Identifier.faces` (off for batches and templates)."""
    name = label(upload.name)
    faces = ident.faces(image, by_size)
    if not faces or (faces[0].alignment.method == "central" and not precropped):
        raise ServiceError(422, "no_face", no_face_message(name, precropped))
    if len(faces) > MAX_FACES:
        raise ServiceError(422, "many_faces", f"{name}: {len(faces)} faces; at most {MAX_FACES} are searched per "
                                              "photo (crop the photo)")
    return {"photo": name, "status": "ok"}, faces


class Engine:
    """One worker's gallery connection, vector index and identifier (used by one thread at a time)."""

    def __init__(self, db: str, model: LookalikeModel | None, small_faces: LookalikeModel | None = None,
                 sharp_faces: LookalikeModel | None = None, busy_timeout: float | None = None) -> None:
        self.gallery = Gallery.open(db, busy_timeout=busy_timeout)
        try:
            self.identifier = Identifier(self.gallery, model, small_faces, sharp_faces)
        except BaseException:
            self.gallery.close()
            raise
        a = self.identifier.aligner  # a detector of this engine's own (dlib objects are not shared by threads)
        self.identifier.aligner = a.with_fallback()

    def close(self) -> None:
        self.gallery.close()


class Service:
    """The service over one gallery database (``db``: SQLite path or ``postgresql://`` URL).

    ``model``: a loaded :class:`LookalikeModel` (None: the base matcher); ``data_dir``: where uploaded images
    are kept (default: ``<db>.images`` beside a SQLite gallery); ``engines``: concurrent workers;
    ``matcher``, ``cnn_fallback``, ``central_fraction``: for a gallery this creates (when ``db`` holds none yet; an
    existing gallery keeps its own, and a contradicting setting is a ValueError:
    :meth:`~lookalike.gallery.Gallery.open_or_create`); ``small_faces``,
    ``sharp_faces``: models for probe faces of other sizes (:class:`~lookalike.identify.Identifier`);
    ``every_scale``: look for small faces beside large ones in probe photos
    (:meth:`~lookalike.matchers.align.FaceAligner.align_all`); ``busy_timeout``: seconds a request's statement waits
    for a lock another process holds (``lookalike enroll`` or ``gallery prune-searches`` writing) before the request
    fails with :class:`~lookalike.gallery.store.StoreBusyError` (answered 503 ``store_busy``), on SQLite and
    PostgreSQL alike.
    """

    def __init__(self, db: str, model: LookalikeModel | None = None, data_dir: str | Path | None = None,
                 engines: int = 2, matcher: str | None = None, small_faces: LookalikeModel | None = None,
                 sharp_faces: LookalikeModel | None = None, every_scale: bool = False,
                 cnn_fallback: bool | None = None, central_fraction: float | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, busy_timeout: float = DEFAULT_BUSY_TIMEOUT) -> None:
        self.db = str(db)
        self.busy_timeout = check_range(busy_timeout, "the busy timeout (seconds)", 0, math.inf, lo_open=True)
        self.max_pixels = check_max_pixels(max_pixels)
        self.model = model
        # an existing gallery keeps its own settings (a contradicting one is a ValueError); a new one gets the
        # model's matcher, chip geometry and resolution, if there is a model (Gallery.open migrates an older schema,
        # refuses a newer one)
        if model is not None:  # an existing gallery of other faces: refused as identify refuses it
            check_model_fits_db(model, self.db)
        Gallery.open_or_create(self.db, model.matcher if model is not None else matcher,
                               model.gallery_lowres if model is not None else None,
                               model.aligner if model is not None else None, central_fraction, cnn_fallback).close()
        self.files = ImageFiles(data_dir if data_dir is not None else default_data_dir(self.db))
        self._engines: queue.Queue[Engine] = queue.Queue()
        self._all: list[Engine] = []
        for _ in range(max(1, engines)):
            e = Engine(self.db, model, small_faces, sharp_faces, self.busy_timeout)
            e.identifier.every_scale = every_scale
            self._all.append(e)
            self._engines.put(e)
        self.store = self._all[0].gallery.store  # for describing; requests use engines
        # the page sessions' own connection (auth.Sessions)
        self.sessions_store = open_store(self.db, create=False, busy_timeout=self.busy_timeout)
        # token checks' own connection: they had waited for an engine, so two long searches held up every login,
        # page and API call for minutes
        self._tokens_store = open_store(self.db, create=False, busy_timeout=self.busy_timeout)
        self._tokens_lock = threading.Lock()
        self._stop = threading.Event()
        if model is not None:  # the gallery's faces prepared for re-ranking in the background (requests meanwhile
            # prepare their own candidates): a one-off that keeps each search's re-ranking cheap at any gallery size
            threading.Thread(target=prepare_gallery, args=(model, self._all[0].gallery.vectors_),
                             kwargs={"stop": self._stop}, daemon=True, name="prepare-gallery").start()
        self._enrol_lock = threading.Lock()  # enrolment embeds through embed_paths' per-process worker state
        self._renders: OrderedDict[tuple, bytes] = OrderedDict()
        self._renders_lock = threading.Lock()

    def close(self) -> None:
        self._stop.set()
        for e in self._all:
            e.close()
        self.sessions_store.close()
        self._tokens_store.close()

    def ask_tokens(self, ask: Callable[[str, GalleryStore], T], value: str) -> T:
        """``ask(value, store)`` on the token checks' own connection (``ask``: a method of the app's
        :class:`~lookalike.service.auth.TokenChecker`), never waiting for an engine."""
        with self._tokens_lock:
            return ask(value, self._tokens_store)

    @contextmanager
    def engine(self) -> Iterator[Engine]:
        e = self._engines.get()
        try:
            e.gallery.refresh()
            yield e
        finally:
            self._engines.put(e)

    def describe(self) -> dict:
        with self.engine() as e:
            st = e.gallery.stats()
        return {"gallery": gallery_name(st["store"]), "schema_version": st["schema_version"],
                "subjects": st["subjects"], "images": st["images"], "matcher": st["matcher"],
                "model": None if self.model is None else self.model.describe_short()}

    # --- subjects --------------------------------------------------------------------------------------
    def create_subject(self, name: object, similar_name_ok: bool = False) -> dict:
        """Create subject ``name`` (:func:`check_subject_name`); 409 ``subject_exists`` when it exists, 409
        ``name_looks_alike`` when it looks like another (:meth:`_check_lookalike`) unless ``similar_name_ok``."""
        name = check_subject_name(name)
        with self._enrol_lock, self.engine() as e:  # the enrolment lock: no look-alike created between check and insert
            self._check_lookalike(e, name, similar_name_ok)
            try:  # decided in the insert's transaction: two requests naming one new subject get a 201 and a 409
                e.gallery.store.add_subject(name, new=True)
            except SubjectExistsError:
                raise ServiceError(409, "subject_exists", f"subject {name!r} already exists") from None
        return self.get_subject(name)

    @staticmethod
    def _check_lookalike(e: Engine, name: str, similar_name_ok: bool = False) -> None:
        """Refuse (:func:`lookalike_refusal`) a subject ``name`` that is not live yet (new, or removed: re-created)
        whose :func:`~lookalike.data.names.lookalike_key` a live subject's name has, unless ``similar_name_ok``.
        Removed subjects' names block nothing (their candidates are gone from every new list)."""
        if similar_name_ok:
            return
        s = e.gallery.store.get_subject(name)
        if s is not None and s.removed is None:  # photos added to it, or 409 subject_exists: not a new name
            return
        alike = lookalikes(name, e.gallery.subjects_alike([name]))  # by the stored keys' index, not every name
        if alike:
            raise lookalike_refusal(name, alike)

    def list_subjects(self, prefix: str = "", after: str | None = None, limit: int | None = None) -> list[dict]:
        """Subjects by name: those starting with ``prefix``, after the name ``after`` (page by the last name
        of the previous page), at most ``limit``."""
        with self.engine() as e:
            return [_subject_dict(s) for s in e.gallery.store.list_subjects(prefix=prefix, after=after, limit=limit)]

    def count_subjects(self) -> int:
        with self.engine() as e:
            return e.gallery.store.count_subjects()["subjects"]

    def _live_subject(self, e: Engine, name: str):
        """The live subject ``name`` names (:func:`find_subject`: as sent, else in its NFKC form), or a 404 saying
        why (removed, or, for a name with other than ASCII characters, which ones: a name can look like an enrolled
        one and be written with other code points)."""
        s = find_subject(e.gallery.store, name)
        if s is None or s.removed is not None:
            raise ServiceError(404, "unknown_subject", f"no subject {name!r}"
                               + (unmatched_name_hint(name) if s is None else f" (removed at {s.removed})"))
        return s

    def get_subject(self, name: str) -> dict:
        with self.engine() as e:
            s = self._live_subject(e, name)
            images = e.gallery.store.list_images(s.name)
        return {**_subject_dict(s), "images": [_image_dict(i) for i in images]}

    def delete_subject(self, name: str) -> dict:
        # under the enrolment lock: an enrolment of the subject under way (seconds of embedding after its check that
        # the subject is live) would otherwise restore it after this had answered 200
        with self._enrol_lock, self.engine() as e:
            name = self._live_subject(e, name).name
            try:
                n = e.gallery.remove(name)
            except StoreError:
                raise  # busy or unusable: its own answer (503), never "unknown subject"
            except ValueError as err:
                raise ServiceError(404, "unknown_subject", str(err)) from None
        return {"subject": name, "removed_images": n}

    # --- images ----------------------------------------------------------------------------------------
    def add_images(self, name: str, uploads: list[Upload], precropped: bool = False, create: bool = False,
                   similar_name_ok: bool = False) -> dict:
        """Enrol uploaded photos of one subject, each with exactly one face (or a pre-cropped face when
        ``precropped``). All are checked before anything is written; then stored and enrolled in one
        transaction (which creates the subject too when ``create`` and it does not exist: a new name that looks like
        a subject's is refused as :meth:`create_subject` refuses it, unless ``similar_name_ok``)."""
        if create:
            check_subject_name(name)
        if not uploads:
            raise ServiceError(422, "no_files", "no image files uploaded (multipart field 'files')")
        if len(uploads) > MAX_FILES:
            raise ServiceError(413, "too_many_files", f"at most {MAX_FILES} images per request")
        kinds = [check_kind(u) for u in uploads]  # decoded one at a time below: 20 decoded at once took 3.8 GB
        sha1s = [hashlib.sha1(u.data).hexdigest() for u in uploads]
        if len(set(sha1s)) < len(sha1s):
            raise ServiceError(409, "duplicate_image", "the same image is uploaded twice in this request")
        with self._enrol_lock, self.engine() as e:
            if not create:
                name = self._live_subject(e, name).name  # as stored (a path's name may be sent in another form)
            else:
                self._check_lookalike(e, name, similar_name_ok)
            known = e.gallery.store.find_content(sha1s)
            if known:
                sha1, subject, image_id, _ = known[0]
                u = uploads[sha1s.index(sha1)]
                raise ServiceError(409, "duplicate_image", f"{label(u.name)}: already enrolled as image {image_id} "
                                                           f"of subject {subject!r}")
            cache = self._embed_faces(e, uploads, sha1s, precropped)
            paths = [str(self.files.put(u.data, kind)) for u, kind in zip(uploads, kinds, strict=True)]
            report = e.gallery.enroll(paths, [name] * len(paths), cache=cache, workers=1, progress=False)
            stored = {sha1: (image_id, status) for sha1, subject, image_id, status
                      in e.gallery.store.find_content(sha1s) if subject == name}
        images = []
        for u, sha1 in zip(uploads, sha1s, strict=True):
            image_id, status = stored.get(sha1, (None, "not_stored"))
            images.append({"file": label(u.name), "image_id": image_id, "status": status})
        return {"subject": name, "added": report.added, "skipped": dict(report.skipped), "images": images}

    def _embed_faces(self, e: Engine, uploads: list[Upload], sha1s: list[str], precropped: bool) -> EmbeddingCache:
        """Check each photo decodes (one at a time, keeping only its face chip) and has exactly one face (or is
        pre-cropped), and embed it with this engine's matcher, into an in-memory cache keyed like the gallery's (so
        enrolment neither detects nor embeds again)."""
        g, aligner = e.gallery, e.identifier.aligner
        rows = []
        for u, sha1 in zip(uploads, sha1s, strict=True):
            image = check_image(u, self.max_pixels)[1]
            faces = aligner.align_all(image)
            detected = [a for a in faces if a.method != "central"]
            if len(detected) > 1:
                raise ServiceError(422, "many_faces", f"{label(u.name)}: {len(detected)} faces; enrol photos of "
                                                      "one face (crop the photo)")
            if not faces or (not detected and not precropped):
                raise ServiceError(422, "no_face", no_face_message(label(u.name), precropped))
            al = faces[0]
            chip = aligner.chip(image, al)
            rows.append((sha1, al, degrade(chip, g.lowres) if g.lowres is not None else chip))
        vectors = e.identifier.matcher.embed(np.stack([c for _, _, c in rows]))
        cache = EmbeddingCache(None)
        cache.put(g.aligner.name, g.matcher_name, g.preprocess,
                  [(sha1, "ok", "", al, v) for (sha1, al, _), v in zip(rows, vectors, strict=True)])
        return cache

    def remove_image(self, image_id: int) -> dict:
        with self.engine() as e:
            rec = e.gallery.store.get_image(image_id)
            if rec is None or e.gallery.store.remove_images([image_id]) == 0:
                raise ServiceError(404, "unknown_image", f"no image {image_id}")
        return {"image_id": image_id, "subject": rec.subject, "removed": True}

    def _image_record(self, image_id: int):
        with self.engine() as e:
            rec = e.gallery.store.get_image(image_id)
        if rec is None:
            raise ServiceError(404, "unknown_image", f"no image {image_id}")
        return rec

    def image_info(self, image_id: int) -> dict:
        return _image_dict(self._image_record(image_id))

    def image_bytes(self, image_id: int) -> tuple[bytes, str]:
        """The enrolled image's bytes and media type (the path comes from the gallery, never the request)."""
        rec = self._image_record(image_id)
        try:
            data = Gallery.enrolled_bytes(rec)
        except ImageError as err:
            raise _file_error(image_id, err) from None
        return data, MEDIA_TYPES.get(sniff_image_type(data) or "", "application/octet-stream")

    def image_png(self, image_id: int, face: bool) -> bytes:
        """The enrolled image as a PNG (``face``: its aligned face chip, from the stored landmarks)."""
        rec = self._image_record(image_id)

        def render() -> bytes:
            try:
                if not face:
                    return encode_png(decode_image(Gallery.enrolled_bytes(rec), rec.path), PHOTO_SIDE)
                with self.engine() as e:
                    return encode_png(e.gallery.enrolled_chip(rec))
            except ImageError as err:
                raise _file_error(image_id, err) from None
            except ValueError as err:
                raise ServiceError(404, "no_face", str(err)) from None

        try:  # the file as it is now: one replaced, edited or removed since it was last drawn is not drawn from memory
            st = os.stat(rec.path)
        except OSError:
            return render()  # says what became of the file
        return self._rendered(("image", image_id, rec.sha1, face, st.st_size, st.st_mtime_ns, st.st_ino), render)

    def _rendered(self, key: tuple, render) -> bytes:
        with self._renders_lock:
            if key in self._renders:
                self._renders.move_to_end(key)
                return self._renders[key]
        data = render()
        with self._renders_lock:
            self._renders[key] = data
            while len(self._renders) > 256:
                self._renders.popitem(last=False)
        return data

    # --- identification --------------------------------------------------------------------------------
    def identify(self, upload: Upload, top: int = 20, fpir: float = 0.01, precropped: bool = False,
                 recorded_by: str = "") -> dict:
        """Every face of an uploaded photo searched; each face's result is stored as a search (with the probe
        photo, and ``recorded_by``: the API token that asked). Returns the ``lookalike identify --format json``
        document, each face with its ``search_id``."""
        fpir = check_settings(top, fpir)
        _, image = check_image(upload, self.max_pixels)
        with self.engine() as e:
            ident = self._identifier(e)
            result, faces = photo_faces(ident, upload, image, precropped)
            results = [ident.search_face(f, top, fpir) for f in faces]
            doc = result_document(ident, [{**result, "faces": results}], top, fpir)
            self._store_searches(e, doc, [upload], recorded_by)
        return public_document(doc)

    def identify_many(self, uploads: list[Upload], mode: str, top: int = 20, fpir: float = 0.01,
                      precropped: bool = False, recorded_by: str = "") -> dict:
        """Several photos searched together (``identify --batch`` or ``--same-person``): ``mode`` ``batch`` re-ranks
        every face of every photo together, ``same-person`` searches the photos' faces as one template. A photo that
        cannot be used gets its status and message in the document instead of stopping the request. Each face
        searched on its own list (batch) is stored as a search and gets its ``search_id``; a template is not stored
        (it has no one probe photo to review against)."""
        fpir = check_settings(top, fpir)
        self._check_mode(mode)
        if not 1 <= len(uploads) <= MAX_FILES:
            raise ServiceError(413 if uploads else 422, "too_many_files" if uploads else "no_files",
                               f"send 1 to {MAX_FILES} photos")
        with self.engine() as e:
            ident = self._identifier(e)
            photos = []
            for upload in uploads:
                try:
                    photos.append(photo_faces(ident, upload, check_image(upload, self.max_pixels)[1], precropped,
                                                  by_size=False))
                except ServiceError as err:
                    photos.append(({"photo": label(upload.name), "status": err.code, "message": err.message}, []))
            try:
                results = (ident.batch_results(photos, top, fpir) if mode == "batch" else
                           ident.same_person_results(photos, top, fpir, option="mode=same-person"))
            except ValueError as err:  # no usable face for a template
                raise ServiceError(422, "no_face", str(err)) from None
            doc = result_document(ident, results, top, fpir, batch=mode == "batch")
            if mode == "batch":
                self._store_searches(e, doc, uploads, recorded_by)
        return public_document(doc)

    def _check_mode(self, mode: str) -> None:
        """``mode`` of :meth:`identify_many` is one of :data:`MANY_MODES` (422 ``bad_mode``) and this service can
        search that way: a same-person template is an embedding, which a disambiguator reading images cannot
        re-rank (409 ``mode_unavailable``: the request is right, the service's model cannot)."""
        if mode not in MANY_MODES:
            raise ServiceError(422, "bad_mode", f"mode must be one of {', '.join(MANY_MODES)}")
        if mode == "same-person" and not searches_templates(self.model):
            raise ServiceError(409, "mode_unavailable", "mode=same-person needs a model whose disambiguator reads "
                                                        "embeddings (this service's reads images); use mode=batch")

    @staticmethod
    def _identifier(e: Engine) -> Identifier:
        if len(e.gallery.image_ids_) == 0:
            raise ServiceError(409, "empty_gallery", "the gallery has no enrolled images yet")
        e.identifier.timing = {}
        return e.identifier

    @staticmethod
    def _store_searches(e: Engine, doc: dict, uploads: list[Upload], recorded_by: str = "") -> None:
        """Each searched face of the document's photos (in ``uploads`` order) stored as a search with its photo, the
        face's result alone in a copy of the document, and the token that asked; sets each face's ``search_id``."""
        for upload, result in zip(uploads, doc["results"], strict=True):
            sha1 = hashlib.sha1(upload.data).hexdigest()
            for face in result["faces"]:
                one = {**doc, "results": [{**result, "faces": [face]}]}
                face["search_id"] = e.gallery.store.add_search(upload.data, sha1, one, recorded_by)

    # --- searches and reviews --------------------------------------------------------------------------
    def list_searches(self, limit: int = 100, before: int | None = None, reviewed: bool | None = None,
                      ambiguous: bool | None = None) -> list[dict]:
        """Summaries of the latest ``limit`` searches, newest first; ``before``: only those with a smaller id (the
        next page starts before the last id of the previous one); ``reviewed``: only those with (True) or without
        (False) a verdict; ``ambiguous``: only those whose summary's ``ambiguous`` is that (None: either; anything
        but a bool: a 422 ``bad_reviewed`` or ``bad_ambiguous``)."""
        for name, value in (("reviewed", reviewed), ("ambiguous", ambiguous)):
            if value is not None and not isinstance(value, bool):
                raise ServiceError(422, f"bad_{name}", f"{name} must be true or false (or left out: either)")
        with self.engine() as e:
            records = e.gallery.store.list_searches(limit, before, reviewed, ambiguous)
            counts = e.gallery.store.count_reviews([r.id for r in records])  # one query, not one a search
        return [_search_summary(r, counts[r.id]) for r in records]

    def search_neighbours(self, search_id: int) -> dict[str, int | None]:
        """The ids of the searches next to ``search_id`` (None where there is none): ``older`` and ``newer``, and
        ``awaiting``: the nearest older one without a verdict (the review queue's next)."""
        with self.engine() as e:
            adjacent = e.gallery.store.adjacent_search
            return {"older": adjacent(search_id), "newer": adjacent(search_id, newer=True),
                    "awaiting": adjacent(search_id, reviewed=False)}

    def get_search(self, search_id: int) -> dict:
        with self.engine() as e:
            rec = e.gallery.store.get_search(search_id)
            if rec is None:
                raise ServiceError(404, "unknown_search", f"no search {search_id}")
            reviews = e.gallery.store.list_reviews(search_id)
        return {"id": rec.id, "created": rec.created, "probe_sha1": rec.probe_sha1,
                "result": public_document(rec.result), "recorded_by": rec.recorded_by,
                "reviews": [r.__dict__ for r in reviews]}

    def probe(self, search_id: int) -> tuple[bytes, str]:
        with self.engine() as e:
            rec = e.gallery.store.get_search(search_id, with_probe=True)
        if rec is None or rec.probe is None:
            raise ServiceError(404, "unknown_search", f"no probe photo for search {search_id}")
        return rec.probe, MEDIA_TYPES.get(sniff_image_type(rec.probe) or "", "application/octet-stream")

    def probe_png(self, search_id: int, face: bool) -> bytes:
        """The probe photo as a PNG with the searched face boxed (which face of a group photo this search is), or
        (``face``) the searched face aligned like the gallery's faces. A search deleted since it was drawn (``gallery
        prune-searches``) is a 404, not drawn from memory."""
        search = self.get_search(search_id)

        def render() -> bytes:
            data, _ = self.probe(search_id)
            image = decode_image(data, f"search {search_id}")
            box = search_face(search["result"]).get("box", ())
            if not face:
                return encode_png(boxed(image, box), PHOTO_SIDE)
            with self.engine() as e:
                (chip,) = e.identifier.aligner.chips_at(image, [box])
            if chip is None:
                raise ServiceError(404, "no_face", f"no face in the probe of search {search_id}")
            return encode_png(chip)

        return self._rendered(("probe", search_id, face), render)

    def add_review(self, search_id: int, subject: object, verdict: object, reviewer: object,
                   note: object = "", recorded_by: str = "") -> dict:
        """Append a verdict on one candidate of a search to the audit table (never changed afterwards), with
        ``recorded_by``: the API token it came with (the reviewer is a name the examiner types)."""
        if verdict not in VERDICTS:
            raise ServiceError(422, "bad_verdict", f"verdict must be one of {', '.join(VERDICTS)}")
        if not isinstance(reviewer, str) or not reviewer.strip() or len(reviewer) > MAX_NAME \
                or not reviewer.isprintable():
            raise ServiceError(422, "bad_reviewer", f"a reviewer name (1-{MAX_NAME} printable characters) is needed")
        note = "" if note is None else note
        if not isinstance(note, str) or len(note) > MAX_NOTE or "\x00" in note or not is_utf8(note):
            raise ServiceError(422, "bad_note", f"a note is text of at most {MAX_NOTE} characters (UTF-8, no NUL)")
        search = self.get_search(search_id)
        candidates = {c["subject"] for c in search_face(search["result"]).get("candidates", [])}
        if not isinstance(subject, str) or subject not in candidates:
            raise ServiceError(422, "not_a_candidate", f"{subject!r} is not a candidate of search {search_id}")
        with self.engine() as e:
            try:
                review_id = e.gallery.store.add_review(search_id, subject, verdict, reviewer.strip(), note,
                                                       recorded_by)
            except KeyError:  # pruned (gallery prune-searches) since it was read above
                raise ServiceError(404, "unknown_search", f"no search {search_id}") from None
            rec = [r for r in e.gallery.store.list_reviews(search_id) if r.id == review_id][0]
        return rec.__dict__


FILE_ERRORS = {"changed": (409, "image_file_changed", "its file has changed since it was enrolled (not the bytes "
                                                     "enrolled); remove the image and enrol the photo again"),
               "missing": (404, "image_file_missing", "its enrolled file is missing or unreadable on the server")}


def _file_error(image_id: int, err: ImageError) -> ServiceError:
    """An enrolled file that cannot be shown: 409 when it changed since enrolment, else 404 (gone, unreadable),
    said by image id; the file's path (``err``) goes to the server's log only, never to a client."""
    log.warning("image %d: %r", image_id, str(err))
    status, code, why = FILE_ERRORS.get(err.reason, (404, "image_file_missing",
                                                     "its enrolled file cannot be read as an image now"))
    return ServiceError(status, code, f"image {image_id}: {why}")


def boxed(image: np.ndarray, box) -> np.ndarray:
    """``image`` with ``box`` (left, top, right, bottom) drawn in a yellow frame about 1/150 of the photo thick, so
    it still shows once the photo is shrunk for a page; the image as it is without a box of four numbers."""
    if box is None or len(box) != 4:
        return image
    img = Image.fromarray(image)
    width = max(2, round(max(img.size) / 150))
    ImageDraw.Draw(img).rectangle([round(float(v)) for v in box], outline=(255, 212, 0), width=width)
    return np.asarray(img)


def gallery_name(db: str) -> str:
    """A gallery as the API and the pages name it, revealing no folder of the server: a SQLite gallery by its file's
    name; a PostgreSQL one by its host, port, database and schema (no user, password or other parameter, such as a
    ``vectors`` folder)."""
    if not is_postgres_url(db):
        return PurePath(db).name
    url = urlsplit(db)
    schema = dict(parse_qsl(url.query)).get("schema")
    return (f"{url.scheme}://{url.netloc.rpartition('@')[2]}{url.path}"
            + (f"?{urlencode({'schema': schema})}" if schema else ""))


def image_address(image_id: int) -> str:
    """The API's address of an enrolled image's file."""
    return f"/api/images/{image_id}/file"


def public_document(doc: dict) -> dict:
    """An identify document (a new one, or a search stored with server paths) as the API and the pages give it: the
    gallery by :func:`gallery_name` and each candidate's ``image`` by its API address, never a path on the server
    (``doc`` itself is left as it is)."""
    results = [{**r, "faces": [_public_face(f) for f in r.get("faces", [])]} for r in doc.get("results", [])]
    return {**doc, "results": results, **({"gallery": gallery_name(doc["gallery"])} if "gallery" in doc else {})}


def _public_face(face: dict) -> dict:
    """A searched face with each candidate's ``image`` given by :func:`image_address`."""
    if "candidates" not in face:
        return face
    return {**face, "candidates": [{**c, "image": image_address(c["image_id"])} if "image_id" in c else c
                                   for c in face["candidates"]]}


def _search_summary(rec, n_reviews: int) -> dict:
    face = search_face(rec.result)
    photo = (rec.result.get("results") or [{}])[0].get("photo", "")
    cands = face.get("candidates", [])
    return {"id": rec.id, "created": rec.created, "photo": photo, "face": face.get("index"),
            "top_subject": cands[0]["subject"] if cands else None, "ambiguous": rec.ambiguous,
            "decision": face.get("decision"), "candidates": len(cands), "reviews": n_reviews,
            "ranked_by": ranked_by(rec.result, face)}


def ranked_by(result: dict, face: dict) -> str:
    """Which ranked a stored search's face: the small-face or sharp-face model, the lookalike model, or the matcher."""
    px = face.get("face_px")
    small, sharp = result.get("small_face_model"), result.get("sharp_face_model")
    if small and px is not None and px <= small.get("max_face_px", -1):
        return "small-face model"
    if sharp and px is not None and px >= sharp.get("min_face_px", 10**9):
        return "sharp-face model"
    return "lookalike model" if result.get("model") else "base matcher"


def _subject_dict(s) -> dict:
    """A subject as the API shows it; ``images_unusable`` (photos recorded as unusable: no face, unreadable) is also
    given under its earlier name, ``images_skipped``, for clients written before it was renamed."""
    return {"name": s.name, "created": s.created, "images": s.n_images, "image_count": s.n_images,
            "images_unusable": s.n_skipped, "images_skipped": s.n_skipped}


def find_subject(store: GalleryStore, name: str):
    """The subject record (removed ones too) named ``name`` byte for byte, else named its NFKC form (the form the
    service's own names are in: a client may send "Zoë" decomposed, e and a combining diaeresis); None."""
    for form in dict.fromkeys((name, plain_form(name))):
        s = store.get_subject(form)
        if s is not None:
            return s
    return None


def unmatched_name_hint(name: str) -> str:
    """What a 404 for a subject ``name`` adds when it holds other than ASCII characters: their code points, and
    where to look for a name that looks the same ("" for an ASCII name)."""
    points = code_points(name)
    if not points:
        return ""
    start = name[:next(i for i, c in enumerate(name) if not c.isascii())]
    look = f"GET /api/subjects?prefix={quote(start, safe='')}" if start else "GET /api/subjects"
    return (f"; its characters beyond ASCII are {points} (a name that looks the "
            f"same but is encoded differently may be enrolled: see {look})")


def _image_dict(i) -> dict:
    return {"id": i.id, "subject": i.subject, "sha1": i.sha1, "status": i.status, "message": i.message,
            "detection": i.method, "faces_in_photo": i.n_faces, "box": list(i.box) if i.box else None,
            "created": i.created}


def default_data_dir(db: str) -> Path:
    """Beside a SQLite gallery: ``G.sqlite.images``; for PostgreSQL: a folder per database under
    ``~/.local/share/lookalike`` (give ``--data-dir`` to share one between machines)."""
    if is_postgres_url(db):
        from lookalike.gallery.postgres import redact_userinfo

        return Path.home() / ".local" / "share" / "lookalike" / ("images-" + hashlib.sha1(
            redact_userinfo(db).encode()).hexdigest()[:12])
    path = Path(db)
    return path.with_name(path.name + ".images")


def _token_store(db: str) -> GalleryStore:
    try:
        return open_store(db, create=False)
    except NoGalleryError:
        shown = display_db(db)
        raise StoreError(f"no gallery in {shown}: start `lookalike serve --db {shown}` once first") from None


def create_token_in(db: str, label_: str = "") -> str:
    """Create an API token in the gallery database ``db`` (which must exist or is created empty)."""
    from lookalike.service.auth import create_token

    with _token_store(db) as store:
        return create_token(store, label_)


def list_tokens_in(db: str) -> list[dict]:
    """The API tokens of ``db``: id, label, created (never the hash or salt)."""
    with _token_store(db) as store:
        return [{"id": t.id, "label": t.label, "created": t.created} for t in store.list_tokens()]


def revoke_token_in(db: str, token_id: int) -> None:
    """Revoke token ``token_id`` of ``db`` (a running service refuses it at once); ValueError if there is none."""
    with _token_store(db) as store:
        if not store.revoke_token(token_id):
            raise ValueError(f"no API token with id {token_id} in {display_db(db)} (see --list-tokens)")


def dumps(obj) -> str:
    return json.dumps(obj, default=str)
