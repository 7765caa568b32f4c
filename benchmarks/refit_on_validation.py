"""Refit the chosen disambiguator on the tuning people too? A saved model's disambiguator learns from the train people
only; the validation people (30% of a `lookalike train` run's people) only tune and calibrate it. The gain comes
from whitening same-person variation (README: "Does mining lookalikes matter?"), whose estimate improves with more
people (README: "How many genuine pairs per person?"), so refitting the chosen configuration on train + validation
people might gain. Measured without touching a test split, one level down: each run's train people are split (seeded,
30% of the people) into inner train and inner validation people (enrolled like a validation split: one gallery image
per person, the rest probes, single-image people as distractors); the model is fitted on the inner train people and
tuned on the inner validation split (``as tuned``), then its chosen disambiguator is fitted again, same parameters, on
all the run's train people (``refitted``; selection, normaliser and weight kept); both are scored on the run's own
validation split, which neither saw. **Validation only.**

The rule, written before the first run: ``train`` and the benchmark refit the chosen disambiguator on train +
validation people if ``refitted`` beats ``as tuned`` on the run's validation rank-1 on every run given (LFW seeds 0
and 1 and PubFig at ~20 px; LFW seed 0 and PubFig at full resolution); otherwise they keep fitting on train people
only and the README notes the numbers.

    python benchmarks/refit_on_validation.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw runs/pubfig
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from validation_runs import runs_parser, save_json, validation_data

from lookalike.benchmark import run_model
from lookalike.faces import FaceSet
from lookalike.rerank import DisambiguatorPool, LabelledLists, default_disambiguators
from lookalike.rerank.lookalike import rerank_faces

INNER_VAL = 0.3


def inner_split(train: FaceSet, seed: int) -> tuple[FaceSet, FaceSet, FaceSet]:
    """(inner train, inner validation probes, inner validation gallery) of the train people, by person (seeded)."""
    rng = np.random.default_rng(seed)
    people = np.unique(train.identities)
    held = set(rng.choice(people, int(round(INNER_VAL * len(people))), replace=False).tolist())
    gallery, probes = [], []
    for person in sorted(held):
        rows = rng.permutation(np.flatnonzero(train.identities == person))
        gallery.append(rows[0])
        probes.extend(rows[1:].tolist())
    inner = ~np.isin(train.identities, list(held))
    return train.take(inner), train.take(np.asarray(probes, np.int64)), train.take(np.asarray(gallery, np.int64))


def validation(run: Path, args: argparse.Namespace) -> dict:
    cfg, features, train, val = validation_data(run, args.cache)
    inner_train, inner_probes, inner_gallery = inner_split(train, cfg.seed)
    pool = DisambiguatorPool(seed=cfg.seed)
    model = run_model(cfg, features.protocol, default_disambiguators(cfg.seed), pool).fit(
        inner_train, inner_probes, inner_gallery)
    outer = LabelledLists.search(val.probes, val.gallery, cfg.depth)
    tuned = outer.quality(rerank_faces(model, val.probes, val.gallery, outer.lists))
    model.reranker_.disambiguator_ = pool.get(model.reranker_.disambiguator_, train)  # same parameters, all people
    refitted = outer.quality(rerank_faces(model, val.probes, val.gallery, outer.lists))
    return {"base": outer.quality()[0], "as_tuned": tuned[0], "refitted": refitted[0],
            "people": {"inner_train": int(len(np.unique(inner_train.identities))),
                       "all_train": int(len(np.unique(train.identities)))},
            "chosen": model.reranker_.stats["disambiguator"], "selection": model.reranker_.stats["selection"]}


def main() -> None:
    args = runs_parser(__doc__).parse_args()
    results = {}
    for run in args.runs:
        r = results[run] = validation(Path(run), args)
        print(f"{run}: validation rank-1 baseline {100 * r['base']:.2f}, as tuned {100 * r['as_tuned']:.2f}, "
              f"refitted {100 * r['refitted']:.2f} (train people {r['people']['inner_train']} -> "
              f"{r['people']['all_train']}; {r['chosen'][:50]} {r['selection']})")
    adopt = all(r["refitted"] > r["as_tuned"] for r in results.values())
    print(f"\nrule: refit on train + validation people if refitted beats as tuned on every run -> {adopt}")
    save_json(args.out, {"results": results, "adopt": adopt})


if __name__ == "__main__":
    main()
