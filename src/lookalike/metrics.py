"""Identification metrics with their statistics: closed set as TinyFace's official script defines them, open set
(FNIR / DIR at FPIR) as NIST's FRVT does.

A probe hits at rank k if any mated gallery image is among its top k; distractors never match. Average
precision follows the official ``compute_AP`` (trapezoidal precision between consecutive hits).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.checks import (
    check_each,
    check_flags,
    check_fpir,
    check_fpirs,
    check_int,
    check_paired,
    check_position_lists,
    check_positions,
    check_rate,
    check_scores,
)

RANKS = (1, 5, 10, 20, 50)


@dataclass
class RankedLists:
    """Per-probe candidate lists, best first: the hand-off from search to re-ranking to evaluation.

    ``indices`` are gallery rows (Q, K), or any ids that name one gallery face each (identify uses image ids): a
    re-ranker prepares a face found in many lists once; ``scores`` their similarities (Q, K). Re-rankers permute each
    row's top of the list; candidates beyond K keep their positions in the full ranking.
    """

    indices: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.indices, self.scores = np.asarray(self.indices), np.asarray(self.scores)  # lists too; no copy of arrays
        if self.indices.shape != self.scores.shape or self.indices.ndim != 2:
            raise ValueError(f"indices {self.indices.shape} and scores {self.scores.shape} must be equal (Q, K)")

    @property
    def depth(self) -> int:
        return self.indices.shape[1]


def mate_positions(lists: RankedLists, probe_ids: np.ndarray, gallery_ids: np.ndarray,
                   base_ranks: list[np.ndarray]) -> list[np.ndarray]:
    """Sorted 0-based positions of each probe's mates: in-list positions plus base positions beyond K."""
    probe_ids, gallery_ids = np.asarray(probe_ids), np.asarray(gallery_ids)
    _check_ids(lists, probe_ids, gallery_ids)
    if len(base_ranks) != len(probe_ids):
        raise ValueError(f"base_ranks: expected one array per probe ({len(probe_ids)}), got {len(base_ranks)}")
    base_ranks = check_position_lists(base_ranks, "base_ranks")
    k = lists.depth
    hits = gallery_ids[lists.indices] == probe_ids[:, None]
    return [np.concatenate([np.flatnonzero(h), r[r >= k]]) for h, r in zip(hits, base_ranks, strict=True)]


def _check_ids(lists: RankedLists, probe_ids: np.ndarray, gallery_ids: np.ndarray) -> None:
    """A one-line ValueError unless ``lists`` hold rows of ``gallery_ids``, one list per probe id, of ids that can
    be equal."""
    if not isinstance(lists, RankedLists):
        raise ValueError(f"lists must be RankedLists, got {type(lists).__name__}")
    if probe_ids.shape != (len(lists.indices),) or gallery_ids.ndim != 1:
        raise ValueError(f"expected one probe id per list ({len(lists.indices)}) and a 1-D array of gallery ids, got "
                         f"shapes {probe_ids.shape} and {gallery_ids.shape}")
    kinds = {probe_ids.dtype.kind, gallery_ids.dtype.kind}
    if kinds & set("iuf") and kinds & set("US"):  # numbers against text: never equal
        raise ValueError(f"probe ids ({probe_ids.dtype}) and gallery ids ({gallery_ids.dtype}) are of different "
                         "kinds: no probe would ever match")
    if lists.indices.dtype.kind not in "iu":
        raise ValueError(f"the lists must hold integer gallery rows, got {lists.indices.dtype}")
    if lists.indices.size and lists.indices.min() < 0:
        raise ValueError("the lists hold a negative gallery row (a padding id), which would name the last row")
    if lists.indices.size and lists.indices.max() >= len(gallery_ids):
        raise ValueError(f"the lists name gallery row {lists.indices.max()}, but there are {len(gallery_ids)} gallery "
                         "ids")


def average_precision(positions: np.ndarray) -> float:
    """TinyFace/Market-1501 AP from the sorted 0-based positions of all mates (0 when there are none)."""
    return _average_precision(check_positions(positions, "positions"))


