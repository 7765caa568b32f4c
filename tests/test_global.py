"""The disambiguator as a global metric (``lookalike-global``): its score over the whole gallery, and the
benchmark's lists, mate ranks and non-mated searches built from it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lookalike.benchmark import global_search, top_lists
from lookalike.disambiguators import LookalikeLDA
from lookalike.disambiguators.base import EmbeddingDisambiguator, l2n
from lookalike.experiment import SearchSplit
from lookalike.faces import FaceSet
from lookalike.index import row_positions
from lookalike.mining import default_miner
from lookalike.rerank.synthetic import synthetic_faces, synthetic_split
from lookalike.rerank.tuning import nonmated_lists


def whole_gallery(d, probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """``score_lists`` with the whole gallery as every probe's candidates."""
    return d.score_lists(probes, np.broadcast_to(gallery, (len(probes), *gallery.shape)))


@pytest.mark.parametrize("make", [lambda: LookalikeLDA(cohort_n=5, cohort_beta=1.0), lambda: Distance()])
@pytest.mark.parametrize("small", [False, True])
def test_score_matrix_is_score_lists_over_the_whole_gallery(make, small):
    """Blocked (tiny blocks too) or not, by the direct formula (LDA) or through score_lists (a variant scoring
    otherwise, as the benchmarks' experiments do)."""
    train = synthetic_faces(60, seed=1, prefix="tr")
    d = make().fit(train, default_miner(k=5).mine(train))
    test = synthetic_split(synthetic_faces(40, seed=3, prefix="te"), "test")
    p, g = test.probes.vectors, test.gallery.vectors
    got = d.score_matrix(p, g, 7) if small else d.score_matrix(p, g)
    np.testing.assert_allclose(got, whole_gallery(d, p, g), atol=1e-5)


class Distance(EmbeddingDisambiguator):
    """Minus the squared distance between centred vectors: a variant with its own ``_score_lists``."""

    def _fit(self, train, pairs) -> None:
        self.mean_ = np.asarray(train.vectors, np.float64).mean(0)

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return np.asarray(vectors, np.float64) - self.mean_

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        return -((self.transform(candidates) - self.transform(probes)[:, None]) ** 2).sum(-1)

    def _state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean_ = state["mean"]


class Stretch(EmbeddingDisambiguator):
    """Hand-made: cosine after stretching the second axis, minus a one-face cohort term."""

    def __init__(self) -> None:
        super().__init__()
        self.fitted_on, self.cohort_n, self.cohort_beta = "hand-made", 1, 1.0
        self.cohort_ = l2n(np.array([[1.0, 1.0]]))

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return l2n(np.asarray(vectors, np.float64) * [1.0, 4.0])

    def _fit(self, train, pairs) -> None:
        pass

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        pass


def unit(deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r)], np.float32)


def faces(ids: list[str], degrees: list[float]) -> FaceSet:
    return FaceSet(np.array([f"{i}{k}.jpg" for k, i in enumerate(ids)]), np.array(ids),
                   np.stack([unit(a) for a in degrees]))


@pytest.fixture
def split() -> SearchSplit:
    """3 probes; gallery: 4 enrolled images of 3 people, 2 distractors (one person with two images)."""
    probes = faces(["a", "b", "c"], [5, 40, 80])
    gallery = faces(["a", "b", "b", "c", "x", "x"], [20, 30, 70, 60, 10, 50])
    is_distractor = np.array([0, 0, 0, 0, 1, 1], bool)
    lists = top_lists(probes.vectors @ gallery.vectors.T, 6)
    mates = [np.flatnonzero((gallery.identities == i) & ~is_distractor) for i in probes.identities]
    ranks = [row_positions(r, m) for r, m in zip(probes.vectors @ gallery.vectors.T, mates, strict=True)]
    return SearchSplit("test", probes, gallery, is_distractor, lists, ranks,
                       nonmated=nonmated_lists(gallery.take(is_distractor), gallery, 6))


def test_global_ranking_sorts_score_lists_over_the_whole_gallery(split):
    d = Stretch()
    s = whole_gallery(d, split.probes.vectors, split.gallery.vectors)
    order = np.argsort(-s, axis=1, kind="stable")
    assert not np.array_equal(order, split.lists.indices)  # a different metric, a different ranking
    lists, ranks, nonmated = global_search(split, d, depth=2)
    np.testing.assert_array_equal(lists.indices, order[:, :2])
    np.testing.assert_allclose(lists.scores, np.take_along_axis(s, order[:, :2], 1), atol=1e-6)
    # mates beyond the list keep their positions in the full global ranking
    for o, m, r in zip(order, split.mates(), ranks, strict=True):
        np.testing.assert_array_equal(r, np.sort(np.flatnonzero(np.isin(o, m))))
    # non-mated: each distractor against the rest of the gallery, its own identity (both x images) left out
    x = np.flatnonzero(split.is_distractor)
    other = whole_gallery(d, split.gallery.vectors[x], split.gallery.vectors)
    other[:, x] = -np.inf
    np.testing.assert_array_equal(nonmated.indices, np.argsort(-other, axis=1, kind="stable")[:, :2])
    assert not np.isin(nonmated.indices, x).any()


def test_global_nonmated_queries_are_the_distractors_prepared_as_probes(split):
    """One side degraded: the non-mated searches start from ``gallery_as_probes``, the probes' lists do not change."""
    as_probes = faces(["a", "b", "b", "c", "x", "x"], [25, 35, 75, 65, 15, 55])
    one_sided = dataclasses.replace(split, gallery_as_probes=as_probes)
    d = Stretch()
    lists, _, nonmated = global_search(one_sided, d, depth=2)
    np.testing.assert_array_equal(lists.indices, global_search(split, d, depth=2)[0].indices)
    x = np.flatnonzero(split.is_distractor)
    other = whole_gallery(d, as_probes.vectors[x], split.gallery.vectors)
    other[:, x] = -np.inf
    np.testing.assert_allclose(nonmated.scores, -np.sort(-other, axis=1)[:, :2], atol=1e-6)
    assert not np.allclose(nonmated.scores, global_search(split, d, depth=2)[2].scores)
