"""Pooled network features in the full-resolution default model: chosen on LFW validation, measured on PubFig.

``pooled_features.py`` found, on validation only, that the six LDA variants fitted on the network's pooled features
(256-d, before dlib's fc layer) gain +0.6 to +1.1 rank-1 on LFW at full resolution, and lose on PubFig, whose train
half is 53 people. The shipped full-resolution default model is fitted on 3,947 LFW people who are not PubFig people,
so PubFig's small train half is not in its way. This script refits that model (the recipe of
``benchmarks/default_model.py --lowres full``: ``lookalike train`` on ``runs/default-model/lfw-without-pubfig.csv``,
seed 0, its own validation split of LFW people) with the default LDA grid (``lda``), with the pooled-feature LDA
variants added (``lda+pooled``) and with the summed variants added (``lda+sum``: each LDA on the embedding plus the
same LDA on the pooled features), then re-ranks PubFig benchmark runs' baseline lists (full resolution, the plain
``torch`` matcher; no training on PubFig) with each model.

The rule, written before the first run:

1. on the model's LFW validation split, pick the better of ``lda+pooled`` and ``lda+sum`` by validation rank-1
   (ties: ``lda+pooled``, the simpler); it is a candidate only if it beats ``lda`` there;
2. the candidate is built into the product (galleries storing the pooled features, the default model holding the
   pooled LDA) only if, per photo on PubFig seeds 0 and 1 (``runs/pubfig``, ``runs/pubfig-s1``), it gains at least
   +1 rank-1 over the plain matcher with exact McNemar p < 0.01 **and** beats the ``lda`` model (the shipped
   recipe) on both seeds. Otherwise the README reports the numbers and nothing is built.

As diagnostics (no rule): each model's chosen disambiguator ranking the whole test gallery by itself (global) and
alone over the model's selected top (disamb-only), the issue's comparison for re-ranking the top.

    python benchmarks/pooled_transfer.py --cache /work/cache/lookalike.sqlite --runs runs/pubfig runs/pubfig-s1 \\
        [--manifest runs/default-model/lfw-without-pubfig.csv] [--out runs/pooled-transfer.json]
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
from model_decisions import run_faces
from pooled_features import FeatureTable, OnFeatures, PooledFeatures, Summed, vector_keys
from validation_runs import global_rank1, save_json

from lookalike.benchmark import load_dataset
from lookalike.data.protocol import make_protocol
from lookalike.embed import embed_paths
from lookalike.experiment import build_split, embed_protocol
from lookalike.matchers.align import FaceAligner
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import RankedLists, evaluate, mcnemar
from lookalike.model import LookalikeModel
from lookalike.rerank import DisambiguatorPool, default_disambiguators
from lookalike.rerank.baselines import DisambiguatorOnly
from lookalike.rerank.tuning import LabelledLists
from lookalike.versions import versions

GRIDS = ("lda", "lda+pooled", "lda+sum")


def pooled(paths: np.ndarray, vectors: np.ndarray, aligner: FaceAligner, cache: str) -> FeatureTable:
    """Each face's pooled features (full resolution), keyed by its matcher embedding's bytes."""
    store = EmbeddingCache(cache)
    try:
        emb = embed_paths(paths, PooledFeatures(), aligner, None, store, 2, progress=False, desc="pooled")
    finally:
        store.close()
    if not emb.ok.all():
        raise RuntimeError(f"{(~emb.ok).sum()} faces failed")
    return FeatureTable(zip(vector_keys(vectors), emb.vectors, strict=True))


def fit_models(manifest: str, cache: str) -> tuple[dict[str, LookalikeModel], dict, dict, FeatureTable]:
    """The default full-resolution model's recipe fitted with each grid of :data:`GRIDS` on LFW without PubFig:
    (the models, their validation figures, each model's disambiguator alone over a top-k tuned on validation
    (``lookalike-disamb-only``), the pooled-feature table)."""
    protocol = make_protocol(load_dataset(manifest), seed=0, test_fraction=0.0, val_fraction=0.3, name="train",
                             require_test=False)
    aligner = FaceAligner()
    store = EmbeddingCache(cache)
    try:
        features = embed_protocol(protocol, "torch", store, aligner, 2, progress=False)
    finally:
        store.close()
    train, val = features.faces("train"), build_split(features, "val", 100)
    sets = [train, val.probes, val.gallery]
    table = pooled(np.concatenate([s.paths for s in sets]), np.concatenate([s.vectors for s in sets]), aligner, cache)
    lda = default_disambiguators(0)
    grids = {"lda": lda, "lda+pooled": lda + [OnFeatures(table, "pooled", copy.deepcopy(d)) for d in lda],
             "lda+sum": lda + [Summed(table, "pooled", copy.deepcopy(d)) for d in lda]}
    pool, models, val_out, only = DisambiguatorPool(seed=0), {}, {}, {}
    lists = LabelledLists.search(val.probes, val.gallery, 100)
    for name, ds in grids.items():
        t = time.perf_counter()
        m = models[name] = LookalikeModel("torch", None, aligner, ds, depth=100, seed=0, pool=pool)
        m.fit(train, val.probes, val.gallery, val.gallery_as_probes)
        st = m.reranker_.stats
        val_out[name] = {"val_rank1": st["val_rank1"], "chosen": repr(st["disambiguator"])[:80],
                         "selection": st["selection"], "weight": st["weight"],
                         "global_rank1": global_rank1(m.disambiguator_, val),
                         "seconds": round(time.perf_counter() - t, 1)}
        only[name] = DisambiguatorOnly(m.disambiguator_, pool=pool).fit(train, lists)
        val_out[name]["disamb_only_rank1"] = only[name].stats["val_rank1"]
    val_out["baseline"] = {"val_rank1": evaluate(val.positions(), n_boot=0)["rank1"]}
    return models, val_out, only, table


def transfer(run: Path, models: dict[str, LookalikeModel], only: dict, table: FeatureTable, cache: str) -> dict:
    """Rank-1 of the plain matcher and of each model on one PubFig run's test probes (per photo)."""
    cfg, r, probes, gallery = run_faces(run, cache)
    if cfg.lowres or (cfg.matcher or "torch") != "torch":
        raise SystemExit(f"{run}: not a full-resolution torch run")
    for paths, vectors in ((r["probe_paths"], probes), (r["gallery_paths"], gallery)):
        table.update(pooled(paths, vectors, cfg.aligner(), cache))
    truth, gids = r["probe_ids"], r["gallery_ids"]
    base = RankedLists(r["baseline.indices"], r["baseline.scores"])
    base_hits = gids[base.indices[:, 0]] == truth
    out = {"probes": len(truth), "baseline": float(base_hits.mean()), "models": {}}
    hits = {}
    for name, m in models.items():
        found = m.rerank(probes, base, gallery[base.indices])
        hits[name] = gids[found.indices[:, 0]] == truth
        glob = gids[m.disambiguator_.score_matrix(probes, gallery).argmax(1)] == truth
        alone = gids[only[name].rerank(probes, base, gallery[base.indices]).indices[:, 0]] == truth
        out["models"][name] = {"rank1": float(hits[name].mean()), "vs_baseline": mcnemar(base_hits, hits[name]),
                               "vs_lda": mcnemar(hits["lda"], hits[name]), "global_rank1": float(glob.mean()),
                               "disamb_only_rank1": float(alone.mean())}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="PubFig full-resolution benchmark folders")
    p.add_argument("--manifest", default="runs/default-model/lfw-without-pubfig.csv", help="default_model.py's CSV")
    p.add_argument("--cache", default="cache/lookalike.sqlite", help="embedding cache")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    models, val, only, table = fit_models(args.manifest, args.cache)
    print(f"LFW without PubFig, validation rank-1: baseline {100 * val['baseline']['val_rank1']:.2f}")
    for g in GRIDS:
        v = val[g]
        print(f"  {g:11s} {100 * v['val_rank1']:.2f} (global {100 * v['global_rank1']:.2f}, disamb-only "
              f"{100 * v['disamb_only_rank1']:.2f}) chose {v['chosen']} "
              f"{v['selection']} w {v['weight']} ({v['seconds']} s)")
    best = max(("lda+pooled", "lda+sum"), key=lambda g: (val[g]["val_rank1"], g == "lda+pooled"))
    candidate = best if val[best]["val_rank1"] > val["lda"]["val_rank1"] else None
    print(f"rule step 1: {best} is the better; candidate: {candidate}")
    results = {"validation": val, "candidate": candidate, "runs": {}, "versions": versions()}
    for run in map(Path, args.runs):
        t = results["runs"][str(run)] = transfer(run, models, only, table, args.cache)
        print(f"\n{run}: {t['probes']} probes, plain matcher {100 * t['baseline']:.2f}")
        for g, m in t["models"].items():
            b, vl = m["vs_baseline"], m["vs_lda"]
            print(f"  {g:11s} {100 * m['rank1']:.2f} vs baseline {100 * (m['rank1'] - t['baseline']):+.2f} "
                  f"(p {b['mcnemar_p']:.2g}; {b['fixed']} / {b['broken']}), vs lda (p {vl['mcnemar_p']:.2g}; "
                  f"{vl['fixed']} / {vl['broken']}); global {100 * m['global_rank1']:.2f}, disamb-only "
                  f"{100 * m['disamb_only_rank1']:.2f}")
    if candidate:
        ok = all(r["models"][candidate]["rank1"] - r["baseline"] >= 0.01
                 and r["models"][candidate]["vs_baseline"]["mcnemar_p"] < 0.01
                 and r["models"][candidate]["rank1"] > r["models"]["lda"]["rank1"] for r in results["runs"].values())
    else:
        ok = False
    results["build"] = ok
    print(f"\nrule step 2: build {candidate} into the product -> {ok}")
    save_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
