"""The probe's cohort term: does it earn its cost, and may it be taken over a sample of the cohort?

The disambiguator's score is ``cos(z_p, z_g) - c(p) - c(g)``, where ``c`` is a face's mean similarity to its 50
nearest cohort (train) faces. The gallery term ``c(g)`` is prepared once per gallery face; the probe term
``c(p)`` reads the whole cohort for every search, and it is most of what re-ranking one search costs (issue 7:
re-ranking may add at most 10% to search + re-rank at 100,000 subjects). ``c(p)`` shifts every candidate of a
probe's list alike, and the score normaliser is one affine map for all lists, so the order of every list (rank-1,
CMC, mAP) is the same with it, without it, or with it over a sample of the cohort (checked here); only the final
scores' level per probe changes, that is the open-set decisions.

For each benchmark run's protocol, **validation only**: the saved model (``LookalikeModel``, every choice tuned on
validation as the benchmark does) re-ranks the validation lists, with its thresholds calibrated on the non-mated
validation searches as training does; then the same (thresholds calibrated anew) with the probe term over a
seeded sample of 500, 1,000 or 2,000 cohort faces (the nearest 50 times the sample's share of the cohort), and
with it left out. Printed: DIR (1 - FNIR) at FPIR 1% and 10% from the validation mated searches and those
thresholds. A run whose model chose no cohort has no probe term (every column the same).

The rules, written before the first run: (1) the probe term is dropped if, on every run given, the model without
it loses at most 0.5 points of validation DIR at FPIR 1% and at most 0.5 at FPIR 10%; otherwise it is kept.
(2) If kept, the library takes a probe's term over the smallest sample of 500, 1,000 and 2,000 within the same
0.5 points of the whole cohort's DIR at both FPIRs on every run given; if none is, over the whole cohort (as
today). Runs: LFW seeds 0 and 1 and PubFig at ~20 px (flip matcher), LFW seeds 0 and 1 and PubFig at full
resolution.

    python benchmarks/probe_cohort.py --cache /work/cache/lookalike.sqlite --runs runs/lfw-lowres20 \\
        runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw runs/lfw-s1 runs/pubfig
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from validation_runs import runs_parser, save_json, validation_data

from lookalike.benchmark import run_model
from lookalike.disambiguators.base import EmbeddingDisambiguator, distinct_rows, nearest_mean
from lookalike.faces import FaceSet
from lookalike.metrics import fnir_at_fpir
from lookalike.rerank.lookalike import rerank_faces
from lookalike.rerank.tuning import LabelledLists

TOLERANCE = 0.005  # DIR (fraction) a variant may lose at each FPIR
FPIRS = (0.01, 0.1)
SIZES = (500, 1000, 2000)


def set_probe_term(d: EmbeddingDisambiguator, size: int | None, seed: int = 0) -> None:
    """Make this fitted disambiguator take probes' cohort terms over a seeded sample of ``size`` cohort faces (the
    nearest ``cohort_n`` times the sample's share), or leave them out (``size`` 0), or as fitted (None): an
    instance override, experiment only."""
    d.__dict__.pop("_score_lists", None)
    if size is None:
        return
    sample = np.ascontiguousarray(d.cohort_[np.sort(np.random.default_rng([seed, 1]).choice(len(d.cohort_), size,
                                                                                             replace=False))])
    n = max(1, round(d.cohort_n * size / len(d.cohort_)))

    def score_lists(probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        rows, inverse = distinct_rows(candidates, ids)
        p, (c, cc) = d.transform(probes), d._prepare_gallery(rows)
        cp = d.cohort_beta / 2 * nearest_mean(p, sample, n) if size else np.zeros(len(p))
        return np.einsum("qd,qkd->qk", p, c[inverse]) - cp[:, None] - cc[inverse]

    d._score_lists = score_lists


def open_set(model, val: LabelledLists, everyone: FaceSet) -> tuple[np.ndarray, dict[str, float]]:
    """(re-ranked validation lists' gallery ids, DIR/FNIR at FPIRS with thresholds from non-mated val searches)."""
    lists = rerank_faces(model, val.probes, val.gallery, val.lists)
    hit = val.labels(lists)[:, 0]
    return lists.indices, fnir_at_fpir(lists.scores[:, 0], hit, model._nonmated_top(everyone, val.gallery), FPIRS)


def validation(run: Path, cache: str) -> dict:
    cfg, features, train, split = validation_data(run, cache)
    model = run_model(cfg, features.protocol).fit(train, split.probes, split.gallery)
    val = LabelledLists.search(split.probes, split.gallery, cfg.depth)
    everyone = FaceSet.concat(split.probes, split.gallery)
    d = model.disambiguator_
    ids, rates = open_set(model, val, everyone)
    out = {"chosen": model.reranker_.stats["disambiguator"], "cohort": 0 if d.cohort_ is None else len(d.cohort_),
           "val_rank1": model.reranker_.stats["val_rank1"], "whole": rates}
    for variant in (*SIZES, "without"):
        if d.cohort_ is not None:  # without a cohort there is no probe term: every variant is the model itself
            set_probe_term(d, 0 if variant == "without" else min(variant, len(d.cohort_)), cfg.seed)
        variant_ids, out[variant] = open_set(model, val, everyone)
        if not np.array_equal(ids, variant_ids):
            raise AssertionError(f"{run}: the probe term ({variant}) changed the order of a list")
    return out


def within(results: dict, variant: str | int) -> bool:
    """``variant`` loses at most TOLERANCE of the whole cohort's DIR at every FPIR on every run."""
    return all(r[variant][f"dir@fpir={f:g}"] >= r["whole"][f"dir@fpir={f:g}"] - TOLERANCE
               for r in results.values() for f in FPIRS)


def main() -> None:
    args = runs_parser(__doc__).parse_args()
    results = {}
    variants = ["whole", *SIZES, "without"]
    print(f"validation DIR (%) at FPIR {' / '.join(f'{100 * f:g}%' for f in FPIRS)} by the probe term's cohort\n")
    print(f"| run | cohort faces | val rank-1 | {' | '.join(map(str, variants))} |")
    print(f"|---|---|---|{'---|' * len(variants)}")
    for run in args.runs:
        r = results[run] = validation(Path(run), args.cache)
        cells = [" / ".join(f"{100 * r[v][f'dir@fpir={f:g}']:.2f}" for f in FPIRS) for v in variants]
        print(f"| {Path(run).name} | {r['cohort']} | {100 * r['val_rank1']:.2f} | {' | '.join(cells)} |", flush=True)
    drop = within(results, "without")
    size = None if drop else next((s for s in SIZES if within(results, s)), None)
    print(f"\nrule 1: drop the probe term if it costs at most {100 * TOLERANCE:.1f} points of validation DIR at every "
          f"FPIR on every run -> {'drop' if drop else 'keep'}")
    if not drop:
        print(f"rule 2: the smallest sample of {SIZES} within {100 * TOLERANCE:.1f} points of the whole cohort's DIR "
              f"at every FPIR on every run -> {size or 'none: the whole cohort'}")
    save_json(args.out, {"results": results, "drop": drop, "probe_cohort_size": size})


if __name__ == "__main__":
    main()
