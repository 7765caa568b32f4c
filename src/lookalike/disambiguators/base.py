"""The disambiguator interface: a pair scorer trained to tell lookalike faces apart.

A disambiguator is fitted on mined train pairs (genuine vs lookalike — never on random impostors alone) and
scores arrays: aligned rows of two (N, D) arrays (:meth:`Disambiguator.score`), or each probe against its
candidates (:meth:`Disambiguator.score_lists`). Embedding-level disambiguators (``input = "embedding"``)
score the matcher's embeddings; an image-level one (``input = "image"``) scores its own embeddings of the
same face chips, which it computes with :meth:`Disambiguator.embed_chips`.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from lookalike.checks import check_vectors
from lookalike.faces import FaceSet
from lookalike.matchers.base import l2_normalize
from lookalike.mining import GENUINE, LOOKALIKE, Pairs

# Disambiguator classes a saved file may name (loading never imports anything else).
REGISTRY: dict[str, type] = {}


def fingerprint(faces: FaceSet) -> str:
    """A short content hash of a FaceSet (paths, identities, vectors) to recognise a repeated fit."""
    h = hashlib.sha1()
    for part in (faces.paths, faces.identities):
        h.update("\n".join(map(str, part)).encode())
    h.update(np.ascontiguousarray(faces.vectors, np.float32).tobytes())
    h.update(np.ascontiguousarray(faces.lowres, np.int32).tobytes())
    return h.hexdigest()[:16]


def check_pairs(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Aligned float (N, D) arrays, or a clear ValueError (an embedding-level disambiguator also requires finite
    unit rows of its own dimension: :meth:`EmbeddingDisambiguator.score_lists`)."""
    left, right = np.asarray(left, np.float32), np.asarray(right, np.float32)
    if left.ndim != 2 or left.shape != right.shape:
        raise ValueError(f"left and right must be aligned (N, D) arrays, got {left.shape} and {right.shape}")
    return left, right


