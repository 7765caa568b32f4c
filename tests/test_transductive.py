"""k-reciprocal re-ranking in the authors' transductive setting: agreement with the per-probe variant, a case
computed by hand, shapes and orderings, and its scoring in the benchmark."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lookalike.benchmark import score_method, transductive_search
from lookalike.matchers.base import l2_normalize
from lookalike.metrics import RankedLists, first_hits
from lookalike.rerank.baselines import kreciprocal_parts
from lookalike.rerank.synthetic import synthetic_faces, synthetic_split
from lookalike.rerank.transductive import kreciprocal_transductive
from lookalike.rerank.tuning import nonmated_lists


def unit(deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    return np.array([np.cos(r), np.sin(r)], np.float32)


def clustered(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One probe and ``n`` gallery vectors around 5 centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, dim))
    gallery = l2_normalize(centres[rng.integers(0, 5, n)] + 0.7 * rng.normal(size=(n, dim)))
    return l2_normalize(centres[:1] + 0.7 * rng.normal(size=(1, dim))), gallery


@pytest.mark.parametrize("n,dim,k1,k2", [(30, 8, 5, 3), (60, 16, 20, 6), (25, 4, 20, 6), (40, 3, 7, 1)])
def test_one_probe_equals_per_probe_on_the_whole_gallery(n, dim, k1, k2):
    """With one probe, the joint set is the per-probe local set when that probe's list holds the whole gallery:
    both give the same Jaccard and final distances (to float32 rounding)."""
    probe, gallery = clustered(n, dim, seed=n)
    sims = probe @ gallery.T
    order = np.argsort(-sims, axis=1, kind="stable")
    lists = RankedLists(order, np.take_along_axis(sims, order, 1))
    jac, orig = kreciprocal_parts(lists, gallery[order], k1, k2)
    per_probe = np.empty(n)
    per_probe[order[0]] = 0.7 * jac[0] + 0.3 * orig[0]
    got = kreciprocal_transductive(probe, gallery, k1, k2, 0.3)
    assert got.shape == (1, n) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], per_probe, atol=1e-6)
    assert (np.argsort(got[0], kind="stable") == np.argsort(per_probe, kind="stable")).all()


def test_small_case_by_hand():
    """Probe p at 0°, gallery a 10°, b 30°, c 100°; k1=1, k2=1. Nearest neighbours: p<->a (reciprocal), b->a,
    c->b, so R(p) = {p, a}, R(a) = {a, p}, R(b) = {b}, R(c) = {c}; with k1/2 rounding to 0 nothing expands.
    V(p) = (1, x)/(1 + x) on (p, a) and V(a) = (y, 1)/(1 + y), x and y being exp(-d(p, a)) with d scaled by the
    row maxima d(p, c) and d(a, c) = 2; b and c share nothing with p, so their Jaccard distance is 1."""
    def dist(deg):
        return 2 - 2 * np.cos(np.deg2rad(deg))

    x, y = np.exp(-dist(10) / dist(100)), np.exp(-dist(10) / 2)
    shared = x / (1 + x) + y / (1 + y)  # the sum of minima
    jac_a = 1 - shared / (2 - shared)
    lam = 0.3
    expected = [(1 - lam) * jac_a + lam * dist(10) / dist(100), (1 - lam) + lam * dist(30) / dist(100), 1.0]
    got = kreciprocal_transductive(unit(0)[None], np.stack([unit(10), unit(30), unit(100)]), k1=1, k2=1, lam=lam)
    np.testing.assert_allclose(got[0], expected, atol=1e-6)


def test_shapes_queries_and_lambda_one():
    rng = np.random.default_rng(0)
    probes, gallery = l2_normalize(rng.normal(size=(7, 6))), l2_normalize(rng.normal(size=(20, 6)))
    d = kreciprocal_transductive(probes, gallery, k1=5, k2=3)
    assert d.shape == (7, 20) and d.dtype == np.float32 and (d >= 0).all() and (d <= 1 + 1e-6).all()
    np.testing.assert_array_equal(kreciprocal_transductive(probes, gallery, 5, 3, queries=np.arange(7)), d)
    own = kreciprocal_transductive(probes, gallery, 5, 3, queries=7 + np.arange(20))  # gallery rows
    assert own.shape == (20, 20) and (np.argmin(own, axis=1) == np.arange(20)).all()
    np.testing.assert_allclose(np.diag(own), 0, atol=1e-6)
    # lam = 1 keeps only the original (scaled) distance: the cosine order
    only = kreciprocal_transductive(probes, gallery, 5, 3, lam=1.0)
    assert (np.argsort(only, axis=1) == np.argsort(-(probes @ gallery.T), axis=1)).all()


def test_transductive_uses_the_other_probes():
    """A probe's distances change when other test probes join the set: why it cannot serve ``identify``."""
    probe, gallery = clustered(40, 8, seed=3)
    others = l2_normalize(gallery[:10] + 0.05 * np.random.default_rng(1).normal(size=(10, 8)))
    alone = kreciprocal_transductive(probe, gallery)
    together = kreciprocal_transductive(np.concatenate([probe, others]), gallery)
    assert together.shape == (11, 40) and not np.allclose(alone[0], together[0])


