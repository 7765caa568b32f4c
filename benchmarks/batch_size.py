"""How many photos does batch re-ranking need? A run's saved model re-ranks its test probes in batches.

    python benchmarks/batch_size.py --runs runs/lfw-lowres20 runs/pubfig-lowres20 [--sizes 1 10 50 200 1000 0]
        [--cache /work/cache/lookalike.sqlite] [--seed 0]

For each run (a ``lookalike benchmark`` folder with ``model.lkm``), the test probes are shuffled (seeded) and cut
into batches of B photos (0: all of them at once, the benchmark's ``lookalike-batch``); each batch is re-ranked on
its own with the model's batch setting (``LookalikeModel.rerank_batch``, what ``identify --batch`` does), and
rank-1 is read over all probes. "one person a batch" groups the probes by identity instead: a case whose photos are
all of one unknown person. Nothing is tuned here: the model's setting was chosen on its validation split.
Prints one Markdown table (rank-1 %).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lookalike.benchmark import load_saved_run
from lookalike.metrics import RankedLists
from lookalike.model import LookalikeModel


def batched_rank1(model: LookalikeModel, probes: np.ndarray, gallery: np.ndarray, base: RankedLists,
                  mated: np.ndarray, batches: list[np.ndarray]) -> float:
    """Rank-1 over all probes when each of ``batches`` (probe rows) is re-ranked on its own (``mated``: (Q, N) True
    where the gallery image is the probe's person)."""
    first = np.empty(len(probes), np.int64)
    for rows in batches:
        lists = RankedLists(base.indices[rows], base.scores[rows])
        first[rows] = model.rerank_batch(probes[rows], lists, gallery[lists.indices]).indices[:, 0]
    return float(np.mean(mated[np.arange(len(probes)), first]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="benchmark output folders with model.lkm")
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 10, 50, 200, 1000, 0],
                   help="photos per batch (0: all test probes at once)")
    p.add_argument("--cache", default="cache/lookalike.sqlite", help="the runs' embedding cache")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle that cuts the batches")
    args = p.parse_args(argv)
    head = ["run", "per photo (`lookalike-best`)"] + [f"B = {b or 'all'}" for b in args.sizes] + ["one person a batch"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for run in map(Path, args.runs):
        if LookalikeModel.load(run / "model.lkm").batch_ is None:
            print(f"| {run} | the model has no batch setting (validation) |" + " |" * (len(head) - 2))
            continue
        model, r, probes, gallery, base, mated = load_saved_run(run, args.cache)
        probe_ids = r["probe_ids"]
        alone = model.rerank(probes, base, gallery[base.indices]).indices[:, 0]
        order = np.random.default_rng(args.seed).permutation(len(probes))
        cells = [f"{100 * np.mean(mated[np.arange(len(probes)), alone]):.2f}"]
        for b in args.sizes:
            batches = np.array_split(order, max(1, -(-len(order) // b))) if b else [order]
            cells.append(f"{100 * batched_rank1(model, probes, gallery, base, mated, batches):.2f}")
        people = [np.flatnonzero(probe_ids == pid) for pid in np.unique(probe_ids)]
        cells.append(f"{100 * batched_rank1(model, probes, gallery, base, mated, people):.2f}")
        print(f"| {run} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
