"""Which shipped model should re-rank faces of at most 20 px against a sharp gallery? Decided on validation splits.

    PYTHONPATH=src:benchmarks python benchmarks/small_face_routing.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/pubfig-p20-default-s0 runs/pubfig-p20-default-s1 runs/pubfig-p20-realistic-s0 \\
        runs/pubfig-p20-realistic-s1 runs/orl-p20-default-s0 runs/orl-p20-default-s1

``identify --model default`` gives a face at most 20 px across to the small-face model
(``default-lowres20-probes.lkm``, trained for 20 px probes against sharp galleries) and every other face to the
full-resolution default (``default-full.lkm``). That routing was kept because the small-face model's own ship rule
(a gain over the plain matcher on PubFig's test splits) held, not by comparing the two models on validation data;
this script makes that comparison on validation splits only.

Each run is a ``lookalike benchmark --lowres 20 --lowres-apply probes`` folder (probes degraded to ~20 px, bicubic or
realistic, gallery sharp; ``--no-rerank`` suffices): only its protocol and settings are read. Its *validation* probes
and gallery are embedded through the cache as the run prepares them, searched with the run's matcher, and the lists
re-ranked by both shipped models (no tuning: both are used as shipped). The test split is not read. Both models
were trained on LFW without PubFig's people; neither saw PubFig or ORL.

The rule, written with this script before its first run: pooled over the validation probes of every run given,
faces at most 20 px go to the model that gets more of them right at rank 1; a tie keeps the small-face model
(the routing in place). The same photo may be a validation probe under two seeds (other galleries): the pooled
exact McNemar p counts them as independent and is optimistic by that much; it is reported, not used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lookalike.benchmark import run_features
from lookalike.experiment import build_split
from lookalike.matchers import matcher_name
from lookalike.metrics import mcnemar
from lookalike.model import MODELS_DIR, LookalikeModel

FULL, SMALL = "default-full.lkm", "default-lowres20-probes.lkm"


def validation_hits(run: Path, models: dict[str, LookalikeModel], cache: str) -> dict[str, np.ndarray]:
    """Per validation probe of ``run``: right at rank 1 with the run's matcher alone and after each model re-ranks."""
    cfg, features = run_features(run, cache)
    if cfg.lowres_apply != "probes" or cfg.lowres != 20:
        raise SystemExit(f"{run}: not a --lowres 20 --lowres-apply probes run")
    depth = max(m.reach for m in models.values())
    val = build_split(features, "val", max(depth, cfg.depth), cfg.index)
    truth, ids = val.probes.identities, val.gallery.identities
    hits = {"baseline": ids[val.lists.indices[:, 0]] == truth}
    for name, model in models.items():
        if model.matcher_name_ != matcher_name(cfg.matcher):
            raise SystemExit(f"{name}: embeds with {model.matcher_name_}, the run with {matcher_name(cfg.matcher)}")
        found = model.rerank(val.probes.vectors, val.lists, val.candidates)
        hits[name] = ids[found.indices[:, 0]] == truth
    return hits


def row(label: str, n: int, hits: dict[str, np.ndarray]) -> str:
    m = mcnemar(hits[FULL], hits[SMALL])
    pct = {k: 100 * v.mean() for k, v in hits.items()}
    return (f"| {label} | {n:,} | {pct['baseline']:.2f} | {pct[FULL]:.2f} | {pct[SMALL]:.2f} | "
            f"{pct[SMALL] - pct[FULL]:+.2f} ({m['mcnemar_p']:.2g}; {m['fixed']} / {m['broken']}) |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="benchmark folders (20 px probes, sharp gallery)")
    p.add_argument("--cache", default="/work/cache/lookalike.sqlite", help="embedding cache")
    args = p.parse_args(argv)
    models = {name: LookalikeModel.load(MODELS_DIR / name) for name in (FULL, SMALL)}
    print("Validation rank-1 (%); small-face minus full-resolution default, exact McNemar p, probes fixed / broken\n")
    print("| run | validation probes | run's matcher | full-resolution default | small-face default | small-face vs "
          "full-resolution default |\n|---|---|---|---|---|---|")
    pooled: dict[str, list[np.ndarray]] = {}
    for run in map(Path, args.runs):
        hits = validation_hits(run, models, args.cache)
        print(row(str(run), len(hits["baseline"]), hits))
        for k, v in hits.items():
            pooled.setdefault(k, []).append(v)
    hits = {k: np.concatenate(v) for k, v in pooled.items()}
    print(row("**pooled**", len(hits["baseline"]), hits))
    small, full = int(hits[SMALL].sum()), int(hits[FULL].sum())
    chosen = SMALL if small >= full else FULL
    print(f"\nPooled: small-face {small} right, full-resolution default {full}: faces at most 20 px go to {chosen}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
