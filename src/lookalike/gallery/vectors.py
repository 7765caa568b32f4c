"""The matrix of enrolled vectors persisted beside a SQLite gallery (``G.sqlite.vectors/``).

``vectors.npy`` (memory-mappable float32 (N, D)), ``ids.npy`` (int64 image ids, one per row) and ``state.json``
(store generation, matcher, dim, count). Each file is replaced atomically, ``state.json`` last, under an exclusive
lock; readers take a shared lock. The files are a cache: the gallery checks them against the store and rebuilds
them from the store whenever they disagree.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.io import atomic_write, write_json

VECTORS, IDS, STATE, LOCK = "vectors.npy", "ids.npy", "state.json", ".lock"


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


def read_vectors(folder: Path) -> VectorFiles:
    """Read the files; raises ValueError (with the reason) when they are missing, unreadable or inconsistent."""
    if not (folder / STATE).is_file():
        raise ValueError("no saved vectors")
    with _locked(folder, exclusive=False):
        try:
            state = json.loads((folder / STATE).read_text())
            ids = np.load(folder / IDS, allow_pickle=False)
            vectors = np.load(folder / VECTORS, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(f"unreadable vector files ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict) or not {"generation", "matcher", "dim", "count"} <= set(state):
        raise ValueError("state.json lacks generation/matcher/dim/count")
    n, d = int(state["count"]), int(state["dim"])
    if ids.dtype != np.int64 or ids.shape != (n,):
        raise ValueError(f"ids.npy is {ids.dtype} {ids.shape}, state says {n} int64 ids")
    if vectors.dtype != np.float32 or vectors.shape != (n, d):
        raise ValueError(f"vectors.npy is {vectors.dtype} {vectors.shape}, state says float32 ({n}, {d})")
    return VectorFiles(ids, vectors, state)


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
