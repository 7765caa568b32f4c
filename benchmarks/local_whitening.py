"""Local whitening: a disambiguator whose metric is learned for each candidate list. Does it beat the LDA grid?

On validation, what the lookalike discriminant analysis gains comes from whitening same-person variation
(README, "Does mining lookalikes matter?"), estimated once over all train people. How one person's photos vary
may depend on who they look like (age, pose habits, ethnicity, hair): the variation that matters for telling the
candidates of one list apart is that of the train people who look like those candidates. ``LocalWhitening`` works
in the inner LDA's space: for each probe it takes the mean of its list's first ``k`` candidates, finds the
``people`` train people nearest to it, and whitens with ``(1 - alpha)`` times the genuine scatter of all train
people plus ``alpha`` times that of those neighbours (each face's offset from its person's mean), then scores the
cosine there minus the inner LDA's cohort terms. The metric depends on the list, so it has no global form.

Printed for each benchmark run's protocol, **validation only**: rank-1 of the saved model (``LookalikeModel``,
every choice tuned on validation as the benchmark does) with the LDA grid alone, with the local variants added
(the six LDA variants of the grid as inner, ``people`` 20 or 100, ``alpha`` 0.5 or 1, ``k`` 10), and with the
local variants alone.

The rule, written before the first run: ``LocalWhitening`` joins the default grid if the saved model with it in
the grid beats the LDA-only model's validation rank-1 on every run given (LFW seeds 0 and 1 and PubFig at ~20 px,
flip matcher; LFW seed 0 and PubFig at full resolution); otherwise it is not added to the library and the README
notes the numbers.

    python benchmarks/local_whitening.py --cache /work/cache/lookalike.sqlite \\
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


class LocalWhitening(ExperimentDisambiguator):
    """Cosine in ``inner``'s space whitened, per list, by a mix of all train people's genuine scatter and that of the
    ``people`` train people nearest the mean of the list's first ``k`` candidates; minus ``inner``'s cohort terms."""

    def __init__(self, inner: LookalikeLDA | None = None, people: int = 20, alpha: float = 0.5, k: int = 10) -> None:
        super().__init__()
        self.inner, self.people, self.alpha, self.k = inner or LookalikeLDA(), people, alpha, k
        self.inner_: LookalikeLDA | None = None

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        self.inner_ = copy.deepcopy(self.inner).fit(train, pairs)
        z = self.inner_.transform(train.vectors)
        names, who, counts = np.unique(train.identities, return_inverse=True, return_counts=True)
        means = np.zeros((len(names), z.shape[1]))
        np.add.at(means, who, z)
        means /= counts[:, None]
        keep = counts[who] >= 2  # faces of people with two or more: their offsets from their mean
        self.offsets_, self.owner_ = (z - means[who])[keep], who[keep]
        people = np.unique(self.owner_)
        self.centres_, self.ids_ = l2n(means[people]), people
        self.global_ = self.offsets_.T @ self.offsets_ / len(self.offsets_)

    def _whitener(self, centre: np.ndarray) -> np.ndarray:
        near = self.ids_[np.argsort(-(self.centres_ @ centre))[: self.people]]
        off = self.offsets_[np.isin(self.owner_, near)]
        s = (1 - self.alpha) * self.global_ + self.alpha * off.T @ off / max(len(off), 1)
        s += 1e-3 * np.trace(s) / len(s) * np.eye(len(s))
        w, v = np.linalg.eigh(s)
        return v / np.sqrt(np.maximum(w, 1e-12))

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        rows, inverse = distinct_rows(candidates, ids)
        (zp, cp), (zr, cr) = self.inner_.prepare(probes), self.inner_.prepare(rows)
        out = np.empty(inverse.shape)
        for q in range(len(zp)):
            zc = zr[inverse[q]]
            w = self._whitener(l2n(zc[: self.k].mean(0, keepdims=True))[0])
            out[q] = l2n(zc @ w) @ l2n(zp[q: q + 1] @ w)[0]
        return out - cp[:, None] - cr[inverse]


def validation(run: Path, args: argparse.Namespace) -> dict:
    return compare_with_lda(run, args.cache, "local", lambda lda, *_: [
        LocalWhitening(inner, n, a) for inner in lda for n in (20, 100) for a in (0.5, 1.0)])


def main() -> None:
    adoption_main(__doc__, validation, "lda+local", "adopt LocalWhitening")


if __name__ == "__main__":
    main()
