"""Do a model's open-set thresholds hold on another gallery? Thresholds from validation people vs from the gallery.

    python benchmarks/threshold_drift.py --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw \\
        runs/pubfig [--cache /work/cache/lookalike.sqlite]

A saved model's thresholds (``model.lkm``) are calibrated on its validation split: every validation face searched
against the validation gallery without its own identity, the final score at rank 1. The highest non-mated score
grows with the gallery searched, and a user's gallery is not the validation gallery. For each run (a ``lookalike
benchmark`` folder) the test probes are searched against the test gallery without their own identity (non-mated),
and the fraction whose first final score passes the threshold (the FPIR actually obtained) is printed for the
model's own thresholds and for the thresholds ``identify`` uses: the test gallery is put in a gallery (SQLite, in a
temporary folder) and ``Identifier.threshold`` answers, which takes a threshold from the gallery itself
(:mod:`lookalike.calibration`: a seeded sample of up to 2,000 gallery faces, each searched against the other
subjects and re-ranked by the model) when the sample holds enough searches for the FPIR, else the model's; with DIR
(mate first and above the threshold). Nothing is tuned: the test probes only measure.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from same_person import search
from validation_runs import runs_parser

from lookalike.benchmark import load_saved_run, run_config
from lookalike.calibration import FPIRS
from lookalike.gallery import Gallery
from lookalike.identify import Identifier
from lookalike.matchers.align import FaceAligner
from lookalike.matchers.cache import EmbeddingCache
from lookalike.model import LookalikeModel


@contextmanager
def gallery_identifier(model: LookalikeModel, subjects: np.ndarray, vectors: np.ndarray,
                       paths: np.ndarray | None = None, cache: str | None = None,
                       aligner: FaceAligner | None = None) -> Iterator[Identifier]:
    """``identify``'s :class:`Identifier` with ``model`` on a temporary gallery of these faces (SQLite), aligned by
    ``aligner`` (default: the model's); with ``paths``, enrolled from the image files through ``cache`` (a model that
    prepares probes otherwise than the gallery calibrates by cutting the sampled faces again from their files),
    checked to give ``vectors``."""
    with tempfile.TemporaryDirectory() as tmp, \
            Gallery.create(Path(tmp) / "g.sqlite", matcher=model.matcher, lowres=model.gallery_lowres,
                           aligner=aligner or model.aligner) as g:
        if paths is None:
            g.add_embeddings(subjects.astype(str), vectors)
        else:
            g.enroll(list(paths.astype(str)), list(subjects.astype(str)), cache=EmbeddingCache(cache), progress=False)
            got = np.asarray(g.vectors_)
            if got.shape != vectors.shape or not np.allclose(got, vectors, atol=1e-5):
                raise SystemExit("the enrolled gallery differs from the run's gallery vectors")
        yield Identifier(g, model)


def identify_thresholds(model: LookalikeModel, subjects: np.ndarray, vectors: np.ndarray,
                        paths: np.ndarray | None = None, cache: str | None = None,
                        aligner: FaceAligner | None = None) -> dict[float, tuple]:
    """{FPIR: (threshold, where it was calibrated)} as ``identify`` decides on a gallery of these faces."""
    with gallery_identifier(model, subjects, vectors, paths, cache, aligner) as ident:
        return {f: ident.threshold(f) for f in FPIRS}


def main(argv: list[str] | None = None) -> int:
    args = runs_parser(__doc__).parse_args(argv)
    print("| run | gallery faces | validation searches | FPIR asked | threshold: model / identify (calibrated on) | "
          "FPIR obtained: model / identify | DIR: model / identify |\n|---|---|---|---|---|---|---|")
    for run in map(Path, args.runs):
        model, r, probes, gallery, base, mated = load_saved_run(run, args.cache)
        found = model.rerank(probes, base, gallery[base.indices])
        first_right = mated[np.arange(len(probes)), found.indices[:, 0]]
        enrolled = mated.any(1)
        nonmated = search(model, probes, gallery, base.depth, exclude=mated).scores[:, 0]
        one_sided = model.probe_lowres != model.gallery_lowres  # enrolled from the files: see gallery_identifier
        own = identify_thresholds(model, r["gallery_ids"], gallery, r["gallery_paths"] if one_sided else None,
                                  args.cache, run_config(run).aligner(model.aligner))  # as load_saved_run embedded
        for f in FPIRS:
            t = (model.threshold(f), own[f][0])
            got = [100 * np.mean(nonmated >= x) for x in t]
            dir_ = [100 * np.mean((first_right & (found.scores[:, 0] >= x))[enrolled]) for x in t]
            print(f"| {run} | {len(gallery)} | {model.training_['n_nonmated_searches']} | {100 * f:g}% | "
                  f"{t[0]:.3f} / {t[1]:.3f} ({own[f][1]}) | {got[0]:.2f} / {got[1]:.2f} | "
                  f"{dir_[0]:.2f} / {dir_[1]:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
