"""Disambiguators: fitting on mined pairs, pair scoring, save/load, and a gain on synthetic lookalikes."""

from __future__ import annotations

import numpy as np
import pytest

from lookalike.disambiguators import LookalikeLDA
from lookalike.disambiguators.base import Disambiguator
from lookalike.metrics import evaluate
from lookalike.mining import Pairs, TopKImpostorMiner, default_miner
from lookalike.rerank.synthetic import synthetic_faces, synthetic_split


@pytest.fixture(scope="module")
def data():
    train = synthetic_faces(120, seed=1, prefix="tr")
    test = synthetic_split(synthetic_faces(80, seed=3, prefix="te"), "test")
    return train, default_miner(k=5).mine(train), test


def search_rank1(d: Disambiguator, split) -> float:
    s = d.transform(split.probes.vectors) @ d.transform(split.gallery.vectors).T
    return float((split.gallery.identities[s.argmax(1)] == split.probes.identities).mean())


@pytest.mark.parametrize("make", [lambda: LookalikeLDA(), lambda: LookalikeLDA(dim=12, power=0.5, cohort_n=5),
                                  lambda: LookalikeLDA(cohort_n=5, cohort_size=40)])
def test_fit_score_and_roundtrip(data, make, tmp_path):
    train, pairs, test = data
    d = make().fit(train, pairs)
    assert d.is_fitted_on(train)
    rows = np.arange(10)
    s = d.score(test.probes.vectors[rows], test.gallery.vectors[test.lists.indices[rows, 0]])
    assert s.shape == (10,) and np.isfinite(s).all()
    lists_scores = d.score_lists(test.probes.vectors, test.candidates)
    np.testing.assert_allclose(lists_scores[rows, 0], s, atol=1e-5)
    d.save(tmp_path / "d.npz")
    back = Disambiguator.load(tmp_path / "d.npz")
    assert type(back) is type(d) and back.get_params() == d.get_params()
    np.testing.assert_array_equal(back.score_lists(test.probes.vectors, test.candidates), lists_scores)
    assert back.is_fitted_on(train)


def test_unfitted_and_bad_shapes_are_refused(data):
    train, pairs, test = data
    with pytest.raises(RuntimeError):
        LookalikeLDA().score_lists(test.probes.vectors, test.candidates)
    d = LookalikeLDA().fit(train, pairs)
    with pytest.raises(ValueError):
        d.score_lists(test.probes.vectors[:3], test.candidates)
    with pytest.raises(ValueError):
        Disambiguator.from_state({"class": "os.system", "params": {}}, {})


def test_lda_separates_synthetic_lookalikes(data):
    train, pairs, test = data
    base = evaluate(test.positions())["rank1"]
    assert search_rank1(LookalikeLDA().fit(train, pairs), test) > base + 0.2


def test_needs_both_labels(data):
    train, _, _ = data
    only_impostors = TopKImpostorMiner(3).mine(train)
    with pytest.raises(ValueError):
        LookalikeLDA().fit(train, only_impostors)
    with pytest.raises(ValueError):
        LookalikeLDA().fit(train, Pairs([0], [len(train)], [1], [0.0]))


def test_cohort_term_penalises_crowded_faces(data):
    train, pairs, test = data
    plain = LookalikeLDA(shrink=0.5).fit(train, pairs)
    normed = LookalikeLDA(shrink=0.5, cohort_n=5, cohort_beta=1.0).fit(train, pairs)
    z = normed.transform(test.gallery.vectors)
    term = normed.cohort_term(z)
    sims = np.sort(z @ normed.cohort_.T, 1)[:, -5:].mean(1)
    np.testing.assert_allclose(term, sims / 2, atol=1e-6)
    diff = plain.score_lists(test.probes.vectors, test.candidates) - normed.score_lists(test.probes.vectors,
                                                                                     test.candidates)
    p = normed.transform(test.probes.vectors)
    expected = normed.cohort_term(p)[:, None] + term[test.lists.indices]
    np.testing.assert_allclose(diff, expected, atol=1e-5)


