"""Photos known to show one person: one template, or a batch, against searching photo by photo (a measured lead).

    python benchmarks/same_person.py --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw \\
        [--cache /work/cache/lookalike.sqlite]

An investigator often knows that several photos show the same unknown person (frames of one track). For each run
(a ``lookalike benchmark`` folder with ``model.lkm``) the test probes are grouped by identity, and each group is
searched three ways with the saved model, nothing tuned: photo by photo (``lookalike-best``); as one batch
(``LookalikeModel.rerank_batch``, whatever the model's minimum batch); and as one *template*, the L2-normalised mean
of the group's embeddings searched against the whole gallery and re-ranked by the per-photo model. Rank-1 is read
per probe (each probe of a group gets its group's answer for the batch and template ways), and per person (each
person counts once: the mean over people of the fraction of their probes answered right, so LFW's 529 photos of one
man weigh as one). Prints a Markdown table; no ``identify`` option exists for it yet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lookalike.benchmark import load_saved_run
from lookalike.identify import template_vector
from lookalike.metrics import RankedLists
from lookalike.model import LookalikeModel


def search(model: LookalikeModel, queries: np.ndarray, gallery: np.ndarray, depth: int,
           exclude: np.ndarray | None = None) -> RankedLists:
    """The queries searched against the whole gallery and re-ranked by the model; ``exclude`` (Q, N) True where a
    gallery row must not be a candidate (a non-mated search)."""
    scores = queries @ gallery.T
    if exclude is not None:  # excluded rows last, and never in a list (cut to the fewest candidates left)
        scores[exclude] = -np.inf
        depth = min(depth, int((~exclude).sum(1).min()))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    lists = RankedLists(order, np.take_along_axis(scores, order, 1).astype(np.float32))
    return model.rerank(queries, lists, gallery[order])


def open_set(model: LookalikeModel, queries: np.ndarray, mated: np.ndarray, gallery: np.ndarray, depth: int,
             found: RankedLists | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per query, at the model's 1%-FPIR threshold: (right at rank 1 and above it, its non-mated search above it);
    ``found``: the queries' own :func:`search` when the caller already has it."""
    t = model.threshold(0.01)
    found = search(model, queries, gallery, depth) if found is None else found
    right = mated[np.arange(len(queries)), found.indices[:, 0]] & (found.scores[:, 0] >= t)
    return right, search(model, queries, gallery, depth, exclude=mated).scores[:, 0] >= t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, help="benchmark output folders with model.lkm")
    p.add_argument("--cache", default="cache/lookalike.sqlite", help="the runs' embedding cache")
    args = p.parse_args(argv)
    print("| run | people | probes a person (median, max) | per probe: photo by photo / one batch a person / one "
          "template a person | per person: the same | at the 1%-FPIR threshold: FPIR photo / template | DIR photo / "
          "template (per person) |\n|---|---|---|---|---|---|---|")
    for run in map(Path, args.runs):
        model, r, probes, gallery, base, mated = load_saved_run(run, args.cache)
        probe_ids = r["probe_ids"]
        groups = [np.flatnonzero(probe_ids == pid) for pid in np.unique(probe_ids)]
        alone = model.rerank(probes, base, gallery[base.indices]).indices[:, 0]
        batch = np.empty(len(probes), np.int64)
        if model.batch_ is not None:
            for g in groups:
                lists = RankedLists(base.indices[g], base.scores[g])
                batch[g] = model.rerank_batch(probes[g], lists, gallery[lists.indices]).indices[:, 0]
        templates = np.stack([template_vector(probes[g]) for g in groups])
        found_t = search(model, templates, gallery, base.depth)
        template = np.empty(len(probes), np.int64)
        for g, f in zip(groups, found_t.indices[:, 0], strict=True):
            template[g] = f
        sizes = [len(g) for g in groups]
        hits = [mated[np.arange(len(f)), f] for f in (alone, batch, template)]
        per_probe = [f"{100 * h.mean():.2f}" for h in hits]
        per_person = [f"{100 * np.mean([h[g].mean() for g in groups]):.2f}" for h in hits]
        if model.batch_ is None:
            per_probe[1] = per_person[1] = "–"
        right_p, false_p = open_set(model, probes, mated, gallery, base.depth)
        right_t, false_t = open_set(model, templates, mated[[g[0] for g in groups]], gallery, base.depth, found_t)
        fpir = f"{100 * false_p.mean():.2f} / {100 * false_t.mean():.2f}"
        dir_ = f"{100 * np.mean([right_p[g].mean() for g in groups]):.2f} / {100 * right_t.mean():.2f}"
        print(f"| {run} | {len(groups)} | {int(np.median(sizes))}, {max(sizes)} | {' / '.join(per_probe)} | "
              f"{' / '.join(per_person)} | {fpir} | {dir_} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
