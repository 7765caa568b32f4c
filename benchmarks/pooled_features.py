"""Pooled network features as the disambiguator's input: does lookalike discriminant analysis gain from the
network's 256-d pooled features (before dlib's 128-d fc projection), or from a 2x2 grid of them, instead of the
matcher's 128-d embedding?

dlib's fc layer was trained on full-resolution faces; what it throws away may be what tells two degraded
lookalikes apart. The 128-d embedding is a linear map of the 256-d pooled features, so an LDA on the pooled
features can find every direction an LDA on the embedding can, and more; the 2x2 grid (1,024-d) also keeps
where on the face a feature fired. The matcher still ranks the gallery with its 128-d embedding; only the
disambiguator reads the pooled features (flip-averaged like the matcher: the mirror's grid mirrored back).

Printed for each benchmark run's protocol, **validation only**: rank-1 of the saved model (``LookalikeModel``,
every choice tuned on validation as the benchmark does) with the default LDA grid (on the embedding), with the
same six LDA variants on the pooled features, on the 2x2 grid, and with all of them in one grid.

The rule, written before the first run: a feature joins the product at a resolution if the saved model with it
added to the default grid (``lda+pooled``, ``lda+grid``) beats the default grid's validation rank-1 on every run
of that resolution given (~20 px: LFW seeds 0 and 1 and PubFig; full resolution: LFW seeds 0 and 1 and PubFig);
if both features qualify, the one with the higher mean validation rank-1 over those runs. Otherwise it is not
added to the library and the README notes the numbers.

Added after that first run (pooled features: +0.6 to +1.1 on LFW at both resolutions, below the default on PubFig,
so not adopted), under the same rule: ``sum``, each LDA variant on the embedding plus the same variant on the
pooled features, their scores summed (``lda+sum``: the default grid with them), in case the two metrics are
complementary where the pooled one alone is not enough (PubFig's 53 train people); and, as a diagnostic (no rule),
the validation rank-1 of each saved model's chosen disambiguator ranking the whole validation gallery (global),
to see whether re-ranking the top with a disambiguator on other features than the matcher's makes the
disambiguation matter. ``--parts`` picks the features to fit (the 2x2 grid takes minutes a run).

    python benchmarks/pooled_features.py --cache /work/cache/lookalike.sqlite [--parts pooled] \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw runs/lfw-s1 runs/pubfig
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from validation_runs import (
    ExperimentDisambiguator,
    ExperimentMatcher,
    embed_rows,
    fit_grids,
    global_rank1,
    grid_runs,
    save_json,
    validation_data,
)

from lookalike.disambiguators.base import distinct_rows
from lookalike.disambiguators.lda import LookalikeLDA
from lookalike.faces import FaceSet
from lookalike.matchers.base import l2_normalize
from lookalike.metrics import evaluate
from lookalike.mining import Pairs
from lookalike.rerank import DisambiguatorPool, default_disambiguators

PARTS = {"pooled": slice(0, 256), "grid": slice(256, 1280)}


class PooledFeatures(ExperimentMatcher):
    """The network's trunk output, average-pooled whole (256-d) and over a 2x2 grid (1,024-d), each part
    L2-normalised, for the chip and its mirror (the mirror's grid mirrored back), summed."""

    name, dim, base = "dlib-resnet-v1-pooled-g1g2+flip", 1280, "torch"

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        import torch
        import torch.nn.functional as F

        from lookalike.matchers.torch_resnet import preprocess

        m = self.net()
        out = np.zeros((len(chips), self.dim), np.float32)
        with torch.inference_mode():
            for mirror in (False, True):
                x = np.ascontiguousarray(np.asarray(chips)[:, :, ::-1] if mirror else chips)
                t = m.model.trunk(preprocess(torch.from_numpy(x), m.avg_rgb).contiguous(memory_format=m.memory_format))
                grid = F.adaptive_avg_pool2d(t, 2)
                grid = grid.flip(-1) if mirror else grid
                out[:, PARTS["pooled"]] += l2_normalize(t.mean(dim=(2, 3)).numpy())
                out[:, PARTS["grid"]] += l2_normalize(grid.flatten(1).numpy())
        return out


class FeatureTable(dict):
    """The embedding's bytes -> the face's pooled features (a short repr for the printed choices)."""

    def __repr__(self) -> str:
        return f"<{len(self)} faces>"

    def __deepcopy__(self, memo: dict) -> FeatureTable:
        """Shared, not copied: a fitted copy of a disambiguator looks up the faces added to the table later."""
        return self


def vector_keys(vectors: np.ndarray) -> list[bytes]:
    return [r.tobytes() for r in np.ascontiguousarray(vectors, np.float32)]


class OnFeatures(ExperimentDisambiguator):
    """``inner`` (an LDA) fitted and scored on another feature of the same faces, looked up by the face's
    matcher embedding in ``table`` (the embedding's bytes -> the feature)."""

    def __init__(self, table: dict[bytes, np.ndarray] | None = None, part: str = "pooled",
                 inner: LookalikeLDA | None = None) -> None:
        super().__init__()
        self.table, self.part, self.inner = table or {}, part, inner or LookalikeLDA()
        self.inner_: LookalikeLDA | None = None

    def lookup(self, vectors: np.ndarray) -> np.ndarray:
        return l2_normalize(np.stack([self.table[k] for k in vector_keys(vectors)])[:, PARTS[self.part]])

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """The LDA's projection of the faces' feature (the space the saved model's batch setting re-ranks in)."""
        return self.inner_.transform(self.lookup(vectors))

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        faces = FaceSet(train.paths, train.identities, self.lookup(train.vectors), train.lowres)
        self.inner_ = copy.deepcopy(self.inner).fit(faces, pairs)

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        rows, inverse = distinct_rows(candidates, ids)
        (zp, cp), (zr, cr) = self.inner_.prepare(self.lookup(probes)), self.inner_.prepare(self.lookup(rows))
        return np.einsum("qd,qkd->qk", zp, zr[inverse]) - cp[:, None] - cr[inverse]

    def __repr__(self) -> str:
        return f"OnFeatures({self.part}, {self.inner!r})"


class Summed(ExperimentDisambiguator):
    """``inner`` on the matcher's embedding plus the same LDA on another feature (:class:`OnFeatures`), scores
    summed."""

    def __init__(self, table: dict[bytes, np.ndarray] | None = None, part: str = "pooled",
                 inner: LookalikeLDA | None = None) -> None:
        super().__init__()
        self.table, self.part, self.inner = table or {}, part, inner or LookalikeLDA()
        self.parts_: tuple[LookalikeLDA, OnFeatures] | None = None

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        self.parts_ = (copy.deepcopy(self.inner).fit(train, pairs),
                       OnFeatures(self.table, self.part, copy.deepcopy(self.inner)).fit(train, pairs))

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        return sum(d.score_lists(probes, candidates, ids) for d in self.parts_)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Both parts' projections side by side, scaled so that the result stays unit length."""
        return np.hstack([d.transform(vectors) for d in self.parts_]) / np.sqrt(2)


def feature_table(sets: list[FaceSet], protocol, cache: str) -> dict[bytes, np.ndarray]:
    """Each face's pooled features (in its own resolution), keyed by its matcher embedding."""
    paths, lowres = np.concatenate([s.paths for s in sets]), np.concatenate([s.lowres for s in sets])
    pooled = embed_rows(paths, lowres, PooledFeatures(), cache, protocol.degrade)
    return FeatureTable(zip(vector_keys(np.concatenate([s.vectors for s in sets])), pooled, strict=True))


def validation(run: Path, args: argparse.Namespace) -> dict:
    cfg, features, train, val = validation_data(run, args.cache)
    table = feature_table([train, val.probes, val.gallery], features.protocol, args.cache)
    lda = default_disambiguators(cfg.seed)
    grids = {"lda": lda}
    for part in args.parts:
        on = [OnFeatures(table, part, copy.deepcopy(d)) for d in lda]
        grids.update({part: on, f"lda+{part}": lda + on})
    if "pooled" in args.parts:
        summed = [Summed(table, "pooled", copy.deepcopy(d)) for d in lda]
        grids.update({"sum": summed, "lda+sum": lda + summed})
    pool = DisambiguatorPool(seed=cfg.seed)
    out, models = fit_grids(cfg, features, train, val, grids, pool)
    for name, m in models.items():  # the chosen disambiguator ranking the whole validation gallery
        out[name]["global_rank1"] = global_rank1(pool.get(m.disambiguator_, train), val)
    return {"lowres": features.protocol.lowres, "base": evaluate(val.positions(), n_boot=0)["rank1"], "grids": out}


def show_global(r: dict) -> None:
    print("  chosen disambiguator ranking the whole gallery: "
          + ", ".join(f"{g} {100 * v['global_rank1']:.2f}" for g, v in r["grids"].items()))


def options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=sorted(PARTS), help="features to fit")


def main() -> None:
    args, results = grid_runs(__doc__, validation, show_global, options)
    decision = {}
    for res in sorted({r["lowres"] or 0 for r in results.values()}):
        runs = [r for r in results.values() if (r["lowres"] or 0) == res]
        wins = {g: all(r["grids"][g]["val_rank1"] > r["grids"]["lda"]["val_rank1"] for r in runs)
                for g in ("lda+pooled", "lda+grid", "lda+sum") if g in runs[0]["grids"]}
        means = {g: float(np.mean([r["grids"][g]["val_rank1"] for r in runs])) for g in wins}
        decision[res] = max((g for g in wins if wins[g]), key=means.get, default=None)
        print(f"\nrule at {res or 'full'} px ({len(runs)} runs): wins on every run {wins} -> adopt {decision[res]}")
    save_json(args.out, {"results": results, "decision": decision})


if __name__ == "__main__":
    main()
