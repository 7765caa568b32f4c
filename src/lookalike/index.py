"""Gallery search: a tiny index interface (``add``, ``search``, ``save``/``load``) with interchangeable implementations.

Embeddings are L2-normalised, so inner product is cosine similarity. Results are best first, ties broken by
gallery order (id). Kinds, chosen by name with :func:`make_index`:

- ``numpy``: exact; BLAS matrix products blocked over queries *and* gallery rows with a running top-k threshold,
  so memory stays bounded; :meth:`NumpyIndex.from_array` searches a memory-mapped (N, D) array without copying it.
- ``faiss``: exact, FAISS ``IndexFlatIP``.
- ``hnsw``, ``ivf``, ``pq``: approximate (FAISS HNSW graph / inverted lists / 4-bit product-quantised fast scan)
  that over-fetch ``overfetch * k`` candidates and re-score them exactly against the float32 vectors.

An index is named by a spec ``kind[:param=value,...]`` (e.g. ``hnsw:m=32,ef_search=128``), read by
:func:`parse_index_spec`. Trained kinds (``ivf``, ``pq``) search exactly (a FAISS flat scan) until they hold enough
vectors to train on; :meth:`Index.outgrown` says when an index grown by ``add`` would be better rebuilt.

A saved index is a folder: ``index.json`` (kind, parameters, what was learned, and a fingerprint of the vectors:
count, dim, checksum), ``vectors.npy`` (float32) and, for FAISS kinds, ``index.faiss``. No pickle.
:func:`load_index` checks the fingerprint against the vectors it is given, so an index built for other vectors is
detected and rebuilt.
"""

from __future__ import annotations

import hashlib
import inspect
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np

from lookalike.checks import check_int, check_vectors
from lookalike.io import atomic_write, read_json, write_json

FORMAT = 1
META, VECTORS, FAISS_FILE = "index.json", "vectors.npy", "index.faiss"
POINTS_PER_CENTROID = 39  # FAISS's minimum k-means training points per centroid


class IndexMismatchError(ValueError):
    """A saved index does not belong to the vectors it is loaded with: rebuild it."""


def fingerprint(vectors: np.ndarray, rows: int = 1 << 16) -> dict[str, Any]:
    """Count, dim and BLAKE2b checksum of float32 (N, D) vectors (read in row chunks: fine on a memory map)."""
    v = np.asarray(vectors)
    return _fingerprint(v, _hash_rows(hashlib.blake2b(digest_size=16), v, 0, rows))


def _hash_rows(h, v: np.ndarray, start: int, rows: int = 1 << 16):
    """``h`` updated with the bytes of float32 rows ``start:`` of ``v`` (a stream: chunking does not matter)."""
    for s in range(start, len(v), rows):
        h.update(np.ascontiguousarray(v[s:s + rows], np.float32).tobytes())
    return h


def _fingerprint(v: np.ndarray, h) -> dict[str, Any]:
    return {"n": int(v.shape[0]), "dim": int(v.shape[1]), "checksum": h.copy().hexdigest()}


class _Rows:
    """Append-only float32 (N, D) rows: a growing buffer, or a wrapped array (e.g. a memory map) used in place."""

    def __init__(self, dim: int, array: np.ndarray | None = None) -> None:
        self._buf = np.zeros((0, dim), np.float32) if array is None else array
        self._n = len(self._buf)

    @property
    def array(self) -> np.ndarray:
        return self._buf[:self._n]

    def append(self, x: np.ndarray) -> None:
        need = self._n + len(x)
        if need > len(self._buf):
            grown = np.empty((max(need, 2 * self._n, 1024), self._buf.shape[1]), np.float32)
            grown[:self._n] = self._buf[:self._n]  # a wrapped array is copied on the first add only
            self._buf = grown
        self._buf[self._n:need] = x
        self._n = need


def _as_rows(vectors: np.ndarray, dim: int | None = None) -> np.ndarray:
    """(N, D) float32 C-contiguous view of ``vectors``; no copy when it already is one (memory maps included)."""
    v = np.asarray(vectors)
    if v.ndim != 2 or (dim is not None and v.shape[1] != dim):
        raise ValueError(f"expected vectors of shape (N, {dim or 'D'}), got {v.shape}")
    return np.ascontiguousarray(v, dtype=np.float32)


