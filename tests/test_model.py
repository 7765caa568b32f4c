"""LookalikeModel: fit, calibrated thresholds, one-file save/load that reproduces the re-ranking exactly."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from lookalike.matchers.align import FaceAligner
from lookalike.metrics import RankedLists, threshold_at_fpir
from lookalike.model import FORMAT_VERSION, LookalikeModel
from lookalike.rerank.selection import AmbiguityGate, LookalikeGroup, ScoreMargin, TopK
from lookalike.rerank.synthetic import synthetic_faces, synthetic_split


@pytest.fixture(scope="module")
def fitted():
    train = synthetic_faces(120, seed=1, prefix="tr")
    val = synthetic_split(synthetic_faces(60, seed=2, prefix="va"), "val")
    test = synthetic_split(synthetic_faces(80, seed=3, prefix="te"), "test")
    model = LookalikeModel(depth=20, lowres=20).fit(train, val.probes, val.gallery)
    return model, test


def test_fit_tunes_and_calibrates(fitted):
    model, test = fitted
    assert model.reranker_.stats["val_rank1"] >= model.reranker_.stats["val_base_rank1"]
    t = [model.threshold(f) for f in (0.001, 0.01, 0.1)]
    assert t[0] >= t[1] >= t[2] and all(np.isfinite(t))
    with pytest.raises(ValueError, match="no threshold"):
        model.threshold(0.5)


def test_thresholds_come_from_the_gallery_prepared_as_probes():
    """With one side degraded, the val gallery's non-mated searches start from its images prepared as probes are
    (``val_gallery_as_probes``): the thresholds are those of these searches, the rest of the model is unchanged."""
    from lookalike.faces import FaceSet
    from lookalike.rerank.tuning import nonmated_lists

    train = synthetic_faces(120, seed=1, prefix="tr")
    val = synthetic_split(synthetic_faces(60, seed=2, prefix="va"), "val")
    g = val.gallery
    noisy = g.vectors + np.random.default_rng(0).normal(0, 0.05, g.vectors.shape).astype(np.float32)
    as_probes = FaceSet(g.paths, g.identities, noisy / np.linalg.norm(noisy, axis=1, keepdims=True))
    same = LookalikeModel(depth=20).fit(train, val.probes, g)
    other = LookalikeModel(depth=20).fit(train, val.probes, g, as_probes)
    assert same.fingerprint() == other.fingerprint()  # the same disambiguator, selection and fusion
    queries = FaceSet.concat(val.probes, as_probes)
    top = other.rerank(queries.vectors, lists := nonmated_lists(queries, g, 20), g.vectors[lists.indices]).scores[:, 0]
    assert other.training_["n_nonmated_searches"] == len(top)
    assert other.thresholds_ == {f: threshold_at_fpir(top, f) for f in (0.001, 0.01, 0.1)} != same.thresholds_


def test_save_load_reproduces_exactly(fitted, tmp_path):
    model, test = fitted
    out = model.rerank(test.probes.vectors, test.lists, test.candidates)
    model.save(tmp_path / "m.lkm")
    back = LookalikeModel.load(tmp_path / "m.lkm")
    again = back.rerank(test.probes.vectors, test.lists, test.candidates)
    np.testing.assert_array_equal(again.indices, out.indices)
    np.testing.assert_array_equal(again.scores, out.scores)
    assert back.thresholds_ == model.thresholds_
    assert back.lowres == 20 and back.matcher_name_ == model.matcher_name_


def test_final_scores_threshold_open_set(fitted):
    """Scores are non-increasing; the model's own threshold at FPIR 10% accepts most mated searches' rank-1."""
    model, test = fitted
    out = model.rerank(test.probes.vectors, test.lists, test.candidates)
    assert (np.diff(out.scores, axis=1) <= 0).all()
    hit = test.gallery.identities[out.indices[:, 0]] == test.probes.identities
    assert np.mean(hit & (out.scores[:, 0] >= model.threshold(0.1))) > 0.5


def test_load_refuses_bad_files(fitted, tmp_path):
    model, _ = fitted
    junk = tmp_path / "junk.lkm"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a lookalike model"):
        LookalikeModel.load(junk)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a lookalike model"):
        LookalikeModel.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError):
        LookalikeModel.load(tmp_path / "missing.lkm")
    meta = model.describe()
    meta["format_version"] = FORMAT_VERSION + 1
    np.savez(tmp_path / "new.npz", __model__=np.asarray(json.dumps(meta, default=float)))
    with pytest.raises(ValueError, match="newer"):
        LookalikeModel.load(tmp_path / "new.npz")


def test_load_refuses_damaged_or_edited_files_in_one_line(fitted, tmp_path):
    """A truncated copy, a flipped byte and hand-edited descriptions: a ValueError naming the file, never a
    BadZipFile, KeyError or TypeError from deep inside."""
    model, _ = fitted
    good = tmp_path / "good.lkm"
    model.save(good)
    data = good.read_bytes()
    (tmp_path / "truncated.lkm").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF
    (tmp_path / "flipped.lkm").write_bytes(bytes(flipped))
    with np.load(good, allow_pickle=False) as z:
        meta, arrays = json.loads(str(z["__model__"])), {k: z[k] for k in z.files if k != "__model__"}
    edits = {"no_thresholds": {k: v for k, v in meta.items() if k != "thresholds"},
             "matcher_text": {**meta, "matcher": "torch"}, "a_list": [meta]}
    for name, edited in edits.items():
        np.savez(tmp_path / f"{name}.npz", __model__=np.asarray(json.dumps(edited, default=float)), **arrays)
    np.savez(tmp_path / "no_arrays.npz", __model__=np.asarray(json.dumps(meta, default=float)))
    for bad in ["truncated.lkm", "flipped.lkm", *(f"{n}.npz" for n in edits), "no_arrays.npz"]:
        with pytest.raises(ValueError) as e:
            LookalikeModel.load(tmp_path / bad)
        assert str(e.value).startswith(str(tmp_path / bad)) and "\n" not in str(e.value), bad


def test_refuses_other_matcher_or_preprocessing(fitted):
    model, _ = fitted
    model.check_compatible(model.matcher_name_, model.aligner, model.gallery_preprocess)
    with pytest.raises(ValueError, match="matcher"):
        model.check_compatible("other-net", model.aligner, model.gallery_preprocess)
    with pytest.raises(ValueError, match="preprocessing"):
        model.check_compatible(model.matcher_name_, model.aligner, "full")
    with pytest.raises(ValueError, match="aligner"):
        model.check_compatible(model.matcher_name_, FaceAligner(padding=0.3), model.gallery_preprocess)
    # the fallback for undetected faces belongs to the gallery's photos, not to the model
    model.check_compatible(model.matcher_name_, FaceAligner(central_fraction=0.9), model.gallery_preprocess)


def test_run_settings_must_match(fitted):
    model, _ = fitted
    name, aligner = model.matcher_name_, FaceAligner(central_fraction=0.9)
    model.check_run(name, aligner, 20, "both", "bicubic")
    for lowres, apply, degrade, what in ((None, "both", "bicubic", "probes full resolution"),
                                         (20, "probes", "bicubic", "gallery full resolution"),
                                         (20, "gallery", "bicubic", "probes full resolution"),
                                         (20, "both", "realistic", "--lowres 20 --degrade realistic"),
                                         (16, "both", "bicubic", "--lowres 16")):
        with pytest.raises(ValueError, match=what):
            model.check_run(name, aligner, lowres, apply, degrade)


@pytest.mark.parametrize("selection", [TopK(5), ScoreMargin(0.1, 8), LookalikeGroup(0.4, 6),
                                       AmbiguityGate(TopK(4), 0.2)])
def test_list_cut_to_reach_gives_the_same_top(fitted, selection):
    """Identify re-ranks lists cut to max(top, reach): the first candidates must equal the full-depth result."""
    model, test = fitted
    model = copy.deepcopy(model)
    model.reranker_.selection_ = selection
    r = max(model.reach, 3)
    full = model.rerank(test.probes.vectors, test.lists, test.candidates)
    cut = RankedLists(test.lists.indices[:, :r], test.lists.scores[:, :r])
    part = model.rerank(test.probes.vectors, cut, test.candidates[:, :r])
    np.testing.assert_array_equal(part.indices, full.indices[:, :r])
    np.testing.assert_allclose(part.scores, full.scores[:, :r], rtol=1e-6)


@pytest.mark.parametrize("apply, probes, gallery", [("both", 20, 20), ("probes", 20, None), ("gallery", None, 20)])
def test_one_side_degraded(fitted, tmp_path, apply, probes, gallery):
    """``lowres_apply`` decides which side is degraded; it survives save and load, and the gallery key follows it."""
    model, _ = fitted
    one = copy.copy(model)
    one.lowres_apply = apply
    assert (one.probe_lowres, one.gallery_lowres) == (probes, gallery)
    assert one.gallery_preprocess == ("lowres20-chip22" if gallery else "full")
    one.save(tmp_path / "m.lkm")
    back = LookalikeModel.load(tmp_path / "m.lkm")
    assert (back.lowres_apply, back.probe_lowres, back.gallery_lowres) == (apply, probes, gallery)
    with pytest.raises(ValueError, match="lowres_apply"):
        LookalikeModel(lowres=20, lowres_apply="sides")


def test_model_records_degrade(fitted, tmp_path):
    model, _ = fitted
    assert model.degrade == "bicubic" and model.describe()["preprocess"]["degrade"] == "bicubic"
    real = copy.copy(model)
    real.degrade = "realistic"
    assert real.gallery_preprocess == "lowres20-chip22-realistic" and model.gallery_preprocess == "lowres20-chip22"
    real.save(tmp_path / "r.lkm")
    back = LookalikeModel.load(tmp_path / "r.lkm")
    assert back.degrade == "realistic" and back.describe_short()["degrade"] == "realistic"
    # a file written before the option existed reads as bicubic; an unknown kind is a clear error
    with np.load(tmp_path / "r.lkm") as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__model__"]))
    del meta["preprocess"]["degrade"]
    with open(tmp_path / "old.lkm", "wb") as f:
        np.savez(f, **{**arrays, "__model__": np.asarray(json.dumps(meta))})
    assert LookalikeModel.load(tmp_path / "old.lkm").degrade == "bicubic"
    meta["preprocess"]["degrade"] = "oil-painting"
    with open(tmp_path / "new.lkm", "wb") as f:
        np.savez(f, **{**arrays, "__model__": np.asarray(json.dumps(meta))})
    with pytest.raises(ValueError, match="unknown degradation 'oil-painting'"):
        LookalikeModel.load(tmp_path / "new.lkm")
    with pytest.raises(ValueError, match="degrade must be"):
        LookalikeModel(degrade="pixelate")
