"""Gallery search (NumpyIndex, FaissIndex, full_ranks) and identification metrics."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.index import FaissIndex, NumpyIndex, full_ranks, make_index
from lookalike.metrics import (
    OpenSetScores,
    RankedLists,
    average_precision,
    bootstrap_ci,
    cmc_curve,
    dir_replicates,
    evaluate,
    first_hits,
    fnir_at_fpir,
    mate_positions,
    mcnemar,
    open_set_ci,
    paired_dir,
    paired_mean,
)


def _unit(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _int_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Unit vectors of four entries +-0.5 (the rest 0): dot products are exact multiples of 0.25 in float32, so ties
    are real ties (indexes take unit vectors only)."""
    x = np.zeros((n, d), np.float32)
    cols = np.argsort(rng.random((n, d)), axis=1)[:, :4]
    np.put_along_axis(x, cols, rng.choice(np.float32([-0.5, 0.5]), (n, 4)), axis=1)
    return x


def _stable_topk(q: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """Reference: best first, ties by gallery order."""
    return np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :k]


# ----------------------------------------------------------------------------------------------- indexes


@pytest.mark.parametrize("k", [1, 5, 17, 100, 499, 500, 1000])
def test_numpy_and_faiss_agree(k):
    rng = np.random.default_rng(k)
    g, q = _unit(rng, 500, 32), _unit(rng, 60, 32)
    a, b = NumpyIndex(32, block=16), FaissIndex(32)
    a.add(g[:200])
    a.add(g[200:])  # several adds = one
    b.add(g)
    sa, ia = a.search(q, k)
    sb, ib = b.search(q, k)
    kk = min(k, 500)
    assert sa.shape == ia.shape == sb.shape == ib.shape == (60, kk)
    assert ia.dtype == ib.dtype == np.int64
    np.testing.assert_allclose(sa, sb, atol=1e-5)
    # scores are sorted best first and are the true similarities of the returned ids
    assert (np.diff(sa, axis=1) <= 0).all()
    np.testing.assert_allclose(sa, np.take_along_axis(q @ g.T, ia, axis=1), atol=1e-5)
    # ids agree wherever a score is distinct from its neighbours in the list
    gaps = np.abs(np.diff(sa, axis=1)) > 1e-5
    distinct = np.ones((len(sa), 1), bool)
    distinct = np.concatenate([distinct, gaps], 1) & np.concatenate([gaps, distinct], 1)
    assert distinct.mean() > 0.95
    np.testing.assert_array_equal(ia[distinct], ib[distinct])
    np.testing.assert_array_equal(ia, _stable_topk(q, g, kk))


def test_numpy_index_blocks_and_full_list_tie_order():
    rng = np.random.default_rng(1)
    g, q = _int_vectors(rng, 40, 6), _int_vectors(rng, 25, 6)
    one, many = NumpyIndex(6), NumpyIndex(6, block=4)
    one.add(g)
    many.add(g)
    for k in (3, 40):
        s1, i1 = one.search(q, k)
        s2, i2 = many.search(q, k)
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(s1, s2)
    # the whole gallery (k = len): ties are broken by gallery order
    np.testing.assert_array_equal(one.search(q, 40)[1], _stable_topk(q, g, 40))



def test_numpy_index_boundary_ties_by_gallery_order():
    rng = np.random.default_rng(2)
    g, q = _int_vectors(rng, 300, 8), _int_vectors(rng, 50, 8)
    ix = NumpyIndex(8)
    ix.add(g)
    for k in (1, 5, 17):
        np.testing.assert_array_equal(ix.search(q, k)[1], _stable_topk(q, g, k))
    same = NumpyIndex(4)
    same.add(np.full((2000, 4), 0.5, np.float32))  # 2000 identical gallery vectors
    assert same.search(np.full((1, 4), 0.5, np.float32), 5)[1].tolist() == [[0, 1, 2, 3, 4]]


