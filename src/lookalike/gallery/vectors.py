"""The matrix of enrolled vectors persisted beside a SQLite gallery (``G.sqlite.vectors/``).

``vectors.npy`` (memory-mappable float32 (N, D)), ``ids.npy`` (int64 image ids, one per row) and ``state.json``
(store generation, matcher, dim, count); ``index/`` holds an approximate search index built over them
(:meth:`lookalike.index.Index.save`). Each file is replaced atomically, ``state.json`` last, under an exclusive
lock; readers take a shared lock. The gallery checks the files against the store (see
:meth:`~lookalike.gallery.gallery.Gallery.refresh`) and the index against the vectors.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.index import Index, load_index
from lookalike.io import atomic_write, write_json

VECTORS, IDS, STATE, LOCK, INDEX = "vectors.npy", "ids.npy", "state.json", ".lock", "index"


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


def vector_dir(db_path: str | Path) -> Path:
    """``G.sqlite`` -> ``G.sqlite.vectors``."""
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".vectors")


@contextmanager
def _locked(folder: Path, exclusive: bool) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a") as f:
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
        state = _read_state(folder / STATE)
        gen = state["generation"]
        ids = _load_array(folder / IDS, gen)
        vectors = _load_array(folder / VECTORS, gen, mmap_mode="r")
    n, d = state["count"], state["dim"]
    if ids.dtype != np.int64 or ids.shape != (n,):
        raise VectorFilesError(f"ids.npy is {ids.dtype} {ids.shape}, state.json says {n} int64 ids", gen)
    if vectors.dtype != np.float32 or vectors.shape != (n, d):
        raise VectorFilesError(f"vectors.npy is {vectors.dtype} {vectors.shape}, state.json says float32 ({n}, {d})",
                               gen)
    return VectorFiles(ids, vectors, state)


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


def write_vectors(folder: Path, ids: np.ndarray, vectors: np.ndarray, state: dict, still_current) -> bool:
    """Write the three files atomically (state last) if ``still_current()`` holds under the lock."""
    with _locked(folder, exclusive=True):
        if not still_current():
            return False
        with atomic_write(folder / VECTORS, "wb") as f:
            np.save(f, np.ascontiguousarray(vectors, np.float32), allow_pickle=False)
        with atomic_write(folder / IDS, "wb") as f:
            np.save(f, np.asarray(ids, np.int64), allow_pickle=False)
        write_json(folder / STATE, {**state, "count": int(len(ids))})
    return True


def read_index(folder: Path, vectors: np.ndarray) -> Index:
    """The index saved in ``folder/index`` for exactly ``vectors`` (:func:`lookalike.index.load_index`: OSError
    when there is none, ValueError when it is unreadable or was built for other vectors)."""
    with _locked(folder, exclusive=False):
        return load_index(folder / INDEX, vectors)


def write_index(folder: Path, index: Index, still_current) -> bool:
    """Save ``index`` (without its vectors: they are ``vectors.npy``) to ``folder/index`` if ``still_current()``
    holds under the lock."""
    with _locked(folder, exclusive=True):
        if not still_current():
            return False
        index.save(folder / INDEX, with_vectors=False)
    return True
