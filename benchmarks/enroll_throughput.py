"""Enrolment throughput: images/s of detection + alignment + embedding, local processes vs Ray (one node).

Both engines embed the same ``--n`` LFW images (spread over the dataset) into a fresh temporary cache each
(cold numbers: every image is decoded, detected, aligned and embedded), with the same ``--workers`` and batch
size. Times include starting the engine (process pool / local Ray instance and its actors). Prints a table and
the largest difference between the two engines' embeddings.

    .venv/bin/python benchmarks/enroll_throughput.py --n 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lookalike.embed import embed_paths  # noqa: E402
from lookalike.matchers.cache import EmbeddingCache  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lfw"))
    p.add_argument("--n", type=int, default=200, help="images (spread over the dataset); 0 = all")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--matcher", default="torch")
    args = p.parse_args()

    files = sorted(str(f) for f in Path(args.data).glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no images under {args.data}")
    if args.n:
        files = files[::max(1, len(files) // args.n)][:args.n]
    rows, out = [], {}
    for engine in ("local", "ray"):
        with tempfile.TemporaryDirectory() as tmp:
            cache = EmbeddingCache(Path(tmp) / "cache.sqlite")
            t0 = time.perf_counter()
            emb = embed_paths(files, args.matcher, cache=cache, workers=args.workers, batch_size=args.batch_size,
                              progress=False, engine=engine)
            seconds = time.perf_counter() - t0
            cache.close()
        out[engine] = emb
        rows.append(f"| {engine} | {args.workers} | {len(files)} | {int(emb.ok.sum())} | {seconds:.1f} | "
                    f"{len(files) / seconds:.2f} |")
    print(f"{args.matcher} matcher, batch size {args.batch_size}, cold cache\n")
    print("| engine | workers | images | embedded | seconds | images/s |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    same = np.array_equal(out["local"].status, out["ray"].status)
    diff = float(np.abs(out["local"].vectors - out["ray"].vectors).max()) if same else float("nan")
    print(f"\nsame statuses: {same}; max |local - ray| embedding difference: {diff:.2e}")


if __name__ == "__main__":
    main()
