"""Property-based tests (hypothesis): manifest parsing, protocol splitting and metrics."""

from __future__ import annotations

import csv

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lookalike.data.manifest import load_manifest
from lookalike.data.protocol import make_protocol
from lookalike.data.table import FaceTable
from lookalike.metrics import RankedLists, cmc_curve, evaluate, mate_positions

FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

identity = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=8) \
    .filter(lambda s: s.strip())
counts = st.lists(st.integers(1, 5), min_size=4, max_size=25)


def _table(person_counts: list[int]) -> FaceTable:
    paths, ids = [], []
    for p, n in enumerate(person_counts):
        paths += [f"/x/p{p}/{i}.png" for i in range(n)]
        ids += [f"p{p}"] * n
    return FaceTable(paths, ids)


@FAST
@given(st.lists(st.tuples(identity, st.sampled_from(["", " ", "\t"])), min_size=1, max_size=10))
def test_manifest_roundtrips_identities(tmp_path, rows):
    (tmp_path / "a.png").write_bytes(b"x")
    path = tmp_path / "m.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows(["a.png", ident + pad] for ident, pad in rows)
    t = load_manifest(path)
    assert t.identities.tolist() == [ident.strip() for ident, _ in rows]
    assert len(t) == len(rows) and (t.roles == "").all()


@FAST
@given(counts, st.integers(0, 2**16), st.sampled_from([0.3, 0.5, 0.7]), st.sampled_from([0.0, 0.3, 0.5]))
def test_protocol_split_properties(person_counts, seed, test_fraction, val_fraction):
    table = _table(person_counts)
    try:
        p = make_protocol(table, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction)
    except ValueError as e:  # only when no test person has two images
        assert "no probes" in str(e)
        return
    roles, ids = p.table.roles, p.table.identities
    groups = {"train": {"train"}, "val": {"val_gallery", "val_probe", "val_distractor"},
              "test": {"gallery", "probe", "distractor"}}
    seen: dict[str, str] = {}
    for i, r in zip(ids, roles, strict=True):
        g = next(k for k, v in groups.items() if r in v)
        assert seen.setdefault(i, g) == g  # no person in two parts
    for person in set(ids.tolist()):
        r = roles[ids == person]
        n_gallery = int(np.isin(r, ("gallery", "val_gallery")).sum())
        assert n_gallery == (1 if len(r) > 1 and r[0] != "train" else 0)
    again = make_protocol(table, seed=seed, test_fraction=test_fraction, val_fraction=val_fraction)
    assert again.table.roles.tolist() == roles.tolist()  # deterministic for a seed
    # a saved protocol reruns exactly, whatever the seed (its fractions come back from protocol.json)
    rerun = make_protocol(FaceTable(table.paths, ids, roles), seed=seed + 1, test_fraction=0.9,
                          val_fraction=val_fraction)
    assert rerun.table.roles.tolist() == roles.tolist()


@st.composite
def search(draw):
    g = draw(st.integers(2, 12))
    q = draw(st.integers(1, 10))
    n_ids = draw(st.integers(1, 5))
    gallery_ids = np.asarray(draw(st.lists(st.integers(0, n_ids), min_size=g, max_size=g)))
    probe_ids = np.asarray(draw(st.lists(st.sampled_from(sorted(set(gallery_ids.tolist()))), min_size=q,
                                         max_size=q)))
    scores = np.asarray(draw(st.lists(st.floats(-1, 1), min_size=q * g, max_size=q * g))).reshape(q, g)
    return probe_ids, gallery_ids, scores


def _positions(probe_ids, gallery_ids, scores):
    order = np.argsort(-scores, axis=1, kind="stable")
    lists = RankedLists(order, np.take_along_axis(scores, order, 1))
    base = [np.flatnonzero(gallery_ids[o] == p) for o, p in zip(order, probe_ids, strict=True)]
    return mate_positions(lists, probe_ids, gallery_ids, base)


@FAST
@given(search(), st.randoms(use_true_random=False))
def test_metric_properties(s, rnd):
    probe_ids, gallery_ids, scores = s
    pos = _positions(probe_ids, gallery_ids, scores)
    m = evaluate(pos, n_boot=20)
    curve = cmc_curve(pos, max_rank=len(gallery_ids))
    assert np.all(np.diff(curve) >= 0) and curve[-1] == 1.0
    assert m["rank1"] <= m["rank5"] <= m["rank10"]
    assert 0.0 <= m["mAP"] <= 1.0
    perm = np.asarray(rnd.sample(range(len(gallery_ids)), len(gallery_ids)))
    # a gallery in another order (ties broken by gallery position aside) gives the same metrics
    if len(np.unique(scores)) == scores.size:
        m2 = evaluate(_positions(probe_ids, gallery_ids[perm], scores[:, perm]), n_boot=20)
        assert m2["rank1"] == m["rank1"] and np.isclose(m2["mAP"], m["mAP"])
