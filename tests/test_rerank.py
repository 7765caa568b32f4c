"""Re-ranking: the permutation contract, selection schemes, normalisers, baselines and the lookalike methods."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.disambiguators import LookalikeLDA
from lookalike.metrics import RankedLists, evaluate
from lookalike.rerank import default_methods
from lookalike.rerank.baselines import AlphaQE, KReciprocal, kreciprocal_parts
from lookalike.rerank.fusion import LogLikelihoodRatio, WeightedFusion, ZScore
from lookalike.rerank.lookalike import LookalikeReranker
from lookalike.rerank.selection import (
    AmbiguityGate,
    Everything,
    LookalikeGroup,
    ScoreMargin,
    TopK,
    reorder,
    selection_from_dict,
)
from lookalike.rerank.synthetic import synthetic_faces, synthetic_split
from lookalike.rerank.tuning import LabelledLists, grid_search, nonmated_lists


@pytest.fixture(scope="module")
def world():
    train = synthetic_faces(120, seed=1, prefix="tr")
    val = synthetic_split(synthetic_faces(60, seed=2, prefix="va"), "val")
    test = synthetic_split(synthetic_faces(80, seed=3, prefix="te"), "test")
    return train, LabelledLists.search(val.probes, val.gallery, 20), test


def rerank(method, split):
    return method.rerank(split.probes.vectors, split.lists, split.candidates)


def test_selection_schemes(world):
    _, _, test = world
    lists, cand = test.lists, test.candidates
    assert TopK(3).select(lists.scores, cand).sum(1).tolist() == [3] * len(lists.indices)
    m = ScoreMargin(0.05).select(lists.scores, cand)
    assert (m[:, 0]).all() and ((lists.scores >= lists.scores[:, :1] - 0.05) == m).all()
    g = LookalikeGroup(0.6, 10).select(lists.scores, cand)
    assert g[:, 0].all() and not g[:, 10:].any()
    gv = test.gallery.vectors
    q = int(np.flatnonzero(g[:, 1:10].any(1))[0])
    for j in range(1, 10):
        assert g[q, j] == (gv[lists.indices[q, 0]] @ gv[lists.indices[q, j]] >= 0.6)
    gate = AmbiguityGate(TopK(5), 0.01).select(lists.scores, cand)
    gap = lists.scores[:, 0] - lists.scores[:, 1]
    assert (gate.any(1) == (gap < 0.01)).all()
    assert Everything().select(lists.scores, cand).all()
    with pytest.raises(ValueError):
        TopK(3).select(lists.scores, cand[:-1])


@pytest.mark.parametrize("sel", [TopK(3), ScoreMargin(0.05, 20), LookalikeGroup(0.4, 10), AmbiguityGate(TopK(5), 0.1),
                                 Everything()])
def test_selection_roundtrip(sel, world):
    _, _, test = world
    back = selection_from_dict(sel.to_dict())
    assert repr(back) == repr(sel)
    np.testing.assert_array_equal(back.select(test.lists.scores, test.candidates),
                                  sel.select(test.lists.scores, test.candidates))


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
    assert (np.diff(new.scores, axis=1) <= 0).all()


def test_reorder_sorts_selection_by_new_score_and_carries_it():
    lists = RankedLists(np.array([[5, 6, 7, 8]]), np.array([[0.9, 0.8, 0.7, 0.6]], np.float32))
    new = reorder(lists, np.array([[True, True, True, False]]), np.array([[0.1, 0.3, 0.2, 9.0]]))
    assert new.indices.tolist() == [[6, 7, 5, 8]]
    # each candidate carries its new score; the unselected last one is capped by the one above it
    np.testing.assert_allclose(new.scores, [[0.3, 0.2, 0.1, 0.1]])


def test_normalisers():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(5, 8))
    mask = np.ones_like(s, bool)
    mask[:, 6:] = False
    zs = ZScore().fit(s, s > 0, mask)
    z = zs.transform(s)
    np.testing.assert_allclose(z[mask].mean(), 0, atol=1e-9)
    np.testing.assert_allclose(z[mask].std(), 1, atol=1e-9)
    np.testing.assert_allclose(zs.transform(s[:1]), z[:1])  # one map for every list
    labels = s > 0.5
    llr = LogLikelihoodRatio().fit(s, labels, mask)
    assert llr.coef_ > 0
    f = WeightedFusion("zscore", 0.0).fit(s, -s, labels, mask)
    np.testing.assert_allclose(f.fuse(s, -s), z)
    g = WeightedFusion("llr", 0.3).fit(s, -s, labels, mask)
    back = WeightedFusion.from_dict(g.to_dict())
    np.testing.assert_array_equal(back.fuse(s, -s), g.fuse(s, -s))


def test_kreciprocal_toy_case():
    """Probe q sits between a (slightly closer) and b; b's neighbourhood is reciprocal with q's, a's is
    not (a belongs to a tight cluster of other images), so k-reciprocal promotes b over a."""
    def unit(deg):
        r = np.deg2rad(deg)
        return np.array([np.cos(r), np.sin(r)], np.float32)

    gallery = np.stack([unit(-10), unit(12), unit(-14), unit(-16), unit(-18), unit(40), unit(60)])
    probe = unit(0)[None]
    ids = np.array([f"g{i}" for i in range(len(gallery))], object)
    sims = probe @ gallery.T
    order = np.argsort(-sims, axis=1)
    lists = RankedLists(order, np.take_along_axis(sims, order, 1))
    assert lists.indices[0, 0] == 0 and len(ids) == 7
    jac, orig = kreciprocal_parts(lists, gallery[lists.indices], k1=2, k2=1)
    assert jac.shape == orig.shape == (1, 7)
    new = KReciprocal(k1=2, k2=1, lam=0.3).rerank(probe, lists, gallery[lists.indices])
    assert new.indices[0, 0] == 1


@pytest.mark.parametrize("method", [KReciprocal(), KReciprocal(tune=True, k1_grid=(5, 10), k2_grid=(1, 3)),
                                    AlphaQE()])
def test_baselines_permute(world, method):
    train, val, test = world
    out = rerank(method.fit(train, val), test)  # rerank() asserts the permutation contract
    assert out.indices.shape == test.lists.indices.shape


def test_lookalike_improves_rank1_on_synthetic(world):
    train, val, test = world
    r = LookalikeReranker(LookalikeLDA(), [TopK(k) for k in (2, 5, 20)], ("zscore",)).fit(train, val)
    base = evaluate(test.positions())["rank1"]
    new = evaluate(test.positions(rerank(r, test)))["rank1"]
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
    for m in default_methods(0, disambiguators=[Spy()]):
        m.fit(train, val)
        out = rerank(m, test)
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
        def _rerank(self, probes, lists, candidates, features):
            return RankedLists(lists.indices[:, ::-1] * 0, lists.scores)

    with pytest.raises(AssertionError):
        rerank(Broken(), test)


def test_rerank_validates_input(world):
    _, _, test = world
    with pytest.raises(ValueError):
        KReciprocal().rerank(test.probes.vectors[:-1], test.lists, test.candidates)
    bad = test.candidates.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError):
        KReciprocal().rerank(test.probes.vectors, test.lists, bad)


def test_grid_search_picks_best_and_earliest_tie():
    best, score, table = grid_search([{"a": 1}, {"a": 2}, {"a": 3}], lambda a: (min(a, 2), 0))
    assert best == {"a": 2} and score == (2, 0) and len(table) == 3


def test_nonmated_lists_exclude_own_identity(world):
    _, val, _ = world
    lists = nonmated_lists(val.probes, val.gallery, 10)
    assert lists.indices.shape == (len(val.probes), 10)
    assert not (val.gallery.identities[lists.indices] == val.probes.identities[:, None]).any()
    assert (np.diff(lists.scores, axis=1) <= 0).all()


def test_rerank_input_lists_are_checked_at_the_boundary():
    """NaN or -inf base scores (fusion would give NaN), lists sorted worst first (the top slots would be the
    wrong ones) and repeated candidates are refused in one line."""
    from lookalike.metrics import RankedLists
    from lookalike.rerank.base import check_lists

    rng = np.random.default_rng(0)
    probes = rng.standard_normal((2, 4)).astype(np.float32)
    cands = rng.standard_normal((2, 3, 4)).astype(np.float32)
    ids = np.array([[0, 1, 2], [3, 4, 5]])
    good = np.array([[0.9, 0.5, 0.1], [0.8, 0.8, 0.2]])
    check_lists(probes, RankedLists(ids, good), cands)
    for lists, message in ((RankedLists(ids, np.where(good == 0.1, np.nan, good)), "finite"),
                           (RankedLists(ids, np.where(good == 0.1, -np.inf, good)), "finite"),
                           (RankedLists(ids, good[:, ::-1].copy()), "best first"),
                           (RankedLists(np.array([[0, 1, 0], [3, 4, 5]]), good), "twice")):
        with pytest.raises(ValueError, match=message):
            check_lists(probes, lists, cands)
