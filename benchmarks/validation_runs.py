"""What the validation-only experiments share: their command line (``--runs``, ``--cache``, ``--out``) and each
benchmark run's train faces and validation split, embedded again through the cache. Nothing here reads a test
split."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.benchmark import BenchmarkConfig, run_features, run_model
from lookalike.disambiguators.base import Disambiguator
from lookalike.embed import embed_paths
from lookalike.experiment import ProtocolFeatures, SearchSplit, build_split
from lookalike.faces import FaceSet
from lookalike.io import atomic_write
from lookalike.matchers import get_matcher
from lookalike.matchers.base import Matcher
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import evaluate
from lookalike.model import LookalikeModel
from lookalike.rerank import DisambiguatorPool, default_disambiguators


class ExperimentMatcher(Matcher):
    """A matcher a validation script embeds faces with (its own cache ``name``), built on the library's matcher
    ``base`` (a :func:`~lookalike.matchers.get_matcher` name), which loads on first use: the object pickles light
    into the embedding processes, and each process gets one torch thread, as the named matchers do."""

    base = "torch-flip"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_net": None}

    def net(self) -> Matcher:
        if self.__dict__.get("_net") is None:
            import torch

            torch.set_num_threads(1)  # only ever called inside an embedding process
            self._net = get_matcher(self.base)
        return self._net


class ExperimentDisambiguator(Disambiguator):
    """A disambiguator a validation script tries: never saved (it has no file format). A variant built on a fitted
    LDA (``inner_``) re-ranks a batch in that LDA's space."""

    inner_: Disambiguator | None = None

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """The projection of the LDA the variant builds on: the space the saved model's batch setting re-ranks in."""
        return self.inner_.transform(vectors)

    def _state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError("experiment only")

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError("experiment only")


def runs_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with ``--runs`` (benchmark output folders), ``--cache`` and ``--out`` (results as JSON)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--runs", nargs="+", required=True, help="benchmark output folders (protocol/, metrics.json)")
    ap.add_argument("--cache", default="cache/lookalike.sqlite", help="embedding cache")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    return ap


def validation_data(run: str | Path, cache: str) -> tuple[BenchmarkConfig, ProtocolFeatures, FaceSet, SearchSplit]:
    """(the run's config, its protocol's features, the train faces, the validation split)."""
    cfg, features = run_features(run, cache)
    return cfg, features, features.faces("train"), build_split(features, "val", cfg.depth)


def embed_rows(paths: np.ndarray, lowres: np.ndarray, matcher: Matcher, cache: str, degrade: str) -> np.ndarray:
    """``matcher``'s vectors of these images, each at its own resolution (``lowres`` 0: full), through the cache;
    a RuntimeError if any image fails (they all embedded once already)."""
    out = None
    for res in np.unique(lowres):
        rows = np.flatnonzero(lowres == res)
        emb = embed_paths(paths[rows], matcher, lowres=int(res) or None, cache=EmbeddingCache(cache),
                          desc=f"{matcher.name} ({int(res) or 'full'})", degrade=degrade)
        if not emb.ok.all():
            raise RuntimeError(f"{matcher.name}: {(~emb.ok).sum()} faces failed")
        out = np.zeros((len(paths), emb.vectors.shape[1]), np.float32) if out is None else out
        out[rows] = emb.vectors
    return out


def global_rank1(disambiguator: Disambiguator, val: SearchSplit) -> float:
    """Validation rank-1 of a fitted disambiguator ranking the whole validation gallery by itself (the probes'
    part of the benchmark's ``lookalike-global``, :func:`lookalike.benchmark.global_search`)."""
    scores = disambiguator.score_matrix(val.probes.vectors, val.gallery.vectors)
    return float((val.gallery.identities[scores.argmax(1)] == val.probes.identities).mean())


def fit_grids(cfg: BenchmarkConfig, features: ProtocolFeatures, train: FaceSet, val: SearchSplit,
              grids: dict[str | int, list[Disambiguator]], pool: DisambiguatorPool
              ) -> tuple[dict[str | int, dict], dict[str | int, LookalikeModel]]:
    """The saved model (every choice tuned on validation, as the benchmark does) fitted with each grid of
    disambiguators: ({grid: validation rank-1, MRR, the choices, seconds}, {grid: the fitted model})."""
    out, models = {}, {}
    for name, ds in grids.items():
        t = time.perf_counter()
        m = models[name] = run_model(cfg, features.protocol, ds, pool).fit(train, val.probes, val.gallery,
                                                                        val.gallery_as_probes)
        st = m.reranker_.stats
        out[name] = {"val_rank1": st["val_rank1"], "val_mrr": st["val_mrr"], "chosen": st["disambiguator"],
                     "selection": st["selection"], "weight": st["weight"], "seconds": round(time.perf_counter() - t, 1)}
    return out, models


