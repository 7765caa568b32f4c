"""Batch re-ranking: the faces of many photos re-ranked together.

When the probes are many photos of a few unknown people (the frames of one video, the photos of one case), a
probe's neighbours among the *other probes* tell who it is as much as its own candidate list does. The joint
set is every probe plus the union of their candidates; k-reciprocal encodings (Zhong et al., CVPR 2017) are
computed within it, in the model's disambiguator space, and each probe's list is re-ordered by the final
distance ``(1 - lam) * Jaccard + lam * distance``. The per-photo re-ranker cannot do this: one photo has no
other probes. ``k1``, ``k2`` and ``lam`` are tuned on the validation split (all its probes as one batch);
:class:`lookalike.model.LookalikeModel` keeps the setting only where it beats the per-photo lists there.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

from lookalike.disambiguators.base import Disambiguator
from lookalike.faces import FaceSet
from lookalike.metrics import RankedLists
from lookalike.rerank.base import Reranker, sort_by_score
from lookalike.rerank.transductive import jaccard, joint_distances, kreciprocal_encoding
from lookalike.rerank.tuning import LabelledLists, grid_search

GRID = {"k1": (10, 20, 30), "k2": (1, 3, 6), "lam": (0.1, 0.3, 0.5, 0.7, 0.9)}
BATCH_SIZES = (10, 50, 200, 1000)  # the smallest batch that still gains is chosen among these on validation
MAX_JOINT = 20_000  # probes + distinct candidates re-ranked at once (a dense float32 matrix: 1.6 GB at 20,000)


@dataclass(frozen=True)
class BatchSetting:
    """The k-reciprocal parameters a model re-ranks a batch with."""

    k1: int
    k2: int
    lam: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BatchSetting:
        return cls(int(d["k1"]), int(d["k2"]), float(d["lam"]))


def check_joint_size(n_probes: int, n_candidates: int, max_joint: int = MAX_JOINT) -> None:
    """A clear ValueError when a batch's joint set is too large to re-rank at once."""
    if n_probes + n_candidates > max_joint:
        raise ValueError(f"a batch of {n_probes} faces with {n_candidates} distinct candidates is more than "
                         f"{max_joint:,} faces to re-rank together: split the photos into smaller batches")


class JointDistances:
    """The joint set of a batch (probes, then the distinct candidates) in a projection, with each probe's
    candidates located in it; :meth:`final` gives the (Q, K) final distances for one setting."""

    def __init__(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray,
                 space: Disambiguator, max_joint: int = MAX_JOINT) -> None:
        q, k = lists.indices.shape
        ids, first, inverse = np.unique(lists.indices, return_index=True, return_inverse=True)
        check_joint_size(q, len(ids), max_joint)
        union = candidates.reshape(q * k, -1)[first]
        self.q, self.where = q, q + inverse.reshape(q, k)
        self.d = joint_distances(np.concatenate([space.transform(probes), space.transform(union)]))
        self.original = np.take_along_axis(self.d[:q], self.where, 1)  # (Q, K) each probe to its candidates
        self._jaccard: tuple[tuple[int, int], np.ndarray] | None = None  # the last (k1, k2)'s, kept for its lams

    def final(self, setting: BatchSetting) -> np.ndarray:
        key = (setting.k1, setting.k2)
        if self._jaccard is None or self._jaccard[0] != key:
            v = kreciprocal_encoding(self.d, setting.k1, setting.k2)
            jac = jaccard(v, np.arange(self.q), np.arange(self.q, len(self.d)))
            self._jaccard = key, np.take_along_axis(jac, self.where - self.q, 1)
        return (1 - setting.lam) * self._jaccard[1] + setting.lam * self.original


class BatchReranker(Reranker):
    """k-reciprocal re-ranking of a whole batch of probes in ``space`` (a fitted embedding-level disambiguator),
    its ``k1``, ``k2``, ``lam`` chosen from ``grid`` by validation rank-1 (ties: MRR) with every val probe in one
    batch. Learned state: ``setting_``; ``min_batch_``, the fewest probes it re-ranks together (see
    :meth:`choose_min_batch`). ``rerank`` needs every probe of the batch in one call."""

    name = "lookalike-batch"

    def __init__(self, space: Disambiguator, grid: dict | None = None, max_joint: int = MAX_JOINT) -> None:
        super().__init__()
        if space.input != "embedding":
            raise ValueError(f"{type(space).__name__} scores images: batch re-ranking needs a projection of the "
                             "matcher's embeddings")
        self.space, self.grid, self.max_joint = space, dict(grid or GRID), max_joint
        self.setting_: BatchSetting | None = None
        self.min_batch_ = 1

    def fit(self, train: FaceSet, val: LabelledLists) -> BatchReranker:
        joint = JointDistances(val.probes.vectors, val.lists, val.candidates, self.space, self.max_joint)
        settings = [{"k1": k1, "k2": k2, "lam": lam}
                    for k1, k2, lam in itertools.product(self.grid["k1"], self.grid["k2"], self.grid["lam"])]
        best, (r1, mrr), table = grid_search(
            settings, lambda **s: val.quality(sort_by_score(val.lists, -joint.final(BatchSetting(**s)))))
        self.setting_ = BatchSetting(**best)
        self.stats.update({"val_rank1": r1, "val_mrr": mrr, "grid_size": len(table), **best})
        return self

    def choose_min_batch(self, val: LabelledLists, per_photo_rank1: float, sizes: tuple[int, ...] = BATCH_SIZES,
                         seed: int = 0) -> int:
        """Set ``min_batch_``: the smallest of ``sizes`` whose seeded random batches of that many val probes, each
        re-ranked on its own, reach a val rank-1 above ``per_photo_rank1``; all val probes when none does (a batch
        gains only when people recur in it, which small batches of unrelated photos rarely have)."""
        order = np.random.default_rng(seed).permutation(len(val.probes))
        rank1 = {}
        self.min_batch_ = len(val.probes)
        for b in (b for b in sizes if b < len(val.probes)):
            first = np.empty((len(order), 1), np.int64)
            for rows in np.array_split(order, -(-len(order) // b)):
                lists = RankedLists(val.lists.indices[rows], val.lists.scores[rows])
                first[rows] = self.rerank(val.probes.vectors[rows], lists, val.candidates[rows]).indices[:, :1]
            rank1[str(b)] = val.quality(RankedLists(first, np.zeros(first.shape, np.float32)))[0]
            if rank1[str(b)] > per_photo_rank1:
                self.min_batch_ = b
                break
        self.stats.pop("lists_changed", None)  # the trial batches' count, not the model's
        self.stats.update({"min_batch": self.min_batch_, "val_rank1_by_batch_size": rank1})
        return self.min_batch_

    def _rerank(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray,
                features: tuple[np.ndarray, np.ndarray] | None) -> RankedLists:
        if self.setting_ is None:
            raise RuntimeError(f"{self.name}: fit first")
        joint = JointDistances(probes, lists, candidates, self.space, self.max_joint)
        return sort_by_score(lists, -joint.final(self.setting_))
