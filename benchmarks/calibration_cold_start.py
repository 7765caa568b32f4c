"""A model's first calibration on a gallery: the sample searched once (as deep as the model reaches) or twice.

    OPENBLAS_NUM_THREADS=1 python benchmarks/calibration_cold_start.py --run runs/lfw-lowres20 \\
        --cache /work/cache/lookalike.sqlite [--pad 1000000]

``identify`` with a model calibrates on the gallery itself (:mod:`lookalike.calibration`): a seeded sample of up to
2,000 gallery faces, each searched against the other subjects, gives the base-score thresholds (2 subjects deep) and,
re-ranked by the model, the model's (its reach + 1 subjects deep). The reference searches the sample twice, once per
depth, as ``identify`` did before; the new path searches it once at the model's depth and derives both. The run's
LFW test gallery is enrolled from the embedding cache and padded with synthetic subjects (for timing only); the
script prints both paths' seconds and checks that they give the same thresholds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from identify_latency import pad

from lookalike import calibration
from lookalike.data.protocol import Protocol
from lookalike.gallery import Gallery
from lookalike.matchers.cache import EmbeddingCache
from lookalike.model import LookalikeModel


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a lookalike benchmark folder (protocol/, model.lkm)")
    ap.add_argument("--cache", required=True, help="embedding cache holding the run's gallery embeddings")
    ap.add_argument("--pad", type=int, default=100_000, help="subjects in the padded gallery")
    args = ap.parse_args()
    run = Path(args.run)
    model = LookalikeModel.load(run / "model.lkm")
    t = Protocol.load(run / "protocol").table
    rows = np.isin(t.roles, ("gallery", "distractor"))
    print("| gallery subjects | reference: base search (depth 2) | + model search (depth "
          f"{model.reach + 1}) | = total | new: one search (depth {model.reach + 1}) | + model (no search) | = total "
          "| same thresholds |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery.create(Path(tmp) / "g.sqlite", matcher=model.matcher, lowres=model.gallery_lowres,
                           aligner=model.aligner)
        g.enroll(list(t.paths[rows]), list(t.identities[rows]), cache=EmbeddingCache(args.cache), progress=False)
        for size in sorted({len(g.subjects()), args.pad}):
            pad(g, size)
            old, old_draw = timed(calibration.draw, g, 2)
            old_top, old_model = timed(calibration.model_top, old, g, model)
            new, new_draw = timed(calibration.draw, g, model.reach + 1)
            new_top, new_model = timed(calibration.model_top, new, g, model)
            same = (calibration.summary(old) == calibration.summary(new)
                    and np.array_equal(old_top, new_top))
            print(f"| {len(g.subjects()):,} | {old_draw:.2f} s | {old_model:.2f} s | {old_draw + old_model:.2f} s | "
                  f"{new_draw:.2f} s | {new_model:.2f} s | {new_draw + new_model:.2f} s | {same} |")
        g.close()


if __name__ == "__main__":
    main()
