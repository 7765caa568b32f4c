"""The shipped default model's disambiguator as a candidate for a model trained on few people: does a PubFig
model (53 train people) choose it on validation, and gain?

PubFig's own lookalike discriminant analysis is fitted on its 53 train people; the shipped default model's
(``default-lowres20.lkm``) on 3,947 LFW people who are not PubFig people, so on PubFig it is a clean transfer.
Pooling the LFW people into PubFig's training set did not help (README: "More training people for PubFig").
Here the default model's fitted disambiguator is instead one more candidate in the grid (``prior``), kept as
fitted, and the saved model's tuning on PubFig's validation split chooses between it and PubFig's own (selection
and fusion tuned as always). **Validation only**; only runs whose people are not the default model's training
people may be given (PubFig at ~20 px, bicubic, flip matcher: the default model's preprocessing).

The rule, written before the first run: a ``train`` option offering the shipped model's disambiguator as a
candidate is built if the saved model with it in the grid (``lda+prior``) beats the default grid's validation
rank-1 on both PubFig ~20 px seeds; otherwise it is not added to the library and the README notes the numbers.

    python benchmarks/prior_model.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/pubfig-lowres20 runs/pubfig-lowres20-s1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from validation_runs import ExperimentDisambiguator, adoption_main, compare_with_lda

from lookalike.benchmark import BenchmarkConfig
from lookalike.disambiguators.base import Disambiguator
from lookalike.experiment import ProtocolFeatures
from lookalike.faces import FaceSet
from lookalike.matchers import DEFAULT_MATCHER, matcher_name
from lookalike.mining import Pairs
from lookalike.model import default_model


class Prior(ExperimentDisambiguator):
    """A disambiguator fitted elsewhere, used as it is (fitting it on a train set changes nothing)."""

    def __init__(self, fitted: Disambiguator | None = None) -> None:
        super().__init__()
        self.fitted = fitted

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        self.inner_ = self.fitted

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        return self.fitted.score_lists(probes, candidates, ids)

    def __repr__(self) -> str:
        return f"Prior({type(self.fitted).__name__} of the shipped default model)"


def shipped_prior(run: Path, cfg: BenchmarkConfig, features: ProtocolFeatures) -> list[Disambiguator]:
    """The shipped default model's disambiguator, checked against ``run``'s matcher and preprocessing."""
    shipped, p = default_model(lowres=20), features.protocol
    shipped.check_run(matcher_name(cfg.matcher or DEFAULT_MATCHER), cfg.aligner(),
                      p.lowres, p.lowres_apply, p.degrade, what=f"{run}: the default model")
    return [Prior(shipped.disambiguator_)]


def validation(run: Path, args: argparse.Namespace) -> dict:
    return compare_with_lda(run, args.cache, "prior", lambda _, cfg, features: shipped_prior(run, cfg, features))


def main() -> None:
    adoption_main(__doc__, validation, "lda+prior", "build the option")


if __name__ == "__main__":
    main()