def test_a_capped_cohort_is_a_seeded_sample_of_the_projected_train_faces(data):
    train, pairs, _ = data
    whole = LookalikeLDA(shrink=0.5, cohort_n=5).fit(train, pairs)
    capped = [LookalikeLDA(shrink=0.5, cohort_n=5, cohort_size=40, seed=s).fit(train, pairs) for s in (0, 0, 1)]
    assert len(whole.cohort_) == len(train) and all(len(c.cohort_) == 40 for c in capped)
    np.testing.assert_array_equal(capped[0].cohort_, capped[1].cohort_)  # same seed, same sample
    assert not np.array_equal(capped[0].cohort_, capped[2].cohort_)
    rows = {r.tobytes() for r in whole.cohort_}
    assert all(r.tobytes() in rows for r in capped[0].cohort_)  # rows of the whole cohort, not new faces
    assert LookalikeLDA(cohort_n=5, cohort_size=10**6).fit(train, pairs).cohort_.shape == whole.cohort_.shape


@pytest.mark.parametrize("n_people", [5, 6, 7])
def test_lda_fits_with_few_people(n_people):
    """Too few train people to hold some out for the shrinkage: the fallback value is used, no IndexError."""
    train = synthetic_faces(n_people, per_person=3, seed=4, prefix="few")
    d = LookalikeLDA().fit(train, default_miner(k=2).mine(train))
    assert np.isfinite(d.transform(train.vectors)).all()


def test_memo_shared_by_threads_gives_the_batch_scores(data):
    """The service's engines share one model: its memo of gallery faces, filled by several threads at once (and
    restarting when full), still gives every probe the batch scores."""
    from concurrent.futures import ThreadPoolExecutor

    train, pairs, test = data
    d = LookalikeLDA(shrink=0.5, cohort_n=5, cohort_beta=1.0).fit(train, pairs)
    want = d.score_lists(test.probes.vectors, test.candidates)
    d.memo_size = 60
    cand = test.candidates[:, :20]

    def one(q: int) -> np.ndarray:
        return d.score_lists(test.probes.vectors[q:q + 1], cand[q:q + 1].copy())[0]

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(one, [q % len(test.probes) for q in range(4 * len(test.probes))]))
    for i, g in enumerate(got):
        np.testing.assert_allclose(g, want[i % len(test.probes), :20], atol=1e-6)


def test_prepare_gallery_remembers_every_face(data):
    from lookalike.identify import prepare_gallery

    train, pairs, test = data
    d = LookalikeLDA(shrink=0.5, cohort_n=5, cohort_beta=1.0).fit(train, pairs)
    model = type("M", (), {"disambiguator_": d})()
    gallery = test.gallery.vectors
    assert prepare_gallery(model, gallery, block=7) == len(gallery) and d._memo.n == len(gallery)
    want = d.prepare(gallery)[1]
    cohort = d.cohort_term
    d.cohort_term = lambda z: pytest.fail("a prepared face was cohort-scored again")
    try:
        np.testing.assert_allclose(d._prepare_gallery(gallery[::-1])[1], want[::-1], atol=1e-6)
    finally:
        d.cohort_term = cohort
    assert prepare_gallery(None, gallery) == 0


@pytest.mark.parametrize("memo_size", [10_000, 25])
def test_memo_serves_one_probe_at_a_time_like_a_batch(data, memo_size):
    """identify's memo of prepared gallery faces (one probe at a time; a small memo that fills and restarts,
    duplicate vectors in a list) gives the batch scores."""
    train, pairs, test = data
    d = LookalikeLDA(shrink=0.5, cohort_n=5, cohort_beta=1.0).fit(train, pairs)
    want = d.score_lists(test.probes.vectors, test.candidates)
    d.memo_size = memo_size
    cand = test.candidates[:, :20]
    for q in range(len(test.probes)):
        c = cand[q:q + 1].copy()
        c[0, 3] = c[0, 2]  # the same vector twice in one list (duplicate images)
        got = d.score_lists(test.probes.vectors[q:q + 1], c)
        expect = want[q, :20].copy()
        expect[3] = d.score_lists(test.probes.vectors[q:q + 1], c[:, 2:3])[0, 0]
        np.testing.assert_allclose(got[0], expect, atol=1e-6)  # batches differ in the last bits
    assert 0 < d._memo.n <= memo_size
