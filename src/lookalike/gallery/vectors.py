"""The matrix of enrolled vectors persisted beside a SQLite gallery (``G.sqlite.vectors/``).

``vectors.npy`` (memory-mappable float32 (N, D)), ``ids.npy`` (int64 image ids, one per row) and ``state.json``
(store generation, matcher, dim, count); ``index/`` holds an approximate search index built over them
(:meth:`lookalike.index.Index.save`) and the stamp of the ``vectors.npy`` it was saved beside (size, modification
time, inode: while they are unchanged the index is trusted without re-hashing the vectors). Each file is replaced
atomically, ``state.json`` last, under an exclusive lock; readers take a shared lock. The gallery checks the files
against the store (see :meth:`~lookalike.gallery.gallery.Gallery.refresh`) and the index against the vectors.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lookalike.index import Index, load_index
from lookalike.io import WriteError, atomic_write, read_json, write_json

VECTORS, IDS, STATE, LOCK, INDEX = "vectors.npy", "ids.npy", "state.json", ".lock", "index"
STAMP = "vectors-stamp.json"  # in INDEX: the stamp of VECTORS when the index was saved


class VectorFilesError(ValueError):
    """Vector files that cannot be read or contradict themselves; ``generation``: what ``state.json`` records
    (None when that is unreadable too)."""

    def __init__(self, message: str, generation: int | None = None) -> None:
        super().__init__(message)
        self.generation = generation


@dataclass
class VectorFiles:
    """What was read from a vectors folder (``vectors`` is a read-only memory map)."""

    ids: np.ndarray
    vectors: np.ndarray
    state: dict
    changed: list[str] = field(default_factory=list)  # files whose stamp differs from state.json's: check every row


def vector_dir(db_path: str | Path) -> Path:
    """``G.sqlite`` -> ``G.sqlite.vectors``."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".vectors")


@contextmanager
def _locked(folder: Path, exclusive: bool) -> Iterator[None]:
    """The folder's lock, exclusive (writing) or shared (reading). A reader of a folder it cannot write (a read-only
    mount) takes the lock file read-only, or none when there is no lock file: nobody can be writing there."""
    if exclusive:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        f = open(folder / LOCK, "a")  # noqa: SIM115 (closed below)
    except OSError:
        if exclusive:
            raise
        try:
            f = open(folder / LOCK)  # noqa: SIM115
        except OSError:
            yield
            return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_vectors(folder: Path) -> VectorFiles | None:
    """Read the files (None when ``state.json``, written last, is absent); :class:`VectorFilesError` with the
    reason when they are unreadable or inconsistent."""
    if not (folder / STATE).is_file():
        return None
    with _locked(folder, exclusive=False):
        return _read(folder)


def saved_generation(folder: Path) -> int | None:
    """The generation the files were written at (None: none written, or unreadable)."""
    try:
        return _read_state(folder / STATE)["generation"] if (folder / STATE).is_file() else None
    except VectorFilesError:
        return None


def _read(folder: Path) -> VectorFiles:
    """:func:`read_vectors` for a caller holding the folder's lock."""
    state = _read_state(folder / STATE)
    gen = state["generation"]
    written = state.get("files")
    changed = []
    if isinstance(written, dict):  # files of an older version have no stamp: spot-checked only, as before
        try:
            now = _file_stamps(folder, tuple(written))
        except OSError:
            now = {}
        # written by something else since (rows overwritten in place, a restored copy): the reader checks every row
        changed = sorted(name for name in written if now.get(name) != written[name])
    ids = _load_array(folder / IDS, gen)
    vectors = _load_array(folder / VECTORS, gen, mmap_mode="r")
    n, d = state["count"], state["dim"]
    if ids.dtype != np.int64 or ids.shape != (n,):
        raise VectorFilesError(f"ids.npy is {ids.dtype} {ids.shape}, state.json says {n} int64 ids", gen)
    if vectors.dtype != np.float32 or vectors.shape != (n, d):
        raise VectorFilesError(f"vectors.npy is {vectors.dtype} {vectors.shape}, state.json says float32 ({n}, {d})",
                               gen)
    return VectorFiles(ids, vectors, state, changed)


def restamp(folder: Path, state: dict) -> bool:
    """Record the files' present stamps in ``state.json`` (after every row was found to agree with the database), if
    it still holds ``state``; whether it was written (a read-only folder is left alone)."""
    try:
        with _locked(folder, exclusive=True):
            if _json_object(folder / STATE) != state:
                return False
            write_json(folder / STATE, {**state, "files": _file_stamps(folder, tuple(state["files"]))})
    except OSError:
        return False
    return True