def _average_precision(positions: np.ndarray) -> float:
    """:func:`average_precision` of positions already checked."""
    p = positions.astype(np.float64)
    m = len(p)
    if m == 0:
        return 0.0
    i = np.arange(1, m + 1)
    precision = i / (p + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        before = np.where(p > 0, (i - 1) / np.maximum(p, 1), 1.0)
    return float(np.sum((before + precision) / 2) / m)


def average_precisions(positions: list[np.ndarray]) -> np.ndarray:
    """:func:`average_precision` of each probe's positions, checked once for all (not once a probe)."""
    return _average_precisions(check_position_lists(positions, "positions"))


def _average_precisions(positions: list[np.ndarray]) -> np.ndarray:
    return np.asarray([_average_precision(p) for p in positions], np.float64)


def first_hits(positions: list[np.ndarray]) -> np.ndarray:
    """Position of the first mate per probe (inf when it has none)."""
    return _first_hits(check_position_lists(positions, "positions"))


def _first_hits(positions: list[np.ndarray]) -> np.ndarray:
    return np.asarray([p[0] if len(p) else np.inf for p in positions], np.float64)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of per-probe values (resampling probes); NaNs when there are no
    values or ``n_boot`` is 0 (no interval asked for)."""
    values = check_scores(values, "values", finite=True)
    n_boot, seed, level = _check_bootstrap(n_boot, seed, level)
    if len(values) == 0 or n_boot == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(n_boot):
        means[b] = values[rng.integers(0, len(values), len(values))].mean()
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def _check_bootstrap(n_boot: int, seed: int, level: float) -> tuple[int, int, float]:
    """The bootstrap's settings: resamples (0: none), the generator's seed, the interval's level."""
    return check_int(n_boot, "n_boot", least=0), check_int(seed, "seed", least=0), check_rate(level, "level")


def evaluate(positions: list[np.ndarray], ranks: tuple[int, ...] = RANKS, n_boot: int = 1000,
             seed: int = 0) -> dict:
    """rank-k hit rates (fractions), mAP, and bootstrap 95% CIs on rank-1 and mAP over the probes given, each of
    which has a mate in the gallery (a probe whose mate is not in its list counts as a miss; the benchmark sets
    probes without an enrolled mate aside before this)."""
    positions = check_position_lists(positions, "positions")
    first = _first_hits(positions)
    ranks = check_each(ranks, "ranks", lambda k: check_int(k, "each of ranks"))
    out = {f"rank{k}": float(np.mean(first < k)) if len(first) else float("nan") for k in ranks}
    aps = _average_precisions(positions)
    out["mAP"] = float(np.mean(aps)) if positions else float("nan")
    out["rank1_ci95"] = bootstrap_ci(first < 1, n_boot, seed)
    out["mAP_ci95"] = bootstrap_ci(aps, n_boot, seed)
    return out


def cmc_curve(positions: list[np.ndarray], max_rank: int = 50) -> np.ndarray:
    """Hit rate at ranks 1..max_rank (NaN without probes, as :func:`evaluate`)."""
    first = first_hits(positions)
    max_rank = check_int(max_rank, "max_rank")
    if not len(first):
        return np.full(max_rank, np.nan)
    return np.asarray([np.mean(first < k) for k in range(1, max_rank + 1)])


def mcnemar(base_hits: np.ndarray, new_hits: np.ndarray) -> dict:
    """Exact McNemar test of paired rank-1 outcomes: p-value, probes fixed (0->1) and broken (1->0)."""
    from scipy.stats import binomtest

    check_paired(base_hits, new_hits, "mcnemar: base_hits and new_hits")
    base_hits, new_hits = check_flags(base_hits, "base_hits"), check_flags(new_hits, "new_hits")
    fixed = int((~base_hits & new_hits).sum())
    broken = int((base_hits & ~new_hits).sum())
    p = 1.0 if fixed + broken == 0 else float(binomtest(fixed, fixed + broken, 0.5).pvalue)
    return {"mcnemar_p": p, "fixed": fixed, "broken": broken}


def threshold_at_fpir(nonmated_top: np.ndarray, fpir: float) -> float:
    """The smallest score threshold that at most ``fpir`` of the non-mated searches reach with their top
    candidate (just above the (n_allowed + 1)-th highest non-mated top score); -inf with no searches."""
    fpir = check_fpir(fpir)
    nonmated = np.sort(check_scores(nonmated_top, "nonmated_top"))[::-1]
    n_allowed = int(np.floor(fpir * len(nonmated)))
    return float(np.nextafter(nonmated[n_allowed], np.inf)) if n_allowed < len(nonmated) else float("-inf")


def calibrated_threshold(thresholds: dict[float, float], fpir: float) -> float:
    """The threshold calibrated at ``fpir`` among ``thresholds`` (FPIR -> threshold), or a clear ValueError."""
    fpir = check_fpir(fpir)
    for f, t in thresholds.items():
        if np.isclose(f, fpir):
            return t
    raise ValueError(f"no threshold calibrated at FPIR {fpir:g}; calibrated: "
                     f"{', '.join(f'{f:g}' for f in thresholds) or 'none'}")


def _check_open_set(mated_top: np.ndarray, mated_hit: np.ndarray, nonmated_top: np.ndarray,
                    what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open-set outcomes as float64 scores without NaN (-inf: a search no threshold accepts) and bool hits, one
    score and hit per mated search."""
    check_paired(mated_top, mated_hit, f"{what}: mated_top and mated_hit")
    return (check_scores(mated_top, "mated_top"), check_flags(mated_hit, "mated_hit"),
            check_scores(nonmated_top, "nonmated_top"))


def fnir_at_fpir(mated_top: np.ndarray, mated_hit: np.ndarray, nonmated_top: np.ndarray,
                 fpirs: tuple[float, ...] = (0.01, 0.1)) -> dict[str, float]:
    """Open-set identification at rank 1 (NIST FRVT style).

    For each target FPIR the threshold is :func:`threshold_at_fpir` of the non-mated searches' top scores;
    FNIR is the fraction of mated searches whose rank-1 candidate is not the mate or scores below the
    threshold, and DIR (detection and identification rate) is 1 - FNIR.
    """
    out: dict[str, float] = {}
    fpirs = check_fpirs(fpirs)
    mated_top, mated_hit, nonmated_top = _check_open_set(mated_top, mated_hit, nonmated_top, "fnir_at_fpir")
    if len(nonmated_top) == 0 or len(mated_top) == 0:
        return out
    for f in fpirs:
        t = threshold_at_fpir(nonmated_top, f)
        fnir = float(1 - np.mean(mated_hit & (mated_top >= t)))
        out[f"fnir@fpir={f:g}"] = fnir
        out[f"dir@fpir={f:g}"] = 1 - fnir
        out[f"threshold@fpir={f:g}"] = t
    return out


@dataclass(frozen=True)
class OpenSetScores:
    """One method's open-set outcomes on a test split, what FNIR at FPIR is computed from: each mated search's
    decision score and whether its rank-1 candidate is the mate, and each non-mated search's top score."""

    mated_top: np.ndarray
    mated_hit: np.ndarray
    nonmated_top: np.ndarray

    def __post_init__(self) -> None:
        _check_open_set(self.mated_top, self.mated_hit, self.nonmated_top, "OpenSetScores")

    def rates(self, fpirs: tuple[float, ...] = (0.01, 0.1)) -> dict[str, float]:
        """:func:`fnir_at_fpir` of these searches."""
        return fnir_at_fpir(self.mated_top, self.mated_hit, self.nonmated_top, fpirs)

    def fnir_curve(self, fpirs: np.ndarray) -> np.ndarray:
        """FNIR at each of ``fpirs`` (thresholds as :func:`threshold_at_fpir` sets them; FPIR 1: no threshold), for
        an FNIR-FPIR plot."""
        fpirs = np.asarray(check_fpirs(fpirs, upto_one=True))
        if not len(self.mated_top) or not len(self.nonmated_top):
            raise ValueError(f"fnir_curve needs mated and non-mated searches, got {len(self.mated_top)} and "
                             f"{len(self.nonmated_top)}")
        nonmated = np.sort(np.asarray(self.nonmated_top, np.float64))[::-1]
        allowed = np.floor(fpirs * len(nonmated)).astype(int)
        t = np.where(allowed < len(nonmated), np.nextafter(nonmated[np.minimum(allowed, len(nonmated) - 1)], np.inf),
                     -np.inf)
        hit = np.asarray(self.mated_hit, bool)[None] & (np.asarray(self.mated_top)[None] >= t[:, None])
        return 1 - hit.mean(1)


def _check_outcomes(outcomes: list[OpenSetScores]) -> list[OpenSetScores]:
    """A one-line ValueError unless ``outcomes`` is a non-empty list of :class:`OpenSetScores`."""
    outcomes = list(outcomes)
    if not outcomes or not all(isinstance(o, OpenSetScores) for o in outcomes):
        raise ValueError(f"expected one or more OpenSetScores, got {[type(o).__name__ for o in outcomes]}")
    return outcomes


def dir_replicates(outcomes: list[OpenSetScores], fpir: float, n_boot: int, seed: int = 0,
                   chunk: int = 100) -> np.ndarray:
    """(n_boot, methods): DIR at ``fpir`` of each method on bootstrap resamples of its searches. The mated and the
    non-mated searches are resampled independently, each resample sets its own threshold (so the interval holds
    the threshold's uncertainty too), and every method gets the same resamples (so differences are paired: the
    methods must hold the same searches in the same order)."""
    fpir, chunk = check_fpir(fpir), check_int(chunk, "chunk")
    n_boot, seed = check_int(n_boot, "n_boot", least=0), check_int(seed, "seed", least=0)
    outcomes = _check_outcomes(outcomes)
    first = outcomes[0]
    m, n = len(first.mated_top), len(first.nonmated_top)
    if any(len(o.mated_top) != m or len(o.nonmated_top) != n for o in outcomes):
        raise ValueError("paired open-set outcomes must hold the same searches")
    if not m or not n:
        raise ValueError(f"resampling the open set needs mated and non-mated searches, got {m} and {n}")
    rng = np.random.default_rng(seed)
    allowed = int(np.floor(fpir * n))
    out = np.empty((n_boot, len(outcomes)))
    for b0 in range(0, n_boot, chunk):
        b = min(chunk, n_boot - b0)
        mated, nonmated = rng.integers(0, m, (b, m)), rng.integers(0, n, (b, n))
        for j, o in enumerate(outcomes):
            # the (allowed + 1)-th highest non-mated top score of each resample, as threshold_at_fpir takes it
            kth = -np.partition(-np.asarray(o.nonmated_top, np.float64)[nonmated], allowed, axis=1)[:, allowed]
            t = np.nextafter(kth, np.inf)
            hit = np.asarray(o.mated_hit, bool)[mated] & (np.asarray(o.mated_top, np.float64)[mated] >= t[:, None])
            out[b0:b0 + b, j] = hit.mean(1)
    return out


def _check_pairs(pairs: tuple[tuple[str, str], ...], outcomes: dict) -> None:
    """A one-line ValueError unless each of ``pairs`` is a (new, old) tuple of methods among ``outcomes``."""
    for p in pairs:
        if not (isinstance(p, tuple) and len(p) == 2 and all(m in outcomes for m in p)):
            raise ValueError(f"pairs must be (new, old) tuples of methods among {list(outcomes)}, got {p!r}")


def open_set_statistics(outcomes: dict[str, OpenSetScores], pairs: tuple[tuple[str, str], ...] = (),
                        fpirs: tuple[float, ...] = (0.01, 0.1), n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> tuple[dict[str, dict], dict[tuple[str, str], dict]]:
    """One bootstrap of every method's open set (:func:`dir_replicates`: the same resamples for all), read twice:
    ({method: the percentile interval of its DIR at each FPIR}, {(new, old): DIR of ``new`` minus ``old`` at each
    FPIR, each thresholding its own scores: the difference, its paired interval and :func:`bootstrap_p`}). Empty
    dicts without resamples or when the first method has no searches of a kind; a ValueError when the methods do
    not hold the same searches (FNIR's interval is one minus DIR's)."""
    fpirs, (n_boot, seed, level) = check_fpirs(fpirs), _check_bootstrap(n_boot, seed, level)
    _check_pairs(pairs, outcomes)
    cis: dict[str, dict] = {n: {} for n in outcomes}
    paired: dict[tuple[str, str], dict] = {pair: {} for pair in pairs}
    first = _check_outcomes(outcomes.values())[0] if outcomes else None
    if n_boot <= 0 or first is None or not len(first.mated_top) or not len(first.nonmated_top):
        return cis, paired
    q = [(1 - level) / 2, (1 + level) / 2]
    for f in fpirs:
        key = f"dir@fpir={f:g}"
        reps = dict(zip(outcomes, dir_replicates(list(outcomes.values()), f, n_boot, seed).T, strict=True))
        for n, r in reps.items():
            cis[n][f"{key}_ci95"] = [float(x) for x in np.quantile(r, q)]
        for new, old in pairs:
            delta = reps[new] - reps[old]
            paired[new, old].update({f"{key}_diff": outcomes[new].rates((f,))[key] - outcomes[old].rates((f,))[key],
                                     f"{key}_diff_ci95": [float(x) for x in np.quantile(delta, q)],
                                     f"{key}_p": bootstrap_p(delta)})
    return cis, paired


def open_set_ci(outcomes: OpenSetScores, fpirs: tuple[float, ...] = (0.01, 0.1), n_boot: int = 1000,
                seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap interval of one method's DIR at each FPIR (:func:`open_set_statistics`)."""
    return open_set_statistics({"m": outcomes}, (), fpirs, n_boot, seed, level)[0]["m"]


def paired_dir(new: OpenSetScores, old: OpenSetScores, fpirs: tuple[float, ...] = (0.01, 0.1), n_boot: int = 1000,
               seed: int = 0, level: float = 0.95) -> dict[str, float | list[float]]:
    """DIR of ``new`` minus ``old`` at each FPIR on the same searches (:func:`open_set_statistics`)."""
    return open_set_statistics({"new": new, "old": old}, (("new", "old"),), fpirs, n_boot, seed, level)[1]["new", "old"]


def bootstrap_p(delta: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference from its resampled values ``delta``: twice the share of them on
    the far side of zero, the observed difference counted with them (so never below 2 / (len(delta) + 1))."""
    delta = check_scores(delta, "delta", finite=True)
    if not len(delta):
        raise ValueError("bootstrap_p needs resampled differences, got none")
    far = min(int((delta <= 0).sum()), int((delta >= 0).sum()))
    return min(1.0, 2 * (far + 1) / (len(delta) + 1))


def paired_mean(new: np.ndarray, old: np.ndarray, n_boot: int = 1000, seed: int = 0,
                level: float = 0.95) -> dict[str, float | list[float]]:
    """The mean of ``new`` minus ``old``, per-probe values on the same probes (e.g. average precision): the
    difference, its paired bootstrap interval (probes resampled) and :func:`bootstrap_p`; {} without probes."""
    check_paired(new, old, "paired_mean: new and old")
    d = check_scores(new, "new", finite=True) - check_scores(old, "old", finite=True)
    n_boot, seed, level = _check_bootstrap(n_boot, seed, level)
    if len(d) == 0 or n_boot == 0:
        return {}
    means = d[np.random.default_rng(seed).integers(0, len(d), (n_boot, len(d)))].mean(1)
    return {"diff": float(d.mean()), "diff_ci95": [float(x) for x in np.quantile(means, [(1 - level) / 2,
                                                                                          (1 + level) / 2])],
            "p": bootstrap_p(means)}


def unmeasurable_fpirs(n_nonmated: int, fpirs: tuple[float, ...] = (0.01, 0.1)) -> list[float]:
    """The FPIRs that ``n_nonmated`` non-mated searches cannot measure (fewer than 1 / FPIR of them): the threshold
    then sits above the highest non-mated score, an FPIR of 0 on them, and the DIR is not the named FPIR's."""
    n_nonmated = check_int(n_nonmated, "n_nonmated", least=0)
    return [f for f in check_fpirs(fpirs) if n_nonmated * f < 1]
