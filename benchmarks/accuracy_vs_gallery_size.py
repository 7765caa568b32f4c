"""Does the lookalike re-ranking gain hold as the gallery grows? Rank-1 of the baseline and a run's saved
model on real faces only, with more and more real distractors.

The LFW test people of a benchmark run are enrolled as in the run (one image each) and searched with the
run's test probes; distractors are added from every other LFW image and its mirrored copy (seeded order).
``--pool test`` takes only the run's test-half distractors (never seen in training) and their mirrors;
``--pool all`` adds the train and validation people's images too — those people were seen by the model
(mining, the LDA and its cohort), so that curve is optimistic for the model. A flip-averaged matcher
(``torch-flip``, the default at low resolution) embeds an image and its mirror alike, so its pool has no mirrors.
The baseline is the model's own matcher. Prints a Markdown table and writes ``--plot``.

    python benchmarks/accuracy_vs_gallery_size.py --run runs/lfw-lowres20 --cache /work/cache/lookalike.sqlite
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lookalike.data.protocol import Protocol
from lookalike.embed import embed_paths, read_chips
from lookalike.index import make_index
from lookalike.matchers import AUGMENTED, get_matcher
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import RankedLists, mcnemar
from lookalike.model import LookalikeModel


def mirrored(paths: list[str], model: LookalikeModel, cache: EmbeddingCache, lowres: int | None,
             batch: int = 256) -> np.ndarray:
    """Embeddings of the mirrored aligned chips (rows of images without a cached alignment are NaN)."""
    matcher = get_matcher(model.matcher)
    out = np.full((len(paths), 128), np.nan, np.float32)
    for s in range(0, len(paths), batch):
        chips, ok = read_chips(paths[s:s + batch], cache, model.aligner, lowres)
        if ok.any():
            out[s:s + batch][ok] = matcher.embed(np.ascontiguousarray(chips[ok][:, :, ::-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="a `lookalike benchmark` output folder (protocol/, model.lkm)")
    ap.add_argument("--cache", default="cache/lookalike.sqlite")
    ap.add_argument("--pool", choices=("test", "all"), default="test")
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 1000, 3000, 10000, 30000],
                    help="distractors added (capped at the pool)")
    ap.add_argument("--plot", default=None, help="PNG of rank-1 against gallery size (default: RUN/size.png)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    run = Path(args.run)
    t = Protocol.load(run / "protocol").table
    model = LookalikeModel.load(run / "model.lkm")
    cache = EmbeddingCache(args.cache)

    def embed(rows: np.ndarray, lowres: int | None) -> np.ndarray:
        e = embed_paths(t.paths[rows], model.matcher, model.aligner, lowres, cache, progress=False)
        v = e.vectors.copy()
        v[~e.ok] = np.nan
        return v

    probe_rows, enrolled_rows = np.flatnonzero(t.roles == "probe"), np.flatnonzero(t.roles == "gallery")
    roles = ("distractor",) if args.pool == "test" else ("distractor", "train", "val_probe", "val_gallery",
                                                          "val_distractor")
    pool_rows = np.flatnonzero(np.isin(t.roles, roles))
    probes, enrolled = embed(probe_rows, model.probe_lowres), embed(enrolled_rows, model.gallery_lowres)
    pool = embed(pool_rows, model.gallery_lowres)
    with_mirrors = model.matcher not in AUGMENTED  # a flip-averaged mirror is the image itself
    if with_mirrors:
        pool = np.concatenate([pool, mirrored(list(t.paths[pool_rows]), model, cache, model.gallery_lowres)])
    pool = pool[np.isfinite(pool).all(1)]
    pool = pool[np.random.default_rng(args.seed).permutation(len(pool))]
    keep = np.isfinite(probes).all(1)
    probes, probe_ids = probes[keep], t.identities[probe_rows][keep]
    ok = np.isfinite(enrolled).all(1)
    enrolled, enrolled_ids = enrolled[ok], t.identities[enrolled_rows][ok]
    mated = np.isin(probe_ids, enrolled_ids)
    probes, probe_ids = probes[mated], probe_ids[mated]
    print(f"{len(probes)} probes, {len(enrolled)} enrolled, distractor pool {len(pool)} ({args.pool}: images"
          f"{' + mirrors' if with_mirrors else ''}); matcher {model.matcher}, model "
          f"{model.describe_short()['selection']}, lowres {model.lowres}")
    rows = []
    for n in sorted({min(s, len(pool)) for s in args.sizes}):
        gallery = np.concatenate([enrolled, pool[:n]])
        ids = np.concatenate([enrolled_ids, np.full(n, "", object)])
        index = make_index("numpy", gallery.shape[1])
        index.add(gallery)
        scores, idx = index.search(probes, model.depth)
        base = RankedLists(idx, scores)
        new = model.rerank(probes, base, gallery[idx])
        hit_b, hit_n = ids[base.indices[:, 0]] == probe_ids, ids[new.indices[:, 0]] == probe_ids
        rows.append({"gallery": len(gallery), "distractors": n, "baseline": hit_b.mean(), "model": hit_n.mean(),
                     **mcnemar(hit_b, hit_n)})
    print("\n| gallery size | distractors | baseline rank-1 | model rank-1 | gain | McNemar p |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['gallery']:,} | {r['distractors']:,} | {100 * r['baseline']:.2f} | {100 * r['model']:.2f} | "
              f"{100 * (r['model'] - r['baseline']):+.2f} | {r['mcnemar_p']:.2g} |")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    sizes = [r["gallery"] for r in rows]
    ax.plot(sizes, [100 * r["baseline"] for r in rows], "o-", color="black", label="baseline")
    ax.plot(sizes, [100 * r["model"] for r in rows], "o-", label="lookalike model (model.lkm)")
    ax.set_xscale("log")
    ax.set_xlabel("gallery size (real faces)")
    ax.set_ylabel("rank-1 (%)")
    ax.set_title(f"LFW, {'full resolution' if model.lowres is None else f'~{model.lowres} px'}; pool: {args.pool}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    plot = Path(args.plot) if args.plot else run / f"size_{args.pool}.png"
    fig.savefig(plot, dpi=110)
    print(f"\nwrote {plot}")


if __name__ == "__main__":
    main()