@pytest.fixture(scope="module")
def split():
    s = synthetic_split(synthetic_faces(80, seed=3, prefix="te"), "test")
    return dataclasses.replace(s, nonmated=nonmated_lists(s.gallery.take(s.is_distractor), s.gallery, 20))


def test_benchmark_lists_ranks_and_nonmated(split):
    lists, ranks, nonmated = transductive_search(split, depth=20)
    q, distractors = len(split.probes), np.flatnonzero(split.is_distractor)
    d = kreciprocal_transductive(split.probes.vectors, split.gallery.vectors,
                                 queries=np.concatenate([np.arange(q), q + distractors]))
    order = np.argsort(d[:q], axis=1, kind="stable")
    np.testing.assert_array_equal(lists.indices, order[:, :20])
    np.testing.assert_array_equal(lists.scores, -np.take_along_axis(d[:q], order[:, :20], 1))
    assert (np.diff(lists.scores, axis=1) <= 0).all()
    # mates' positions in the method's own full ranking, beyond the list too
    full = [np.sort(np.flatnonzero(np.isin(o, m))) for o, m in zip(order, split.mates(), strict=True)]
    for r, f in zip(ranks, full, strict=True):
        np.testing.assert_array_equal(r, f)
    np.testing.assert_array_equal(first_hits(split.positions(lists, ranks)), [f[0] for f in full])
    m = score_method("kreciprocal-transductive", split, lists, first_hits(split.positions()) < 1, 10, 0, ranks)
    assert m["rank1"] == np.mean([f[0] == 0 for f in full]) and {"mcnemar_p", "mAP"} <= set(m)
    # non-mated: each distractor against the rest of the gallery, its own identity left out
    assert len(nonmated.indices) == len(distractors)
    own = split.gallery.identities[nonmated.indices] == split.gallery.identities[distractors][:, None]
    assert not own.any()
    np.testing.assert_allclose(nonmated.scores[:, 0], -np.min(np.where(
        split.gallery.identities[None, :] == split.gallery.identities[distractors][:, None], np.inf, d[q:]), 1))


def test_one_sided_nonmated_queries_join_the_set_as_probes(split):
    """One side degraded: the distractors prepared as probes join the joint set as probes and are the non-mated
    queries (their gallery-side images stay in the gallery, their own identity left out of their lists)."""
    from lookalike.faces import FaceSet

    noise = 0.05 * np.random.default_rng(2).normal(size=split.gallery.vectors.shape)
    g = split.gallery
    as_probes = FaceSet(g.paths, g.identities, l2_normalize(g.vectors + noise).astype(np.float32))
    one_sided = dataclasses.replace(split, gallery_as_probes=as_probes)
    lists, _, nonmated = transductive_search(one_sided, depth=20)
    q, distractors = len(split.probes), np.flatnonzero(split.is_distractor)
    joint = np.concatenate([split.probes.vectors, as_probes.vectors[distractors]])
    d = kreciprocal_transductive(joint, g.vectors, queries=np.arange(len(joint)))
    np.testing.assert_array_equal(lists.indices, np.argsort(d[:q], axis=1, kind="stable")[:, :20])
    own = g.identities[None, :] == g.identities[distractors][:, None]
    np.testing.assert_allclose(nonmated.scores[:, 0], -np.min(np.where(own, np.inf, d[q:]), 1))


def test_benchmark_search_in_a_disambiguator_space_projects_every_face_first(split):
    """``space``: the same k-reciprocal re-ranking over the disambiguator's projections of probes and gallery."""

    class Halve:  # a stand-in projection: keeps the first half of each vector
        input = "embedding"

        def transform(self, x):
            return np.asarray(x)[:, : x.shape[1] // 2]

    lists, _, _ = transductive_search(split, depth=20, space=Halve())
    q, distractors = len(split.probes), np.flatnonzero(split.is_distractor)
    half = split.probes.vectors.shape[1] // 2
    d = kreciprocal_transductive(split.probes.vectors[:, :half], split.gallery.vectors[:, :half],
                                 queries=np.concatenate([np.arange(q), q + distractors]))
    np.testing.assert_array_equal(lists.indices, np.argsort(d[:q], axis=1, kind="stable")[:, :20])
    assert not np.array_equal(lists.indices, transductive_search(split, depth=20)[0].indices)
