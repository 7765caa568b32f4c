"""End to end on real faces (ORL, a small LFW subset): protocol -> embeddings -> search -> metrics.

Skipped when ../shared/data is absent. Every run uses its own cache in tmp_path, so it works on a clean
machine (and never touches the shared cache under cache/).
"""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.data.folders import load_folders
from lookalike.data.protocol import make_protocol
from lookalike.experiment import build_split, embed_protocol
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import evaluate

pytestmark = pytest.mark.realdata


def _check_metrics(m: dict) -> None:
    ranks = [m[f"rank{k}"] for k in (1, 5, 10, 20, 50)]
    assert all(0 <= r <= 1 for r in ranks) and ranks == sorted(ranks)
    assert 0 <= m["mAP"] <= 1
    lo, hi = m["rank1_ci95"]
    assert lo <= m["rank1"] <= hi


@pytest.fixture(scope="module")
def orl_features(tmp_path_factory):
    from conftest import need_data

    orl = need_data("orl")
    table = load_folders(orl)
    assert len(table) == 400 and len(table.identity_counts()) == 40
    # 2 images per person (all 40 people) keep the run short; half the people test, the other half validation
    keep = np.isin([p.rsplit("/", 1)[-1] for p in table.paths], ["1.pgm", "6.pgm"])
    protocol = make_protocol(table.select(keep), seed=0, test_fraction=0.5, val_fraction=1.0, name="orl")
    cache = EmbeddingCache(tmp_path_factory.mktemp("orl") / "cache.sqlite")
    features = embed_protocol(protocol, cache=cache, workers=1, progress=False)
    return protocol, features, cache


def test_orl_end_to_end(orl_features):
    protocol, features, _ = orl_features
    c = protocol.counts()
    assert c == {"n_probes": 20, "n_gallery": 20, "n_distractors": 0, "n_enrolled": 20, "n_train": 0,
                 "n_val_probes": 20, "n_val_gallery": 20}
    assert features.embeddings.ok.all() and features.embeddings.computed == 80
    for name in ("test", "val"):
        split = build_split(features, name, depth=10)
        assert split.notes["probes_without_mate"] == 0
        assert len(split.probes) == 20 and len(split.gallery) == 20
        assert split.lists.indices.shape == (20, 10)
        m = evaluate(split.positions(), n_boot=200)
        _check_metrics(m)
        assert m["rank1"] >= 0.9, (name, m)
        assert m["mAP"] >= m["rank1"]  # one mate per probe: AP is 1 on a rank-1 hit
    # the faiss index gives the same baseline on real embeddings
    a = build_split(features, "test", depth=10, index="numpy")
    b = build_split(features, "test", depth=10, index="faiss")
    np.testing.assert_array_equal(a.lists.indices[:, :3], b.lists.indices[:, :3])


def test_orl_lowres_probes_only(orl_features):
    protocol, full_features, cache = orl_features
    # the test half only (a table whose roles are all assigned keeps them), probes degraded to 16 px faces
    test_rows = np.isin(protocol.table.roles, ("probe", "gallery"))
    low = make_protocol(protocol.table.select(test_rows), lowres=16, lowres_apply="probes")
    assert low.table.roles.tolist() == protocol.table.roles[test_rows].tolist()
    features = embed_protocol(low, cache=cache, workers=1, progress=False)  # the default matcher, as the fixture
    probe_rows = low.table.roles == "probe"
    # only 16 px faces are new work (the probes, and the gallery prepared as probes for non-mated searches): the
    # full-resolution gallery comes from the cache, the alignments too
    assert features.embeddings.computed == 2 * int(probe_rows.sum()) == 40
    v_full, v_low = full_features.embeddings.vectors[test_rows], features.embeddings.vectors
    np.testing.assert_array_equal(v_low[~probe_rows], v_full[~probe_rows])
    assert not np.allclose(v_low[probe_rows], v_full[probe_rows], atol=1e-3)
    m = evaluate(build_split(features, "test").positions(), n_boot=100)
    _check_metrics(m)
    assert m["rank1"] > 0.2  # degraded, but far better than chance (1/20)


@pytest.mark.parametrize("apply", ["probes", "gallery"])
def test_orl_one_side_degraded_nonmated_searches_are_prepared_as_probes(orl_features, apply):
    """With one side degraded, each distractor's non-mated search starts from the distractor prepared as probes are
    (else the open set would threshold other faces than the probes it decides)."""
    from lookalike.data.table import FaceTable
    from lookalike.embed import embed_paths

    protocol, _, cache = orl_features
    t = protocol.table
    keep = np.isin(t.roles, ("probe", "gallery"))
    people = sorted(set(t.identities[keep].tolist()))[:5]  # their gallery images become distractors
    roles = np.where(np.isin(t.identities, people) & (t.roles == "gallery"), "distractor", t.roles)
    keep &= ~(np.isin(t.identities, people) & (t.roles == "probe"))
    table = FaceTable(t.paths[keep], t.identities[keep], roles[keep])
    features = embed_protocol(make_protocol(table, lowres=16, lowres_apply=apply), "torch", cache=cache, workers=1,
                              progress=False)
    split = build_split(features, "test", depth=10)
    distractors = split.gallery.take(split.is_distractor)
    as_probes = embed_paths(distractors.paths, "torch", None, 16 if apply == "probes" else None, cache, workers=1,
                            progress=False).vectors
    np.testing.assert_array_equal(split.nonmated_probes.vectors, as_probes)
    assert not np.allclose(split.nonmated_probes.vectors, distractors.vectors, atol=1e-3)  # the other side
    sims = as_probes @ split.gallery.vectors.T
    sims[distractors.identities[:, None] == split.gallery.identities[None, :]] = -np.inf
    np.testing.assert_allclose(split.nonmated.scores[:, 0], sims.max(1), rtol=1e-5)


def test_lfw_subset_end_to_end(tmp_path):
    from conftest import need_data

    lfw = need_data("lfw")
    table = load_folders(lfw)
    counts = table.identity_counts()
    people = sorted(counts)
    multi = [p for p in people if counts[p] >= 2][:30]
    single = [p for p in people if counts[p] == 1][:30]
    rows = []
    for person in multi:
        rows += np.flatnonzero(table.identities == person)[:2].tolist()  # two images of each
    rows += np.flatnonzero(np.isin(table.identities, single)).tolist()
    subset = table.select(np.asarray(rows))
    assert len(subset) == 90
    protocol = make_protocol(subset, seed=1, test_fraction=1.0, val_fraction=0, name="lfw-small")
    c = protocol.counts()
    assert (c["n_probes"], c["n_enrolled"], c["n_distractors"]) == (30, 30, 30)
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    features = embed_protocol(protocol, cache=cache, workers=1, progress=False)
    s = features.embeddings.summary()
    assert s["ok"] == 90 and s["face"].get("detected", 0) >= 80
    split = build_split(features, "test", depth=20)
    assert split.is_distractor.sum() == 30 and len(split.probes) == 30 - split.notes["probes_without_mate"]
    m = evaluate(split.positions(), n_boot=200)
    _check_metrics(m)
    assert m["rank1"] > 0.5 and m["rank20"] >= 0.9
    # positions from the lists agree with the full ranking inside the list depth
    for pos, base in zip(split.positions(), split.base_ranks, strict=True):
        np.testing.assert_array_equal(pos, base)