def compare_with_lda(run: Path, cache: str, name: str,
                     variants: Callable[[list[Disambiguator], BenchmarkConfig, ProtocolFeatures], list[Disambiguator]],
                     with_global: bool = False) -> dict:
    """One run's validation for :func:`adoption_main`: the saved model fitted with the default grid's LDA variants
    (``lda``), with ``variants(lda, cfg, features)`` added to them (``lda+NAME``) and with those alone (``NAME``).
    {"base": the matcher's validation rank-1, "grids": :func:`fit_grids`' results}; ``with_global`` adds each
    chosen disambiguator ranking the whole validation gallery (``global_rank1``)."""
    cfg, features, train, val = validation_data(run, cache)
    lda = default_disambiguators(cfg.seed)
    extra = variants(lda, cfg, features)
    pool = DisambiguatorPool(seed=cfg.seed)
    grids, models = fit_grids(cfg, features, train, val, {"lda": lda, f"lda+{name}": lda + extra, name: extra}, pool)
    if with_global:
        for g, m in models.items():
            grids[g]["global_rank1"] = global_rank1(pool.get(m.disambiguator_, train), val)
    return {"base": evaluate(val.positions(), n_boot=0)["rank1"], "grids": grids}


def print_grids(run: str, base_rank1: float, results: dict[str, dict]) -> None:
    """One run's validation rank-1 per grid, as :func:`fit_grids` gives them."""
    print(f"\n{run}: validation rank-1, baseline {100 * base_rank1:.2f}")
    for name, r in results.items():
        print(f"  model with {name:11s} {100 * r['val_rank1']:.2f} (MRR {100 * r['val_mrr']:.2f}) chose "
              f"{r['chosen'][:60]} {r['selection']} w {r['weight']} ({r['seconds']} s)")


def grid_runs(doc: str, validation: Callable[[Path, argparse.Namespace], dict],
              show: Callable[[dict], None] | None = None,
              options: Callable[[argparse.ArgumentParser], None] | None = None) -> tuple[argparse.Namespace, dict]:
    """Parse :func:`runs_parser`'s command line (plus what ``options`` adds to it), run ``validation(run, args)`` on
    each run (a dict with the validation baseline ``base`` and :func:`fit_grids`' ``grids``), print each as it comes
    (:func:`print_grids`, then ``show``): (the arguments, {run: its result})."""
    ap = runs_parser(doc)
    if options is not None:
        options(ap)
    args = ap.parse_args()
    results = {}
    for run in args.runs:
        r = results[run] = validation(Path(run), args)
        print_grids(run, r["base"], r["grids"])
        if show is not None:
            show(r)
    return args, results


def beats_everywhere(results: dict[str, dict], grid: str, baseline: str = "lda") -> bool:
    """The written rule of the grid-comparing scripts: ``grid``'s saved model beats ``baseline``'s on validation
    rank-1 on every run."""
    return all(r["grids"][grid]["val_rank1"] > r["grids"][baseline]["val_rank1"] for r in results.values())


def save_json(path: str | Path | None, results: dict) -> None:
    """Write ``results`` as JSON to ``path`` (nothing when None)."""
    if path:
        with atomic_write(path) as f:
            json.dump(results, f, indent=2, default=str)


def adoption_main(doc: str, validation: Callable[[Path, argparse.Namespace], dict], grid: str, rule: str,
                  show: Callable[[dict], None] | None = None) -> None:
    """A grid-comparing script's main: :func:`grid_runs`, then its written rule (``rule``, e.g. "adopt X", holds if
    ``grid``'s saved model beats the LDA grid's on every run's validation), printed and saved with the results."""
    args, results = grid_runs(doc, validation, show)
    adopt = beats_everywhere(results, grid)
    print(f"\nrule: {rule} if {grid} beats lda on every run's validation -> {adopt}")
    save_json(args.out, {"results": results, "adopt": adopt})