def test_faiss_index_ties_by_gallery_order():
    ix = FaissIndex(4)
    ix.add(np.full((10, 4), 0.5, np.float32))
    assert ix.search(np.full((1, 4), 0.5, np.float32), 5)[1].tolist() == [[0, 1, 2, 3, 4]]


def test_index_input_checks():
    for kind in ("numpy", "faiss"):
        ix = make_index(kind, 4)
        assert len(ix) == 0
        with pytest.raises(ValueError, match="shape"):
            ix.add(np.zeros((3, 5), np.float32))
        ix.add(np.eye(4, dtype=np.float32)[:3])
        assert len(ix) == 3
        with pytest.raises(ValueError, match="shape"):
            ix.search(np.zeros(4, np.float32), 1)  # 1-d query
        s, i = ix.search(np.eye(4, dtype=np.float32)[:2].astype(np.float64), 10)  # float64 is accepted
        assert i.shape == (2, 3) and i[:, 0].tolist() == [0, 1] and s[:, 0].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="unknown index"):
        make_index("annoy", 4)


# ----------------------------------------------------------------------------------------------- full_ranks


@pytest.mark.parametrize("block", [1024, 3])
def test_full_ranks_matches_brute_force(block):
    rng = np.random.default_rng(block)
    g, q = _int_vectors(rng, 60, 5), _int_vectors(rng, 30, 5)  # many exact ties
    targets = [rng.choice(60, size=rng.integers(0, 5), replace=False) for _ in range(30)]
    got = full_ranks(q, g, targets, block=block)
    order = np.argsort(-(q @ g.T), axis=1, kind="stable")  # ties by gallery order
    for row, t, pos in zip(order, targets, got, strict=True):
        position_of = np.empty(60, np.int64)
        position_of[row] = np.arange(60)
        np.testing.assert_array_equal(pos, np.sort(position_of[t]))
        assert pos.dtype == np.int64
    # consistent with the top of NumpyIndex's ranking when the list covers the gallery
    ix = NumpyIndex(5)
    ix.add(g)
    ids = ix.search(q, 60)[1]
    for r, (t, pos) in enumerate(zip(targets, got, strict=True)):
        assert sorted(np.flatnonzero(np.isin(ids[r], t)).tolist()) == pos.tolist()


# ----------------------------------------------------------------------------------------------- AP


def official_compute_ap(ranked_is_good: list[bool], ngood: int) -> float:
    """Python port of TinyFace/Market-1501's compute_AP.m (no junk images)."""
    if ngood == 0:
        return 0.0
    old_recall, old_precision, ap, intersect, j, good_now = 0.0, 1.0, 0.0, 0, 0, 0
    for hit in ranked_is_good:
        if hit:
            good_now += 1
            intersect += 1
        recall = intersect / ngood
        precision = intersect / (j + 1)
        ap += (recall - old_recall) * ((old_precision + precision) / 2)
        old_recall, old_precision = recall, precision
        j += 1
        if good_now == ngood:
            break
    return ap


def test_average_precision_matches_official_loop():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        good = rng.random(n) < rng.random()
        positions = np.flatnonzero(good)
        expected = official_compute_ap(good.tolist(), int(good.sum()))
        assert average_precision(positions) == pytest.approx(expected, abs=1e-12)


def test_average_precision_hand_cases():
    assert average_precision(np.array([], np.int64)) == 0.0
    assert average_precision([0]) == 1.0
    assert average_precision([0, 1, 2]) == 1.0
    assert average_precision([1]) == pytest.approx(0.25)  # trapezoid from precision 0 to 1/2
    assert average_precision([0, 2]) == pytest.approx(0.5 * 1 + 0.5 * (1 / 2 + 2 / 3) / 2)


# ----------------------------------------------------------------------------------------------- evaluate


