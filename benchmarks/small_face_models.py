"""Small probe faces against a sharp gallery: which shipped model should re-rank them?

    python benchmarks/small_face_models.py --runs runs/pubfig-p20-default-s0 runs/pubfig-p20-default-s1 \\
        [--cache /work/cache/lookalike.sqlite]

Each run is a ``lookalike benchmark --lowres 20 --lowres-apply probes`` folder (probes degraded to ~20 px, gallery
sharp, the default matcher: the gallery a full-resolution default model searches; a ``--matcher torch`` run for models
of the plain matcher, as shipped before flip averaging became the full-resolution default). Its test
probes are embedded again at the run's probe resolution and its gallery at full resolution (through the cache), and
the run's baseline lists are re-ranked by each model given (default: the two shipped models that search such a
gallery: ``default-full.lkm``, and ``default-lowres20-probes.lkm``, trained for 20 px probes against sharp galleries,
which ``identify --model default`` gives the faces at most 20 px across). Rank-1 (%) of each, exact McNemar p
against the baseline and between the models; and, at each model's own 1%-FPIR threshold, the share of probes whose
first candidate is right and above it (DIR) and the share of the same probes searched against the gallery without
their own identity whose first candidate is above it (the FPIR it actually gives). A run may degrade its probes the
realistic way (``--degrade realistic``; ``--no-rerank`` suffices). Nothing is tuned.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from model_decisions import replay, run_faces

from lookalike.matchers import matcher_name
from lookalike.metrics import mcnemar
from lookalike.model import MODELS_DIR, LookalikeModel

SHIPPED = (MODELS_DIR / "default-full.lkm", MODELS_DIR / "default-lowres20-probes.lkm")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="benchmark folders (20 px probes, sharp gallery)")
    p.add_argument("--models", nargs="+", default=[str(m) for m in SHIPPED], help="model files to compare")
    p.add_argument("--cache", default="/work/cache/lookalike.sqlite", help="embedding cache")
    args = p.parse_args(argv)
    models = {Path(m).name: LookalikeModel.load(m) for m in args.models}
    names = list(models)
    print("| run | probes | model | rank-1 | vs baseline: diff (p; fixed / broken) | at its 1%-FPIR threshold: DIR / "
          "FPIR obtained |\n|---|---|---|---|---|---|")
    for run in map(Path, args.runs):
        cfg, r, probes, gallery = run_faces(run, args.cache)
        if cfg.lowres_apply != "probes":
            raise SystemExit(f"{run}: not a --lowres-apply probes run")
        truth = r["probe_ids"]
        base_hits = r["gallery_ids"][r["baseline.indices"][:, 0]] == truth
        hits = {}
        print(f"| {run} | {len(truth)} | baseline ({cfg.matcher}) | {100 * base_hits.mean():.2f} | – | – |")
        for name, model in models.items():
            if model.matcher_name_ != matcher_name(cfg.matcher):
                raise SystemExit(f"{name}: embeds with {model.matcher_name_}, the run with {matcher_name(cfg.matcher)}")
            hits[name], decided, false = replay(model, r, probes, gallery)
            m = mcnemar(base_hits, hits[name])
            print(f"| {run} | {len(truth)} | {name} | {100 * hits[name].mean():.2f} | "
                  f"{100 * (hits[name].mean() - base_hits.mean()):+.2f} ({m['mcnemar_p']:.2g}; {m['fixed']} / "
                  f"{m['broken']}) | {100 * decided.mean():.2f} / {100 * false.mean():.2f} |")
        for a, b in zip(names, names[1:], strict=False):
            m = mcnemar(hits[a], hits[b])
            print(f"| {run} | {len(truth)} | {b} vs {a} | | {100 * (hits[b].mean() - hits[a].mean()):+.2f} "
                  f"({m['mcnemar_p']:.2g}; {m['fixed']} / {m['broken']}) | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
