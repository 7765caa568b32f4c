"""Lookalike re-ranking: a disambiguator re-scores the selected top of each list, fused with the base score.

Everything that can be tuned (which disambiguator, the selection scheme and its parameters, the normaliser,
the fusion weight) is chosen together by one grid search on validation lists, never on test probes. The
disambiguators are fitted on pairs mined from the train faces, once: several re-rankers may share one
:class:`DisambiguatorPool`, which fits each prototype once per training set and mines each set once.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence

import numpy as np

from lookalike.disambiguators.base import Disambiguator, fingerprint
from lookalike.faces import FaceSet
from lookalike.metrics import RankedLists
from lookalike.mining import Miner, Pairs, default_miner
from lookalike.rerank.base import Reranker
from lookalike.rerank.fusion import WeightedFusion
from lookalike.rerank.selection import Selection, TopK, reorder
from lookalike.rerank.tuning import LabelledLists, grid_search

# Fusion weights tried on validation: the whole range from "base score only" (0) to "disambiguator only" (1).
DEFAULT_WEIGHTS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)


class DisambiguatorPool:
    """Fits each prototype disambiguator once per distinct training FaceSet and hands out the fitted copies.

    Pass one pool to several re-rankers to share training. Pairs are mined once per training set with
    ``miner`` (default: :func:`~lookalike.mining.default_miner`).
    """

    def __init__(self, miner: Miner | None = None, seed: int = 0) -> None:
        self.miner, self.seed = miner, seed
        self.fitted: dict[tuple[int, str], Disambiguator] = {}
        self.pairs: dict[str, Pairs] = {}
        self.mining_stats: dict[str, dict] = {}

    def get(self, prototype: Disambiguator, faces: FaceSet) -> Disambiguator:
        key = fingerprint(faces)
        if prototype.is_fitted_on(faces):
            return prototype
        if (id(prototype), key) not in self.fitted:
            if key not in self.pairs:
                miner = self.miner or default_miner(seed=self.seed)
                self.pairs[key] = miner.mine(faces)
                self.mining_stats[key] = miner.stats
            self.fitted[id(prototype), key] = copy.deepcopy(prototype).fit(faces, self.pairs[key])
        return self.fitted[id(prototype), key]


def disambiguator_features(disambiguator: Disambiguator, probes: FaceSet, gallery: FaceSet,
                           indices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """An image-level disambiguator's own embeddings of the probes' and of each list's candidates' images
    ((Q, D'), (Q, K, D')); None for an embedding-level one, which scores the matcher's vectors."""
    if disambiguator.input != "image":
        return None
    return disambiguator.embed_faces(probes), disambiguator.embed_faces(gallery)[indices]


def rerank_faces(method: Reranker, probes: FaceSet, gallery: FaceSet, lists: RankedLists) -> RankedLists:
    """Training's and evaluation's call into a re-ranker (or model) for labelled faces: the probes' and
    candidates' vectors, and an image-level disambiguator's own embeddings of their images."""
    d = getattr(method, "disambiguator_", None)
    features = None if d is None else disambiguator_features(d, probes, gallery, lists.indices)
    return method.rerank(probes.vectors, lists, gallery.vectors[lists.indices], features)


class LookalikeReranker(Reranker):
    """Disambiguator + selection scheme + normaliser + fusion weight, the combination tuned on val.

    ``disambiguators`` (unfitted prototypes, or one), ``selections`` (schemes with their parameters),
    ``normalisers`` and ``weights`` span the grid; weight 0 leaves the order as it was (scores become the
    normalised base scores), weight 1 orders the selection by the disambiguator alone.
    """

    def __init__(self, disambiguators: Disambiguator | Sequence[Disambiguator],
                 selections: Sequence[Selection] = (TopK(10),), normalisers: Sequence[str] = ("zscore",),
                 weights: Sequence[float] = DEFAULT_WEIGHTS, pool: DisambiguatorPool | None = None,
                 name: str = "lookalike", seed: int = 0) -> None:
        super().__init__()
        self.disambiguators = [disambiguators] if isinstance(disambiguators, Disambiguator) else list(disambiguators)
        self.selections, self.normalisers, self.weights = list(selections), list(normalisers), list(weights)
        self.pool, self.name, self.seed = pool or DisambiguatorPool(seed=seed), name, seed
        self.selection_: Selection | None = None
        self.fusion_: WeightedFusion | None = None
        self.disambiguator_: Disambiguator | None = None

    def fit(self, train: FaceSet, val: LabelledLists) -> LookalikeReranker:
        """Fit every candidate disambiguator on ``train`` and choose the combination by val rank-1 (then MRR)."""
        fitted = [self.pool.get(d, train) for d in self.disambiguators]
        scores = [d.score_lists(*(disambiguator_features(d, val.probes, val.gallery, val.lists.indices)
                                  or (val.probes.vectors, val.candidates)), ids=val.lists.indices) for d in fitted]
        labels, base = val.labels(), val.lists.scores
        masks = [s.select(base, val.candidates) for s in self.selections]
        fusions = {(d, s, n): WeightedFusion(n).fit(base, scores[d], labels, masks[s])
                   for d, s, n in itertools.product(range(len(fitted)), range(len(masks)), self.normalisers)}

        def quality(d: int, s: int, n: str, w: float) -> tuple[float, float]:
            return val.quality(reorder(val.lists, masks[s], fusions[d, s, n].with_weight(w).fuse(base, scores[d])))

        settings = [{"d": d, "s": s, "n": n, "w": w} for d, s, n, w in
                    itertools.product(range(len(fitted)), range(len(masks)), self.normalisers, self.weights)]
        best, (r1, mrr), table = grid_search(settings, quality)
        self.disambiguator_ = fitted[best["d"]]
        self.selection_ = self.selections[best["s"]]
        self.fusion_ = fusions[best["d"], best["s"], best["n"]].with_weight(best["w"])
        self.stats.update({"val_base_rank1": val.quality()[0], "val_rank1": r1, "val_mrr": mrr,
                           "selection": repr(self.selection_),
                           "normaliser": self.fusion_.normaliser, "weight": self.fusion_.weight,
                           "disambiguator": repr_params(self.disambiguator_),
                           "disambiguator_stats": self.disambiguator_.stats, "grid_size": len(table)})
        return self

    def _rerank(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray,
                features: tuple[np.ndarray, np.ndarray] | None) -> RankedLists:
        if self.selection_ is None or self.fusion_ is None or self.disambiguator_ is None:
            raise RuntimeError(f"{self.name}: fit first")
        mask = self.selection_.select(lists.scores, candidates)
        if self.disambiguator_.input == "image":
            if features is None:
                raise ValueError(f"{self.name}: an image-level disambiguator needs the faces' features")
            probes, candidates = features
        d = self.disambiguator_.score_lists(probes, candidates, ids=lists.indices)
        self.stats["selected_mean"] = float(mask.sum(1).mean()) if len(mask) else 0.0
        return reorder(lists, mask, self.fusion_.fuse(lists.scores, d))


def repr_params(d: Disambiguator) -> str:
    return f"{type(d).__name__}({', '.join(f'{k}={v!r}' for k, v in d.get_params().items())})"
