"""Batch re-ranking (many probes re-ranked together): agreement with the transductive setting when every list holds
the whole gallery, the tuning on validation, the model's rule and file, and its limits."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_scripts import load_script

from lookalike.disambiguators import LookalikeLDA
from lookalike.metrics import RankedLists
from lookalike.mining import default_miner
from lookalike.model import LookalikeModel
from lookalike.rerank.base import sort_by_score
from lookalike.rerank.batch import GRID, BatchReranker, BatchSetting, JointDistances
from lookalike.rerank.synthetic import synthetic_faces, synthetic_split
from lookalike.rerank.transductive import kreciprocal_transductive
from lookalike.rerank.tuning import LabelledLists


@pytest.fixture(scope="module")
def space():
    train = synthetic_faces(120, seed=1, prefix="tr")
    return LookalikeLDA().fit(train, default_miner(k=5).mine(train))


def many_photos(seed: int, n_people: int = 40, per_person: int = 8):
    """A split with several probes a person (what batch re-ranking is for)."""
    return synthetic_split(synthetic_faces(n_people, per_person=per_person, seed=seed, prefix=f"s{seed}-"), "test")


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (10, 1, 0.7), (5, 3, 0.1)])
def test_whole_gallery_lists_give_the_transductive_setting(space, k1, k2, lam):
    """When every probe's list holds the whole gallery, the joint set is the authors' (all probes + gallery), so the
    final distances are :func:`kreciprocal_transductive`'s in the disambiguator's space, candidate by candidate."""
    test = many_photos(3)
    p, g = test.probes.vectors, test.gallery.vectors
    sims = p @ g.T
    order = np.argsort(-sims, axis=1, kind="stable")
    lists = RankedLists(order, np.take_along_axis(sims, order, 1))
    got = JointDistances(p, lists, g[order], space).final(BatchSetting(k1, k2, lam))
    want = kreciprocal_transductive(space.transform(p), space.transform(g), k1, k2, lam)
    np.testing.assert_allclose(got, np.take_along_axis(want, order, 1), atol=1e-6)


def test_fit_tunes_on_validation_and_reranks_with_the_other_probes(space):
    val, test = many_photos(2), many_photos(4)
    labelled = LabelledLists(val.probes, val.gallery, val.lists)
    batch = BatchReranker(space).fit(None, labelled)
    s = batch.setting_
    assert s.k1 in GRID["k1"] and s.k2 in GRID["k2"] and s.lam in GRID["lam"]
    assert batch.stats["grid_size"] == 45
    # the recorded validation rank-1 is the chosen setting's, and at least the base lists'
    again = sort_by_score(val.lists, -JointDistances(val.probes.vectors, val.lists, val.candidates, space).final(s))
    assert batch.stats["val_rank1"] == labelled.quality(again)[0] >= labelled.quality()[0]
    out = batch.rerank(test.probes.vectors, test.lists, test.candidates)  # the base class checks each list permutes
    assert (np.diff(out.scores, axis=1) <= 0).all()
    # a probe's list depends on the other probes of the batch: re-ranked alone, some lists come out otherwise
    alone = [batch.rerank(test.probes.vectors[i:i + 1], RankedLists(test.lists.indices[i:i + 1],
                                                                  test.lists.scores[i:i + 1]),
                          test.candidates[i:i + 1]).indices[0] for i in range(len(test.probes))]
    assert (np.stack(alone) != out.indices).any(1).sum() > 0


def test_min_batch_is_the_smallest_size_that_beats_per_photo_on_validation(space):
    val = many_photos(2)
    labelled = LabelledLists(val.probes, val.gallery, val.lists)
    batch = BatchReranker(space).fit(None, labelled)
    assert batch.choose_min_batch(labelled, per_photo_rank1=-1.0) == 10  # anything beats it: the smallest size
    assert list(batch.stats["val_rank1_by_batch_size"]) == ["10"]
    n = len(val.probes)
    assert batch.choose_min_batch(labelled, per_photo_rank1=2.0) == n  # nothing beats it: all val probes
    assert list(batch.stats["val_rank1_by_batch_size"]) == [str(b) for b in (10, 50, 200, 1000) if b < n]
    # each size's figure is its random batches re-ranked one by one: size >= n would be the whole batch
    whole = labelled.quality(batch.rerank(val.probes.vectors, val.lists, val.candidates))[0]
    assert batch.choose_min_batch(labelled, per_photo_rank1=2.0, sizes=(n + 1,)) == n
    assert batch.stats["val_rank1_by_batch_size"] == {} and batch.stats["val_rank1"] == pytest.approx(whole)


def test_joint_set_size_is_limited_with_a_clear_error(space):
    test = many_photos(4)
    batch = BatchReranker(space, max_joint=50)
    batch.setting_ = BatchSetting(10, 3, 0.3)
    with pytest.raises(ValueError, match="split the photos into smaller batches"):
        batch.rerank(test.probes.vectors, test.lists, test.candidates)


def test_image_level_disambiguator_has_no_batch_space():
    class Images(LookalikeLDA):
        input = "image"

    with pytest.raises(ValueError, match="scores images"):
        BatchReranker(Images())


def test_model_keeps_batch_only_when_it_wins_on_validation_and_saves_it(tmp_path):
    """The rule: a batch setting is kept iff its val rank-1 is above the per-photo model's (recorded); without one,
    rerank_batch is a clear error; a batch setting survives the model file and re-ranks the same."""
    train = synthetic_faces(120, seed=1, prefix="tr")
    val = synthetic_split(synthetic_faces(40, per_person=8, seed=2, prefix="va"), "val")
    test = many_photos(5)
    model = LookalikeModel(depth=20).fit(train, val.probes, val.gallery)
    t = model.batch_tuning_
    assert t["kept"] == (t["val_rank1"] > t["per_photo_val_rank1"]) == (model.batch_ is not None)
    assert t["per_photo_val_rank1"] == model.reranker_.stats["val_rank1"] and "rule" in t
    model.batch_ = None
    with pytest.raises(ValueError, match="no batch setting"):
        model.rerank_batch(test.probes.vectors, test.lists, test.candidates)
    model.save(tmp_path / "none.lkm")
    assert LookalikeModel.load(tmp_path / "none.lkm").batch_ is None
    model.batch_ = BatchReranker(model.disambiguator_)
    model.batch_.setting_, model.batch_.min_batch_ = BatchSetting(10, 3, 0.3), 50
    model.save(tmp_path / "m.lkm")
    back = LookalikeModel.load(tmp_path / "m.lkm")
    assert back.batch_tuning_ == t and back.batch_.setting_ == BatchSetting(10, 3, 0.3)
    assert back.batch_.min_batch_ == 50
    a = model.rerank_batch(test.probes.vectors, test.lists, test.candidates)
    b = back.rerank_batch(test.probes.vectors, test.lists, test.candidates)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_batch_size_script_reranks_each_batch_on_its_own(space):
    """benchmarks/batch_size.py: one batch of everything is the whole re-ranking; batches of one, each probe alone."""
    script = load_script("batch_size")
    test = many_photos(4)
    model = LookalikeModel(depth=20)
    model.batch_ = BatchReranker(space)
    model.batch_.setting_ = BatchSetting(10, 3, 0.3)
    p, g = test.probes.vectors, test.gallery.vectors
    mated = test.gallery.identities[None, :] == test.probes.identities[:, None]
    everything = model.rerank_batch(p, test.lists, test.candidates).indices[:, 0]
    n = len(p)
    assert script.batched_rank1(model, p, g, test.lists, mated, [np.arange(n)]) == \
        pytest.approx(np.mean(mated[np.arange(n), everything]))
    one = [model.rerank_batch(p[i:i + 1], RankedLists(test.lists.indices[i:i + 1], test.lists.scores[i:i + 1]),
                              test.candidates[i:i + 1]).indices[0, 0] for i in range(n)]
    assert script.batched_rank1(model, p, g, test.lists, mated, [np.array([i]) for i in range(n)]) == \
        pytest.approx(np.mean(mated[np.arange(n), one]))


def test_identify_batch_keeps_each_faces_per_photo_final_scores(tmp_path, synthetic_model):
    """``Identifier.search_batch``: every face's candidates carry the final scores its own search gives, and its
    decision is the same, though the lists of the batch hold different faces at the same positions (a model that
    re-ranks every list: a candidate known only by its position must not be taken for another list's)."""
    import copy

    from lookalike.gallery import Gallery
    from lookalike.identify import Identifier, TemplateFace

    fitted, people = synthetic_model
    model = copy.copy(fitted)
    model.batch_ = BatchReranker(model.disambiguator_)
    model.batch_.setting_, model.batch_.min_batch_ = BatchSetting(10, 3, 0.3), 1
    with Gallery.create(tmp_path / "g.sqlite", matcher=model.matcher) as g:
        g.add_embeddings(people.identities[:300], people.vectors[:300])
        ident = Identifier(g, model)
        faces = [TemplateFace(v, [f"probe {i}"]) for i, v in enumerate(people.vectors[300:340])]
        alone = [ident.search_face(f, top=10) for f in faces]
        together = ident.search_batch(faces, top=10)
    moved = 0
    for a, b in zip(alone, together, strict=True):
        mine = {c["image_id"]: c["final_score"] for c in a["candidates"]}
        assert {c["image_id"]: c["final_score"] for c in b["candidates"] if c["image_id"] in mine} == \
            pytest.approx(mine, abs=1e-4)
        assert b["decision"] == a["decision"]
        moved += any(c["base_rank"] != c["rank"] for c in a["candidates"])
    assert moved > 10  # the model re-ranks these lists
