"""The ``lookalike`` command line: ``embed`` and ``benchmark``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lookalike import __version__


def _common(p: argparse.ArgumentParser) -> None:
    from lookalike.matchers import MATCHERS
    from lookalike.matchers.cache import DEFAULT_CACHE

    p.add_argument("--data", required=True, help="folder-per-identity dataset, TinyFace root, or CSV manifest")
    p.add_argument("--lowres", type=int, default=None, metavar="PX",
                   help="degrade faces to about PX pixels across (TinyFace-like: 20), then upsample")
    p.add_argument("--matcher", choices=MATCHERS, default="torch",
                   help="embedding model: torch (the PyTorch port of dlib's network, default) or dlib (dlib-bin)")
    p.add_argument("--workers", type=int, default=2, help="processes for detection and embedding (default: 2)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE),
                   help=f"embedding cache (SQLite; 'none' for none; default: {DEFAULT_CACHE})")
    p.add_argument("--central-fraction", type=float, default=0.45,
                   help="when no face is detected, align within a centred square of this fraction of the "
                        "shorter side (0 = skip such images; ~0.9 for tightly cropped faces)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lookalike", description=__doc__)
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    e = sub.add_parser("embed", help="embed every image of a dataset into an .npz file",
                       description="Detect, align and embed every image; skipped images are listed with reasons.")
    _common(e)
    e.add_argument("--out", required=True, help="output .npz (paths, identities, vectors, status)")
    e.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local processes (default) or a Ray Data actor pool (needs lookalike[ray])")
    e.add_argument("--ray-address", default=None,
                   help="engine ray: an existing cluster ('auto' or host:port); default: a local Ray instance "
                        "with --workers CPUs")

    b = sub.add_parser("benchmark", help="run the closed-set identification protocol and write a report",
                       description="Split people into train/test halves (seeded), enrol one image per test person, "
                                   "search, re-rank, and write metrics.json, report.md, cmc.png and ranked lists.")
    _common(b)
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--lowres-apply", choices=("both", "probes"), default="both",
                   help="degrade probes and gallery (as TinyFace) or probes only")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--index", choices=("numpy", "faiss"), default="numpy", help="gallery search implementation")
    b.add_argument("--depth", type=int, default=100, help="candidate list length kept per probe")
    b.add_argument("--no-rerank", action="store_true", help="baseline only: no re-ranking methods")
    b.add_argument("--disambiguator", choices=("lda", "finetuned"), default="lda",
                   help="lookalike disambiguator: lda (embedding level, seconds) or finetuned (the face network's "
                        "last block fine-tuned on lookalike pairs; ~10 min on 2 CPU cores for LFW)")
    b.add_argument("--max-people", type=int, default=None, help="use a seeded subset of this many people")
    b.add_argument("--test-fraction", type=float, default=0.5)
    b.add_argument("--val-fraction", type=float, default=0.3)
    return parser


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from lookalike.benchmark import load_dataset
    from lookalike.embed import embed_paths
    from lookalike.io import save_npz
    from lookalike.matchers.align import FaceAligner
    from lookalike.matchers.cache import EmbeddingCache

    table = load_dataset(args.data)
    cache = EmbeddingCache(None if args.cache == "none" else args.cache)
    emb = embed_paths(table.paths, args.matcher, FaceAligner(args.central_fraction), args.lowres, cache,
                      args.workers, progress=not args.no_progress, engine=args.engine, ray_address=args.ray_address)
    save_npz(args.out, paths=table.paths.astype(str), identities=table.identities.astype(str),
             vectors=emb.vectors, status=emb.status.astype(str), face=emb.method.astype(str))
    summary = emb.summary()
    print(json.dumps(summary, indent=2))
    for _, msg in sorted(emb.messages.items())[:20]:
        print(f"skipped: {msg}", file=sys.stderr)
    if len(emb.messages) > 20:
        print(f"... and {len(emb.messages) - 20} more skipped", file=sys.stderr)
    return 0 if np.any(emb.ok) else 1


def cmd_benchmark(args: argparse.Namespace) -> int:
    from lookalike.benchmark import BenchmarkConfig, run_benchmark
    from lookalike.report import method_table

    cfg = BenchmarkConfig(
        data=args.data, out=args.out, seed=args.seed, lowres=args.lowres, lowres_apply=args.lowres_apply,
        matcher=args.matcher, index=args.index, depth=args.depth, workers=args.workers,
        cache=None if args.cache == "none" else args.cache, rerank=not args.no_rerank,
        disambiguator=args.disambiguator,
        test_fraction=args.test_fraction, val_fraction=args.val_fraction,
        central_fraction=args.central_fraction, max_people=args.max_people, progress=not args.no_progress)
    metrics = run_benchmark(cfg)
    p = metrics["protocol"]
    print(f"{p['name']}: {p['n_probes_searched']} probes, {p['n_gallery_searched']} gallery images "
          f"({p['n_distractors']} distractors)")
    print(method_table(metrics["methods"]))
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"embed": cmd_embed, "benchmark": cmd_benchmark}[args.command](args)
    except (FileNotFoundError, ValueError) as e:
        print(f"lookalike: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
