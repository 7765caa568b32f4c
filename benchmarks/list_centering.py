"""List centering: a disambiguator that only makes sense at the top of a candidate list. Does it make the
disambiguation matter, and does it beat the LDA grid on validation?

The LDA disambiguator is a metric (whitened cosine), valid for any pair, so re-ranking the top of the list with
it and ranking the whole gallery with it agree (README: ``lookalike-best`` ~ ``lookalike-global``). The top
candidates of a list look alike: they share what made the matcher rank them there. ``ListCentered`` removes
that shared part before comparing: in the LDA space, with ``m`` the mean of the list's first ``k`` candidates
(the list in the matcher's order), each candidate scores ``cos(z_p - alpha m, z_c - alpha m)`` minus the LDA's
cohort terms. The score of a candidate depends on its list, so it has no global form: it can only re-rank.

Printed for each benchmark run's protocol, **validation only**: rank-1 of the saved model (``LookalikeModel``,
every choice tuned on validation as the benchmark does) with the LDA grid alone and with the list-centred
variants added (the six LDA variants of the grid, ``k`` 5, 10 or 20, ``alpha`` 0.5 or 1).

The rule, written before the first run: ``ListCentered`` joins the default grid if the saved model with it in
the grid beats the LDA-only model's validation rank-1 on every run given (LFW seeds 0 and 1 and PubFig at
~20 px, flip matcher; LFW seed 0 and PubFig at full resolution); otherwise it is not added to the library and
the README notes the numbers.

    python benchmarks/list_centering.py --cache /work/cache/lookalike.sqlite \\
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


class ListCentered(ExperimentDisambiguator):
    """``inner``'s projected cosine after subtracting ``alpha`` times the mean of the list's first ``k``
    candidates from the probe and from every candidate, minus ``inner``'s cohort terms."""

    def __init__(self, inner: LookalikeLDA | None = None, k: int = 10, alpha: float = 1.0) -> None:
        super().__init__()
        self.inner, self.k, self.alpha = inner or LookalikeLDA(), k, alpha
        self.inner_: LookalikeLDA | None = None

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        self.inner_ = copy.deepcopy(self.inner).fit(train, pairs)

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        rows, inverse = distinct_rows(candidates, ids)
        (zp, cp), (zr, cr) = self.inner_.prepare(probes), self.inner_.prepare(rows)
        zc = zr[inverse]  # (Q, K, D')
        m = self.alpha * zc[:, :self.k].mean(1)  # (Q, D')
        q, kk, d = zc.shape
        pc = l2n(zp - m)
        cc = l2n((zc - m[:, None]).reshape(q * kk, d)).reshape(q, kk, d)
        return np.einsum("qd,qkd->qk", pc, cc) - cp[:, None] - cr[inverse]


def validation(run: Path, args: argparse.Namespace) -> dict:
    return compare_with_lda(run, args.cache, "centred", lambda lda, *_: [
        ListCentered(inner, k, alpha) for inner in lda for k in (5, 10, 20) for alpha in (0.5, 1.0)])


def main() -> None:
    adoption_main(__doc__, validation, "lda+centred", "adopt ListCentered")


if __name__ == "__main__":
    main()
