"""How many genuine pairs per person should the disambiguator's within-person scatter read?

The lookalike discriminant analysis whitens the scatter of genuine (same-person) pairs, and the saved models mostly
gain from that whitening (README: "Does mining lookalikes matter?"). :func:`~lookalike.mining.default_miner` draws at
most 50 genuine pairs per person (a seeded sample), so a person with 530 photos gives as many pairs as one with 11.
This script refits the saved model (default LDA grid, everything tuned on validation as the benchmark does) with at
most 10, 50 (the default), 200 or every genuine pair per person, the impostors mined as by default. **Validation
only.**

The rule, written before the first run: a cap replaces 50 if its saved model beats the default's validation rank-1 on
every run given (LFW seeds 0 and 1 and PubFig at ~20 px; LFW seed 0 and PubFig at full resolution); if several do,
the one with the highest mean validation rank-1.

    python benchmarks/genuine_pairs.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw runs/pubfig
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from validation_runs import beats_everywhere, fit_grids, grid_runs, save_json, validation_data

from lookalike.metrics import evaluate
from lookalike.mining import GenuineMiner, HardImpostorMiner, TopKImpostorMiner, UnionMiner
from lookalike.rerank import DisambiguatorPool, default_disambiguators

CAPS = {"cap10": 10, "cap50": 50, "cap200": 200, "all": None}
DEFAULT = "cap50"


def validation(run: Path, args: argparse.Namespace) -> dict:
    cfg, features, train, val = validation_data(run, args.cache)
    grids, genuine = {}, {}
    for name, cap in CAPS.items():
        miner = UnionMiner([GenuineMiner(cap, cfg.seed), TopKImpostorMiner(10), HardImpostorMiner(0.0, 20)])
        pool = DisambiguatorPool(miner=miner, seed=cfg.seed)
        grids.update(fit_grids(cfg, features, train, val, {name: default_disambiguators(cfg.seed)}, pool)[0])
        genuine[name] = next(iter(pool.mining_stats.values()))["n_genuine"]
    return {"base": evaluate(val.positions(), n_boot=0)["rank1"], "grids": grids, "genuine": genuine}


def show(r: dict) -> None:
    print("  genuine pairs: " + ", ".join(f"{k} {v}" for k, v in r["genuine"].items()))


def main() -> None:
    args, results = grid_runs(__doc__, validation, show)
    wins = [g for g in CAPS if g != DEFAULT and beats_everywhere(results, g, DEFAULT)]
    mean = {g: float(np.mean([r["grids"][g]["val_rank1"] for r in results.values()])) for g in wins}
    keep = max(wins, key=mean.get) if wins else DEFAULT
    print(f"\nrule: a cap beating {DEFAULT} on every run's validation: {wins or 'none'} -> keep {keep}")
    save_json(args.out, {"results": results, "keep": keep})


if __name__ == "__main__":
    main()