def copy_vectors(folder: Path, to: Path) -> int | None:
    """Copy the vector files and saved index in ``folder`` into the new folder ``to`` under ``folder``'s shared lock
    (a consistent set: no writer is part-way through them), ``state.json`` last; the generation they were saved at,
    or None when none are saved (nothing copied: the copy's gallery rebuilds them from its database).

    The copies are stamped as lookalike's wherever the originals still had the stamps recorded for them, so the copy
    is trusted as the original was, and a file changed outside lookalike stays marked as changed (every row of it
    compared with the database on the copy's first opening)."""
    to.mkdir(parents=True)
    written = []
    with _locked(folder, exclusive=False):
        state = _json_object(folder / STATE)
        if not state:
            return None
        index_stamp = _json_object(folder / INDEX / STAMP)
        names = [VECTORS, IDS, *(f"{INDEX}/{n}" for n in (_index_files(folder) if (folder / INDEX).is_dir() else ()))]
        for name in (n for n in names if (folder / n).is_file()):
            (to / name).parent.mkdir(exist_ok=True)
            shutil.copyfile(folder / name, to / name)
            written.append(to / name)
        if isinstance(state.get("files"), dict):
            state["files"] = _restamped(folder, to, state["files"])
        if index_stamp:
            index_files = index_stamp.pop("index_files", None)
            vectors = index_stamp.pop("vectors", None)
            index_stamp = _restamped(folder, to, {VECTORS: index_stamp})[VECTORS]
            if isinstance(index_files, dict):
                index_stamp["index_files"] = _restamped(folder / INDEX, to / INDEX, index_files)
            write_json(to / INDEX / STAMP, {**index_stamp, "vectors": vectors})
        write_json(to / STATE, state)
    for path in written:  # to disk, with the writers no longer kept waiting
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    return state["generation"] if isinstance(state.get("generation"), int) else None


def _restamped(folder: Path, to: Path, stamps: dict) -> dict:
    """``stamps`` (file name -> the stamp recorded for ``folder``'s file) for the copies in ``to``: each copy's own
    stamp where the original's still matched the one recorded, else the recorded one (the copy is then checked)."""
    out = {}
    for name, stamp in stamps.items():
        try:
            same = _stamp(folder, name) == stamp and (to / name).is_file()
            out[name] = _stamp(to, name) if same else stamp
        except OSError:
            out[name] = stamp
    return out


def _load_array(path: Path, generation: int, **kwargs) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False, **kwargs)
    except FileNotFoundError:
        raise VectorFilesError(f"{path.name} is missing", generation) from None
    except (OSError, ValueError, EOFError) as e:
        raise VectorFilesError(f"{path.name} is unreadable ({type(e).__name__}: {e})", generation) from e


def _read_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise VectorFilesError(f"unreadable {path.name} ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not all(isinstance(state.get(k), int) for k in ("generation", "dim", "count")) \
            or not isinstance(state.get("matcher"), str):
        raise VectorFilesError(f"{path.name} lacks an integer generation, dim, count or a matcher")
    return state


def write_vectors(folder: Path, ids: np.ndarray, vectors: np.ndarray, state: dict, still_current,
                  append: bool = True) -> bool:
    """Write the files if ``still_current()`` holds under the lock, ``state.json`` last.

    With ``append`` (the default), when the saved files hold a prefix of these rows (the same matcher,
    preprocessing, dimension and image ids: an enrolment since), only the new rows are appended to ``vectors.npy``
    and ``ids.npy`` in place, so enrolling into a million-face gallery writes the new faces, not the whole matrix.
    Otherwise (first write, a removal, files that disagree, or ``append=False``) both are replaced atomically. An
    append cut short leaves arrays longer than ``state.json`` says: they are refused on reading and rewritten
    from the database.
    """
    ids, vectors = np.asarray(ids, np.int64), np.ascontiguousarray(vectors, np.float32)
    with _locked(folder, exclusive=True):
        if not still_current():
            return False
        if not (append and _append(folder, ids, vectors, state)):
            with atomic_write(folder / VECTORS, "wb") as f:
                np.save(f, vectors, allow_pickle=False)
            with atomic_write(folder / IDS, "wb") as f:
                np.save(f, ids, allow_pickle=False)
        write_json(folder / STATE, {**state, "count": int(len(ids)), "files": _file_stamps(folder, (VECTORS, IDS))})
    return True


def _append(folder: Path, ids: np.ndarray, vectors: np.ndarray, state: dict) -> bool:
    """Append the rows past the saved ones in place; False (nothing written) when the saved files are not a
    prefix of ``ids``/``vectors`` with the same settings, or their headers have no room for the new length."""
    if not (folder / STATE).is_file():
        return False
    try:
        saved = _read(folder)
    except VectorFilesError:
        return False
    n = len(saved.ids)
    same = all(saved.state.get(k) == state.get(k) for k in ("matcher", "preprocess", "dim"))
    if not same or n == 0 or n > len(ids) or vectors.shape[1:] != saved.vectors.shape[1:]:
        return False
    ends = [0, n - 1]  # the saved rows are ours: same image ids, and the first and last vectors agree
    if not np.array_equal(saved.ids, ids[:n]) or not np.array_equal(saved.vectors[ends], vectors[ends]):
        return False
    del saved  # drop the memory map before writing to the file
    if n == len(ids):
        return True
    headers = [_grown_header(folder / name, len(ids)) for name in (VECTORS, IDS)]
    if None in headers:
        return False
    for name, rows, (offset, header) in zip((VECTORS, IDS), (vectors[n:], ids[n:]), headers, strict=True):
        try:
            with open(folder / name, "r+b") as f:
                f.seek(offset + n * rows[:1].nbytes)  # past the saved rows
                f.write(rows.tobytes())
                f.truncate()
                f.seek(0)
                f.write(header)  # the new length, in a header of the same size
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # cut short: the arrays no longer agree with state.json, and are rebuilt on reading
            raise WriteError(folder / name, e) from e
    return True


def _grown_header(path: Path, rows: int) -> tuple[int, bytes] | None:
    """(offset of the data, the .npy header for ``rows`` rows of the same array) when it has the same size as the
    file's present header (NumPy pads headers so the first dimension can grow), else None."""
    fmt = np.lib.format
    with open(path, "rb") as f:
        version = fmt.read_magic(f)
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if fortran or not shape:
        return None
    out = io.BytesIO()
    header = {"descr": fmt.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, *shape[1:])}
    (fmt.write_array_header_1_0 if version == (1, 0) else fmt.write_array_header_2_0)(out, header)
    return (offset, out.getvalue()) if out.tell() == offset else None


