"""Selection schemes: which candidates of each list the disambiguator may re-order.

A scheme decides from a candidate list alone — its base scores (Q, K) and the candidates' gallery vectors
(Q, K, D) — never from probe identities, and returns a (Q, K) boolean mask; :func:`reorder` re-sorts only
the selected candidates among the slots they occupy, so every candidate outside the selection keeps its
place.

The parameter grids in :func:`lookalike.rerank.selection_grid` are generic: list positions (2 to 50) and
cosine margins/thresholds spread over the range where face-matcher impostor and genuine scores overlap; the
value used is always chosen on a validation split.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from lookalike.metrics import RankedLists

SELECTIONS: dict[str, type] = {}


class Selection(ABC):
    """Chooses candidates to re-rank; ``select`` validates its input and the mask ``_select`` returns."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        SELECTIONS[cls.__name__] = cls

    def select(self, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """(Q, K) mask from base scores (Q, K), best first, and candidate vectors (Q, K, D)."""
        scores = np.asarray(scores)
        if scores.ndim != 2 or np.shape(candidates)[:2] != scores.shape:
            raise ValueError(f"{self!r}: scores (Q, K) and candidates (Q, K, D) disagree: {scores.shape}, "
                             f"{np.shape(candidates)}")
        mask = np.asarray(self._select(scores, candidates), bool)
        if mask.shape != scores.shape:
            raise AssertionError(f"{self!r}: mask {mask.shape} != lists {scores.shape}")
        return mask

    @abstractmethod
    def _select(self, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """The one method each variant implements."""

    def reach(self, depth: int) -> int:
        """How far down a list of ``depth`` candidates this scheme can select: re-ranking a list cut to this
        length gives the same first ``reach`` candidates and scores (scores are fused candidate by candidate)."""
        return depth

    def to_dict(self) -> dict:
        """A JSON description that :func:`selection_from_dict` turns back into this scheme."""
        params = {k: v.to_dict() if isinstance(v, Selection) else v for k, v in vars(self).items()}
        return {"type": type(self).__name__, "params": params}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


def selection_from_dict(d: dict) -> Selection:
    klass = SELECTIONS.get(d.get("type", ""))
    if klass is None:
        raise ValueError(f"unknown selection scheme {d.get('type')!r}; known: {sorted(SELECTIONS)}")
    params = {k: selection_from_dict(v) if isinstance(v, dict) else v for k, v in d.get("params", {}).items()}
    return klass(**params)


class Everything(Selection):
    """Every candidate of the list."""

    def _select(self, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return np.ones(scores.shape, bool)


class TopK(Selection):
    """The first ``k`` candidates."""

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def _select(self, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        mask = np.zeros(scores.shape, bool)
        mask[:, :self.k] = True
        return mask

    def reach(self, depth: int) -> int:
        return min(depth, self.k)


class ScoreMargin(Selection):
    """Every candidate whose base score is within ``margin`` of rank-1's (at most ``max_k``)."""

    def __init__(self, margin: float = 0.05, max_k: int = 50) -> None:
        self.margin, self.max_k = margin, max_k

    def _select(self, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        return (scores >= scores[:, :1] - self.margin) & (np.arange(scores.shape[1]) < self.max_k)

    def reach(self, depth: int) -> int:
        return min(depth, self.max_k)


class LookalikeGroup(Selection):
    """Rank-1 and the candidates among the first ``max_k`` whose gallery-to-gallery similarity with the
    rank-1 candidate is at least ``threshold``: the lookalike group that rank-1 may have been confused with."""

    def __init__(self, threshold: float = 0.5, max_k: int = 20) -> None:
        self.threshold, self.max_k = threshold, max_k

    def _select(self, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        k = min(self.max_k, scores.shape[1])
        top = np.asarray(candidates[:, :k], np.float32)  # (Q, k, D)
        sim = np.einsum("qd,qkd->qk", top[:, 0], top)
        mask = np.zeros(scores.shape, bool)
        mask[:, :k] = sim >= self.threshold
        mask[:, 0] = True
        return mask

    def reach(self, depth: int) -> int:
        return min(depth, self.max_k)


class AmbiguityGate(Selection):
    """``inner``'s selection, but only for lists whose rank-1/rank-2 score gap is below ``gap``."""

    def __init__(self, inner: Selection, gap: float = 0.05) -> None:
        self.inner, self.gap = inner, gap

    def _select(self, scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        s = scores
        ambiguous = (s[:, 0] - s[:, 1] < self.gap) if s.shape[1] > 1 else np.zeros(len(s), bool)
        return self.inner.select(scores, candidates) & ambiguous[:, None]

    def reach(self, depth: int) -> int:
        return self.inner.reach(depth)


def reorder(lists: RankedLists, mask: np.ndarray, scores: np.ndarray) -> RankedLists:
    """Sort the selected candidates of each row by ``scores`` (descending, stable) within their own slots.

    Unselected candidates keep their slots. Every candidate carries its own new score, made non-increasing
    down the list by a running minimum (a candidate never shows a higher score than one ranked above it), so
    the first candidate's score is exactly its new score and can be thresholded.
    """
    scores = np.asarray(scores, np.float64)
    idx, new = lists.indices.copy(), scores.copy()
    used = np.flatnonzero(mask.any(axis=0))
    w = int(used[-1]) + 1 if len(used) else 0  # only the columns up to the last selected one can move
    m = mask[:, :w]
    rows = np.arange(len(m))[:, None]
    if m.all():  # every slot up to w selected (e.g. the top k): the selected slots are those w, in order
        perm = np.argsort(-scores[:, :w], axis=1, kind="stable")
    else:
        order = np.argsort(np.where(m, -scores[:, :w], np.inf), axis=1, kind="stable")  # selected first, best first
        slots = np.argsort(~m, axis=1, kind="stable")  # selected slots first, in list order
        # the j-th selected candidate goes to the j-th selected slot; past the selection, unselected candidates
        # and unselected slots are the same positions in the same order, so every candidate outside stays put
        perm = np.empty_like(order)
        perm[rows, slots] = order
    idx[:, :w], new[:, :w] = lists.indices[rows, perm], scores[rows, perm]
    return RankedLists(idx, np.minimum.accumulate(new, axis=1).astype(np.float32))
