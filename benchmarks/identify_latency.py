"""Identify latency per probe photo, split into detection+alignment, embedding, search and re-ranking.

Galleries: the LFW test gallery of a benchmark run (its enrolled images and distractors, real faces) and the
same padded with synthetic distractor subjects to ``--pad`` subjects (vectors drawn from a Gaussian with the
real gallery vectors' mean and covariance, L2-normalised; labelled ``synthetic-*``; for timing only). The
model is the run's ``model.lkm``. Prints a Markdown table (milliseconds per probe photo, median and mean) and
the share of re-ranking in search + re-ranking.

    python benchmarks/identify_latency.py --run runs/lfw-lowres20 --cache /work/cache/lookalike.sqlite
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike.data.protocol import Protocol
from lookalike.gallery import Gallery
from lookalike.identify import Identifier
from lookalike.matchers.cache import EmbeddingCache
from lookalike.model import LookalikeModel

STAGES = ("detect_align_s", "embed_s", "search_s", "rerank_s")


def pad(gallery: Gallery, n_subjects: int, seed: int = 0, chunk: int = 20_000) -> int:
    """Add synthetic subjects (one vector each) until the gallery holds ``n_subjects``."""
    real = np.asarray(gallery.vectors_, np.float64)
    mean, cov = real.mean(0), np.cov(real, rowvar=False)
    rng = np.random.default_rng(seed)
    todo = n_subjects - len(gallery.subjects())
    for s in range(0, todo, chunk):
        n = min(chunk, todo - s)
        v = rng.multivariate_normal(mean, cov, n)
        v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
        gallery.add_embeddings([f"synthetic-{s + i:07d}" for i in range(n)], v, source="synthetic")
    return todo


def time_probes(ident: Identifier, probes: list[str], top: int) -> dict[str, np.ndarray]:
    per = {k: [] for k in (*STAGES, "total_s")}
    for p in probes:
        before = dict(ident.timing)
        t = time.perf_counter()
        ident.identify_path(p, top=top)
        per["total_s"].append(time.perf_counter() - t)
        for k in STAGES:
            per[k].append(ident.timing.get(k, 0.0) - before.get(k, 0.0))
    return {k: np.asarray(v) for k, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a `lookalike benchmark` output folder (protocol/, model.lkm)")
    ap.add_argument("--cache", default="cache/lookalike.sqlite", help="embedding cache (warm: enrolment is fast)")
    ap.add_argument("--pad", type=int, default=100_000, help="subjects in the padded gallery")
    ap.add_argument("--probes", type=int, default=100, help="probe photos timed (seeded sample of test probes)")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = Path(args.run)
    protocol = Protocol.load(run / "protocol")
    model = LookalikeModel.load(run / "model.lkm")
    t = protocol.table
    rows = np.isin(t.roles, ("gallery", "distractor"))
    probes = list(np.random.default_rng(args.seed).choice(t.paths[t.roles == "probe"], args.probes, replace=False))
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery.create(Path(tmp) / "g.sqlite", matcher=model.matcher, lowres=model.gallery_lowres,
                           aligner=model.aligner)
        rep = g.enroll(list(t.paths[rows]), list(t.identities[rows]), cache=EmbeddingCache(args.cache),
                       progress=False)
        print(f"enrolled {rep.added} LFW test-gallery images ({len(g.subjects())} subjects) in {rep.seconds:.1f} s")
        results = []
        for label in ("LFW test gallery", f"padded to {args.pad:,} subjects (synthetic)"):
            if label.startswith("padded"):
                t0 = time.perf_counter()
                added = pad(g, args.pad, args.seed)
                print(f"added {added:,} synthetic subjects in {time.perf_counter() - t0:.1f} s")
            for name, m in (("baseline", None), ("lookalike model", model)):
                ident = Identifier(g, m)
                t0 = time.perf_counter()
                ident.calibration()  # with a model: its final score on the gallery's sample (once per 10% growth)
                print(f"{label}, {name}: calibration {time.perf_counter() - t0:.2f} s")
                ident.prepare_gallery()
                time_probes(ident, probes[:3], args.top)  # warm-up: matcher, caches
                results.append((label, len(g.subjects()), name, time_probes(ident, probes, args.top)))
        g.close()
    print(f"\nIdentify latency per probe photo (ms; median / mean over {args.probes} LFW probe photos; "
          f"model {model.describe_short()['selection']}, lowres {model.lowres})\n")
    print("| gallery | subjects | method | detect+align | embed | search | re-rank | total | re-rank share of "
          "search+re-rank |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, n, name, per in results:
        cell = {k: f"{1e3 * np.median(v):.1f} / {1e3 * np.mean(v):.1f}" for k, v in per.items()}
        share = per["rerank_s"].sum() / max(per["search_s"].sum() + per["rerank_s"].sum(), 1e-12)
        print(f"| {label} | {n:,} | {name} | {cell['detect_align_s']} | {cell['embed_s']} | {cell['search_s']} | "
              f"{cell['rerank_s']} | {cell['total_s']} | {100 * share:.1f}% |")


if __name__ == "__main__":
    main()
