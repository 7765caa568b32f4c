"""The Python API's boundaries: bad arguments to public entry points are a one-line ValueError or TypeError naming the
argument, before any work and before anything is written (items of a report-only audit of the library API)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER

from lookalike.disambiguators import LookalikeLDA
from lookalike.embed import embed_paths
from lookalike.faces import FaceSet
from lookalike.gallery import Gallery
from lookalike.identify import Identifier, identify
from lookalike.index import INDEXES, load_index, make_index
from lookalike.matchers.align import FaceAligner
from lookalike.metrics import RankedLists
from lookalike.mining import default_miner
from lookalike.model import LookalikeModel
from lookalike.rerank.synthetic import synthetic_faces


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def lda():
    train = synthetic_faces(120, seed=1, prefix="tr")
    pairs = default_miner(k=5).mine(train)
    return train, pairs, LookalikeLDA().fit(train, pairs)


# --- 1, 5, 12: one path string for a list; subjects that are not strings; a model given as a path --------------
def test_one_path_string_is_refused_where_a_list_is_expected(tmp_path: Path) -> None:
    """``identify(p, ...)``, ``embed_paths(p)`` and ``enroll(p, s)`` had read the string a character at a time (one
    "photo" per character, each reported missing)."""
    photo = str(tmp_path / "photo.jpg")
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER) as g:
        for bad in (photo, Path(photo)):
            with pytest.raises(TypeError, match="photos must be a list of paths"):
                identify(bad, g)
            with pytest.raises(TypeError, match="paths must be a list of paths"):
                embed_paths(bad, workers=1, progress=False)
            with pytest.raises(TypeError, match="paths must be a list of paths"):
                g.enroll(bad, ["ann"], progress=False)
        for subjects in ([None], [11], "ann"):  # None or 11 had been enrolled as "None" or "11"
            with pytest.raises(TypeError, match="subjects must"):
                g.enroll([photo], subjects, progress=False)
            with pytest.raises(TypeError, match="subjects must"):
                g.add_embeddings(subjects, np.eye(4, dtype=np.float32)[:1])
        assert g.subjects() == []


def test_identify_takes_a_model_file_path(tmp_path: Path, synthetic_model) -> None:
    """``identify(photos, g, "m.lkm")`` had failed with AttributeError: 'str' object has no 'check_compatible'."""
    model, people = synthetic_model
    model.save(tmp_path / "m.lkm")
    with Gallery.create(tmp_path / "g.sqlite", matcher=model.matcher) as g:
        g.add_embeddings(people.identities[:40], people.vectors[:40])
        for spec in (str(tmp_path / "m.lkm"), tmp_path / "m.lkm"):
            assert identify([], g, spec)["results"] == []
        with pytest.raises(TypeError, match="model must be a LookalikeModel or None, got dict"):
            Identifier(g, {"model": "m.lkm"})


# --- 2, 10, 13, 16: the index boundary ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(INDEXES))
def test_every_index_takes_only_finite_unit_vectors(kind: str) -> None:
    """``add`` had taken NaN rows (FAISS kinds returned id -1 with score -3.4e38 for them) and long ones, ``search``
    long, all-zero and integer queries; FAISS kinds refused a NumPy integer ``k`` with a SWIG TypeError."""
    rng = np.random.default_rng(0)
    v = _unit(rng.standard_normal((400, 128)))
    index = make_index(kind, 128)
    index.add(v)
    for bad, message in ((np.full((1, 128), np.nan, np.float32), "NaN"), (v[:1] * 100, "not of unit length"),
                         (np.full((1, 128), np.inf, np.float32), "NaN or infinite")):
        with pytest.raises(ValueError, match=message):
            index.add(bad)
    assert len(index) == 400
    for bad, message in ((v[:2] * 100, "2 of 2 query vectors are not of unit length"),
                         (np.zeros((1, 128)), "not of unit length"), ((v[:1] * 100).astype(int), "not of unit length"),
                         (v[:1].astype(complex), "numeric"), (v[:1] > 0, "numeric"), (v[:1, :8], "dimension 8")):
        with pytest.raises(ValueError, match=message):
            index.search(bad, 3)
    scores, ids = index.search(v[:3], np.int64(2))
    assert ids.shape == (3, 2) and ids[:, 0].tolist() == [0, 1, 2]


@pytest.mark.parametrize("kind,params,message", [
    ("numpy", {"block": 0}, "numpy: block must be >= 1, got 0"), ("numpy", {"block": -1}, "block must be >= 1"),
    ("ivf", {"nprobe": 0}, "ivf: nprobe must be >= 1, got 0"), ("ivf", {"nprobe": -1}, "nprobe must be >= 1"),
    ("ivf", {"nlist": -5}, "ivf: nlist must be >= 1, got -5"), ("pq", {"m": 0}, "pq: m must be >= 1, got 0"),
    ("hnsw", {"m": "32"}, "hnsw: m must be an integer, got '32'"), ("hnsw", {"m": 1}, "m must be >= 2"),
    ("faiss", {}, None)])
def test_index_constructors_check_their_parameters_as_specs_do(kind: str, params: dict, message: str | None) -> None:
    make_index(kind, 128)  # the defaults are fine
    for dim in (0, -3, "128", 128.0):
        with pytest.raises(ValueError, match="dim must be a positive integer"):
            make_index(kind, dim)
    if message is not None:
        with pytest.raises(ValueError, match=message):
            make_index(kind, 128, **params)


def test_load_index_names_a_corrupt_description(tmp_path: Path) -> None:
    index = make_index("numpy", 4)
    index.add(np.eye(4, dtype=np.float32))
    index.save(tmp_path / "ix")
    (tmp_path / "ix" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"index\.json: not an index description \(unreadable JSON"):
        load_index(tmp_path / "ix")


def test_gallery_search_refuses_complex_probes(tmp_path: Path) -> None:
    """A complex array had been searched with a ComplexWarning, its imaginary part dropped."""
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER) as g:
        g.add_embeddings(["a", "b"], np.eye(4, dtype=np.float32)[:2])
        with pytest.raises(ValueError, match="probe vectors must be a numeric"):
            g.search(np.eye(4)[:1].astype(complex), k=1)


# --- 15: an index spec that cannot hold the gallery's vectors ----------------------------------------------------
def test_an_index_spec_that_cannot_hold_the_vectors_stores_nothing(tmp_path: Path) -> None:
    """``pq:m=3`` and 128-d vectors: the first faces had been stored before the index failed, and the gallery could
    not be opened again."""
    v = np.eye(128, dtype=np.float32)[:2]
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER, index="pq:m=3") as g:
        with pytest.raises(ValueError, match="index 'pq:m=3' cannot hold 128-d embeddings .*create the gallery"):
            g.add_embeddings(["a", "b"], v)
        assert g.stats()["images"] == 0 and g.dim is None
    with Gallery.open(tmp_path / "g.sqlite") as g:  # still a gallery, still empty
        assert g.subjects() == []


def test_a_gallery_left_with_an_unusable_index_names_the_remedy(tmp_path: Path) -> None:
    """A gallery an earlier version left so (faces stored, the index unbuildable) opens with another index."""
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER, index="pq:m=3") as g:
        g.store.set_meta({"dim": "128"})
    with pytest.raises(ValueError, match=r"open it with another index \(Gallery.open\(path, index='numpy'\)\)"):
        Gallery.open(tmp_path / "g.sqlite")
    with Gallery.open(tmp_path / "g.sqlite", index="numpy") as g:
        assert g.index == "numpy"


# --- 3, 4: the lookalike LDA ---------------------------------------------------------------------------------------
def test_lda_scores_only_finite_unit_vectors_of_its_dimension(lda) -> None:
    """NaN gave NaN scores, a long vector a score of another scale, 16-d input a broadcasting error, 1-D input an
    AxisError."""
    train, _, d = lda
    v = train.vectors
    assert np.isfinite(d.score(v[:2], v[2:4])).all() and d.score_matrix(v[:2], v[:5]).shape == (2, 5)
    for left, message in ((np.full((1, 32), np.nan), "NaN"), (v[:1] * 100, "not of unit length"),
                          (np.full((1, 32), np.inf), "NaN or infinite")):
        with pytest.raises(ValueError, match=message):
            d.score(left, v[:1])
        with pytest.raises(ValueError, match=message):
            d.score_matrix(left, v[:3])
    with pytest.raises(ValueError, match="dimension 16"):
        d.score(v[:2, :16], v[2:4, :16])
    with pytest.raises(ValueError, match="dimension 16"):
        d.score_matrix(_unit(v[:2, :16]), _unit(v[2:5, :16]))
    with pytest.raises(ValueError, match="2-D"):
        d.score_matrix(v[0], v[:3])
    with pytest.raises(ValueError, match="candidate vectors contain NaN"):
        d.score_lists(v[:1], np.full((1, 2, 32), np.nan))


@pytest.mark.parametrize("params,message", [
    ({"dim": -1}, "dim must be a positive integer"), ({"dim": 0}, "dim must be a positive integer"),
    ({"shrink": 5}, r"shrink \('auto' or a number\) must be a number in \[0, 1\], got 5"),
    ({"shrink": "x"}, "shrink"), ({"holdout": 2}, r"holdout must be a number in \[0, 1\)"),
    ({"cohort_n": -1}, "cohort_n")])
def test_lda_parameters_are_checked_before_fitting(lda, params: dict, message: str) -> None:
    """dim=-1 had dropped the last direction and dim=0 acted as None; shrink=5 and holdout=2 failed in NumPy."""
    train, pairs, _ = lda
    with pytest.raises(ValueError, match=message):
        LookalikeLDA(**params).fit(train, pairs)


def test_lda_fit_takes_lists_and_refuses_nan_vectors(lda) -> None:
    train, pairs, fitted = lda
    listed = LookalikeLDA().fit(FaceSet(list(train.paths), list(train.identities), train.vectors.tolist()), pairs)
    np.testing.assert_allclose(listed.components_, fitted.components_, atol=1e-6)  # lists had failed in NumPy
    nan = train.vectors.copy()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="train vectors contain NaN"):  # had been a LinAlgError
        LookalikeLDA().fit(FaceSet(train.paths, train.identities, nan), pairs)


# --- 6, 7: model parameters, FaceSet -------------------------------------------------------------------------------
@pytest.mark.parametrize("params,message", [
    ({"matcher": "arcface"}, "unknown matcher 'arcface'"), ({"lowres": -5}, "lowres must be a face width"),
    ({"weights": (2.0,)}, r"weights must be a number in \[0, 1\], got 2.0"),
    ({"normalisers": ("bogus",)}, "unknown normaliser 'bogus'"), ({"fpirs": ()}, "fpirs must hold")])
def test_model_parameters_are_checked_at_the_start_of_fit(params: dict, message: str, monkeypatch) -> None:
    """An unknown matcher had been refused only at the end of fit, lowres=-5 and a weight of 2.0 never."""
    import lookalike.model

    def no_work(*args, **kwargs):
        raise AssertionError("fit started its work before checking its parameters")

    monkeypatch.setattr(lookalike.model.LabelledLists, "search", no_work)
    faces = synthetic_faces(20, seed=1)
    with pytest.raises(ValueError, match=message):
        LookalikeModel(**params).fit(faces, faces, faces)


def test_faceset_rows_must_line_up() -> None:
    faces = synthetic_faces(20, seed=1)
    with pytest.raises(ValueError, match="one row per image"):
        FaceSet(faces.paths[:-1], faces.identities, faces.vectors)
    with pytest.raises(ValueError, match="one row per image"):
        FaceSet(faces.paths, faces.identities[:-5], faces.vectors)
    with pytest.raises(ValueError, match="2-D"):
        FaceSet(faces.paths[:1], faces.identities[:1], faces.vectors[0])


# --- 8, 11: the aligner's fallback and the images it takes ----------------------------------------------------------
def test_central_fraction_is_a_fraction_as_on_the_command_line() -> None:
    for bad in (2.0, -1.0, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match=r"central_fraction must be a number in \[0, 1\]"):
            FaceAligner(bad)
    assert FaceAligner(0).central_fraction == 0 and FaceAligner(1).name == FaceAligner(1.0).name


def test_images_must_be_rgb8_arrays(tmp_path: Path) -> None:
    """uint16, float, RGBA, (3, H, W), bool and object arrays or a list had failed in dlib or the matcher, a 2-D gray
    array after alignment."""
    image = np.zeros((60, 60, 3), np.uint8)
    aligner = FaceAligner(0.45)
    alignment = aligner.align(np.random.default_rng(0).integers(0, 255, (60, 60, 3), dtype=np.uint8))
    bad = [image.astype(np.uint16), image.astype(np.float32), np.zeros((60, 60, 4), np.uint8),
           np.zeros((3, 60, 60), np.uint8), image > 0, image.astype(object), image[..., 0],
           np.zeros((0, 0, 3), np.uint8)]
    for im in bad:  # uint16, float, RGBA, (3, H, W), bool, object, gray, empty
        with pytest.raises(ValueError, match=r"image must be an \(H, W, 3\) uint8 RGB array"):
            aligner.align_all(im)
        with pytest.raises(ValueError, match=r"image must be an \(H, W, 3\) uint8"):
            aligner.chip(im, alignment)
    with pytest.raises(ValueError, match="numpy array, got list"):
        aligner.align_all(image.tolist())
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER) as g:
        g.add_embeddings(["a", "b"], np.eye(128, dtype=np.float32)[:2])
        with pytest.raises(ValueError, match=r"image must be an \(H, W, 3\) uint8 RGB array, got uint8 \(60, 60\)"):
            Identifier(g).identify_image(image[..., 0], "gray")


# --- 9: a hand-edited model file ------------------------------------------------------------------------------------
def _edit(path: Path, out: Path, meta_change=None, arrays_change=None) -> Path:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["__model__"]))
    if meta_change:
        meta_change(meta)
    if arrays_change:
        arrays_change(arrays)
    arrays["__model__"] = np.asarray(json.dumps(meta))
    with open(out, "wb") as f:
        np.savez(f, **arrays)
    return out


def test_model_files_with_unusable_values_are_refused_on_load(tmp_path: Path, synthetic_model) -> None:
    """A NaN or empty thresholds table, NaN components or components of another shape had loaded, giving NaN scores or a
    matmul error at the first search."""
    model, _ = synthetic_model
    model.save(tmp_path / "m.lkm")
    LookalikeModel.load(tmp_path / "m.lkm")

    def nan_component(a):
        a["disambiguator.components"] = a["disambiguator.components"].copy()
        a["disambiguator.components"][0, 0] = np.nan

    cases = {
        "nan threshold": ({"meta_change": lambda m: m["thresholds"].update({"0.01": "NaN"})}, "finite"),
        "no thresholds": ({"meta_change": lambda m: m.update(thresholds={})}, "no calibrated thresholds"),
        "nan components": ({"arrays_change": nan_component}, "components holds NaN"),
        "cut components": ({"arrays_change": lambda a: a.update({"disambiguator.components":
                                                                 a["disambiguator.components"][:16]})},
                           "do not fit together"),
        "no components": ({"arrays_change": lambda a: a.pop("disambiguator.components")}, "missing"),
    }
    for name, (change, message) in cases.items():
        path = _edit(tmp_path / "m.lkm", tmp_path / f"{name}.lkm", **change)
        with pytest.raises(ValueError, match=message) as e:
            LookalikeModel.load(path)
        assert str(e.value).startswith(str(path)) and "\n" not in str(e.value), name
    assert os.path.getsize(tmp_path / "m.lkm") > 0


def test_ranked_lists_take_nested_lists_and_refuse_unequal_shapes():
    """RankedLists of Python lists (an AttributeError on ``.shape`` before) are arrays; unequal shapes are refused."""
    lists = RankedLists([[0, 1], [1, 0]], [[0.9, 0.5], [0.8, 0.1]])
    assert isinstance(lists.indices, np.ndarray) and lists.depth == 2
    with pytest.raises(ValueError, match="must be equal"):
        RankedLists([[0, 1]], [[0.9]])
