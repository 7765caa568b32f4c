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
            if k < sim.shape[1]:
                part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
                kth = np.take_along_axis(sim, part, axis=1).min(axis=1, keepdims=True)
                # where ties straddle the k-th place, keep the tied items earliest in the gallery
                for r in np.flatnonzero((sim >= kth).sum(axis=1) > k):
                    cand = np.flatnonzero(sim[r] >= kth[r])
                    part[r] = cand[np.lexsort((cand, -sim[r, cand]))[:k]]
            else:
                part = np.tile(np.arange(sim.shape[1]), (len(sim), 1))
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
        queries = self._check(queries)
        n = len(self)
        k = min(k, n)
        # FAISS orders ties arbitrarily: fetch past the k-th place until no tie crosses it, then order
        # by (score desc, gallery id asc) like NumpyIndex.
        fetch = min(n, k + 16)
        while True:
            scores, ids = self._index.search(queries, fetch)
            if fetch >= n or not np.any(scores[:, k - 1] == scores[:, fetch - 1]):
                break
            fetch = min(n, 2 * fetch)
        order = np.lexsort((ids, -scores), axis=1)[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1).astype(np.int64)


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
