"""Re-ranking: the permutation contract, selection schemes, normalisers, baselines and the lookalike methods."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.disambiguators import LookalikeLDA
from lookalike.experiment import FaceSet
from lookalike.metrics import RankedLists, evaluate
from lookalike.rerank import default_methods
from lookalike.rerank.baselines import AlphaQE, KReciprocal, kreciprocal_parts
from lookalike.rerank.fusion import LogLikelihoodRatio, MinMax, WeightedFusion, ZScore
from lookalike.rerank.lookalike import LookalikeReranker
from lookalike.rerank.selection import AmbiguityGate, Everything, LookalikeGroup, ScoreMargin, TopK, reorder
from lookalike.rerank.synthetic import synthetic_faces, synthetic_split


@pytest.fixture(scope="module")
def world():
    train = synthetic_faces(120, seed=1, prefix="tr")
    val = synthetic_split(synthetic_faces(60, seed=2, prefix="va"), "val")
    test = synthetic_split(synthetic_faces(80, seed=3, prefix="te"), "test")
    return train, val, test


def test_selection_schemes(world):
    _, _, test = world
    lists = test.lists
    assert TopK(3).select(test, lists).sum(1).tolist() == [3] * len(lists.indices)
    m = ScoreMargin(0.05).select(test, lists)
    assert (m[:, 0]).all() and ((lists.scores >= lists.scores[:, :1] - 0.05) == m).all()
    g = LookalikeGroup(0.6, 10).select(test, lists)
    assert g[:, 0].all() and not g[:, 10:].any()
    gv = test.gallery.vectors
    q = int(np.flatnonzero(g[:, 1:10].any(1))[0])
    for j in range(1, 10):
        assert g[q, j] == (gv[lists.indices[q, 0]] @ gv[lists.indices[q, j]] >= 0.6)
    gate = AmbiguityGate(TopK(5), 0.01).select(test, lists)
    gap = lists.scores[:, 0] - lists.scores[:, 1]
    assert (gate.any(1) == (gap < 0.01)).all()
    assert Everything().select(test, lists).all()


def test_reorder_keeps_outside_candidates_in_place():
    rng = np.random.default_rng(0)
    idx = np.stack([rng.permutation(20) for _ in range(30)])
    scores = -np.sort(-rng.random((30, 20)), axis=1)
    lists = RankedLists(idx, scores.astype(np.float32))
    mask = rng.random((30, 20)) < 0.4
    new = reorder(lists, mask, rng.random((30, 20)))
    assert (new.indices[~mask] == idx[~mask]).all()
    assert (np.sort(new.indices, 1) == np.sort(idx, 1)).all()
    for q in range(30):
        assert set(new.indices[q, mask[q]]) == set(idx[q, mask[q]])
    np.testing.assert_array_equal(new.scores, lists.scores)


def test_reorder_sorts_selection_by_new_score():
    lists = RankedLists(np.array([[5, 6, 7, 8]]), np.array([[0.9, 0.8, 0.7, 0.6]], np.float32))
    new = reorder(lists, np.array([[True, True, True, False]]), np.array([[0.1, 0.3, 0.2, 9.0]]))
    assert new.indices.tolist() == [[6, 7, 5, 8]]


def test_normalisers():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 8))
    mask = np.ones_like(s, bool)
    mask[:, 6:] = False
    z = ZScore().transform(s, mask)
    np.testing.assert_allclose(np.where(mask, z, 0).sum(1), 0, atol=1e-9)
    np.testing.assert_allclose((z[:, :6] ** 2).mean(1), 1, atol=1e-9)
    mm = MinMax().transform(s, mask)
    np.testing.assert_allclose(mm[:, :6].min(1), 0, atol=1e-12)
    np.testing.assert_allclose(mm[:, :6].max(1), 1, atol=1e-12)
    labels = s > 0.5
    llr = LogLikelihoodRatio().fit(s, labels, mask)
    assert llr.coef_ > 0
    f = WeightedFusion("zscore", 0.0).fit(s, -s, labels, mask)
    np.testing.assert_allclose(f.fuse(s, -s, mask)[mask], z[mask])
    assert (f.fuse(s, -s, mask)[~mask] == 0).all()


def test_kreciprocal_toy_case():
    """Probe q sits between a (slightly closer) and b; b's neighbourhood is reciprocal with q's, a's is
    not (a belongs to a tight cluster of other images), so k-reciprocal promotes b over a."""
    def unit(deg):
        r = np.deg2rad(deg)
        return np.array([np.cos(r), np.sin(r)], np.float32)

    gallery = np.stack([unit(-10), unit(12), unit(-14), unit(-16), unit(-18), unit(40), unit(60)])
    probe = unit(0)[None]
    ids = np.array([f"g{i}" for i in range(len(gallery))], object)
    from lookalike.rerank.synthetic import SearchSplit

    sims = probe @ gallery.T
    order = np.argsort(-sims, axis=1)
    lists = RankedLists(order, np.take_along_axis(sims, order, 1))
    split = SearchSplit("toy", FaceSet(np.array(["p"], object), np.array(["g1"], object), probe),
                        FaceSet(ids, ids, gallery), np.zeros(len(ids), bool), lists, [np.array([1])])
    assert lists.indices[0, 0] == 0
    jac, orig = kreciprocal_parts(split, lists, k1=2, k2=1)
    assert jac.shape == orig.shape == (1, 7)
    new = KReciprocal(k1=2, k2=1, lam=0.3).rerank(split)
    assert new.indices[0, 0] == 1


@pytest.mark.parametrize("method", [KReciprocal(), KReciprocal(tune=True, k1_grid=(5, 10), k2_grid=(1, 3)),
                                    AlphaQE()])
def test_baselines_permute(world, method):
    train, val, test = world
    out = method.fit(train, val).rerank(test)  # rerank() asserts the permutation contract
    assert out.indices.shape == test.lists.indices.shape


def test_lookalike_improves_rank1_on_synthetic(world):
    train, val, test = world
    r = LookalikeReranker(LookalikeLDA(), [TopK(k) for k in (2, 5, 20)], ("zscore",)).fit(train, val)
    base = evaluate(test.positions())["rank1"]
    new = evaluate(test.positions(r.rerank(test)))["rank1"]
    assert new > base + 0.15
    assert r.stats["weight"] > 0


class Spy(LookalikeLDA):
    """Records the identities every fit sees."""

    seen: set = set()

    def _fit(self, train, pairs):
        Spy.seen |= set(train.identities.tolist())
        super()._fit(train, pairs)


def test_fit_never_sees_test_identities(world):
    train, val, test = world
    Spy.seen = set()
    for m in default_methods(0, disambiguator=Spy()):
        m.fit(train, val)
        out = m.rerank(test)
        assert (np.sort(out.indices, 1) == np.sort(test.lists.indices, 1)).all()
    assert Spy.seen and not Spy.seen & set(test.probes.identities.tolist())
    assert not Spy.seen & set(test.gallery.identities.tolist())


def test_default_methods_names():
    names = [m.name for m in default_methods(0)]
    assert {"kreciprocal", "kreciprocal-tuned", "aqe"} <= set(names)
    assert sum(n.startswith("lookalike-") for n in names) >= 5 and len(set(names)) == len(names)


def test_permutation_contract_is_enforced(world):
    _, _, test = world

    class Broken(KReciprocal):
        def _rerank(self, split):
            return RankedLists(split.lists.indices[:, ::-1] * 0, split.lists.scores)

    with pytest.raises(AssertionError):
        Broken().rerank(test)
