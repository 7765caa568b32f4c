"""Fine-tuned face network on LFW (seed 0): as a lookalike disambiguator and as the base matcher.

For each resolution (full, ~20 px faces): mine lookalike pairs on the train faces, fine-tune the top of
dlib's network on them (:class:`~lookalike.disambiguators.finetuned.FineTunedNet`), then compare on test

* ``lookalike-best[lda]`` vs ``lookalike-best[finetuned]``: the best lookalike re-ranker (every selection
  scheme, normaliser and fusion weight tuned by val rank-1) with the embedding-level disambiguators vs the
  image-level one (both fitted on train only), evaluated as the benchmark does
  (:func:`lookalike.rerank.lookalike.rerank_faces`: the fine-tuned net's own embeddings of the probes and candidates);
* ``finetuned-base``: every probe and gallery image re-embedded with the fine-tuned network and re-searched
  (adaptation rather than disambiguation).

    PYTHONPATH=src .venv/bin/python benchmarks/finetune_lfw.py [--lowres full 20] [--json out.json]
    PYTHONPATH=src .venv/bin/python benchmarks/finetune_lfw.py --data ../shared/data/orl --max-people 40 \\
        --lowres 20 --epochs 2   # a quick run
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from lookalike.benchmark import sample_people
from lookalike.data.folders import load_folders
from lookalike.data.protocol import make_protocol
from lookalike.disambiguators.base import Disambiguator
from lookalike.disambiguators.finetuned import FineTunedNet
from lookalike.experiment import FaceSet, SearchSplit, build_split, embed_protocol, search
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import evaluate, first_hits, mcnemar
from lookalike.mining import default_miner
from lookalike.report import rows_table
from lookalike.rerank import NORMS, DisambiguatorPool, LookalikeReranker, all_selections, default_disambiguators
from lookalike.rerank.lookalike import rerank_faces
from lookalike.rerank.tuning import LabelledLists


def load(data: str, cache: str, lowres: int | None, seed: int, depth: int,
         max_people: int | None) -> tuple[FaceSet, SearchSplit, SearchSplit]:
    table = load_folders(data)
    if max_people:
        table = sample_people(table, max_people, seed)
    p = make_protocol(table, seed=seed, lowres=lowres)
    f = embed_protocol(p, matcher="torch", cache=EmbeddingCache(cache), workers=2, progress=False)
    return f.faces("train"), build_split(f, "val", depth=depth), build_split(f, "test", depth=depth)


def reembed(split: SearchSplit, net: FineTunedNet, depth: int) -> SearchSplit:
    """The split searched again with the fine-tuned network's embeddings (an image the network fails on keeps its
    base matcher's vector: an index takes only finite unit vectors, so the zero vectors these had been are refused)."""
    def faces(f: FaceSet) -> FaceSet:
        v = net.embed_faces(f)
        failed = ~np.isfinite(v).all(axis=1)
        return FaceSet(f.paths, f.identities, np.where(failed[:, None], f.vectors, v), f.lowres)

    return search(split.name, faces(split.probes), faces(split.gallery), split.is_distractor, depth,
                  notes=split.notes)


def row(method: str, positions: list[np.ndarray], base_hits: np.ndarray, secs: float) -> dict:
    return {"method": method, **evaluate(positions), **mcnemar(base_hits, first_hits(positions) == 0), "secs": secs}


def run(train: FaceSet, val: SearchSplit, test: SearchSplit, args: argparse.Namespace) -> tuple[list[dict], dict]:
    base_pos = test.positions()
    base_hits = first_hits(base_pos) == 0
    rows = [row("baseline (dlib)", base_pos, base_hits, 0.0)]
    info: dict = {}

    t0 = time.perf_counter()
    pool = DisambiguatorPool(default_miner(seed=args.seed), seed=args.seed)  # mines train once for both
    net = FineTunedNet(trainable=args.trainable, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       margin=args.margin, max_pairs=args.max_pairs, holdout=args.holdout, seed=args.seed,
                       cache_path=args.cache)
    net = pool.get(net, train)
    info["mining"] = {k: v for k, v in next(iter(pool.mining_stats.values())).items() if k != "miners"}
    info["fit"] = {**net.stats, "params": net.get_params()}
    print(f"  fine-tuned in {time.perf_counter() - t0:.0f}s: {net.stats}", flush=True)

    t0 = time.perf_counter()
    for s in (val, test):  # every image once (memoised per (path, lowres) inside the net)
        net.embed_faces(s.probes)
        net.embed_faces(s.gallery)
    info["embed_s"] = round(time.perf_counter() - t0, 1)
    print(f"  embedded val+test in {info['embed_s']}s", flush=True)

    val_lists = LabelledLists.search(val.probes, val.gallery, args.depth)
    methods: list[tuple[str, list[Disambiguator]]] = [("lookalike-best[lda]", default_disambiguators(args.seed)),
                                                      ("lookalike-best[finetuned]", [net])]
    for name, ds in methods:
        t0 = time.perf_counter()
        m = LookalikeReranker(ds, all_selections(), NORMS, pool=pool, name=name, seed=args.seed).fit(train, val_lists)
        pos = test.positions(rerank_faces(m, test.probes, test.gallery, test.lists))
        rows.append(row(name, pos, base_hits, time.perf_counter() - t0))
        info[name] = {k: v for k, v in m.stats.items() if k != "disambiguator_stats"}

    t0 = time.perf_counter()
    ft_test = reembed(test, net, args.depth)
    rows.append(row("finetuned-base", ft_test.positions(), base_hits, time.perf_counter() - t0))
    ft_val = reembed(val, net, args.depth)
    info["finetuned-base"] = {"val_rank1": evaluate(ft_val.positions())["rank1"],
                              "val_base_rank1": evaluate(val.positions())["rank1"]}
    info["embed_failed"] = net.stats.get("embed_failed", 0)
    return rows, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", "--lfw", dest="data", default="../shared/data/lfw",
                    help="folder-per-identity dataset (default: LFW)")
    ap.add_argument("--max-people", type=int, default=None, help="a seeded subset of this many people (quick runs)")
    ap.add_argument("--cache", default="cache/lookalike.sqlite")
    ap.add_argument("--lowres", nargs="+", default=["full", "20"], help="'full' and/or face widths in pixels")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--trainable", default="last")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--margin", type=float, default=0.1)
    ap.add_argument("--max-pairs", type=int, default=20_000)
    ap.add_argument("--holdout", type=float, default=0.2, help="train people held out to pick the epoch")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads of this process")
    ap.add_argument("--json", default=None, help="also write every row and the training stats here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {}
    for lr in args.lowres:
        t0 = time.perf_counter()
        lowres = None if lr == "full" else int(lr)
        train, val, test = load(args.data, args.cache, lowres, args.seed, args.depth, args.max_people)
        print(f"\n== {args.data} seed {args.seed}, {'full resolution' if lowres is None else f'{lowres} px'}: "
              f"{len(train)} train images, val {len(val.probes)} probes / {len(val.gallery)} gallery, "
              f"test {len(test.probes)} probes / {len(test.gallery)} gallery", flush=True)
        rows, info = run(train, val, test, args)
        print(rows_table(rows, "secs"), flush=True)
        print(f"  total {time.perf_counter() - t0:.0f}s", flush=True)
        out[lr] = {"rows": rows, "info": info}
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(out, fh, indent=1, default=lambda o: o.tolist() if isinstance(o, np.ndarray) else str(o))


if __name__ == "__main__":
    main()
