"""When one side is degraded, how wrong is an open set whose non-mated searches start from the gallery's preparation?

    python benchmarks/nonmated_preparation.py --runs runs/lfw-lowres20-probes runs/lfw-lowres20-gallery \\
        [--cache /work/cache/lookalike.sqlite]

A non-mated search (a distractor searched against the rest of the gallery) stands for a probe of someone not
enrolled, so it must start from the distractor prepared as probes are. Before ``--lowres-apply gallery`` was added,
the probes-only mode started it from the distractor as the gallery prepares it. For each run (a ``lookalike
benchmark`` folder degrading one side) the run's baseline is thresholded both ways at FPIR 1% and 10%, and the
script prints the FPIR the gallery-side threshold actually obtains on the probe-side searches and the DIR of each.
Nothing is tuned; the baseline only (the re-ranked methods shift the same way).
"""

from __future__ import annotations

import numpy as np
from validation_runs import runs_parser

from lookalike.benchmark import run_features
from lookalike.experiment import build_split
from lookalike.metrics import threshold_at_fpir
from lookalike.rerank.tuning import nonmated_lists


def main() -> None:
    args = runs_parser(__doc__).parse_args()
    print("| run | FPIR asked | threshold: as probes / as gallery | FPIR obtained with the gallery-side one | "
          "DIR: as probes / as gallery |\n|---|---|---|---|---|")
    for run in args.runs:
        cfg, features = run_features(run, args.cache)
        if cfg.lowres is None or cfg.lowres_apply == "both":
            raise SystemExit(f"{run}: both sides are prepared alike (degrade one side: --lowres-apply)")
        test = build_split(features, "test", cfg.depth)
        if test.nonmated is None:
            raise SystemExit(f"{run}: no distractors, so no non-mated searches")
        right = test.nonmated.scores[:, 0]
        wrong = nonmated_lists(test.gallery.take(test.is_distractor), test.gallery, cfg.depth).scores[:, 0]
        mated = test.lists.scores[:, 0]
        hit = test.gallery.identities[test.lists.indices[:, 0]] == test.probes.identities
        for fpir in (0.01, 0.1):
            t_right, t_wrong = threshold_at_fpir(right, fpir), threshold_at_fpir(wrong, fpir)
            print(f"| {run} | {fpir:.0%} | {t_right:.4f} / {t_wrong:.4f} | {np.mean(right >= t_wrong):.2%} | "
                  f"{np.mean(hit & (mated >= t_right)):.2%} / {np.mean(hit & (mated >= t_wrong)):.2%} |")


if __name__ == "__main__":
    main()
