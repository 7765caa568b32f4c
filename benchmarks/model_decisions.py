"""A model's decisions on a benchmark run's test split: rank-1, and at its own 1%-FPIR threshold DIR and the FPIR it
actually gives.

    python benchmarks/model_decisions.py runs/pubfig-b20-default-s0=src/lookalike/models/default-lowres20.lkm \\
        runs/pubfig-g20-default-s0=src/lookalike/models/default-lowres20-gallery.lkm \\
        [--cache /work/cache/lookalike.sqlite]

Each RUN=MODEL pair: the run's test probes and gallery embedded as the model prepares them (its matcher and
resolutions; the run's crop fallback, ``--central-fraction``), the run's baseline lists re-ranked by the model;
DIR = the share of probes whose first candidate is right and above the model's 1% threshold, FPIR = the share of the
same probes, searched against the gallery without their own identity, whose first candidate is above it (a run
without distractors has no other non-mated searches). Nothing is tuned; the model must be the one the run's lists
were searched for (a ``--model`` run of it, or its own ``model.lkm``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from same_person import open_set

from lookalike.embed import embed_paths
from lookalike.matchers.align import FaceAligner
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import RankedLists
from lookalike.model import LookalikeModel


def decisions(run: Path, model: LookalikeModel, cache: str) -> dict:
    """Rank-1, DIR and FPIR (%) of ``model`` on ``run``'s test split at its 1%-FPIR threshold."""
    config = json.loads((run / "metrics.json").read_text(encoding="utf-8"))["config"]
    with np.load(run / "rankings.npz", allow_pickle=False) as z:
        r = dict(z)
    aligner = FaceAligner(config["central_fraction"])
    store = EmbeddingCache(cache)
    try:
        probes, gallery = (embed_paths(r[f"{side}_paths"], model.matcher, aligner, lowres, store, 2, progress=False,
                                       degrade=model.degrade).vectors
                           for side, lowres in (("probe", model.probe_lowres), ("gallery", model.gallery_lowres)))
    finally:
        store.close()
    base = RankedLists(r["baseline.indices"], r["baseline.scores"])
    found = model.rerank(probes, base, gallery[base.indices])
    mated = r["gallery_ids"][None, :] == r["probe_ids"][:, None]
    right, false = open_set(model, probes, mated, gallery, base.depth, found)
    rank1 = np.mean(r["gallery_ids"][found.indices[:, 0]] == r["probe_ids"])
    return {"probes": len(probes), "rank1": 100 * rank1, "dir": 100 * right.mean(), "fpir": 100 * false.mean()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pairs", nargs="+", metavar="RUN=MODEL", help="a benchmark folder and the model to replay on it")
    p.add_argument("--cache", default="/work/cache/lookalike.sqlite", help="embedding cache")
    args = p.parse_args(argv)
    print("| run | model | probes | rank-1 | DIR at its 1% threshold | FPIR obtained |\n|---|---|---|---|---|---|")
    for pair in args.pairs:
        run, sep, model = pair.partition("=")
        if not sep:
            p.error(f"{pair}: expected RUN=MODEL")
        d = decisions(Path(run), LookalikeModel.load(model), args.cache)
        print(f"| {run} | {Path(model).name} | {d['probes']} | {d['rank1']:.2f} | {d['dir']:.2f} | {d['fpir']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
