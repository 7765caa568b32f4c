"""Doppelgänger lists: compare two faces by who they look like. Does it beat the LDA grid on validation?

Schroff et al. (ICCV 2011, "Pose, illumination and expression invariant pairwise face-similarity measure via
Doppelgänger list comparison") describe each face by its list of lookalikes in a library of people who are
neither of the pair, and call two faces the same person when their lists agree. Here the library is the train
people (never a validation or test person): each train person is the L2-normalised mean of their faces in the
inner LDA's space; a face's list is the ``k`` library people nearest to it, weighted by rank (first ``1``, last
``1/k``), and two faces compare by the cosine of their weighted lists. The list is not a linear function of
the face, so it can carry what the LDA's metric cannot. ``DoppelgangerLists`` scores a pair by the inner LDA's
score plus ``beta`` times the lists' agreement (``beta=None``: the agreement alone).

Printed for each benchmark run's protocol, **validation only**: rank-1 of the saved model (``LookalikeModel``,
every choice tuned on validation as the benchmark does) with the LDA grid alone, with the doppelgänger variants
added (the six LDA variants of the grid as inner, ``k`` 20 or 50, ``beta`` 0.3, 1 or None), and with the
doppelgänger variants alone; then each grid's chosen disambiguator ranking the whole validation gallery.

The rule, written before the first run: ``DoppelgangerLists`` joins the default grid if the saved model with it
in the grid beats the LDA-only model's validation rank-1 on every run given (LFW seeds 0 and 1 and PubFig at
~20 px, flip matcher; LFW seed 0 and PubFig at full resolution); otherwise it is not added to the library and
the README notes the numbers.

    python benchmarks/doppelganger_lists.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/lfw runs/pubfig
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
from validation_runs import ExperimentDisambiguator, adoption_main, compare_with_lda

from lookalike.disambiguators.base import distinct_rows, l2n
from lookalike.disambiguators.lda import LookalikeLDA
from lookalike.faces import FaceSet
from lookalike.mining import Pairs


class DoppelgangerLists(ExperimentDisambiguator):
    """``inner``'s score plus ``beta`` times the agreement of the two faces' rank-weighted lists of their ``k``
    nearest train people (``beta=None``: the agreement alone)."""

    def __init__(self, inner: LookalikeLDA | None = None, k: int = 20, beta: float | None = 1.0) -> None:
        super().__init__()
        self.inner, self.k, self.beta = inner or LookalikeLDA(), k, beta
        self.inner_: LookalikeLDA | None = None
        self.library_: np.ndarray | None = None

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        self.inner_ = copy.deepcopy(self.inner).fit(train, pairs)
        z = self.inner_.transform(train.vectors)
        people, who = np.unique(train.identities, return_inverse=True)
        sums = np.zeros((len(people), z.shape[1]))
        np.add.at(sums, who, z)
        self.library_ = l2n(sums)

    def lists(self, z: np.ndarray) -> np.ndarray:
        """(N, P) each projected face's rank-weighted list of its ``k`` nearest library people, L2-normalised."""
        sim = z @ self.library_.T
        k = min(self.k, sim.shape[1])
        top = np.argsort(-sim, axis=1)[:, :k]
        out = np.zeros_like(sim)
        np.put_along_axis(out, top, np.broadcast_to((k - np.arange(k)) / k, top.shape), axis=1)
        return l2n(out)

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        rows, inverse = distinct_rows(candidates, ids)
        (zp, cp), (zr, cr) = self.inner_.prepare(probes), self.inner_.prepare(rows)
        agree = np.einsum("qp,qkp->qk", self.lists(zp), self.lists(zr)[inverse])
        if self.beta is None:
            return agree
        return np.einsum("qd,qkd->qk", zp, zr[inverse]) - cp[:, None] - cr[inverse] + self.beta * agree


def validation(run: Path, args: argparse.Namespace) -> dict:
    return compare_with_lda(run, args.cache, "doppel", lambda lda, *_: [
        DoppelgangerLists(inner, k, beta) for inner in lda for k in (20, 50) for beta in (0.3, 1.0, None)],
        with_global=True)


def show_global(r: dict) -> None:
    print("  chosen disambiguator ranking the whole gallery: "
          + ", ".join(f"{g} {100 * v['global_rank1']:.2f}" for g, v in r["grids"].items()))


def main() -> None:
    adoption_main(__doc__, validation, "lda+doppel", "adopt DoppelgangerLists", show_global)


if __name__ == "__main__":
    main()
