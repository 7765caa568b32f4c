"""Quality-aware fusion: should the fusion weight depend on how good the probe face is?

For each benchmark run's protocol the saved model is refitted as the benchmark does (disambiguator, selection,
normalisers and weight tuned on validation); then, on the **validation** lists only, the fusion weight is chosen
either once for all probes (today) or once per quality tertile of the probes, by rank-1 (ties: mean reciprocal
rank) over the weights the model chooses among. Both are scored by 2-fold cross-validation over the validation
probes (weights chosen on one half, counted on the other), so the per-tertile variant gets no credit for its
extra parameters. Quality covariates, computed from the probe's vector and its list alone:

* ``typicality``: cosine of the probe to the mean train face (degraded faces drift towards the mean face);
* ``top1``: the probe's best base score.

The rule, written before the first run: a covariate's per-tertile weights are worth building into the fusion if
their cross-validated rank-1 beats the single weight's on every run given (LFW seeds 0 and 1 and PubFig at ~20 px,
and LFW with the realistic degradation); otherwise nothing is built and the README notes the numbers.

    python benchmarks/quality_fusion.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw-lowres20-realistic
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from validation_runs import runs_parser, save_json, validation_data

from lookalike.benchmark import run_model
from lookalike.model import LookalikeModel
from lookalike.rerank.lookalike import DEFAULT_WEIGHTS
from lookalike.rerank.selection import reorder
from lookalike.rerank.tuning import LabelledLists

BINS = 3


def per_probe(model: LookalikeModel, val: LabelledLists) -> tuple[np.ndarray, np.ndarray]:
    """(hit at rank 1, reciprocal rank) per validation probe (rows) and weight (columns)."""
    r = model.reranker_
    base, cands = val.lists.scores, val.candidates
    d = r.disambiguator_.score_lists(val.probes.vectors, cands, ids=val.lists.indices)
    mask = r.selection_.select(base, cands)
    hits, rr = [], []
    for w in DEFAULT_WEIGHTS:
        labels = val.labels(reorder(val.lists, mask, r.fusion_.with_weight(w).fuse(base, d)))
        first = np.where(labels.any(1), labels.argmax(1), np.inf)
        hits.append(first == 0)
        rr.append(1.0 / (first + 1))
    return np.stack(hits, 1), np.stack(rr, 1)


def best_weight(hits: np.ndarray, rr: np.ndarray) -> int:
    """Column with the most rank-1 hits, ties by mean reciprocal rank, then the first."""
    return max(range(hits.shape[1]), key=lambda j: (hits[:, j].mean(), rr[:, j].mean(), -j))


def cross_validated(hits: np.ndarray, rr: np.ndarray, q: np.ndarray | None, seed: int) -> float:
    """Rank-1 over all probes, each probe's weight chosen on the other half (per quality tertile if ``q``)."""
    fold = np.random.default_rng(seed).permutation(len(hits)) % 2 == 0
    out = np.zeros(len(hits), bool)
    for train in (fold, ~fold):
        test = ~train
        if q is None:
            out[test] = hits[test, best_weight(hits[train], rr[train])]
            continue
        edges = np.quantile(q[train], np.linspace(0, 1, BINS + 1)[1:-1])
        bins = np.digitize(q, edges)
        for b in range(BINS):
            tr, te = train & (bins == b), test & (bins == b)
            j = best_weight(hits[tr], rr[tr]) if tr.any() else best_weight(hits[train], rr[train])
            out[te] = hits[te, j]
    return float(out.mean())


def main() -> None:
    args = runs_parser(__doc__).parse_args()
    wins = {"typicality": [], "top1": []}
    print("| run | val probes | chosen weight | single weight (CV) | per tertile: typicality (CV) "
          "| per tertile: top1 (CV) |")
    print("|---|---|---|---|---|---|")
    for run in args.runs:
        cfg, features, train, split = validation_data(run, args.cache)
        seed = cfg.seed
        model = run_model(cfg, features.protocol).fit(train, split.probes, split.gallery)
        val = LabelledLists.search(split.probes, split.gallery, cfg.depth)
        hits, rr = per_probe(model, val)
        mean = train.vectors.mean(0)
        covariates = {"typicality": val.probes.vectors @ (mean / np.linalg.norm(mean)),
                      "top1": val.lists.scores[:, 0]}
        single = cross_validated(hits, rr, None, seed)
        cv = {k: cross_validated(hits, rr, q, seed) for k, q in covariates.items()}
        for k in wins:
            wins[k].append(cv[k] > single)
        print(f"| {Path(run).name} | {len(hits)} | {model.reranker_.fusion_.weight} | {100 * single:.2f} | "
              f"{100 * cv['typicality']:.2f} | {100 * cv['top1']:.2f} |")
    adopt = [k for k, v in wins.items() if all(v)]
    print(f"\nrule: per-tertile weights for a covariate that beats the single weight on every run -> "
          f"{', '.join(adopt) or 'none'}")
    save_json(args.out, {"wins": wins, "adopt": adopt})


if __name__ == "__main__":
    main()
