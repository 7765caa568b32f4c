"""Closed-set identification metrics as TinyFace's official script defines them, with statistics.

A probe hits at rank k if any mated gallery image is among its top k; distractors never match. Average
precision follows the official ``compute_AP`` (trapezoidal precision between consecutive hits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RANKS = (1, 5, 10, 20, 50)


@dataclass
class RankedLists:
    """Per-probe candidate lists, best first: the hand-off from search to re-ranking to evaluation.

    ``indices`` are gallery rows (Q, K); ``scores`` their similarities (Q, K). Re-rankers permute each row's
    top of the list; candidates beyond K keep their positions in the full ranking.
    """

    indices: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.indices.shape != self.scores.shape or self.indices.ndim != 2:
            raise ValueError(f"indices {self.indices.shape} and scores {self.scores.shape} must be equal (Q, K)")

    @property
    def depth(self) -> int:
        return self.indices.shape[1]

    @classmethod
    def of_scores(cls, scores: np.ndarray) -> RankedLists:
        """Lists of (Q, K) base scores whose candidates are known by position only: each index is its row's offset
        plus its position (``index % K``), so no two lists share one (re-rankers take indices as gallery rows, and
        the same position in two lists is not the same face)."""
        q, k = scores.shape
        return cls(np.arange(q * k).reshape(q, k), scores)


def mate_positions(lists: RankedLists, probe_ids: np.ndarray, gallery_ids: np.ndarray,
                   base_ranks: list[np.ndarray]) -> list[np.ndarray]:
    """Sorted 0-based positions of each probe's mates: in-list positions plus base positions beyond K."""
    k = lists.depth
    hits = gallery_ids[lists.indices] == probe_ids[:, None]
    return [np.concatenate([np.flatnonzero(h), r[r >= k]]) for h, r in zip(hits, base_ranks, strict=True)]


def average_precision(positions: np.ndarray) -> float:
    """TinyFace/Market-1501 AP from the sorted 0-based positions of all mates (0 when there are none)."""
    p = np.asarray(positions, np.float64)
    m = len(p)
    if m == 0:
        return 0.0
    i = np.arange(1, m + 1)
    precision = i / (p + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        before = np.where(p > 0, (i - 1) / np.maximum(p, 1), 1.0)
    return float(np.sum((before + precision) / 2) / m)


def first_hits(positions: list[np.ndarray]) -> np.ndarray:
    """Position of the first mate per probe (inf when it has none)."""
    return np.asarray([p[0] if len(p) else np.inf for p in positions], np.float64)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of per-probe values (resampling probes); NaNs when there are no
    values or ``n_boot`` is 0 (no interval asked for)."""
    values = np.asarray(values, np.float64)
    if len(values) == 0 or n_boot <= 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        means[b] = values[rng.integers(0, len(values), len(values))].mean()
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def evaluate(positions: list[np.ndarray], ranks: tuple[int, ...] = RANKS, n_boot: int = 1000,
             seed: int = 0) -> dict:
    """rank-k hit rates (fractions), mAP, and a bootstrap 95% CI on rank-1 over probes with mates."""
    first = first_hits(positions)
    out = {f"rank{k}": float(np.mean(first < k)) if len(first) else float("nan") for k in ranks}
    out["mAP"] = float(np.mean([average_precision(p) for p in positions])) if positions else float("nan")
    out["rank1_ci95"] = bootstrap_ci(first < 1, n_boot, seed)
    return out


def cmc_curve(positions: list[np.ndarray], max_rank: int = 50) -> np.ndarray:
    """Hit rate at ranks 1..max_rank."""
    first = first_hits(positions)
    return np.asarray([np.mean(first < k) for k in range(1, max_rank + 1)])


def mcnemar(base_hits: np.ndarray, new_hits: np.ndarray) -> dict:
    """Exact McNemar test of paired rank-1 outcomes: p-value, probes fixed (0->1) and broken (1->0)."""
    from scipy.stats import binomtest

    base_hits, new_hits = np.asarray(base_hits, bool), np.asarray(new_hits, bool)
    fixed = int((~base_hits & new_hits).sum())
    broken = int((base_hits & ~new_hits).sum())
    p = 1.0 if fixed + broken == 0 else float(binomtest(fixed, fixed + broken, 0.5).pvalue)
    return {"mcnemar_p": p, "fixed": fixed, "broken": broken}


def threshold_at_fpir(nonmated_top: np.ndarray, fpir: float) -> float:
    """The smallest score threshold that at most ``fpir`` of the non-mated searches reach with their top
    candidate (just above the (n_allowed + 1)-th highest non-mated top score); -inf with no searches."""
    nonmated = np.sort(np.asarray(nonmated_top, np.float64))[::-1]
    n_allowed = int(np.floor(fpir * len(nonmated)))
    return float(np.nextafter(nonmated[n_allowed], np.inf)) if n_allowed < len(nonmated) else float("-inf")


def calibrated_threshold(thresholds: dict[float, float], fpir: float) -> float:
    """The threshold calibrated at ``fpir`` among ``thresholds`` (FPIR -> threshold), or a clear ValueError."""
    for f, t in thresholds.items():
        if np.isclose(f, fpir):
            return t
    raise ValueError(f"no threshold calibrated at FPIR {fpir:g}; calibrated: "
                     f"{', '.join(f'{f:g}' for f in thresholds) or 'none'}")


def fnir_at_fpir(mated_top: np.ndarray, mated_hit: np.ndarray, nonmated_top: np.ndarray,
                 fpirs: tuple[float, ...] = (0.01, 0.1)) -> dict[str, float]:
    """Open-set identification at rank 1 (NIST FRVT style).

    For each target FPIR the threshold is :func:`threshold_at_fpir` of the non-mated searches' top scores;
    FNIR is the fraction of mated searches whose rank-1 candidate is not the mate or scores below the
    threshold, and DIR (detection and identification rate) is 1 - FNIR.
    """
    out: dict[str, float] = {}
    if len(nonmated_top) == 0 or len(mated_top) == 0:
        return out
    for f in fpirs:
        t = threshold_at_fpir(nonmated_top, f)
        fnir = float(1 - np.mean(np.asarray(mated_hit, bool) & (np.asarray(mated_top) >= t)))
        out[f"fnir@fpir={f:g}"] = fnir
        out[f"dir@fpir={f:g}"] = 1 - fnir
        out[f"threshold@fpir={f:g}"] = t
    return out
