"""What the validation-only experiments share: their command line (``--runs``, ``--cache``, ``--out``) and each
benchmark run's train faces and validation split, embedded again through the cache. Nothing here reads a test
split."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from lookalike.benchmark import BenchmarkConfig, run_features
from lookalike.disambiguators.base import Disambiguator
from lookalike.experiment import ProtocolFeatures, SearchSplit, build_split
from lookalike.faces import FaceSet


class ExperimentDisambiguator(Disambiguator):
    """A disambiguator a validation script tries: never saved (it has no file format)."""

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


def save_json(path: str | Path | None, results: dict) -> None:
    """Write ``results`` as JSON to ``path`` (nothing when None)."""
    if path:
        Path(path).write_text(json.dumps(results, indent=2, default=str))