def _order(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``k`` columns per row after sorting by (score desc, id asc)."""
    o = np.lexsort((ids, -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, o, axis=1), np.take_along_axis(ids, o, axis=1)


def _select(sim: np.ndarray, offset: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of each row of a similarity block (ids = offset + column), best first, ties by id."""
    if k >= sim.shape[1]:
        cols = np.broadcast_to(np.arange(sim.shape[1]), sim.shape)
        return _order(sim, cols + offset, k)
    part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    kth = np.take_along_axis(sim, part, axis=1).min(axis=1, keepdims=True)
    # where ties straddle the k-th place, keep the tied items earliest in the gallery
    for r in np.flatnonzero((sim >= kth).sum(axis=1) > k):
        cand = np.flatnonzero(sim[r] >= kth[r])
        part[r] = cand[np.lexsort((cand, -sim[r, cand]))[:k]]
    return _order(np.take_along_axis(sim, part, axis=1), part + offset, k)


def exact_topk(queries: np.ndarray, gallery: np.ndarray, k: int, block: int = 1024,
               gallery_block: int | None = None, block_scores: int = 1 << 24) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product: (scores, ids) (Q, min(k, N)), best first, ties by gallery order.

    The one blocked-similarity loop: ``block`` queries x ``gallery_block`` rows at a time (one BLAS product each;
    by default as many rows as keep a block at ``block_scores`` scores, at least 16384, since small products
    run far below memory bandwidth); after the first gallery block only scores above each query's running k-th
    best are merged, so the cost is the matrix product plus a comparison pass. Memory: O(block * gallery_block)
    whatever N is (64 MB of scores by default).
    """
    n, k = len(gallery), min(k, len(gallery))
    if gallery_block is None:
        gallery_block = max(16384, block_scores // max(1, min(block, len(queries))))
    scores = np.zeros((len(queries), k), np.float32)
    ids = np.zeros((len(queries), k), np.int64)
    if k == 0:
        return scores, ids
    first = min(n, max(gallery_block, k))
    rows_q = min(block, len(queries))
    sim_buf = np.empty(rows_q * gallery_block, np.float32)  # reused: no fresh pages to fault in per block
    hit_buf = np.empty(rows_q * gallery_block, bool)
    for s in range(0, len(queries), block):
        q = queries[s:s + block]
        top_s, top_i = _select(q @ gallery[:first].T, 0, k)
        for g in range(first, n, gallery_block):
            rows_g = gallery[g:g + gallery_block]
            sim = np.matmul(q, rows_g.T, out=sim_buf[:len(q) * len(rows_g)].reshape(len(q), len(rows_g)))
            # later ids lose ties, so only scores strictly above the running k-th best can enter
            above = np.greater(sim, top_s[:, -1:], out=hit_buf[:sim.size].reshape(sim.shape))
            rows, cols = np.nonzero(above)
            if len(rows) == 0:
                continue
            first_of = np.flatnonzero(np.diff(rows, prepend=-1))  # rows come sorted from nonzero
            hit, counts = rows[first_of], np.diff(first_of, append=len(rows))
            if counts.max() > k:  # many entrants (e.g. a gallery sorted by similarity): select per row
                sub = sim[hit]
                cand_s, cand_i = _select(np.where(sub > top_s[hit, -1:], sub, -np.inf), g, k)
            else:  # the usual case: a few entrants per row, padded to a (rows, max entrants) block
                slot = np.arange(len(rows)) - np.repeat(first_of, counts)
                at = np.repeat(np.arange(len(hit)), counts)
                cand_s = np.full((len(hit), counts.max()), -np.inf, np.float32)
                cand_i = np.full(cand_s.shape, np.iinfo(np.int64).max, np.int64)
                cand_s[at, slot], cand_i[at, slot] = sim[rows, cols], cols + g
            top_s[hit], top_i[hit] = _order(np.concatenate([top_s[hit], cand_s], 1),
                                            np.concatenate([top_i[hit], cand_i], 1), k)
        scores[s:s + len(q)], ids[s:s + len(q)] = top_s, top_i
    return scores, ids


class Index(ABC):
    """Top-k search by inner product over the added vectors (ids are insertion order)."""

    kind: str

    def __init__(self, dim: int) -> None:
        self.dim = check_int(dim, "dim")
        self._hashed: tuple[int, Any] | None = None  # (rows hashed, their running checksum): see fingerprint()

    def fingerprint(self) -> dict[str, Any]:
        """:func:`fingerprint` of :attr:`vectors`, continued from the rows hashed last time (indexes only grow:
        saving after each enrolment then hashes the new rows, not a million old ones)."""
        v = np.asarray(self.vectors)
        done, h = self._hashed if self._hashed is not None and self._hashed[0] <= len(v) else \
            (0, hashlib.blake2b(digest_size=16))
        self._hashed = (len(v), _hash_rows(h, v, done))
        return _fingerprint(v, h)

    @abstractmethod
    def add(self, vectors: np.ndarray) -> None:
        """Append (N, dim) vectors."""

    def add_in_place(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        """:meth:`add` ``vectors`` that are already the last rows of ``rows`` (all the vectors: a gallery's own growing
        matrix, or its memory-mapped vector files shared between processes): kinds that search their vectors in place
        then search ``rows`` instead of copying them; others (their own copy, e.g. FAISS flat) just add."""
        v = self._check_rows(vectors)
        if len(rows) != len(self) + len(v):
            raise ValueError(f"rows must hold the {len(self)} indexed vectors and the {len(v)} added")
        self._add_in_place(v, self._check(rows))

    def _add_in_place(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        """:meth:`add_in_place` for checked arrays; kinds that keep their own copy add."""
        self.add(vectors)

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, ids), each (Q, k'), best first (ties by id), with k' = min(k, len(self))."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    @abstractmethod
    def vectors(self) -> np.ndarray:
        """The (N, dim) float32 vectors searched."""

    @classmethod
    def from_array(cls, vectors: np.ndarray, **params: Any) -> Index:
        """An index over (N, D) ``vectors`` (kinds that can search them in place do so: no copy)."""
        v = check_vectors(vectors)
        ix = cls(v.shape[1], **params)
        ix.add(v)
        return ix

    def params(self) -> dict[str, Any]:
        """Constructor parameters (besides ``dim``), saved with the index."""
        return {}

    def learned(self) -> dict[str, Any]:
        """What the index learned from the vectors it was built on (saved with it; attributes ``<name>_``)."""
        return {}

    def outgrown(self, n: int) -> bool:
        """Whether this index, grown by ``add`` to ``n`` vectors, would be better rebuilt from them all."""
        return False

    def matches(self, vectors: np.ndarray) -> bool:
        """Whether this index was built for exactly ``vectors`` (count, dim and checksum)."""
        v = np.asarray(vectors)
        if v.ndim != 2 or v.shape != (len(self), self.dim):
            return False
        return fingerprint(v) == self.fingerprint()

    def save(self, folder: str | Path, with_vectors: bool = True) -> Path:
        """Write the index to ``folder``; ``with_vectors=False`` when the caller keeps the vectors file itself."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if with_vectors:
            with atomic_write(folder / VECTORS, "wb") as f:
                np.save(f, self.vectors)
        self._save_state(folder)
        write_json(folder / META, {"format": FORMAT, "kind": self.kind, "dim": self.dim, "params": self.params(),
                                   "learned": self.learned(), "vectors": self.fingerprint()})
        return folder

    def _save_state(self, folder: Path) -> None:
        """Write what the vectors alone cannot rebuild (nothing here: drop a stale FAISS file)."""
        (folder / FAISS_FILE).unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: str | Path, vectors: np.ndarray | None = None) -> Index:
        """:func:`load_index`."""
        return load_index(folder, vectors)

    def _check(self, x: np.ndarray) -> np.ndarray:
        return _as_rows(x, self.dim)

    def _check_rows(self, x: np.ndarray) -> np.ndarray:
        """Vectors to :meth:`add`: finite, of unit length and of this index's dimension
        (:func:`lookalike.checks.check_vectors`, the gallery's check); a NaN row had scored NaN, or -3.4e38 with id -1
        in FAISS kinds, and a long one outranked every face."""
        return check_vectors(x, "vectors", self.dim)

    def _check_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, int]:
        """The queries and ``k`` of a :meth:`search`: finite unit vectors of this index's dimension (as :meth:`add`
        takes), ``k`` an integer >= 0 as a Python int (FAISS refuses a NumPy integer). A one-line ValueError, not a
        NaN score or a result of another width."""
        k = check_int(k, "k", least=0)
        return check_vectors(queries, "query vectors", self.dim), k

    def _check_params(self, **params: Any) -> None:
        """The constructor's parameters as :func:`parse_index_spec` checks them in a spec (:func:`check_index_param`),
        so a bad one is a one-line ValueError here, not a FAISS error (or a silent default) later."""
        for key, value in params.items():
            check_index_param(type(self), key, value)


