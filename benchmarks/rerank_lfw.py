"""Re-ranking benchmark on the LFW protocol (seed 0): full resolution and ~20 px faces, from the cache.

Fits every default method on the train faces (tuning on the validation split), re-ranks the test split
and prints rank-k, mAP, the rank-1 bootstrap CI and McNemar's test against the baseline.

    PYTHONPATH=src .venv/bin/python benchmarks/rerank_lfw.py [--lowres full 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from lookalike.data.folders import load_folders
from lookalike.data.protocol import make_protocol
from lookalike.experiment import build_split, embed_protocol
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import evaluate, first_hits, mcnemar
from lookalike.report import rows_table
from lookalike.rerank import default_methods


def load(lfw: str, cache: str, lowres: int | None, seed: int, depth: int):
    p = make_protocol(load_folders(lfw), seed=seed, lowres=lowres)
    f = embed_protocol(p, cache=EmbeddingCache(cache), workers=2, progress=False)
    return f.faces("train"), build_split(f, "val", depth), build_split(f, "test", depth)


def run(train, val, test, seed: int) -> list[dict]:
    base_pos = test.positions()
    base_hits = first_hits(base_pos) == 0
    rows = [{"method": "baseline", **evaluate(base_pos), "mcnemar_p": 1.0, "fixed": 0, "broken": 0, "fit_s": 0.0}]
    for m in default_methods(seed):
        t0 = time.perf_counter()
        m.fit(train, val)
        fit_s = time.perf_counter() - t0
        pos = test.positions(m.rerank(test))
        rows.append({"method": m.name, **evaluate(pos), **mcnemar(base_hits, first_hits(pos) == 0), "fit_s": fit_s,
                     "stats": {k: v for k, v in m.stats.items() if k != "disambiguator"}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--cache", default="cache/lookalike.sqlite")
    ap.add_argument("--lowres", nargs="+", default=["full", "20"], help="'full' and/or face widths in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--json", default=None, help="also write every row (with method stats) here")
    args = ap.parse_args()
    out = {}
    for lr in args.lowres:
        lowres = None if lr == "full" else int(lr)
        train, val, test = load(args.lfw, args.cache, lowres, args.seed, args.depth)
        print(f"\n== LFW seed {args.seed}, {'full resolution' if lowres is None else f'{lowres} px'}: "
              f"{len(train)} train images, val {len(val.probes)} probes / {len(val.gallery)} gallery, "
              f"test {len(test.probes)} probes / {len(test.gallery)} gallery", flush=True)
        rows = run(train, val, test, args.seed)
        print(rows_table(rows, "fit_s"), flush=True)
        out[lr] = rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))


if __name__ == "__main__":
    main()
