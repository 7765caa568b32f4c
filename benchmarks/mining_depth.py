"""Does mining *lookalikes* matter? The disambiguator's training pairs mined at other depths, and random impostors.

The lookalike discriminant analysis keeps the directions along which mined lookalike pairs differ most (its
between-class scatter is the lookalike pairs' scatter). Its pairs come from :func:`~lookalike.mining.default_miner`:
genuine pairs, each train image's ``k = 10`` nearest impostors and every impostor scored above a true mate. This
script refits the saved model (the default LDA grid; selection, normaliser and weight tuned on validation as the
benchmark does) with the pairs mined at ``k`` 3, 10 and 30, and with ``random``: the same genuine pairs and, for each
train image, 10 impostors drawn at random (a plain discriminant analysis: no lookalike in its between-class scatter).
**Validation only.** (The grid's unweighted variants, ``power=0``, are within-class whitening, the same for every
miner: only the weighted ones read the impostor pairs.)

Rules, written before the first run:
1. A depth (3 or 30) replaces ``k = 10`` in :func:`~lookalike.mining.default_miner` if its saved model beats the
   default's validation rank-1 on every run given (LFW seeds 0 and 1 and PubFig at ~20 px; LFW seed 0 and PubFig at
   full resolution); if both do, the one with the higher mean validation rank-1.
2. The ablation: mining lookalikes is shown to matter if ``k = 10`` beats ``random`` on every run; the README
   reports the answer either way.

    python benchmarks/mining_depth.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw runs/pubfig
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from validation_runs import beats_everywhere, fit_grids, grid_runs, save_json, validation_data

from lookalike.faces import FaceSet
from lookalike.metrics import evaluate
from lookalike.mining import LOOKALIKE, GenuineMiner, Miner, Pairs, UnionMiner, default_miner
from lookalike.rerank import DisambiguatorPool, default_disambiguators

DEPTHS = (3, 10, 30)


class RandomImpostorMiner(Miner):
    """For every image, ``k`` images of other people drawn at random (seeded)."""

    def __init__(self, k: int = 10, seed: int = 0) -> None:
        super().__init__()
        self.k, self.seed = k, seed

    def _mine(self, faces: FaceSet) -> Pairs:
        rng = np.random.default_rng(self.seed)
        n, ids = len(faces), faces.identities
        left = np.repeat(np.arange(n), self.k)
        right = rng.integers(0, n, len(left))
        keep = ids[left] != ids[right]
        left, right = left[keep], right[keep]
        scores = np.einsum("ij,ij->i", faces.vectors[left], faces.vectors[right])
        return Pairs(left, right, np.full(len(left), LOOKALIKE), scores)


def miners(seed: int) -> dict[str, Miner]:
    out: dict[str, Miner] = {f"k{k}": default_miner(k, seed) for k in DEPTHS}
    out["random"] = UnionMiner([GenuineMiner(seed=seed), RandomImpostorMiner(10, seed)])
    return out


def validation(run: Path, args: argparse.Namespace) -> dict:
    cfg, features, train, val = validation_data(run, args.cache)
    grids, mined = {}, {}
    for name, miner in miners(cfg.seed).items():
        pool = DisambiguatorPool(miner=miner, seed=cfg.seed)
        grids.update(fit_grids(cfg, features, train, val, {name: default_disambiguators(cfg.seed)}, pool)[0])
        stats = next(iter(pool.mining_stats.values()))
        mined[name] = {"genuine": stats["n_genuine"], "impostor": stats["n_lookalike"]}
    return {"base": evaluate(val.positions(), n_boot=0)["rank1"], "grids": grids, "pairs": mined}


def show(r: dict) -> None:
    print("  pairs (genuine / impostor): " + ", ".join(f"{k} {v['genuine']} / {v['impostor']}"
                                                     for k, v in r["pairs"].items()))


def main() -> None:
    args, results = grid_runs(__doc__, validation, show)
    wins = [f"k{k}" for k in DEPTHS if k != 10 and beats_everywhere(results, f"k{k}", "k10")]
    mean = {g: float(np.mean([r["grids"][g]["val_rank1"] for r in results.values()])) for g in wins}
    depth = max(wins, key=mean.get) if wins else "k10"
    matters = beats_everywhere(results, "k10", "random")
    print(f"\nrule 1: a depth beating k10 on every run's validation: {wins or 'none'} -> keep {depth}")
    print(f"rule 2: k10 (mined lookalikes) beats random impostors on every run's validation -> {matters}")
    save_json(args.out, {"results": results, "depth": depth, "lookalikes_matter": matters})


if __name__ == "__main__":
    main()
