"""The re-ranking interface: fit on the train split (tuning on validation), then permute the top of lists."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from lookalike.experiment import FaceSet, SearchSplit
from lookalike.metrics import RankedLists


class Reranker(ABC):
    """A re-ranking method. ``fit`` may only see train faces and the validation split — never test probes.

    ``rerank`` returns new lists that are a row-wise permutation of ``split.lists`` (same candidates, new
    order and scores); the base class checks that, and records ``stats``.
    """

    name: str

    def __init__(self) -> None:
        self.stats: dict = {}

    def fit(self, train: FaceSet, val: SearchSplit) -> Reranker:
        """Learn and tune; the default learns nothing."""
        return self

    @abstractmethod
    def _rerank(self, split: SearchSplit) -> RankedLists:
        """The one method each variant implements."""

    def rerank(self, split: SearchSplit) -> RankedLists:
        out = self._rerank(split)
        before = np.sort(split.lists.indices, axis=1)
        if out.indices.shape != split.lists.indices.shape or not np.array_equal(np.sort(out.indices, axis=1), before):
            raise AssertionError(f"{self.name}: re-ranking must permute each candidate list, not change it")
        moved = (out.indices != split.lists.indices).any(axis=1)
        self.stats[f"{split.name}_lists_changed"] = int(moved.sum())
        return out
