"""Lookalike re-ranking: a disambiguator re-scores the selected top of each list, fused with the base score.

Everything that can be tuned (selection parameters, normaliser, fusion weight) is chosen by rank-1 on the
validation split, never on test probes. The disambiguator is fitted on pairs mined from the train faces,
once: several re-rankers may share one disambiguator object, and a fitted one is not refitted on the same
train set.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import numpy as np

from lookalike.disambiguators.base import Disambiguator, fingerprint
from lookalike.experiment import FaceSet, SearchSplit
from lookalike.metrics import RankedLists
from lookalike.mining import Miner, default_miner
from lookalike.rerank.base import Reranker
from lookalike.rerank.fusion import WeightedFusion
from lookalike.rerank.selection import Selection, TopK, reorder

DEFAULT_WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)


def mate_mask(split: SearchSplit, lists: RankedLists) -> np.ndarray:
    """(Q, K) True where the candidate is one of the probe's mates."""
    return split.gallery.identities[lists.indices] == split.probes.identities[:, None]


def list_quality(split: SearchSplit, lists: RankedLists) -> tuple[float, float]:
    """(rank-1, mean reciprocal rank within the lists) — the quick criterion for tuning."""
    hits = mate_mask(split, lists)
    first = np.where(hits.any(1), hits.argmax(1), np.inf)
    return float(np.mean(first == 0)), float(np.mean(1.0 / (first + 1)))


def concat(*sets: FaceSet) -> FaceSet:
    return FaceSet(*(np.concatenate([getattr(f, a) for f in sets]) for a in ("paths", "identities", "vectors",
                                                                             "lowres")))


class DisambiguatorPool:
    """Fits a prototype disambiguator once per distinct training FaceSet and hands out the fitted copies.

    Pass one pool to several re-rankers to share training; the prototype itself is used (and fitted) for
    the first training set, so an already-fitted disambiguator is reused as is. ``miner`` mines the pairs
    (default: :func:`~lookalike.mining.default_miner`).
    """

    def __init__(self, prototype: Disambiguator, miner: Miner | None = None, seed: int = 0) -> None:
        self.prototype, self.miner, self.seed = prototype, miner, seed
        self.fitted: dict[str, Disambiguator] = {}
        self.mining_stats: dict[str, dict] = {}

    def get(self, faces: FaceSet) -> Disambiguator:
        key = fingerprint(faces)
        if key not in self.fitted:
            if self.prototype.is_fitted_on(faces):
                self.fitted[key] = self.prototype
            else:
                d = self.prototype if self.prototype.fitted_on is None else copy.deepcopy(self.prototype)
                miner = self.miner or default_miner(seed=self.seed)
                d.fit(faces, miner.mine(faces))
                self.mining_stats[key] = miner.stats
                self.fitted[key] = d
        return self.fitted[key]


class LookalikeReranker(Reranker):
    """Disambiguator + selection scheme + normaliser + fusion weight, the combination tuned on val.

    ``selections`` (candidate schemes with their parameters), ``normalisers`` and ``weights`` span the grid;
    weight 0 leaves the list as it was, weight 1 orders the selection by the disambiguator alone.
    """

    def __init__(self, disambiguator: Disambiguator | DisambiguatorPool, selections: Sequence[Selection] = (TopK(10),),
                 normalisers: Sequence[str] = ("zscore",), weights: Sequence[float] = DEFAULT_WEIGHTS,
                 miner: Miner | None = None, refit_with_val: bool = False, name: str = "lookalike",
                 seed: int = 0) -> None:
        super().__init__()
        self.disambiguator, self.selections, self.normalisers = disambiguator, list(selections), list(normalisers)
        self.weights, self.miner, self.refit_with_val = list(weights), miner, refit_with_val
        self.name, self.seed = name, seed
        self.pool = disambiguator if isinstance(disambiguator, DisambiguatorPool) else \
            DisambiguatorPool(disambiguator, miner, seed)
        self.selection_: Selection | None = None
        self.fusion_: WeightedFusion | None = None
        self.disambiguator_: Disambiguator | None = None

    def fit(self, train: FaceSet, val: SearchSplit) -> LookalikeReranker:
        """Fit the disambiguator on ``train``, tune on ``val``; with ``refit_with_val`` the disambiguator
        used for re-ranking is then refitted on train + val faces (still no test people)."""
        disamb = self.pool.get(train)
        base, d = val.lists.scores, disamb.score_lists(val)
        labels = mate_mask(val, val.lists)
        grid, best = [], None
        for sel, norm in itertools.product(self.selections, self.normalisers):
            mask = sel.select(val, val.lists)
            fitted = WeightedFusion(norm).fit(base, d, labels, mask)
            nb, nd = fitted.normalised(base, d, mask)
            for w in self.weights:
                fusion = WeightedFusion(norm, w)
                fusion.norms_ = fitted.norms_
                r1, mrr = list_quality(val, reorder(val.lists, mask, (1 - w) * nb + w * nd))
                grid.append({"selection": repr(sel), "normaliser": norm, "weight": w, "val_rank1": r1,
                             "val_mrr": mrr})
                if best is None or (r1, mrr) > best[0]:
                    best = ((r1, mrr), sel, fusion)
        _, self.selection_, self.fusion_ = best
        self.disambiguator_ = self.pool.get(concat(train, val.probes, val.gallery)) if self.refit_with_val \
            else disamb
        self.stats.update({"val_base_rank1": list_quality(val, val.lists)[0], "val_rank1": best[0][0],
                           "selection": repr(self.selection_), "normaliser": self.fusion_.normaliser,
                           "weight": self.fusion_.weight, "disambiguator": self.disambiguator_.stats,
                           "grid_size": len(grid)})
        self.grid_ = grid
        return self

    def _rerank(self, split: SearchSplit) -> RankedLists:
        if self.selection_ is None or self.fusion_ is None or self.disambiguator_ is None:
            raise RuntimeError(f"{self.name}: fit first")
        mask = self.selection_.select(split, split.lists)
        d = self.disambiguator_.score_lists(split)
        self.stats[f"{split.name}_selected_mean"] = float(mask.sum(1).mean())
        return reorder(split.lists, mask, self.fusion_.fuse(split.lists.scores, d, mask))
