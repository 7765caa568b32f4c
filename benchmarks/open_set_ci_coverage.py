"""Does the open-set bootstrap interval hold its 95%? Coverage of ``metrics.open_set_ci`` and of ``paired_dir`` on
simulated searches whose true DIR is known.

Each trial draws a test split like a benchmark run's (``--mated`` mated searches whose top score is N(shift, 1) and
whose rank-1 candidate is right with probability 0.8; ``--nonmated`` non-mated top scores N(0, 1)), computes the
95% interval of DIR at FPIR 1% and 10%, and counts how often it holds the true DIR, 0.8 (1 - Phi(t - shift)) with t
the non-mated scores' (1 - FPIR) quantile. For the paired test two methods score the same searches, their scores
correlated (a shared part plus noise of sd 0.3 each, so each is still N(shift, 1) and N(0, 1)), the second's mated
scores shifted by ``delta``: the paired interval should hold the true difference, and with ``delta`` 0 (no
difference) the p-value should fall below 0.05 in about 5% of trials.

    python benchmarks/open_set_ci_coverage.py --trials 200
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import norm

from lookalike.metrics import OpenSetScores, open_set_ci, paired_dir

FPIRS = (0.01, 0.1)


def true_dir(shift: float, fpir: float) -> float:
    """DIR at ``fpir`` when mated top scores are N(shift, 1), rank-1 right w.p. 0.8, non-mated N(0, 1)."""
    return 0.8 * (1 - norm.cdf(norm.ppf(1 - fpir) - shift))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--mated", type=int, default=3974)
    ap.add_argument("--nonmated", type=int, default=2032)
    ap.add_argument("--shift", type=float, default=2.0)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    held = {f: 0 for f in FPIRS}
    paired_held = {(d, f): 0 for d in (0.0, 0.1) for f in FPIRS}
    rejected = {f: 0 for f in FPIRS}
    noise = 0.3
    shared = np.sqrt(1 - noise**2)
    for trial in range(args.trials):
        hit = rng.random(args.mated) < 0.8
        common_m, common_n = rng.normal(args.shift, shared, args.mated), rng.normal(0, shared, args.nonmated)
        base = OpenSetScores(common_m + rng.normal(0, noise, args.mated), hit,
                             common_n + rng.normal(0, noise, args.nonmated))
        ci = open_set_ci(base, FPIRS, args.n_boot, seed=trial)
        for f in FPIRS:
            lo, hi = ci[f"dir@fpir={f:g}_ci95"]
            held[f] += lo <= true_dir(args.shift, f) <= hi
        for delta in (0.0, 0.1):
            other = OpenSetScores(common_m + rng.normal(delta, noise, args.mated), hit,
                                  common_n + rng.normal(0, noise, args.nonmated))
            r = paired_dir(other, base, FPIRS, args.n_boot, seed=trial)
            for f in FPIRS:
                truth = true_dir(args.shift + delta, f) - true_dir(args.shift, f)
                lo, hi = r[f"dir@fpir={f:g}_diff_ci95"]
                paired_held[delta, f] += lo <= truth <= hi
                if delta == 0.0:
                    rejected[f] += r[f"dir@fpir={f:g}_p"] < 0.05
    n = args.trials
    print(f"{n} trials, {args.mated} mated and {args.nonmated} non-mated searches, {args.n_boot} resamples each\n")
    print("| FPIR | true DIR | CI holds it | paired CI holds the true difference (delta 0 / 0.1) | "
          "p < 0.05 with no true difference (delta 0) |")
    print("|---|---|---|---|---|")
    for f in FPIRS:
        print(f"| {100 * f:g}% | {100 * true_dir(args.shift, f):.2f} | {100 * held[f] / n:.1f}% | "
              f"{100 * paired_held[0.0, f] / n:.1f}% / {100 * paired_held[0.1, f] / n:.1f}% | "
              f"{100 * rejected[f] / n:.1f}% |")


if __name__ == "__main__":
    main()
