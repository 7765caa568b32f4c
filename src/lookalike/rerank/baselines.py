"""Baselines the lookalike re-rankers must beat: k-reciprocal re-ranking, alpha-query expansion, the
disambiguator alone (no fusion) and re-ranking the whole list."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from lookalike.disambiguators.base import Disambiguator
from lookalike.faces import FaceSet
from lookalike.matchers.base import l2_normalize
from lookalike.metrics import RankedLists
from lookalike.rerank.base import Reranker, sort_by_score
from lookalike.rerank.lookalike import DEFAULT_WEIGHTS, DisambiguatorPool, LookalikeReranker
from lookalike.rerank.selection import Everything, TopK
from lookalike.rerank.tuning import LabelledLists, grid_search


def _local_similarities(lists: RankedLists, candidates: np.ndarray, rows: slice) -> np.ndarray:
    """(q, K+1, K+1) cosine similarities among each probe (index 0) and its K candidates."""
    g = np.asarray(candidates[rows], np.float32)  # (q, K, D)
    q, k = g.shape[:2]
    s = np.empty((q, k + 1, k + 1), np.float64)
    s[:, 0, 0] = 1.0
    s[:, 0, 1:] = s[:, 1:, 0] = lists.scores[rows]
    s[:, 1:, 1:] = np.einsum("qid,qjd->qij", g, g)
    return s


def kreciprocal_parts(lists: RankedLists, candidates: np.ndarray, k1: int, k2: int,
                      block: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Zhong et al. (CVPR 2017) on each probe's local set {probe} + top-K: (Jaccard, original) distances
    from the probe to its K candidates, each (Q, K)."""
    qn, k = lists.indices.shape
    jac, orig = np.empty((qn, k)), np.empty((qn, k))
    n = k + 1
    for s in range(0, qn, block):
        rows = slice(s, min(s + block, qn))
        d = np.maximum(2 - 2 * _local_similarities(lists, candidates, rows), 0)
        d = d / np.maximum(d.max(2, keepdims=True), 1e-12)  # each row scaled by its max, as in the paper's code
        rank = np.argsort(d, axis=2, kind="stable")
        pos = np.argsort(rank, axis=2, kind="stable")  # pos[q, i, j]: position of j in i's ranking
        top = pos <= min(k1, n - 1)
        r = top & top.transpose(0, 2, 1)  # k-reciprocal neighbours (incl. self)
        half = pos <= min(int(round(k1 / 2)), n - 1)
        rh = half & half.transpose(0, 2, 1)
        rf, rhf = r.astype(np.float32), rh.astype(np.float32)
        overlap = rf @ rhf.transpose(0, 2, 1)  # [q, i, c] = |R(i) ∩ Rh(c)|
        cond = r & (overlap > 2 / 3 * rhf.sum(2)[:, None, :])
        expanded = r | ((cond.astype(np.float32) @ rhf) > 0)
        v = np.where(expanded, np.exp(-d), 0.0)
        v /= v.sum(2, keepdims=True)
        if k2 > 1:
            nb = rank[:, :, :k2]  # (q, n, k2)
            v = v[np.arange(len(v))[:, None, None], nb].mean(2)  # local query expansion
        vmin = np.minimum(v[:, :1, :], v[:, 1:, :]).sum(2)  # probe vs each candidate
        jac[rows] = 1 - vmin / (2 - vmin)
        orig[rows] = d[:, 0, 1:]
    return jac, orig