def check_lists(probes: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q, D) probes and (Q, K, D) candidate vectors, or a clear ValueError."""
    probes, candidates = np.asarray(probes, np.float32), np.asarray(candidates, np.float32)
    if probes.ndim != 2 or candidates.ndim != 3 or candidates.shape[0] != probes.shape[0] \
            or candidates.shape[2] != probes.shape[1]:
        raise ValueError(f"expected probes (Q, D) and candidates (Q, K, D), got {probes.shape} and {candidates.shape}")
    return probes, candidates


class Disambiguator(ABC):
    """Scores (left[i], right[i]) pairs; higher means more likely the same person."""

    input: str = "embedding"  # or "image": scores vectors from :meth:`embed_chips`

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        REGISTRY[cls.__name__] = cls

    def __init__(self) -> None:
        self.stats: dict = {}
        self.fitted_on: str | None = None

    def get_params(self) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def fit(self, train: FaceSet, pairs: Pairs) -> Disambiguator:
        self._check_fit(train)
        n = len(train)
        if len(pairs) == 0 or pairs.left.max() >= n or pairs.right.max() >= n or min(pairs.left.min(),
                                                                                     pairs.right.min()) < 0:
            raise ValueError("pairs must index rows of the train FaceSet")
        if not ((pairs.labels == GENUINE).any() and (pairs.labels == LOOKALIKE).any()):
            raise ValueError("a disambiguator needs both genuine and lookalike pairs")
        self.__dict__.pop("_memo", None)
        self._fit(train, pairs)
        self.fitted_on = fingerprint(train)
        return self

    def _check_fit(self, train: FaceSet) -> None:
        """Parameters and train data checked before any work (a one-line ValueError naming what is wrong); the
        train FaceSet's own rows are checked by FaceSet."""
        return None

    def is_fitted_on(self, train: FaceSet) -> bool:
        return self.fitted_on is not None and self.fitted_on == fingerprint(train)

    @abstractmethod
    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        """Learn from labelled pairs of rows of ``train``."""

    def score(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """(N,) scores of aligned rows of two (N, D) arrays."""
        left, right = check_pairs(left, right)
        return self.score_lists(left, right[:, None, :])[:, 0]

    def score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """(Q, K) scores of each probe (Q, D) against its candidates (Q, K, D).

        ``ids`` (Q, K), the candidates' gallery ids, lets a variant work once per distinct gallery face (the
        same face is a candidate of many probes).
        """
        if self.fitted_on is None:
            raise RuntimeError(f"{type(self).__name__}: fit first")
        probes, candidates = check_lists(probes, candidates)
        if ids is not None and np.shape(ids) != candidates.shape[:2]:
            raise ValueError(f"ids {np.shape(ids)} must be (Q, K) = {candidates.shape[:2]}")
        return self._score_lists(probes, candidates, ids)

    @abstractmethod
    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        """The one scoring method each variant implements (inputs already checked)."""

    def score_matrix(self, probes: np.ndarray, gallery: np.ndarray, budget: int = 1 << 24) -> np.ndarray:
        """(Q, N) scores of every probe (Q, D) against every gallery row (N, D): :meth:`score_lists` with the
        whole gallery as each probe's candidates, over blocks of gallery rows (about ``budget`` candidate
        values at a time). Embedding-level disambiguators only."""
        if self.input != "embedding":
            raise TypeError(f"{type(self).__name__} scores images: it has no score over the matcher's embeddings")
        probes, gallery = np.asarray(probes, np.float32), np.asarray(gallery, np.float32)
        q = len(probes)
        step = max(1, budget // max(q * gallery.shape[1], 1))
        out = np.empty((q, len(gallery)))
        for s in range(0, len(gallery), step):
            rows = gallery[s:s + step]
            ids = np.broadcast_to(np.arange(len(rows)), (q, len(rows)))
            out[:, s:s + step] = self.score_lists(probes, np.broadcast_to(rows, (q, *rows.shape)), ids)
        return out

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Image-level disambiguators: their own (N, D') embeddings of aligned uint8 chips."""
        raise TypeError(f"{type(self).__name__} scores the matcher's embeddings, not images")

    # persistence: parameters as JSON, learned state as arrays, in one .npz file
    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore learned arrays."""

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """(JSON-able description, learned arrays): what a model file stores."""
        if self.fitted_on is None:
            raise RuntimeError(f"{type(self).__name__}: fit before saving")
        meta = {"class": type(self).__name__, "params": self.get_params(), "fitted_on": self.fitted_on,
                "stats": self.stats}
        return json.loads(json.dumps(meta, default=float)), self._state()

    @classmethod
    def from_state(cls, meta: dict, state: dict[str, np.ndarray]) -> Disambiguator:
        klass = REGISTRY.get(meta.get("class", ""))
        if klass is None or not issubclass(klass, cls):
            raise ValueError(f"unknown disambiguator {meta.get('class')!r}; known: {sorted(REGISTRY)}")
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["params"].items()}
        obj = klass(**params)
        obj._set_state(state)
        obj.fitted_on, obj.stats = meta["fitted_on"], meta["stats"]
        return obj

    def save(self, path: str | Path) -> None:
        """One .npz file (no pickle): the description as JSON plus the learned arrays."""
        from lookalike.io import atomic_write

        meta, state = self.to_state()
        with atomic_write(path, "wb") as f:
            np.savez(f, __meta__=np.asarray(json.dumps(meta)), **state)

    @classmethod
    def load(cls, path: str | Path) -> Disambiguator:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            state = {k: z[k] for k in z.files if k != "__meta__"}
        return cls.from_state(meta, state)


class EmbeddingDisambiguator(Disambiguator):
    """A disambiguator that maps the matcher's embeddings to a new space and scores by cosine there.

    With a cohort (``cohort_`` set by the variant's ``fit``, e.g. the projected train faces), each face's
    mean similarity to its ``cohort_n`` nearest cohort faces, times ``cohort_beta / 2``, is subtracted
    from the pair score: a gallery face that resembles many people is a weaker match (adaptive score
    normalisation against hubness).
    """

    cohort_: np.ndarray | None = None
    cohort_n: int = 0
    cohort_beta: float = 0.0

    @abstractmethod
    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) embeddings to (N, D') L2-normalised vectors."""

    @property
    def input_dim(self) -> int | None:
        """The dimension D of the embeddings it scores (None: not known before it is fitted)."""
        return None

    def _check_fit(self, train: FaceSet) -> None:
        check_vectors(train.vectors, "train vectors")

    def check_vectors(self, vectors: np.ndarray, what: str) -> np.ndarray:
        """(N, D) embeddings it can score: finite unit rows of :attr:`input_dim`
        (:func:`lookalike.checks.check_vectors`, the gallery's and the index's check), as float32."""
        return check_vectors(vectors, what, self.input_dim)

    def score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
        """:meth:`Disambiguator.score_lists` of the matcher's embeddings: finite, of unit length and of the fitted
        dimension (a NaN had given NaN scores, a long vector a score of another scale, another dimension a NumPy
        broadcasting error)."""
        probes, candidates = check_lists(probes, candidates)
        if self.fitted_on is not None:
            self.check_vectors(probes, "probe vectors")
            self.check_vectors(candidates.reshape(-1, candidates.shape[2]), "candidate vectors")
        return super().score_lists(probes, candidates, ids)

    def cohort_term(self, z: np.ndarray, block: int = 4096) -> np.ndarray:
        """(N,) ``cohort_beta / 2`` times the mean similarity of each projected face to its nearest cohort."""
        if self.cohort_ is None or self.cohort_n <= 0 or self.cohort_beta == 0:
            return np.zeros(len(z))
        return self.cohort_beta / 2 * nearest_mean(z, self.cohort_, self.cohort_n, block)

    # Gallery faces whose projection and cohort term are kept between calls (0: none). Identify, serving one probe
    # at a time, turns it on; evaluation leaves it off, so a result never depends on earlier calls (a face prepared
    # in another batch can differ in the last bits).
    memo_size: int = 0

    def prepare(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(projected faces (N, D'), cohort terms (N,)): what scoring needs of each face."""
        z = self.transform(vectors)
        return z, self.cohort_term(z)

    def _prepare_gallery(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`prepare` for candidate faces, remembered by each face's vector: a gallery face that comes back as a
        candidate (identify serving one probe at a time) is projected and cohort-scored once. Safe for threads
        sharing the model (the service's engines)."""
        if self.memo_size <= 0 or len(rows) > self.memo_size:
            return self.prepare(rows)
        keys = face_keys(rows)
        memo = self._gallery_memo()
        z, c, missing = memo.get(keys)
        if missing:
            zm, cm = self.prepare(rows[missing])
            memo.put([keys[i] for i in missing], zm, cm)
            if z is None:  # nothing known yet: these are all the rows
                return zm, cm
            z[missing], c[missing] = zm, cm
        return z, c

    def _gallery_memo(self) -> _Memo:
        with _MEMO_LOCK:
            memo = self.__dict__.get("_memo")
            if memo is None or memo.capacity != self.memo_size:
                memo = self.__dict__["_memo"] = _Memo(self.memo_size)
            return memo

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        rows, inverse = distinct_rows(candidates, ids)
        (p, cp), (c, cc) = self.prepare(probes), self._prepare_gallery(rows)
        s = np.einsum("qd,qkd->qk", p, c[inverse])
        return s - cp[:, None] - cc[inverse]

    def score_matrix(self, probes: np.ndarray, gallery: np.ndarray, block: int = 4096) -> np.ndarray:
        """:meth:`Disambiguator.score_matrix` computed directly: probes prepared once, the gallery in blocks of
        ``block`` rows, projected cosine minus both cohort terms (the formula of :meth:`_score_lists`)."""
        if type(self)._score_lists is not EmbeddingDisambiguator._score_lists:  # a variant scoring otherwise
            return super().score_matrix(probes, gallery)
        if self.fitted_on is None:
            raise RuntimeError(f"{type(self).__name__}: fit first")
        p, cp = self.prepare(self.check_vectors(probes, "probe vectors"))
        gallery = self.check_vectors(gallery, "gallery vectors")
        out = np.empty((len(p), len(gallery)))
        for s in range(0, len(gallery), block):
            c, cc = self.prepare(gallery[s:s + block])
            out[:, s:s + block] = p @ c.T - cp[:, None] - cc[None, :]
        return out

    def __getstate__(self) -> dict:  # copies and pickles never carry the memo
        return {k: v for k, v in self.__dict__.items() if k != "_memo"}


_MEMO_LOCK = threading.Lock()


class _Memo:
    """Prepared gallery faces: row ``slots[key]`` of ``z`` (projections) and ``c`` (cohort terms), at most
    ``capacity`` (full: starts afresh)."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.n = capacity, 0
        self.slots: dict[int, int] = {}
        self.z: np.ndarray | None = None
        self.c = np.empty(0)
        self.lock = threading.Lock()

    def get(self, keys: list[int]) -> tuple[np.ndarray | None, np.ndarray | None, list[int]]:
        """(projections, cohort terms) of these faces, the rows of unknown ones to be filled, and their positions
        (None, None, all positions when the memo is empty)."""
        with self.lock:
            slots = np.fromiter(map(self.slots.get, keys, itertools.repeat(-1)), np.int64, len(keys))
            if self.z is None:
                return None, None, list(range(len(keys)))
            z, c = self.z[slots], self.c[slots]  # unknown faces (slot -1) get a row to overwrite
        return z, c, np.flatnonzero(slots < 0).tolist()

    def put(self, keys: list[int], z: np.ndarray, c: np.ndarray) -> None:
        with self.lock:
            if self.n + len(keys) > self.capacity:  # full: start afresh
                self.slots, self.n = {}, 0
            n = self.n
            if self.z is None or n + len(keys) > len(self.z):  # grow geometrically, up to the capacity
                size = min(self.capacity, max(n + len(keys), 2 * len(self.c), 1024))
                old = np.empty((0, z.shape[1]), z.dtype) if self.z is None else self.z[:n]
                self.z = np.concatenate([old, np.empty((size - n, z.shape[1]), z.dtype)])
                self.c = np.concatenate([self.c[:n], np.empty(size - n)])
            self.z[n:n + len(keys)], self.c[n:n + len(keys)] = z, c
            self.slots.update(zip(keys, range(n, n + len(keys)), strict=True))
            self.n = n + len(keys)


def face_keys(vectors: np.ndarray) -> list[int]:
    """A key per (N, D) float32 vector for the prepared-face memo: Python's 64-bit hash of its bytes (salted per
    process, as the memo is). Two distinct faces share a key with odds of about 1e-13 per lookup among two million
    remembered faces; computing it is a few microseconds for a candidate list (a cryptographic digest per row cost
    several times more of each probe's re-ranking)."""
    rows = np.ascontiguousarray(vectors, np.float32)
    return list(map(hash, rows.view(np.dtype((np.void, rows.shape[1] * 4))).ravel().tolist()))


def nearest_mean(z: np.ndarray, cohort: np.ndarray, n: int, block: int = 4096) -> np.ndarray:
    """(N,) each row of ``z``'s mean similarity to its ``n`` nearest rows of ``cohort`` (all of them when fewer)."""
    n = min(n, len(cohort))
    out = np.empty(len(z))
    for s in range(0, len(z), block):
        sim = z[s:s + block] @ cohort.T
        out[s:s + block] = np.partition(sim, sim.shape[1] - n, axis=1)[:, -n:].mean(1)
    return out


def distinct_rows(candidates: np.ndarray, ids: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(distinct candidate vectors (U, D), (Q, K) index of each candidate among them), by gallery id when
    ``ids`` are given (else every candidate is its own row)."""
    q, k, d = candidates.shape
    if ids is None or q == 1:  # one list never holds a gallery face twice
        return candidates.reshape(q * k, d), np.arange(q * k).reshape(q, k)
    _, first, inverse = np.unique(np.asarray(ids).ravel(), return_index=True, return_inverse=True)
    return candidates[first // k, first % k], inverse.reshape(q, k)  # no copy of a broadcast candidate array


def l2n(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (the project's one normaliser)."""
    return l2_normalize(x)
