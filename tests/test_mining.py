"""Lookalike-pair mining: labels, identity rules, thresholds, statistics and the report's plots."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.mining import (
    GENUINE,
    LOOKALIKE,
    GenuineMiner,
    HardImpostorMiner,
    Pairs,
    ThresholdMiner,
    TopKImpostorMiner,
    UnionMiner,
    default_miner,
    mining_report,
)
from lookalike.rerank.synthetic import synthetic_faces


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(60, per_person=3, seed=1, prefix="tr")


def brute_sims(faces):
    s = faces.vectors @ faces.vectors.T
    np.fill_diagonal(s, -np.inf)
    return s


def test_topk_impostors_are_other_people_and_nearest(faces):
    pairs = TopKImpostorMiner(k=3).mine(faces)
    assert (pairs.labels == LOOKALIKE).all()
    assert (faces.identities[pairs.left] != faces.identities[pairs.right]).all()
    s = brute_sims(faces)
    s[faces.identities[:, None] == faces.identities[None, :]] = -np.inf
    nearest = s.argmax(1)
    mined = set(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True))
    for i, j in enumerate(nearest):
        assert (min(i, j), max(i, j)) in mined
    np.testing.assert_allclose(pairs.scores, s[pairs.left, pairs.right], atol=1e-5)


def test_hard_impostors_beat_a_true_mate(faces):
    pairs = HardImpostorMiner(margin=0.0, max_per_query=50).mine(faces)
    assert len(pairs) > 0
    s = brute_sims(faces)
    same = faces.identities[:, None] == faces.identities[None, :]
    weakest = np.where(same, s, np.inf).min(1)
    ok = (pairs.scores > weakest[pairs.left] - 1e-6) | (pairs.scores > weakest[pairs.right] - 1e-6)
    assert ok.all()
    assert (faces.identities[pairs.left] != faces.identities[pairs.right]).all()


def test_threshold_miner_is_exhaustive_above_threshold(faces):
    t = 0.6
    pairs = ThresholdMiner(threshold=t).mine(faces)
    s = brute_sims(faces)
    s[faces.identities[:, None] == faces.identities[None, :]] = -np.inf
    assert len(pairs) == int((np.triu(s, 1) >= t).sum())
    assert (pairs.scores >= t).all()


def test_genuine_miner_and_union(faces):
    g = GenuineMiner(max_per_identity=None).mine(faces)
    assert (g.labels == GENUINE).all()
    assert (faces.identities[g.left] == faces.identities[g.right]).all()
    n = sum(c * (c - 1) // 2 for c in np.unique(faces.identities, return_counts=True)[1])
    assert len(g) == n
    u = UnionMiner([GenuineMiner(None), TopKImpostorMiner(2)])
    pairs = u.mine(faces)
    assert u.stats["n_genuine"] == n and u.stats["n_lookalike"] > 0
    assert set(u.stats["miners"]) == {"GenuineMiner", "TopKImpostorMiner"}
    assert "lookalike_score_q" in u.stats
    lo, hi = np.minimum(pairs.left, pairs.right), np.maximum(pairs.left, pairs.right)
    assert len(set(zip(lo.tolist(), hi.tolist(), strict=True))) == len(pairs)


def test_miner_rejects_bad_input(faces):
    bad = type(faces)(faces.paths, faces.identities, faces.vectors.copy())
    bad.vectors[0, 0] = np.nan
    with pytest.raises(ValueError):
        TopKImpostorMiner().mine(bad)


def test_pairs_unique_and_subset():
    p = Pairs([0, 1, 2], [1, 0, 3], [0, 0, 1], [0.5, 0.5, 0.9]).unique()
    assert len(p) == 2 and len(p.genuine) == 1 and len(p.lookalike) == 1


def test_mining_report_writes_pngs(faces, tmp_path):
    stats = mining_report(faces, tmp_path, default_miner(k=2), n_montage=2)
    for f in ("score_distributions.png", "lookalike_montage.png"):
        assert (tmp_path / f).stat().st_size > 1000
    assert stats["n_lookalike"] > 0 and stats["montage_pairs"] == 2
