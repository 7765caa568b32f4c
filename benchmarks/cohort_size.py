"""How many train faces the disambiguator's cohort needs: validation rank-1 of the saved model per cohort size.

Each probe's cohort term reads every cohort face (its similarity to all of them, then the mean of the 50
nearest), so the cohort's size is most of what re-ranking one search costs once the gallery is prepared
(issue 7: re-ranking may add at most 10% to search + re-rank at 100,000 subjects). This refits the saved
model (``LookalikeModel``: mining, the LDA grid, selection, normaliser, weight, all tuned on validation exactly
as ``lookalike benchmark`` does) on benchmark runs' own protocols with the cohort capped at a seeded sample of
``--sizes`` train faces (0: all of them) and prints **validation** rank-1 and MRR only; nothing here reads
the test split.

The rule, written before the first run: ``COHORT_SIZE`` (``lookalike.rerank``) is the smallest size of
500, 1000 and 2000 whose validation rank-1 is at most 0.2 points below the whole train cohort's on every
split run (LFW seeds 0 and 1 and PubFig at ~20 px with the default torch-flip matcher; LFW seed 0 and PubFig
at full resolution); if none qualifies, the whole cohort (None).

    python benchmarks/cohort_size.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw runs/pubfig
"""

from __future__ import annotations

from pathlib import Path

from validation_runs import fit_grids, runs_parser, save_json, validation_data

from lookalike.rerank import DisambiguatorPool, default_disambiguators

TOLERANCE = 0.002  # rank-1 (fraction) a smaller cohort may lose on validation
CANDIDATES = (500, 1000, 2000)


def validation_scores(run: Path, sizes: list[int], cache: str) -> dict[int, dict]:
    """{size: validation rank-1, MRR, cohort faces and the model's choices} for one benchmark run's protocol."""
    cfg, features, train, val = validation_data(run, cache)
    grids = {size: default_disambiguators(cfg.seed, cohort_size=size or None) for size in sizes}
    out, models = fit_grids(cfg, features, train, val, grids, DisambiguatorPool(seed=cfg.seed))
    for size, r in out.items():
        cohort = getattr(models[size].disambiguator_, "cohort_", None)
        r.update(cohort_faces=0 if cohort is None else len(cohort), train_faces=len(train))
    return out


def choose(results: dict[str, dict[int, dict]]) -> int | None:
    """The rule of the module docstring."""
    for size in CANDIDATES:
        if all(r[size]["val_rank1"] >= r[0]["val_rank1"] - TOLERANCE for r in results.values()):
            return size
    return None


def main() -> None:
    ap = runs_parser(__doc__)
    ap.add_argument("--sizes", nargs="+", type=int, default=[0, *CANDIDATES], help="cohort sizes (0: all)")
    args = ap.parse_args()
    sizes = sorted(set(args.sizes) | {0})
    results = {}
    for run in args.runs:
        results[run] = validation_scores(Path(run), sizes, args.cache)
        print(f"\n{run}")
        print("| cohort | cohort faces | val rank-1 | val MRR | chosen disambiguator | s |")
        print("|---|---|---|---|---|---|")
        for size, r in results[run].items():
            print(f"| {size or 'all'} | {r['cohort_faces']} | {100 * r['val_rank1']:.2f} | {100 * r['val_mrr']:.2f} "
                  f"| {r['chosen']} | {r['seconds']} |")
    chosen = choose(results) if set(CANDIDATES) <= set(sizes) else "not decided (run every candidate size)"
    print(f"\nrule: the smallest of {CANDIDATES} within {100 * TOLERANCE:.1f} points of the whole cohort's validation "
          f"rank-1 on every run -> COHORT_SIZE = {chosen}")
    save_json(args.out, {"results": results, "chosen": chosen})


if __name__ == "__main__":
    main()
