"""The CNN face detector as the fallback where HOG finds no face: validation rank-1 with and without it.

HOG misses 233 of PubFig's 5,520 tight face crops (the face fills the photo); those fall back to a centred square,
and as probes they are right at rank 1 67% of the time against 95% for detected ones (PubFig seed 0, plain matcher,
``--central-fraction 0.9``). dlib's CNN detector (MMOD, shipped beside the other face models) finds 199 of the 233.

Given pairs of benchmark runs of the same protocol, one without and one with ``--cnn-fallback``, this prints each
pair's plain-matcher rank-1 on the *validation* split (every method's ``val_base_rank1``), on the test split, and the
saved model's (``lookalike-best``) on both, with how many images each detector path aligned.

The rule, written before the first run: ``--cnn-fallback`` becomes the default aligner setting (new galleries,
``embed``, ``train``, ``benchmark``) if the plain matcher's validation rank-1 rises with it on PubFig seeds 0 and 1
at full resolution and does not fall on LFW seed 0 at full resolution. The test rows are reported, not used.

    lookalike benchmark --data ../shared/data/pubfig --central-fraction 0.9 [--seed 1] [--cnn-fallback] --out RUN
    python benchmarks/cnn_fallback.py runs/pubfig=runs/pubfig-cnn runs/pubfig-s1=runs/pubfig-s1-cnn \\
        runs/lfw=runs/lfw-cnn
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def figures(run: Path) -> dict:
    """A run's plain-matcher and saved-model rank-1 on validation and test, and its images' detector counts."""
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    best = m["rerank_stats"]["lookalike-best"]
    return {"val_base": best["val_base_rank1"], "val_best": best["val_rank1"],
            "test_base": m["methods"]["baseline"]["rank1"], "test_best": m["methods"]["lookalike-best"]["rank1"],
            "faces": m["embedding"].get("face", {}), "cnn": m["config"].get("cnn_fallback", False)}


def main(argv: list[str] | None = None) -> int:
    pairs = [a.split("=", 1) for a in (argv if argv is not None else sys.argv[1:])]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise SystemExit("usage: cnn_fallback.py RUN=RUN_WITH_CNN ...")
    print("| run | faces (without / with) | validation: plain matcher | validation: lookalike-best | test: plain "
          "matcher | test: lookalike-best |\n|---|---|---|---|---|---|")
    rises = {}
    for before, after in pairs:
        a, b = figures(Path(before)), figures(Path(after))
        if a["cnn"] or not b["cnn"]:
            raise SystemExit(f"{before}={after}: the first must run without --cnn-fallback, the second with it")
        rises[after] = b["val_base"] - a["val_base"]
        print(f"| {after} | {a['faces']} / {b['faces']} | " + " | ".join(
            f"{100 * a[k]:.2f} → {100 * b[k]:.2f}" for k in ("val_base", "val_best", "test_base", "test_best")) + " |")
    pubfig = [r for r in rises if "pubfig" in r]
    lfw = [r for r in rises if "lfw" in r]
    adopt = len(pubfig) >= 2 and all(rises[r] > 0 for r in pubfig) and bool(lfw) and all(rises[r] >= 0 for r in lfw)
    print(f"\nrule: the CNN fallback becomes the default if the plain matcher's validation rank-1 rises on both PubFig "
          f"runs and does not fall on LFW -> {adopt}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
