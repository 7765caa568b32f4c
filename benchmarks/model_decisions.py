"""A model's decisions on a benchmark run's test split: rank-1, and at its own 1%-FPIR threshold DIR and the FPIR it
actually gives.

    python benchmarks/model_decisions.py runs/pubfig-b20-default-s0=src/lookalike/models/default-lowres20.lkm \\
        runs/pubfig-g20-default-s0=src/lookalike/models/default-lowres20-gallery.lkm \\
        [--cache /work/cache/lookalike.sqlite]

Each RUN=MODEL pair: the run's test probes and gallery embedded again as the run prepared them (its matcher, crop
fallback and resolutions), the run's baseline lists re-ranked by the model;
DIR = the share of probes whose first candidate is right and above the model's 1% threshold, FPIR = the share of the
same probes, searched against the gallery without their own identity, whose first candidate is above it (a run
without distractors has no other non-mated searches). Nothing is tuned; the model must be the one the run's lists
were searched for (a ``--model`` run of it, or its own ``model.lkm``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from same_person import open_set

from lookalike.benchmark import BenchmarkConfig, run_config
from lookalike.data.protocol import side_lowres
from lookalike.embed import embed_paths
from lookalike.matchers import DEFAULT_MATCHER
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import RankedLists
from lookalike.model import LookalikeModel


def run_faces(run: Path, cache: str) -> tuple[BenchmarkConfig, dict, np.ndarray, np.ndarray]:
    """A run's settings (:func:`~lookalike.benchmark.run_config`), its saved lists (``rankings.npz``), and its test
    probes and gallery embedded again as the run prepared them (matcher, aligner and its fallbacks, each side's
    resolution and degradation)."""
    cfg = run_config(run)
    with np.load(run / "rankings.npz", allow_pickle=False) as z:
        r = dict(z)
    matcher = cfg.matcher or DEFAULT_MATCHER
    store = EmbeddingCache(cache)
    try:
        probes, gallery = (
            embed_paths(r[f"{side}_paths"], matcher, cfg.aligner(), side_lowres(cfg.lowres, cfg.lowres_apply, which),
                        store, 2, progress=False, degrade=cfg.degrade).vectors
            for side, which in (("probe", "probes"), ("gallery", "gallery")))
    finally:
        store.close()
    return cfg, r, probes, gallery


def replay(model: LookalikeModel, r: dict, probes: np.ndarray, gallery: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe, with the run's baseline lists re-ranked by ``model``: right at rank 1; right and above the model's
    1%-FPIR threshold; searched without its own identity, first candidate above it."""
    base = RankedLists(r["baseline.indices"], r["baseline.scores"])
    found = model.rerank(probes, base, gallery[base.indices])
    hits = r["gallery_ids"][found.indices[:, 0]] == r["probe_ids"]
    mated = r["gallery_ids"][None, :] == r["probe_ids"][:, None]
    decided, false = open_set(model, probes, mated, gallery, base.depth, found)
    return hits, decided, false


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
        _, r, probes, gallery = run_faces(Path(run), args.cache)
        hits, decided, false = replay(LookalikeModel.load(model), r, probes, gallery)
        print(f"| {run} | {Path(model).name} | {len(hits)} | {100 * hits.mean():.2f} | {100 * decided.mean():.2f} | "
              f"{100 * false.mean():.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
