"""The disambiguator interface: a pair scorer trained to tell lookalike faces apart.

A disambiguator is fitted on mined train pairs (genuine vs lookalike — never on random impostors alone) and
scores aligned rows of two FaceSets. FaceSets carry image paths, so an image-level model (a fine-tuned face
network) fits behind the same interface as the embedding-level ones here.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from lookalike.experiment import FaceSet, SearchSplit
from lookalike.metrics import RankedLists
from lookalike.mining import GENUINE, LOOKALIKE, Pairs


def fingerprint(faces: FaceSet) -> str:
    """A short content hash of a FaceSet (paths, identities, vectors) to recognise a repeated fit."""
    h = hashlib.sha1()
    for part in (faces.paths, faces.identities):
        h.update("\n".join(map(str, part)).encode())
    h.update(np.ascontiguousarray(faces.vectors, np.float32).tobytes())
    h.update(np.ascontiguousarray(faces.lowres, np.int32).tobytes())
    return h.hexdigest()[:16]


class Disambiguator(ABC):
    """Scores (left[i], right[i]) pairs; higher means more likely the same person."""

    def __init__(self) -> None:
        self.stats: dict = {}
        self.fitted_on: str | None = None

    def get_params(self) -> dict:
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def fit(self, train: FaceSet, pairs: Pairs) -> Disambiguator:
        n = len(train)
        if len(pairs) == 0 or pairs.left.max() >= n or pairs.right.max() >= n or min(pairs.left.min(),
                                                                                     pairs.right.min()) < 0:
            raise ValueError("pairs must index rows of the train FaceSet")
        if not ((pairs.labels == GENUINE).any() and (pairs.labels == LOOKALIKE).any()):
            raise ValueError("a disambiguator needs both genuine and lookalike pairs")
        self._fit(train, pairs)
        self.fitted_on = fingerprint(train)
        return self

    def is_fitted_on(self, train: FaceSet) -> bool:
        return self.fitted_on is not None and self.fitted_on == fingerprint(train)

    @abstractmethod
    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        """Learn from labelled pairs of rows of ``train``."""

    @abstractmethod
    def score(self, left: FaceSet, right: FaceSet) -> np.ndarray:
        """(N,) scores for aligned rows."""

    def score_lists(self, split: SearchSplit, lists: RankedLists | None = None) -> np.ndarray:
        """(Q, K) scores of every (probe, candidate) pair of the lists (default: the split's baseline)."""
        lists = split.lists if lists is None else lists
        q, k = lists.indices.shape
        left = split.probes.take(np.repeat(np.arange(q), k))
        right = split.gallery.take(lists.indices.ravel())
        return self.score(left, right).reshape(q, k)

    # persistence: parameters as JSON, learned state as arrays, in one .npz file
    @abstractmethod
    def _state(self) -> dict[str, np.ndarray]:
        """Learned arrays."""

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore learned arrays."""

    def save(self, path: str | Path) -> None:
        meta = {"class": f"{type(self).__module__}.{type(self).__qualname__}", "params": self.get_params(),
                "fitted_on": self.fitted_on, "stats": self.stats}
        np.savez(path, __meta__=np.asarray(json.dumps(meta, default=float)), **self._state())

    @classmethod
    def load(cls, path: str | Path) -> Disambiguator:
        import importlib

        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            state = {k: z[k] for k in z.files if k != "__meta__"}
        module, _, name = meta["class"].rpartition(".")
        klass = getattr(importlib.import_module(module), name)
        if not issubclass(klass, cls):
            raise TypeError(f"{path} holds a {name}, not a {cls.__name__}")
        obj = klass(**meta["params"])
        obj._set_state(state)
        obj.fitted_on, obj.stats = meta["fitted_on"], meta["stats"]
        return obj


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

    def cohort_term(self, z: np.ndarray, block: int = 4096) -> np.ndarray:
        """(N,) ``cohort_beta / 2`` times the mean similarity of each projected face to its nearest cohort."""
        if self.cohort_ is None or self.cohort_n <= 0 or self.cohort_beta == 0:
            return np.zeros(len(z))
        n = min(self.cohort_n, len(self.cohort_))
        out = np.empty(len(z))
        for s in range(0, len(z), block):
            sim = z[s:s + block] @ self.cohort_.T
            out[s:s + block] = np.partition(sim, sim.shape[1] - n, axis=1)[:, -n:].mean(1)
        return self.cohort_beta / 2 * out

    def score(self, left: FaceSet, right: FaceSet) -> np.ndarray:
        if len(left) != len(right):
            raise ValueError(f"left and right must be aligned, got {len(left)} and {len(right)} rows")
        a, b = self.transform(left.vectors), self.transform(right.vectors)
        return np.einsum("ij,ij->i", a, b) - self.cohort_term(a) - self.cohort_term(b)

    def score_lists(self, split: SearchSplit, lists: RankedLists | None = None) -> np.ndarray:
        lists = split.lists if lists is None else lists
        p, g = self.transform(split.probes.vectors), self.transform(split.gallery.vectors)
        s = np.einsum("qd,qkd->qk", p, g[lists.indices])
        return s - self.cohort_term(p)[:, None] - self.cohort_term(g)[lists.indices]


def l2n(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)