class NumpyIndex(Index):
    """Exact search with :func:`exact_topk`; memory bounded by ``block`` queries x ``gallery_block`` rows."""

    kind = "numpy"

    def __init__(self, dim: int, block: int = 1024, gallery_block: int | None = None) -> None:
        super().__init__(dim)
        self._check_params(block=block, gallery_block=gallery_block)
        self.block = block
        self.gallery_block = gallery_block
        self._rows = _Rows(dim)

    @classmethod
    def from_array(cls, vectors: np.ndarray, **params: Any) -> NumpyIndex:
        """Index over ``vectors`` in place (e.g. ``np.load(path, mmap_mode="r")``): no copy until ``add``, and no read:
        they are taken as they are (a gallery's own, checked when stored; checking a million rows takes 0.16 s)."""
        v = _as_rows(vectors)
        ix = cls(v.shape[1], **params)
        ix._rows = _Rows(ix.dim, v)
        return ix

    @property
    def vectors(self) -> np.ndarray:
        return self._rows.array

    def params(self) -> dict[str, Any]:
        return {"block": self.block, "gallery_block": self.gallery_block}

    def add(self, vectors: np.ndarray) -> None:
        self._rows.append(self._check_rows(vectors))

    def _add_in_place(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        self._rows = _Rows(self.dim, rows)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = self._check_search(queries, k)
        return exact_topk(queries, self.vectors, k, self.block, self.gallery_block)


def _faiss():
    import faiss

    return faiss


def _faiss_vectors(index) -> np.ndarray:
    """Zero-copy view of a FAISS flat index's float32 vectors."""
    faiss = _faiss()
    n, d = index.ntotal, index.d
    if n == 0:
        return np.zeros((0, d), np.float32)
    return faiss.rev_swig_ptr(faiss.downcast_index(index).get_xb(), n * d).reshape(n, d)


class FaissIndex(Index):
    """FAISS ``IndexFlatIP`` (exact); same candidates as :class:`NumpyIndex`."""

    kind = "faiss"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._index = _faiss().IndexFlatIP(dim)

    @property
    def vectors(self) -> np.ndarray:
        return _faiss_vectors(self._index)

    def add(self, vectors: np.ndarray) -> None:
        self._index.add(self._check_rows(vectors))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = self._check_search(queries, k)
        n = len(self)
        k = min(k, n)
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        # FAISS orders ties arbitrarily: fetch past the k-th place until no tie crosses it, then order
        # by (score desc, gallery id asc) like NumpyIndex.
        fetch = min(n, k + 16)
        while True:
            scores, ids = self._index.search(queries, fetch)
            if fetch >= n or not np.any(scores[:, k - 1] == scores[:, fetch - 1]):
                break
            fetch = min(n, 2 * fetch)
        scores, ids = _order(scores, ids.astype(np.int64), k)
        return scores, ids

    def save(self, folder: str | Path, with_vectors: bool = False) -> Path:
        """The vectors live inside ``index.faiss``: no separate vectors file unless asked for."""
        return super().save(folder, with_vectors)

    def _save_state(self, folder: Path) -> None:
        _write_faiss(self._index, folder / FAISS_FILE)


def _write_faiss(index, path: Path) -> None:
    faiss = _faiss()
    with atomic_write(path, "wb") as f:
        f.write(faiss.serialize_index(index).tobytes())


class ApproximateIndex(Index):
    """A FAISS candidate generator plus exact re-scoring: fetch ``overfetch * k`` candidates, re-score them
    against the float32 vectors, return the best ``k`` (ties by id). Subclasses build the FAISS index.

    ``trained_on_``: vectors the FAISS index was trained on (0 for kinds that need no training).
    ``search_params``: the parameters that only change how a built index is searched (no rebuild needed).
    """

    search_params: tuple[str, ...] = ("overfetch",)

    def __init__(self, dim: int, overfetch: int = 4) -> None:
        super().__init__(dim)
        self._check_params(overfetch=overfetch)
        self.overfetch = overfetch
        self._rows = _Rows(dim)
        self._index = None  # built on the first add
        self.trained_on_ = 0

    @classmethod
    def from_array(cls, vectors: np.ndarray, **params: Any) -> ApproximateIndex:
        """Build over ``vectors`` re-scoring from them in place (e.g. a memory map): no float32 copy kept here."""
        v = check_vectors(vectors)
        ix = cls(v.shape[1], **params)
        ix._rows = _Rows(ix.dim, v)
        if len(v):
            ix._start(v)
            ix._index.add(v)
        return ix

    def learned(self) -> dict[str, Any]:
        return {"trained_on": self.trained_on_}

    def outgrown(self, n: int) -> bool:
        """A trained index whose training set would be twice as large if it were rebuilt over ``n`` vectors."""
        size = self._train_size(n)
        return size > 0 and size >= 2 * self.trained_on_

    def _train_size(self, n: int) -> int:
        """Vectors a build over ``n`` vectors trains on (0: this kind needs no training)."""
        return 0

    def _min_train(self) -> int:
        """Fewest training vectors for :meth:`_build`; with fewer, candidates come from an exact flat scan."""
        return 0

    def _start(self, first: np.ndarray) -> None:
        """Create the FAISS index for vectors like ``first``: trained on them, or flat while they are too few."""
        small = len(first) < self._min_train()
        self._index = _faiss().IndexFlatIP(self.dim) if small else self._build(first)
        self.trained_on_ = self._train_size(len(first))

    @property
    def vectors(self) -> np.ndarray:
        return self._rows.array

    def __len__(self) -> int:
        return len(self.vectors)

    @abstractmethod
    def _build(self, first: np.ndarray):
        """An empty (trained) FAISS index for vectors like ``first``."""

    @abstractmethod
    def _search_params(self, fetch: int):
        """FAISS SearchParameters for fetching ``fetch`` candidates."""

    def _candidates(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """The FAISS index's (approximate scores, ids) of ``fetch`` candidates per query."""
        return self._index.search(queries, fetch, params=self._search_params(fetch))

    def add(self, vectors: np.ndarray) -> None:
        v = self._check_rows(vectors)
        if len(v) == 0:
            return
        if self._index is None:
            self._start(v)
        self._rows.append(v)
        self._index.add(v)

    def _add_in_place(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        if len(vectors) == 0:
            return
        if self._index is None:
            self._start(vectors)
        self._rows = _Rows(self.dim, rows)
        self._index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries, k = self._check_search(queries, k)
        n = len(self)
        k = min(k, n)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        if k == 0:
            return scores, ids
        # like FaissIndex: where a tie crosses the last candidate fetched, fetch more, so ties go by id
        todo, fetch = np.arange(len(queries)), min(n, self.overfetch * k)
        while len(todo):
            scores[todo], ids[todo], tied = self._rescored(queries[todo], fetch, k)
            if fetch >= n:
                break
            todo, fetch = todo[tied], min(n, 2 * fetch)
        # FAISS may find fewer than k candidates (IVF probing a few small lists): such queries are searched exactly,
        # so every result holds k real candidates, never a padding id
        short = np.flatnonzero((ids < 0).any(1))
        if len(short):
            scores[short], ids[short] = exact_topk(queries[short], self.vectors, k)
        return scores, ids

    def _rescored(self, queries: np.ndarray, fetch: int, k: int,
                  block: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Best ``k`` of ``fetch`` candidates re-scored exactly, and whether a tie crosses the last candidate."""
        _, cand = self._candidates(queries, fetch)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        tied = np.zeros(len(queries), bool)
        vectors = self.vectors
        pad = np.iinfo(np.int64).max
        for s in range(0, len(queries), block):
            c = cand[s:s + block].astype(np.int64)
            c[c < 0] = pad  # FAISS pads with -1 when it finds fewer than ``fetch``
            c.sort(axis=1)  # candidates in gallery order, so the exact selection breaks ties by id
            valid = c != pad
            exact = np.einsum("qd,qkd->qk", queries[s:s + block], vectors[np.where(valid, c, 0)])
            exact[~valid] = -np.inf
            top_s, cols = _select(exact, 0, k)
            top_i = np.take_along_axis(c, cols, 1)
            top_i[~np.isfinite(top_s)] = -1
            # every candidate fetched as good as the k-th best: more such ties may not have been fetched
            tied[s:s + block] = valid.all(1) & (exact.min(1) >= top_s[:, -1])
            scores[s:s + block], ids[s:s + block] = top_s, top_i
        return scores, ids, tied

    def _save_state(self, folder: Path) -> None:
        if self._index is None:
            super()._save_state(folder)
        else:
            _write_faiss(self._index, folder / FAISS_FILE)


class HNSWIndex(ApproximateIndex):
    """FAISS ``HNSW<M>,<storage>`` (inner product); ``ef_search`` is raised to the fetch size when smaller.

    ``storage``: how the graph keeps the vectors it walks — ``Flat`` (float32) or ``SQ8`` (8 bits a dimension, a
    quarter of the memory read per step, trained on a sample of the first vectors); either way the candidates
    are re-scored exactly against the float32 vectors.
    """

    kind = "hnsw"
    search_params = ("ef_search", "overfetch")
    STORAGE = ("Flat", "SQ8")
    spec_min = {"m": 2}  # FAISS's HNSW with one link a node crashes the process (a segmentation fault)

    def __init__(self, dim: int, m: int = 32, ef_construction: int = 80, ef_search: int = 128,
                 overfetch: int = 4, storage: str = "Flat") -> None:
        super().__init__(dim, overfetch)
        self._check_params(m=m, ef_construction=ef_construction, ef_search=ef_search, storage=storage)
        if storage not in self.STORAGE:
            raise ValueError(f"hnsw: storage must be one of {', '.join(self.STORAGE)}, got {storage!r}")
        self.m, self.ef_construction, self.ef_search, self.storage = m, ef_construction, ef_search, storage

    def params(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction, "ef_search": self.ef_search,
                "overfetch": self.overfetch, "storage": self.storage}

    def _train_size(self, n: int) -> int:
        return 0 if self.storage == "Flat" else min(n, 65536)

    def _build(self, first: np.ndarray):
        faiss = _faiss()
        index = faiss.index_factory(self.dim, f"HNSW{self.m},{self.storage}", faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        if self.storage != "Flat":
            index.train(_training_sample(first, self._train_size(len(first))))
        return index

    def _search_params(self, fetch: int):
        return _faiss().SearchParametersHNSW(efSearch=max(self.ef_search, fetch))


def _training_sample(vectors: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """At most ``n`` rows, seeded, in file order (cheap on a memory map)."""
    if len(vectors) <= n:
        return np.ascontiguousarray(vectors)
    return np.ascontiguousarray(vectors[np.sort(np.random.default_rng(seed).choice(len(vectors), n, False))])


class IVFIndex(ApproximateIndex):
    """FAISS ``IVF<nlist>,<storage>`` (inner product), trained by k-means on the first vectors added.

    ``nlist=None`` picks 4 * sqrt(N) lists (at most N / 39, FAISS's minimum training points per list); the value
    used is ``nlist_``. Probes ``nprobe`` lists per query. ``storage``: a FAISS code for the list entries
    (``Flat``, ``SQ8``, ``SQfp16``, ``PQ128x4fs``...); compressed codes only pick candidates, which are re-scored
    exactly, so raise ``overfetch`` with them. With 4-bit fast-scan codes a single query's lists are scanned on
    every FAISS thread.
    """

    kind = "ivf"
    search_params = ("nprobe", "overfetch")

    def __init__(self, dim: int, nlist: int | None = None, nprobe: int = 32, storage: str = "Flat",
                 overfetch: int = 4) -> None:
        super().__init__(dim, overfetch)
        self._check_params(nlist=nlist, nprobe=nprobe, storage=storage)
        faiss = _faiss()
        try:
            faiss.index_factory(dim, f"IVF1,{storage}", faiss.METRIC_INNER_PRODUCT)
        except RuntimeError:
            raise ValueError(f"ivf: storage {storage!r} is not a FAISS code for {dim}-d vectors") from None
        self.nlist, self.nprobe, self.storage = nlist, nprobe, storage
        self.nlist_: int | None = None
        self._implem_lock = threading.Lock()  # FAISS's scan choice is a setting of the index, not of one search

    def params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "storage": self.storage, "overfetch": self.overfetch}

    def learned(self) -> dict[str, Any]:
        return {**super().learned(), "nlist": self.nlist_}

    @staticmethod
    def auto_nlist(n: int) -> int:
        """Lists for ``n`` vectors when ``nlist`` is None: 4 * sqrt(n), at most n / 39."""
        return int(max(1, min(4 * np.sqrt(n), n // POINTS_PER_CENTROID)))

    def _lists(self, n: int) -> int:
        return self.nlist or self.auto_nlist(n)

    def _train_size(self, n: int) -> int:
        return min(n, 256 * self._lists(n))

    def _min_train(self) -> int:
        return POINTS_PER_CENTROID * (self.nlist or 1)

    def _build(self, first: np.ndarray):
        faiss = _faiss()
        self.nlist_ = self._lists(len(first))
        index = faiss.index_factory(self.dim, f"IVF{self.nlist_},{self.storage}", faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = 1234
        index.train(_training_sample(first, self._train_size(len(first))))
        return index

    def _search_params(self, fetch: int):
        return _faiss().SearchParametersIVF(nprobe=self.nprobe)

    def _candidates(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        # 4-bit fast-scan lists (storage ``PQ<m>x4fs``): one query scans its lists on all FAISS threads (FAISS's
        # implementation 14), a batch splits the queries between threads (its default); the choice is set on the
        # shared index, so searches from several threads (the service) take turns rather than swap it mid-scan
        if not hasattr(self._index, "implem"):
            return super()._candidates(queries, fetch)
        with self._implem_lock:
            self._index.implem = 14 if len(queries) == 1 else 0
            return super()._candidates(queries, fetch)


class PQIndex(ApproximateIndex):
    """FAISS ``PQ<m>x4fs``: every vector as ``m`` 4-bit codes scanned with SIMD lookups (``m / 2`` bytes a
    vector), a fast exhaustive candidate generator; candidates are re-scored exactly, hence the large ``overfetch``.
    """

    kind = "pq"

    def __init__(self, dim: int, m: int = 64, overfetch: int = 40) -> None:
        super().__init__(dim, overfetch)
        self._check_params(m=m)
        if dim % m:
            raise ValueError(f"pq: m={m} must divide the dimension {dim}")
        self.m = m

    def params(self) -> dict[str, Any]:
        return {"m": self.m, "overfetch": self.overfetch}

    def _train_size(self, n: int) -> int:
        return min(n, 65536)

    def _min_train(self) -> int:
        return POINTS_PER_CENTROID * 16  # 16 centroids per 4-bit sub-quantizer

    def _build(self, first: np.ndarray):
        faiss = _faiss()
        index = faiss.index_factory(self.dim, f"PQ{self.m}x4fs", faiss.METRIC_INNER_PRODUCT)
        index.train(_training_sample(first, self._train_size(len(first))))
        return index

    def _search_params(self, fetch: int):
        return None


INDEXES: dict[str, type[Index]] = {"numpy": NumpyIndex, "faiss": FaissIndex, "hnsw": HNSWIndex, "ivf": IVFIndex,
                                   "pq": PQIndex}


def _index_class(kind: str) -> type[Index]:
    if kind not in INDEXES:
        raise ValueError(f"unknown index {kind!r}; choose one of {', '.join(INDEXES)}")
    return INDEXES[kind]


def make_index(kind: str, dim: int, **params: Any) -> Index:
    """An empty index of ``kind`` (see :data:`INDEXES`) for ``dim``-dimensional vectors."""
    return _index_class(kind)(dim, **params)


def build_index(kind: str, vectors: np.ndarray, **params: Any) -> Index:
    """An index of ``kind`` over (N, D) ``vectors``, searching them in place where the kind can (a memory map)."""
    return _index_class(kind).from_array(vectors, **params)


def _spec_params(kind: str) -> dict[str, type]:
    """The spec parameters of ``kind``: its constructor's arguments besides ``dim``, with their value types."""
    hints = get_type_hints(_index_class(kind).__init__)
    return {k: str if v is str else int for k, v in hints.items() if k not in ("dim", "return")}


def parse_index_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``kind[:param=value,...]`` (e.g. ``hnsw:m=32,ef_search=128``) -> (kind, params); a one-line ValueError
    naming the problem for an unknown kind or parameter, a repeated parameter or a bad value (numbers: >= 1, or the
    index class's ``spec_min``)."""
    kind, _, rest = str(spec).strip().partition(":")
    kind = kind.strip()
    if kind not in INDEXES:
        raise ValueError(f"index {spec!r}: unknown kind {kind!r}; choose one of {', '.join(INDEXES)}")
    types, params = _spec_params(kind), {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, text = (x.strip() for x in item.partition("="))
        if not eq or not text:
            raise ValueError(f"index {spec!r}: expected param=value, got {item!r}")
        if key not in types:
            raise ValueError(f"index {spec!r}: {kind} has no parameter {key!r}; it takes "
                             f"{', '.join(types) or 'none'}")
        if key in params:
            raise ValueError(f"index {spec!r}: {key} given twice")
        params[key] = _spec_value(spec, kind, key, text, types[key])
    return kind, params


def _spec_value(spec: str, kind: str, key: str, text: str, type_: type) -> int | str:
    if type_ is str:
        return text
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"index {spec!r}: {key} must be an integer, got {text!r}") from None
    try:
        return check_index_param(_index_class(kind), key, value, prefix="")
    except ValueError as e:
        raise ValueError(f"index {spec!r}: {e}") from None


def check_index_param(cls: type[Index], key: str, value: Any, prefix: str | None = None) -> Any:
    """``value`` when it is one the index class ``cls`` takes for its parameter ``key``: text for a text parameter,
    else an integer (not a bool) of at least 1, or the class's ``spec_min``; None where the constructor's default
    is None. A one-line ValueError naming the parameter (after ``prefix``; default: the kind) otherwise: what a
    spec (:func:`parse_index_spec`) and a constructor both check."""
    prefix = f"{cls.kind}: " if prefix is None else prefix
    if _spec_params(cls.kind)[key] is str:
        if not isinstance(value, str):
            raise ValueError(f"{prefix}{key} must be text, got {value!r}")
        return value
    if value is None and inspect.signature(cls.__init__).parameters[key].default is None:
        return value
    least = getattr(cls, "spec_min", {}).get(key, 1)
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{prefix}{key} must be an integer, got {value!r}")
    if value < least:
        raise ValueError(f"{prefix}{key} must be >= {least}, got {int(value)}")
    return int(value)


def format_index_spec(kind: str, params: dict[str, Any]) -> str:
    """The spec text of (kind, params): ``kind`` or ``kind:param=value,...`` (read back by :func:`parse_index_spec`)."""
    return ":".join([kind, ",".join(f"{k}={v}" for k, v in params.items())]) if params else kind


def load_index(folder: str | Path, vectors: np.ndarray | None = None,
               known: dict[str, Any] | None = None) -> Index:
    """Load an index saved by :meth:`Index.save`.

    ``vectors``: the (N, D) float32 vectors it is for (e.g. a gallery's memory-mapped ``vectors.npy``); by
    default the folder's own ``vectors.npy``, memory-mapped. Raises :class:`IndexMismatchError` when they are not
    the vectors the index was built for (count, dim or checksum differ): rebuild the index then. ``known``: the
    :func:`fingerprint` of ``vectors`` when the caller knows it (e.g. a file unchanged since it was recorded), so
    they are not hashed again (half a second for a million faces); their count and dim are still checked.
    """
    folder = Path(folder)
    if not (folder / META).is_file():
        raise FileNotFoundError(f"no saved index in {folder} (missing {META})")
    try:
        meta = read_json(folder / META)
    except ValueError as e:  # not JSON (JSONDecodeError, UnicodeDecodeError): a damaged file
        raise ValueError(f"{folder / META}: not an index description (unreadable JSON: {e}); rebuild the index") \
            from None
    if not isinstance(meta, dict):
        raise ValueError(f"{folder / META}: not an index description")
    kind, dim, params, want = meta.get("kind"), meta.get("dim"), meta.get("params", {}), meta.get("vectors", {})
    learned = meta.get("learned", {})
    if meta.get("format") != FORMAT or kind not in INDEXES:
        raise ValueError(f"{folder / META}: unsupported index format {meta.get('format')!r} / kind {kind!r}")
    if not (isinstance(dim, int) and all(isinstance(x, dict) for x in (params, learned, want))):
        raise ValueError(f"{folder / META}: malformed dim, params, learned or vectors")
    cls = INDEXES[kind]
    if cls is FaissIndex:
        ix = FaissIndex(dim)
        ix._index = _read_faiss(folder / FAISS_FILE, dim)
        if vectors is not None and not ix.matches(vectors):
            raise IndexMismatchError(f"{folder}: the saved FAISS index does not hold the given vectors; rebuild it")
        return ix
    if vectors is None:
        if not (folder / VECTORS).is_file():
            raise FileNotFoundError(f"{folder}: no {VECTORS}; pass the vectors the index was built for")
        vectors = np.load(folder / VECTORS, mmap_mode="r")
    v = _as_rows(vectors, dim)
    known = known if known is not None and (known.get("n"), known.get("dim")) == v.shape else None
    h = None if known is not None else _hash_rows(hashlib.blake2b(digest_size=16), v, 0)
    got = known if known is not None else _fingerprint(v, h)
    if got != want:
        raise IndexMismatchError(
            f"{folder}: index built for {want.get('n')} x {want.get('dim')} vectors (checksum {want.get('checksum')}), "
            f"got {got['n']} x {got['dim']} (checksum {got['checksum']}); rebuild it")
    try:
        ix = cls(dim, **params)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{folder / META}: bad parameters for {kind} ({e})") from None
    ix._rows = _Rows(dim, v)  # searched in place
    ix._hashed = None if h is None else (len(v), h)
    if cls is NumpyIndex:
        return ix
    for name, value in learned.items():
        if name in ix.learned() and (value is None or isinstance(value, int)):
            setattr(ix, f"{name}_", value)
    if len(v):
        ix._index = _read_faiss(folder / FAISS_FILE, dim, len(v))
    return ix


def _read_faiss(path: Path, dim: int, n: int | None = None):
    """A FAISS index file holding ``n`` (if given) ``dim``-dimensional vectors; IndexMismatchError otherwise."""
    if not path.is_file():
        raise IndexMismatchError(f"{path.parent}: no {path.name}; rebuild it")
    try:
        index = _faiss().read_index(str(path))
    except RuntimeError as e:
        raise IndexMismatchError(f"{path}: unreadable FAISS index ({str(e).strip().splitlines()[0]}); "
                                 "rebuild it") from None
    if index.d != dim or (n is not None and index.ntotal != n):
        raise IndexMismatchError(f"{path}: holds {index.ntotal} x {index.d} vectors, expected "
                                 f"{n if n is not None else '?'} x {dim}; rebuild it")
    return index


def full_ranks(queries: np.ndarray, gallery: np.ndarray, targets: list[np.ndarray], block: int = 1024) -> list:
    """0-based positions of ``targets[i]`` (gallery ids) in query i's full ranking, sorted ascending.

    Position = number of gallery items scored higher, plus equal-scored items earlier in the gallery.
    """
    out = []
    for s in range(0, len(queries), block):
        sim = queries[s:s + block] @ gallery.T
        out += [row_positions(row, targets[s + r]) for r, row in enumerate(sim)]
    return out


def row_positions(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sorted 0-based positions of ``targets`` (column ids) when the row ``scores`` is ranked descending,
    ties by column (the order of a stable sort): items scored higher, plus equal-scored items before it."""
    t = np.asarray(targets, np.int64)
    if len(t) == 0:
        return t
    ts = scores[t][:, None]
    earlier = np.arange(len(scores))[None, :] < t[:, None]
    return np.sort((scores[None, :] > ts).sum(1) + ((scores[None, :] == ts) & earlier).sum(1))