def test_evaluate_cmc_on_hand_made_positions():
    positions = [np.array([0]), np.array([2, 5]), np.array([10]), np.array([], np.int64), np.array([1, 3])]
    assert first_hits(positions).tolist() == [0, 2, 10, np.inf, 1]
    m = evaluate(positions, ranks=(1, 2, 3, 5, 10, 11, 20), n_boot=200)
    assert m["rank1"] == pytest.approx(1 / 5)
    assert m["rank2"] == pytest.approx(2 / 5)
    assert m["rank3"] == m["rank5"] == m["rank10"] == pytest.approx(3 / 5)
    assert m["rank11"] == m["rank20"] == pytest.approx(4 / 5)
    assert m["mAP"] == pytest.approx(np.mean([average_precision(p) for p in positions]))
    lo, hi = m["rank1_ci95"]
    assert 0 <= lo <= m["rank1"] <= hi <= 1
    lo, hi = m["mAP_ci95"]
    assert 0 <= lo < m["mAP"] < hi <= 1
    curve = cmc_curve(positions, max_rank=20)
    assert len(curve) == 20 and (np.diff(curve) >= 0).all()
    assert curve[0] == m["rank1"] and curve[9] == m["rank10"] and curve[19] == m["rank20"]


def test_evaluate_defaults_and_empty():
    m = evaluate([np.array([0]), np.array([4])], n_boot=10)
    assert {"rank1", "rank5", "rank10", "rank20", "rank50", "mAP", "rank1_ci95", "mAP_ci95"} <= set(m)
    assert m["rank1"] == 0.5 and m["rank5"] == 1.0
    e = evaluate([], n_boot=10)
    assert np.isnan(e["rank1"]) and np.isnan(e["mAP"])


def test_mate_positions_combines_list_and_full_ranking():
    lists = RankedLists(np.array([[3, 1, 0], [2, 0, 1]]), np.array([[0.9, 0.8, 0.1], [0.7, 0.6, 0.5]]))
    gallery_ids = np.array(["a", "b", "c", "a", "b", "a"], object)
    probe_ids = np.array(["a", "b"], object)
    base = [np.array([0, 2, 4]), np.array([2, 3])]  # probe 0's third mate (row 5) lies beyond the list
    pos = mate_positions(lists, probe_ids, gallery_ids, base)
    assert [p.tolist() for p in pos] == [[0, 2, 4], [2, 3]]
    with pytest.raises(ValueError):
        RankedLists(np.zeros((2, 3), int), np.zeros((2, 4)))


# ----------------------------------------------------------------------------------------------- statistics


def test_mcnemar():
    base = np.zeros(10, bool)
    r = mcnemar(base, ~base)
    assert r["fixed"] == 10 and r["broken"] == 0
    assert r["mcnemar_p"] == pytest.approx(2 * 0.5**10)
    r = mcnemar(~base, base)
    assert r["fixed"] == 0 and r["broken"] == 10 and r["mcnemar_p"] == pytest.approx(2 * 0.5**10)
    same = np.array([1, 0, 1, 1, 0], bool)
    assert mcnemar(same, same) == {"mcnemar_p": 1.0, "fixed": 0, "broken": 0}
    base = np.array([0] * 5 + [1] * 5 + [1] * 20, bool)
    new = np.array([1] * 5 + [0] * 5 + [1] * 20, bool)
    r = mcnemar(base, new)
    assert (r["fixed"], r["broken"]) == (5, 5) and r["mcnemar_p"] == pytest.approx(1.0)
    r = mcnemar([0, 0, 0, 1], [1, 1, 0, 1])  # plain lists of 0/1
    assert (r["fixed"], r["broken"]) == (2, 0) and r["mcnemar_p"] == pytest.approx(0.5)


