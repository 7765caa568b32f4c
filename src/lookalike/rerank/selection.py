"""Selection schemes: which candidates of each list the disambiguator may re-order.

A scheme returns a (Q, K) boolean mask; :func:`reorder` re-sorts only the selected candidates among the
slots they occupy, so every candidate outside the selection keeps its place.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from lookalike.experiment import SearchSplit
from lookalike.metrics import RankedLists


class Selection(ABC):
    """Chooses candidates to re-rank; ``select`` validates the mask that ``_select`` returns."""

    def select(self, split: SearchSplit, lists: RankedLists) -> np.ndarray:
        mask = np.asarray(self._select(split, lists), bool)
        if mask.shape != lists.indices.shape:
            raise AssertionError(f"{self!r}: mask {mask.shape} != lists {lists.indices.shape}")
        return mask

    @abstractmethod
    def _select(self, split: SearchSplit, lists: RankedLists) -> np.ndarray:
        """The one method each variant implements."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class Everything(Selection):
    """Every candidate of the list."""

    def _select(self, split: SearchSplit, lists: RankedLists) -> np.ndarray:
        return np.ones(lists.indices.shape, bool)


class TopK(Selection):
    """The first ``k`` candidates."""

    def __init__(self, k: int = 10) -> None:
        self.k = k

    def _select(self, split: SearchSplit, lists: RankedLists) -> np.ndarray:
        return np.broadcast_to(np.arange(lists.depth) < self.k, lists.indices.shape).copy()


class ScoreMargin(Selection):
    """Every candidate whose base score is within ``margin`` of rank-1's (at most ``max_k``)."""

    def __init__(self, margin: float = 0.05, max_k: int = 50) -> None:
        self.margin, self.max_k = margin, max_k

    def _select(self, split: SearchSplit, lists: RankedLists) -> np.ndarray:
        s = lists.scores
        return (s >= s[:, :1] - self.margin) & (np.arange(lists.depth) < self.max_k)


class LookalikeGroup(Selection):
    """Rank-1 and the candidates among the first ``max_k`` whose gallery-to-gallery similarity with the
    rank-1 candidate is at least ``threshold``: the lookalike group that rank-1 may have been confused with."""

    def __init__(self, threshold: float = 0.5, max_k: int = 20) -> None:
        self.threshold, self.max_k = threshold, max_k

    def _select(self, split: SearchSplit, lists: RankedLists) -> np.ndarray:
        g = split.gallery.vectors
        k = min(self.max_k, lists.depth)
        top = g[lists.indices[:, :k]]  # (Q, k, D)
        sim = np.einsum("qd,qkd->qk", top[:, 0], top)
        mask = np.zeros(lists.indices.shape, bool)
        mask[:, :k] = sim >= self.threshold
        mask[:, 0] = True
        return mask


class AmbiguityGate(Selection):
    """``inner``'s selection, but only for lists whose rank-1/rank-2 score gap is below ``gap``."""

    def __init__(self, inner: Selection, gap: float = 0.05) -> None:
        self.inner, self.gap = inner, gap

    def _select(self, split: SearchSplit, lists: RankedLists) -> np.ndarray:
        s = lists.scores
        ambiguous = (s[:, 0] - s[:, 1] < self.gap) if lists.depth > 1 else np.zeros(len(s), bool)
        return self.inner.select(split, lists) & ambiguous[:, None]


def reorder(lists: RankedLists, mask: np.ndarray, scores: np.ndarray) -> RankedLists:
    """Sort the selected candidates of each row by ``scores`` (descending, stable) within their own slots.

    Unselected candidates keep their slots. Each slot keeps its base score, so the returned scores stay
    non-increasing and on the base matcher's scale.
    """
    idx = lists.indices.copy()
    key = np.where(mask, -np.asarray(scores, np.float64), np.inf)
    order = np.argsort(key, axis=1, kind="stable")  # selected candidates first, best first
    slots = np.argsort(~mask, axis=1, kind="stable")  # selected slots first, in list order
    rows, cols = np.nonzero(np.arange(lists.depth)[None, :] < mask.sum(1, keepdims=True))
    idx[rows, slots[rows, cols]] = lists.indices[rows, order[rows, cols]]
    return RankedLists(idx, lists.scores.copy())
