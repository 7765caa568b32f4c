"""Gallery search: a tiny index interface (``add``, ``search``) with interchangeable exact implementations.

Embeddings are L2-normalised, so inner product is cosine similarity. Ties are broken by gallery order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Index(ABC):
    """Exact top-k search by inner product over the added vectors (ids are insertion order)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append (N, dim) vectors."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k'), best first, with k' = min(k, len(self))."""

    @abstractmethod
    def __len__(self) -> int: ...

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (N, {self.dim}), got {x.shape}")
        return x


class NumpyIndex(Index):
    """Blocked matrix products and partial sorts in numpy; memory bounded by ``block`` queries at a time."""

    def __init__(self, dim: int, block: int = 1024) -> None:
        super().__init__(dim)
        self.block = block
        self._data = np.zeros((0, dim), np.float32)

    def add(self, vectors: np.ndarray) -> None:
        self._data = np.concatenate([self._data, self._check(vectors)])

    def __len__(self) -> int:
        return len(self._data)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check(queries)
        k = min(k, len(self))
        scores = np.zeros((len(queries), k), np.float32)
        ids = np.zeros((len(queries), k), np.int64)
        for s in range(0, len(queries), self.block):
            sim = queries[s:s + self.block] @ self._data.T
            part = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < sim.shape[1] else \
                np.tile(np.arange(sim.shape[1]), (len(sim), 1))
            top = np.take_along_axis(sim, part, axis=1)
            # best first; ties by gallery order: sort by (-score, id)
            order = np.lexsort((part, -top), axis=1)
            ids[s:s + len(sim)] = np.take_along_axis(part, order, axis=1)
            scores[s:s + len(sim)] = np.take_along_axis(top, order, axis=1)
        return scores, ids


class FaissIndex(Index):
    """FAISS ``IndexFlatIP`` (exact); same candidates as :class:`NumpyIndex`."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        import faiss

        self._index = faiss.IndexFlatIP(dim)

    def add(self, vectors: np.ndarray) -> None:
        self._index.add(self._check(vectors))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = min(k, len(self))
        scores, ids = self._index.search(self._check(queries), k)
        return scores, ids.astype(np.int64)


INDEXES = {"numpy": NumpyIndex, "faiss": FaissIndex}


def make_index(kind: str, dim: int) -> Index:
    if kind not in INDEXES:
        raise ValueError(f"unknown index {kind!r}; choose one of {sorted(INDEXES)}")
    return INDEXES[kind](dim)


def full_ranks(queries: np.ndarray, gallery: np.ndarray, targets: list[np.ndarray], block: int = 1024) -> list:
    """0-based positions of ``targets[i]`` (gallery ids) in query i's full ranking, sorted ascending.

    Position = number of gallery items scored higher, plus equal-scored items earlier in the gallery.
    """
    out = []
    for s in range(0, len(queries), block):
        sim = queries[s:s + block] @ gallery.T
        for r, row in enumerate(sim):
            t = np.asarray(targets[s + r], np.int64)
            if len(t) == 0:
                out.append(t)
                continue
            ts = row[t][:, None]
            earlier = np.arange(len(row))[None, :] < t[:, None]
            pos = (row[None, :] > ts).sum(1) + ((row[None, :] == ts) & earlier).sum(1)
            out.append(np.sort(pos))
    return out