def test_bootstrap_ci():
    rng = np.random.default_rng(0)
    values = (rng.random(200) < 0.7).astype(float)
    ci = bootstrap_ci(values, n_boot=500, seed=1)
    assert ci[0] <= values.mean() <= ci[1] and ci[0] < ci[1]
    assert ci == bootstrap_ci(values, n_boot=500, seed=1)  # reproducible
    assert ci != bootstrap_ci(values, n_boot=500, seed=2)
    narrow = bootstrap_ci(values, n_boot=500, seed=1, level=0.5)
    assert ci[0] <= narrow[0] <= narrow[1] <= ci[1]
    assert bootstrap_ci(np.ones(5)) == [1.0, 1.0]
    assert all(np.isnan(bootstrap_ci(np.array([]))))
    assert all(np.isnan(bootstrap_ci(values, n_boot=0)))  # no interval asked for: none, not a crash


def _open_set(rng: np.random.Generator, m: int = 300, n: int = 400, shift: float = 1.5) -> OpenSetScores:
    """Mated top scores above non-mated ones by ``shift`` on average, 80% of rank-1 candidates right."""
    return OpenSetScores(rng.normal(shift, 1, m), rng.random(m) < 0.8, rng.normal(0, 1, n))


def test_dir_replicates_are_the_point_estimate_on_each_resample():
    rng = np.random.default_rng(3)
    o = _open_set(rng)
    o = OpenSetScores(o.mated_top.round(1), o.mated_hit, o.nonmated_top.round(1))  # ties at the threshold
    for fpir in (0.01, 0.1):
        reps = dir_replicates([o], fpir, n_boot=7, seed=5, chunk=7)[:, 0]
        draw = np.random.default_rng(5)
        mated, nonmated = draw.integers(0, 300, (7, 300)), draw.integers(0, 400, (7, 400))
        want = [fnir_at_fpir(o.mated_top[a], o.mated_hit[a], o.nonmated_top[b], (fpir,))[f"dir@fpir={fpir:g}"]
                for a, b in zip(mated, nonmated, strict=True)]
        np.testing.assert_allclose(reps, want)
    # one search of each kind: every resample is the data itself
    one = OpenSetScores(np.array([0.9]), np.array([True]), np.array([0.9]))
    assert (dir_replicates([one], 0.01, 5) == 0).all()  # a mate scoring the non-mated top is not above the threshold
    higher = OpenSetScores(np.array([0.9]), np.array([True]), np.array([0.5]))
    assert (dir_replicates([higher], 0.01, 5) == 1).all()


def test_fnir_curve_agrees_with_the_rates():
    o = _open_set(np.random.default_rng(2))
    curve = o.fnir_curve(np.array([1 / 400, 0.01, 0.1, 1.0]))
    rates = o.rates()
    assert curve[1] == pytest.approx(rates["fnir@fpir=0.01"]) and curve[2] == pytest.approx(rates["fnir@fpir=0.1"])
    assert (np.diff(curve) <= 0).all() and curve[-1] == pytest.approx(1 - o.mated_hit.mean())  # FPIR 100%: no threshold


def test_open_set_ci_holds_the_estimate_and_widens_with_fewer_searches():
    rng = np.random.default_rng(0)
    o = _open_set(rng, 2000, 2000)
    ci = open_set_ci(o, n_boot=300, seed=1)
    for f in (0.01, 0.1):
        lo, hi = ci[f"dir@fpir={f:g}_ci95"]
        assert lo < o.rates()[f"dir@fpir={f:g}"] < hi
    small = _open_set(np.random.default_rng(0), 200, 200)
    lo, hi = ci["dir@fpir=0.1_ci95"]
    slo, shi = open_set_ci(small, n_boot=300, seed=1)["dir@fpir=0.1_ci95"]
    assert shi - slo > hi - lo
    assert open_set_ci(o, n_boot=300, seed=1) == ci  # reproducible
    assert open_set_ci(o, n_boot=0) == {} and open_set_ci(OpenSetScores(o.mated_top, o.mated_hit, np.zeros(0))) == {}