class KReciprocal(Reranker):
    """k-reciprocal re-ranking of the whole top-K list: (1 - lam) * Jaccard + lam * original distance.

    With ``tune=True``, ``k1``, ``k2`` and ``lam`` are chosen by rank-1 on the validation split from the
    grids; otherwise the paper's defaults (20, 6, 0.3) are used as given.
    """

    def __init__(self, k1: int = 20, k2: int = 6, lam: float = 0.3, tune: bool = False,
                 k1_grid: Sequence[int] = (10, 20), k2_grid: Sequence[int] = (1, 6),
                 lam_grid: Sequence[float] = (0.1, 0.3, 0.5, 0.7, 0.9), name: str = "kreciprocal") -> None:
        super().__init__()
        self.k1, self.k2, self.lam, self.tune, self.name = k1, k2, lam, tune, name
        self.k1_grid, self.k2_grid, self.lam_grid = list(k1_grid), list(k2_grid), list(lam_grid)

    def fit(self, train: FaceSet, val: LabelledLists) -> KReciprocal:
        if not self.tune:
            return self
        parts = {(k1, k2): kreciprocal_parts(val.lists, val.candidates, k1, k2)
                 for k1, k2 in itertools.product(self.k1_grid, self.k2_grid)}

        def quality(k1: int, k2: int, lam: float) -> tuple[float, float]:
            jac, orig = parts[k1, k2]
            return val.quality(sort_by_score(val.lists, -((1 - lam) * jac + lam * orig)))

        best, (r1, _), _ = grid_search([{"k1": k1, "k2": k2, "lam": lam} for (k1, k2) in parts
                                        for lam in self.lam_grid], quality)
        self.k1, self.k2, self.lam = best["k1"], best["k2"], best["lam"]
        self.stats.update({"val_rank1": r1, "k1": self.k1, "k2": self.k2, "lam": self.lam})
        return self

    def _rerank(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray,
                features: tuple[np.ndarray, np.ndarray] | None) -> RankedLists:
        jac, orig = kreciprocal_parts(lists, candidates, self.k1, self.k2)
        return sort_by_score(lists, -((1 - self.lam) * jac + self.lam * orig))


def alpha_qe(probes: np.ndarray, lists: RankedLists, candidates: np.ndarray, n: int, alpha: float) -> np.ndarray:
    """(Q, K) cosine of each candidate with the expanded query q + sum_{i<n} max(s_i, 0)^alpha g_i."""
    g = np.asarray(candidates, np.float32)  # (Q, K, D)
    w = np.maximum(lists.scores[:, :n], 0) ** alpha
    q = l2_normalize(probes + np.einsum("qn,qnd->qd", w, g[:, :n]))
    return np.einsum("qd,qkd->qk", q, g)


class AlphaQE(Reranker):
    """Alpha-query expansion (Radenovic et al.): re-score the top-K list with the expanded query; ``n`` and
    ``alpha`` tuned by rank-1 on val from the grids (``tune=False`` keeps the given values)."""

    def __init__(self, n: int = 2, alpha: float = 3.0, tune: bool = True, n_grid: Sequence[int] = (1, 2, 3, 5, 10),
                 alpha_grid: Sequence[float] = (1.0, 3.0, 5.0, 10.0), name: str = "aqe") -> None:
        super().__init__()
        self.n, self.alpha, self.tune, self.name = n, alpha, tune, name
        self.n_grid, self.alpha_grid = list(n_grid), list(alpha_grid)

    def fit(self, train: FaceSet, val: LabelledLists) -> AlphaQE:
        if self.tune:
            def quality(n: int, alpha: float) -> tuple[float, float]:
                return val.quality(sort_by_score(val.lists, alpha_qe(val.probes.vectors, val.lists, val.candidates,
                                                                     n, alpha)))

            best, (r1, _), _ = grid_search([{"n": n, "alpha": a} for n, a in itertools.product(self.n_grid,
                                                                                           self.alpha_grid)], quality)
            self.n, self.alpha = best["n"], best["alpha"]
            self.stats.update({"val_rank1": r1, "n": self.n, "alpha": self.alpha})
        return self

    def _rerank(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray,
                features: tuple[np.ndarray, np.ndarray] | None) -> RankedLists:
        return sort_by_score(lists, alpha_qe(probes, lists, candidates, self.n, self.alpha))


class DisambiguatorOnly(LookalikeReranker):
    """The disambiguator's score alone (no fusion) orders the top k; k tuned on val."""

    def __init__(self, disambiguators: Disambiguator | Sequence[Disambiguator],
                 ks: Sequence[int] = (2, 3, 5, 10, 20, 50, 100), pool: DisambiguatorPool | None = None,
                 name: str = "lookalike-disamb-only", seed: int = 0) -> None:
        super().__init__(disambiguators, [TopK(k) for k in ks], ("zscore",), (1.0,), pool, name, seed)


class RerankEverything(LookalikeReranker):
    """Fusion applied to the whole top-K list (no selection); normaliser and weight tuned on val."""

    def __init__(self, disambiguators: Disambiguator | Sequence[Disambiguator],
                 normalisers: Sequence[str] = ("zscore", "llr"), weights: Sequence[float] = DEFAULT_WEIGHTS,
                 pool: DisambiguatorPool | None = None, name: str = "lookalike-all", seed: int = 0) -> None:
        super().__init__(disambiguators, [Everything()], normalisers, weights, pool, name, seed)
