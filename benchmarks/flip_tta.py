"""Flip test-time augmentation (~20 px, or full resolution), ablated as adaptation vs adaptation + disambiguation.

Every face (train, validation, test) is embedded by ``--matcher torch-flip`` too (:mod:`lookalike.matchers.flip`:
each chip and its mirror embedded by dlib's network, averaged), on the same protocol. Rows (test rank-1, exact
McNemar p against the baseline):

* ``baseline`` / ``lookalike-best[lda]``: the matcher's vectors, the saved-model method as the benchmark fits it;
* ``flip-base`` (adaptation): probes and gallery searched with the flip-averaged vectors;
* ``flip lookalike-best[lda]``: the whole method (mining, disambiguator, tuning on validation) on those vectors.

The rule, fixed before the first run: flip TTA is worth building into the matcher if ``flip lookalike-best[lda]``
beats ``lookalike-best[lda]`` on *validation* rank-1 on every split measured (LFW seeds 0 and 1, PubFig).

    PYTHONPATH=src .venv/bin/python benchmarks/flip_tta.py --cache /work/cache/lookalike.sqlite [--seed 1]
        [--data ../shared/data/pubfig --central-fraction 0.9]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_lfw import row  # noqa: E402

from lookalike.data.folders import load_folders  # noqa: E402
from lookalike.data.protocol import make_protocol  # noqa: E402
from lookalike.experiment import FaceSet, SearchSplit, build_split, embed_protocol  # noqa: E402
from lookalike.matchers.align import FaceAligner  # noqa: E402
from lookalike.matchers.cache import EmbeddingCache  # noqa: E402
from lookalike.metrics import evaluate, first_hits  # noqa: E402
from lookalike.mining import default_miner  # noqa: E402
from lookalike.report import method_table  # noqa: E402
from lookalike.rerank import NORMS, DisambiguatorPool, LookalikeReranker, all_selections, default_disambiguators  # noqa: E402
from lookalike.rerank.lookalike import rerank_faces  # noqa: E402
from lookalike.rerank.tuning import LabelledLists  # noqa: E402


def load(args: argparse.Namespace, matcher: str) -> tuple[FaceSet, SearchSplit, SearchSplit]:
    """(train faces, validation split, test split) of the benchmark's protocol, embedded through the cache."""
    p = make_protocol(load_folders(args.data), seed=args.seed, lowres=args.lowres or None)
    aligner = FaceAligner(central_fraction=args.central_fraction) if args.central_fraction is not None else None
    f = embed_protocol(p, matcher=matcher, cache=EmbeddingCache(args.cache), aligner=aligner, workers=2,
                       progress=False)
    return f.faces("train"), build_split(f, "val", depth=args.depth), build_split(f, "test", depth=args.depth)


def best(train: FaceSet, val: SearchSplit, test: SearchSplit, depth: int, seed: int, name: str) -> tuple:
    """(test positions, validation rank-1) of lookalike-best[lda] fitted on ``train``, tuned on ``val``."""
    pool = DisambiguatorPool(default_miner(seed=seed), seed=seed)
    m = LookalikeReranker(default_disambiguators(seed), all_selections(), NORMS, pool=pool, name=name, seed=seed)
    m.fit(train, LabelledLists.search(val.probes, val.gallery, depth))
    return test.positions(rerank_faces(m, test.probes, test.gallery, test.lists)), m.stats["val_rank1"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--cache", default="cache/lookalike.sqlite")
    ap.add_argument("--lowres", type=int, default=20, help="face width in pixels; 0 = full resolution")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--central-fraction", type=float, default=None, help="as the embedding cache was made with")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads of this process")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train, val, test = load(args, "torch")
    t0 = time.perf_counter()
    ftrain, fval, ftest = load(args, "torch-flip")
    print(f"{args.data} seed {args.seed}, {args.lowres} px: torch-flip embeddings in {time.perf_counter() - t0:.0f} s "
          f"(cached ones are read)", flush=True)
    base_hits = first_hits(test.positions()) == 0
    plain_pos, plain_val = best(train, val, test, args.depth, args.seed, "lookalike-best[lda]")
    flip_pos, flip_val = best(ftrain, fval, ftest, args.depth, args.seed, "flip lookalike-best[lda]")
    rows = [row("baseline", test.positions(), base_hits, 0.0), row("lookalike-best[lda]", plain_pos, base_hits, 0.0),
            row("flip-base (adaptation)", ftest.positions(), base_hits, 0.0),
            row("flip lookalike-best[lda]", flip_pos, base_hits, 0.0)]
    print(method_table({r["method"]: r for r in rows}))
    print(f"validation rank-1 (%): baseline {100 * evaluate(val.positions())['rank1']:.2f}, flip-base "
          f"{100 * evaluate(fval.positions())['rank1']:.2f}, lookalike-best[lda] {100 * plain_val:.2f}, "
          f"flip lookalike-best[lda] {100 * flip_val:.2f}")


if __name__ == "__main__":
    main()