def test_paired_dir():
    rng = np.random.default_rng(1)
    old = _open_set(rng, 500, 500, shift=1.0)
    same = paired_dir(old, old, n_boot=200, seed=0)
    assert same["dir@fpir=0.01_diff"] == 0 and same["dir@fpir=0.01_diff_ci95"] == [0, 0]
    assert same["dir@fpir=0.01_p"] == same["dir@fpir=0.1_p"] == 1.0
    better = OpenSetScores(old.mated_top + 1.0, old.mated_hit, old.nonmated_top)  # every mate scores higher
    r = paired_dir(better, old, n_boot=200, seed=0)
    for f in ("0.01", "0.1"):
        lo, hi = r[f"dir@fpir={f}_diff_ci95"]
        assert 0 < lo <= r[f"dir@fpir={f}_diff"] <= hi
        assert r[f"dir@fpir={f}_p"] == pytest.approx(2 / 201)  # no resample on the far side of zero
    worse = paired_dir(old, better, n_boot=200, seed=0)
    assert worse["dir@fpir=0.1_diff"] == -r["dir@fpir=0.1_diff"] and worse["dir@fpir=0.1_p"] == r["dir@fpir=0.1_p"]
    # a small, noisy difference is not significant
    noisy = OpenSetScores(old.mated_top + rng.normal(0, 0.05, 500), old.mated_hit, old.nonmated_top)
    assert paired_dir(noisy, old, n_boot=200, seed=0)["dir@fpir=0.1_p"] > 0.05
    with pytest.raises(ValueError, match="same searches"):
        paired_dir(OpenSetScores(old.mated_top[:10], old.mated_hit[:10], old.nonmated_top), old, n_boot=10)


def test_paired_mean():
    rng = np.random.default_rng(4)
    old = rng.random(400)
    assert paired_mean(old, old, n_boot=100) == {"diff": 0.0, "diff_ci95": [0.0, 0.0], "p": 1.0}
    r = paired_mean(old + 0.05, old, n_boot=100)  # every probe better: no resample on the far side
    assert r["diff"] == pytest.approx(0.05) and r["p"] == pytest.approx(2 / 101)
    noisy = paired_mean(old + rng.normal(0, 0.2, 400), old, n_boot=500, seed=1)
    lo, hi = noisy["diff_ci95"]
    assert lo < noisy["diff"] < hi and noisy["p"] > 0.01
    assert paired_mean([], [], n_boot=10) == {} and paired_mean(old, old, n_boot=0) == {}


@pytest.mark.parametrize("fpir", [-0.1, 0, 1, 2, float("nan"), "0.01", True])
def test_an_fpir_outside_0_1_is_refused_not_turned_into_a_threshold(fpir):
    from lookalike.metrics import fnir_at_fpir, threshold_at_fpir

    top = np.linspace(0.1, 1, 10)
    with pytest.raises(ValueError, match="FPIR must be a number strictly between 0 and 1"):
        threshold_at_fpir(top, fpir)
    with pytest.raises(ValueError, match="FPIR"):
        fnir_at_fpir(top, np.ones(10, bool), top, (fpir,))


def test_metrics_refuse_arrays_that_would_broadcast_or_never_match():
    from lookalike.metrics import RankedLists, fnir_at_fpir, mate_positions, mcnemar, paired_mean

    with pytest.raises(ValueError, match="one value per search"):
        mcnemar([False], [True, True, True])  # had counted 3 probes fixed
    with pytest.raises(ValueError, match="one value per search"):
        paired_mean([1.0, 0.0], [0.0])
    with pytest.raises(ValueError, match="one value per search"):
        fnir_at_fpir(np.ones(3), np.ones(1, bool), np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        paired_mean([1.0, np.nan], [0.0, 0.0])
    lists = RankedLists(np.array([[0, 1]]), np.array([[0.9, 0.8]]))
    with pytest.raises(ValueError, match="different kinds"):
        mate_positions(lists, np.array([1]), np.array(["1", "2"]), [np.array([])])
    with pytest.raises(ValueError, match="negative gallery row"):
        mate_positions(RankedLists(np.array([[-1, 0]]), np.array([[0.9, 0.8]])), np.array(["b"]),
                       np.array(["a", "b"]), [np.array([])])
