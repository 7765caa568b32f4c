"""The re-ranking interface: fit on train faces (tuning on validation lists), then re-order candidate lists.

A re-ranker takes arrays: the probes' vectors (Q, D), their base candidate lists (gallery ids and scores,
best first) and the candidates' vectors (Q, K, D). It returns new lists holding the same candidates in a new
order, each with its new (final) score, non-increasing down the list, so the first candidate's score can be
thresholded for open-set decisions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from lookalike.faces import FaceSet
from lookalike.metrics import RankedLists
from lookalike.rerank.tuning import LabelledLists


def check_lists(probes: np.ndarray, lists: RankedLists, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 (Q, D) probes and (Q, K, D) candidates matching the (Q, K) lists."""
    probes, candidates = np.asarray(probes, np.float32), np.asarray(candidates, np.float32)
    q, k = lists.indices.shape
    if probes.ndim != 2 or probes.shape[0] != q or candidates.shape != (q, k, probes.shape[1]):
        raise ValueError(f"expected probes (Q={q}, D) and candidates ({q}, {k}, D); got {probes.shape} and "
                         f"{candidates.shape}")
    if not (np.isfinite(probes).all() and np.isfinite(candidates).all()):
        raise ValueError("probe and candidate vectors must be finite")
    scores = np.asarray(lists.scores, np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("the lists' base scores must be finite")
    if (np.diff(scores, axis=1) > 1e-6).any():
        raise ValueError("each list must be best first (base scores non-increasing)")
    if k > 1 and (np.diff(np.sort(lists.indices, axis=1), axis=1) == 0).any():
        raise ValueError("a list names the same gallery face twice")
    return probes, candidates


class Reranker(ABC):
    """A re-ranking method. ``fit`` may only see train faces and validation lists — never test probes.

    ``rerank`` validates its input, calls the one ``_rerank`` each variant implements, checks that the result
    permutes each list, and records ``stats``.
    """

    name: str

    def __init__(self) -> None:
        self.stats: dict = {}

    def fit(self, train: FaceSet, val: LabelledLists) -> Reranker:
        """Learn and tune; the default learns nothing."""
        return self

    @abstractmethod
    def _rerank(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray,
                features: tuple[np.ndarray, np.ndarray] | None) -> RankedLists:
        """The one method each variant implements."""

    def rerank(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray,
               features: tuple[np.ndarray, np.ndarray] | None = None) -> RankedLists:
        """New lists (same candidates, new order and final scores).

        ``features``: (probe features (Q, D'), candidate features (Q, K, D')) for an image-level disambiguator.
        """
        probes, candidates = check_lists(probes, lists, candidates)
        out = self._rerank(probes, lists, candidates, features)
        if out.indices.shape != lists.indices.shape or \
                not np.array_equal(np.sort(out.indices, axis=1), np.sort(lists.indices, axis=1)):
            raise AssertionError(f"{self.name}: re-ranking must permute each candidate list, not change it")
        self.stats["lists_changed"] = int((out.indices != lists.indices).any(axis=1).sum())
        return out


def sort_by_score(lists: RankedLists, scores: np.ndarray) -> RankedLists:
    """The whole list re-sorted by new scores (descending, stable), each candidate with its new score."""
    order = np.argsort(-np.asarray(scores, np.float64), axis=1, kind="stable")
    return RankedLists(np.take_along_axis(lists.indices, order, 1),
                       np.take_along_axis(np.asarray(scores, np.float32), order, 1))