def read_index(folder: Path, vectors: np.ndarray, trust_stamp: bool = True) -> Index:
    """The index saved in ``folder/index`` for exactly ``vectors`` (:func:`lookalike.index.load_index`: OSError
    when there is none, ValueError when it is unreadable or was built for other vectors).

    ``vectors`` are the rows of ``vectors.npy``: while that file is the one the index was saved beside (the size,
    modification time and inode recorded then), the fingerprint recorded with them stands for theirs (no hashing),
    unless ``trust_stamp`` is False (an audit: a row overwritten in place keeps the stamp)."""
    with _locked(folder, exclusive=False):
        stamp = _json_object(folder / INDEX / STAMP)
        known = stamp.pop("vectors", None)
        files = stamp.pop("index_files", None)
        if isinstance(files, dict):  # an index file replaced since it was saved (a restore, a copy of another's)
            try:
                same = _file_stamps(folder / INDEX, tuple(files)) == files
            except OSError:
                same = False
            if not same or set(files) != set(_index_files(folder)):
                raise ValueError(f"{folder / INDEX}: its files changed since they were saved")
        if not trust_stamp or stamp != _stamp(folder) or not isinstance(known, dict):
            known = None  # another file, or no stamp: the vectors are hashed
        return load_index(folder / INDEX, vectors, known=known)


def write_index(folder: Path, index: Index, still_current) -> bool:
    """Save ``index`` (without its vectors: they are ``vectors.npy``) to ``folder/index`` if ``still_current()``
    holds under the lock, with the stamp of ``vectors.npy`` and the fingerprint of its rows."""
    with _locked(folder, exclusive=True):
        if not still_current():
            return False
        (folder / INDEX / STAMP).unlink(missing_ok=True)
        index.save(folder / INDEX, with_vectors=False)
        write_json(folder / INDEX / STAMP, {**_stamp(folder), "vectors": index.fingerprint(),
                                            "index_files": _file_stamps(folder / INDEX, _index_files(folder))})
    return True


def _index_files(folder: Path) -> tuple[str, ...]:
    """The files an index was saved as (its stamp aside)."""
    return tuple(sorted(p.name for p in (folder / INDEX).iterdir() if p.is_file() and p.name != STAMP))


def _stamp(folder: Path, name: str = VECTORS) -> dict[str, int]:
    """Size, modification time (ns) and inode of ``folder/name`` (``vectors.npy``): any write to it changes one of
    them."""
    st = os.stat(folder / name)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino}


def _file_stamps(folder: Path, names: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """:func:`_stamp` of each of ``names`` in ``folder``."""
    return {name: _stamp(folder, name) for name in names}


def _json_object(path: Path) -> dict:
    """The JSON object in ``path``; {} when it is absent, unreadable or not an object."""
    try:
        obj = read_json(path)
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}
