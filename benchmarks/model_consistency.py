"""The saved model is the one behind a run's numbers: replay ``model.lkm`` on the run's test lists.

    python benchmarks/model_consistency.py runs/lfw runs/lfw-lowres20 --cache /work/cache/lookalike.sqlite
"""

from __future__ import annotations

import argparse

from lookalike.benchmark import replay_saved_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="`lookalike benchmark` output folders")
    ap.add_argument("--cache", default="cache/lookalike.sqlite")
    args = ap.parse_args()
    print("| run | probes | identical lists | identical scores | rank-1 in run | rank-1 replayed |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        r = replay_saved_model(run, args.cache)
        print(f"| {run} | {r['n_probes']} | {r['identical_indices']} | {r['identical_scores']} | "
              f"{100 * r['run_rank1']:.2f} | {100 * r['replayed_rank1']:.2f} |")


if __name__ == "__main__":
    main()
