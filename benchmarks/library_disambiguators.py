"""The library's two other embedding-level disambiguators against the default grid: keep them, or delete them?

``lookalike.disambiguators`` holds, besides the lookalike discriminant analysis of the default grid,
:class:`~lookalike.disambiguators.JointBayesian` (Chen et al.'s likelihood ratio, its between-person covariance
measured on the mined lookalike pairs) and :class:`~lookalike.disambiguators.LookalikeProjection` (a linear map
trained with a triplet loss whose negatives are the mined lookalikes, started from the LDA). Neither has been in a
grid a saved model chooses from. This script refits the saved model (selection, normaliser and weight tuned on
validation as the benchmark does) with the default grid alone (``lda``), with the Joint Bayesian variants added
(``lda+jb``: shrinkage 0.05, 0.1, 0.3, self terms weighted 0.5 or 1) and with the projection added
(``lda+projection``: margin 0.1 or 0.2). **Validation only.**

The rule, written before the first run: a disambiguator joins the default grid if the saved model with it added
beats ``lda``'s validation rank-1 on every run given (LFW seeds 0 and 1 and PubFig at ~20 px; LFW seed 0 and PubFig
at full resolution); otherwise it is deleted from the library (an option no saved model picks is not kept) and
the README notes the numbers.

    python benchmarks/library_disambiguators.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw runs/pubfig
"""

from __future__ import annotations

import argparse
from pathlib import Path

from validation_runs import beats_everywhere, fit_grids, global_rank1, grid_runs, save_json, validation_data

from lookalike.disambiguators import JointBayesian, LookalikeProjection
from lookalike.metrics import evaluate
from lookalike.rerank import DisambiguatorPool, default_disambiguators

ADDED = ("jb", "projection")


def validation(run: Path, args: argparse.Namespace) -> dict:
    cfg, features, train, val = validation_data(run, args.cache)
    lda = default_disambiguators(cfg.seed)
    jb = [JointBayesian(shrink=s, self_weight=w) for s in (0.05, 0.1, 0.3) for w in (0.5, 1.0)]
    projection = [LookalikeProjection(margin=m, seed=cfg.seed) for m in (0.1, 0.2)]
    grids, models = fit_grids(cfg, features, train, val, {"lda": lda, "lda+jb": lda + jb,
                                                          "lda+projection": lda + projection},
                              DisambiguatorPool(seed=cfg.seed))
    return {"base": evaluate(val.positions(), n_boot=0)["rank1"], "grids": grids,
            "global": {g: global_rank1(m.disambiguator_, val) for g, m in models.items()}}


def show(r: dict) -> None:
    print("  the chosen disambiguator ranking the whole validation gallery: "
          + ", ".join(f"{g} {100 * v:.2f}" for g, v in r["global"].items()))


def main() -> None:
    args, results = grid_runs(__doc__, validation, show)
    keep = {name: beats_everywhere(results, f"lda+{name}") for name in ADDED}
    for name, k in keep.items():
        print(f"rule: {name} joins the grid if lda+{name} beats lda on every run's validation -> {k}")
    save_json(args.out, {"results": results, "keep": keep})


if __name__ == "__main__":
    main()
