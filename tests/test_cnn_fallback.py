"""The CNN face detector as the aligner's fallback where HOG finds no face (tight crops)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER, need_data
from PIL import Image

from lookalike.cli import main
from lookalike.gallery import Gallery
from lookalike.identify import ProbeFace
from lookalike.matchers.align import FaceAligner
from lookalike.model import LookalikeModel

TIGHT = "pubfig/Alyssa Milano/17.jpg"  # a 176x176 crop from eyebrows to lips: HOG finds no face in it


def test_settings_names_and_old_records():
    plain, cnn = FaceAligner(0.9, cnn_fallback=False), FaceAligner(0.9, cnn_fallback=True)
    # an aligner without the fallback keeps the name it had before the option (caches and galleries stay valid)
    assert plain.name == "hog5pt-c0.9-u3-s150-p0.25" and "cnn_fallback" not in plain.settings()
    assert cnn.name != plain.name and cnn.geometry == plain.geometry  # models see the same chip geometry
    assert FaceAligner.from_settings({"name": "recorded", **cnn.settings()}).name == cnn.name
    # settings recorded before the option existed (galleries, model files) rebuild without it, whatever the default
    assert FaceAligner.from_settings(plain.settings()).cnn_fallback is False
    assert cnn.with_fallback(0.45).name == FaceAligner(0.45, cnn_fallback=True).name
    assert cnn.with_fallback(cnn_fallback=False).name == plain.name
    assert cnn.with_fallback()._cnn is None  # a copy loads its own detectors


def test_cnn_finds_a_tight_crop_that_hog_misses():
    image = np.asarray(Image.open(need_data(TIGHT)).convert("RGB"))
    assert FaceAligner(0.9, cnn_fallback=False).align(image).method == "central"
    al = FaceAligner(0.9, cnn_fallback=True).align(image)
    assert al.method == "cnn" and al.n_faces == 1
    left, top, right, bottom = al.box
    assert right - left > 0.9 * image.shape[1]  # the face fills the crop: its box reaches past the edges
    eyes, nose = al.landmarks[:4], al.landmarks[4]  # dlib's 5 points: two per eye, then the base of the nose
    assert (eyes[:, 1] < nose[1]).all() and eyes[:, 0].min() < nose[0] < eyes[:, 0].max()
    face = ProbeFace(0, al, np.zeros(128, np.float32), np.zeros((1, 1, 3), np.uint8))
    assert face.describe()["detection"] == "detected (cnn)"


def test_without_a_face_the_other_fallbacks_apply():
    textured = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    assert FaceAligner(0.45, cnn_fallback=True).align(textured).method == "central"
    assert FaceAligner(0, cnn_fallback=True).align_all(textured) == []


@pytest.mark.parametrize("shape", [(10, 2000), (2000, 10), (2, 2), (79, 320), (80, 320), (16, 20), (3000, 3000)])
def test_any_photo_shape(shape):
    """dlib's CNN aborts the process on inputs thinner than its window: such photos are not given to it."""
    noise = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    found = [a.method for a in FaceAligner(0.45, cnn_fallback=True).align_all(noise)]
    assert found in (["central"], ["cnn"]) or (found == [] and min(shape) < 3)  # a 2x2 photo's square: a pixel


def test_a_gallery_keeps_its_fallback(tmp_path: Path, face_folders: Path, capsys):
    db = tmp_path / "g.sqlite"
    common = ["--gallery", str(face_folders), "--db", str(db), "--matcher", FAST_MATCHER, "--cache", "none",
              "--workers", "1", "--no-progress"]
    assert main(["enroll", *common, "--cnn-fallback"]) == 0
    with Gallery.open(db) as g:
        assert g.aligner.cnn_fallback and g.aligner.name.startswith("hog5pt-cnn-")
        assert json.loads(g.store.get_meta()["aligner_params"])["cnn_fallback"] is True
    capsys.readouterr()
    assert main(["enroll", *common]) == 0  # no option: the gallery's own
    assert main(["enroll", *common, "--no-cnn-fallback"]) == 2
    assert "was created with --cnn-fallback" in capsys.readouterr().err
    old = tmp_path / "old.sqlite"
    Gallery.create(old, matcher=FAST_MATCHER, aligner=FaceAligner(cnn_fallback=False)).close()
    with Gallery.open(old) as g:
        assert not g.aligner.cnn_fallback


def test_a_model_file_keeps_its_fallback(tmp_path: Path, synthetic_model):
    model = copy.deepcopy(synthetic_model[0])  # the fixture is shared by the session
    model.aligner = FaceAligner(0.9, cnn_fallback=True)
    model.save(tmp_path / "m.lkm")
    assert LookalikeModel.load(tmp_path / "m.lkm").aligner.name == model.aligner.name


@pytest.mark.parametrize("flag, expected", [([], None), (["--cnn-fallback"], True), (["--no-cnn-fallback"], False)])
def test_enroll_option(flag, expected):
    from lookalike.cli import build_parser

    args = build_parser().parse_args(["enroll", "--gallery", "g", "--db", "d.sqlite", *flag])
    assert args.cnn_fallback is expected


def test_hint_when_many_photos_have_no_detected_face(capsys):
    from lookalike.matchers.align import fallback_hint
    from lookalike.summary import print_fallback_hint

    tight = {"detected": 5287, "central": 233}  # PubFig's crops: 4.2% undetected
    hint = fallback_hint(tight, FaceAligner(0.45, cnn_fallback=False))
    assert "233 of 5520" in hint and "--cnn-fallback or --central-fraction 0.9" in hint
    assert "--central-fraction" not in fallback_hint(tight, FaceAligner(0.9, cnn_fallback=False))
    assert fallback_hint(tight, FaceAligner(0.9, cnn_fallback=True)) is None  # nothing left to suggest
    assert fallback_hint({"detected": 13201, "central": 32}, FaceAligner(0.45)) is None  # LFW: 0.24%
    assert fallback_hint({}, FaceAligner()) is None
    print_fallback_hint(tight, FaceAligner(0.45, cnn_fallback=False), " in a new gallery")
    assert "aligns them better in a new gallery" in capsys.readouterr().err


def test_enrolment_counts_faces_by_detection(tmp_path: Path, face_folders: Path, capsys):
    assert main(["enroll", "--gallery", str(face_folders), "--db", str(tmp_path / "g.sqlite"), "--matcher",
                 FAST_MATCHER, "--cache", "none", "--workers", "1", "--no-progress", "--format", "json"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert sum(doc["faces"].values()) == doc["added"] > 0
    # synthetic faces are small noise images that no detector finds: all aligned in the centred square
    assert doc["faces"] == {"central": doc["added"]} and "--cnn-fallback" in out.err


def test_serve_creates_a_gallery_with_the_fallback(tmp_path: Path, capsys):
    pytest.importorskip("fastapi")
    db = str(tmp_path / "s.sqlite")
    assert main(["serve", "--db", db, "--matcher", FAST_MATCHER, "--cnn-fallback", "--create-token"]) == 0
    with Gallery.open(db) as g:
        assert g.aligner.cnn_fallback
    capsys.readouterr()
    assert main(["serve", "--db", db, "--no-cnn-fallback", "--create-token"]) == 2
    assert "was created with --cnn-fallback" in capsys.readouterr().err
    assert main(["serve", "--db", db, "--create-token"]) == 0  # no option: the gallery's own


def test_serve_creates_a_gallery_with_its_central_fraction(tmp_path: Path, capsys):
    pytest.importorskip("fastapi")
    db = str(tmp_path / "s.sqlite")
    assert main(["serve", "--db", db, "--matcher", FAST_MATCHER, "--central-fraction", "0.9", "--create-token"]) == 0
    with Gallery.open(db) as g:
        assert g.aligner.central_fraction == 0.9 and not g.aligner.cnn_fallback
    capsys.readouterr()
    assert main(["serve", "--db", db, "--central-fraction", "0.9", "--create-token"]) == 0  # the same: fine
    capsys.readouterr()
    assert main(["serve", "--db", db, "--central-fraction", "0.5", "--cnn-fallback", "--create-token"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was created with --central-fraction 0.9 and --no-cnn-fallback" in err


def test_open_or_create_one_way_for_enrol_and_service(tmp_path: Path):
    db = tmp_path / "g.sqlite"
    with Gallery.open_or_create(db, FAST_MATCHER, central_fraction=0.8, cnn_fallback=True) as g:
        created = g.aligner.name
        assert g.aligner.central_fraction == 0.8 and g.aligner.cnn_fallback
    with Gallery.open_or_create(db) as g:  # nothing given: the gallery's own
        assert g.aligner.name == created
    with Gallery.open_or_create(db, FAST_MATCHER, geometry=FaceAligner(), central_fraction=0.8) as g:
        assert g.aligner.name == created  # a model's geometry with the gallery's own fallbacks
    with pytest.raises(ValueError, match="was created with --cnn-fallback"):
        Gallery.open_or_create(db, cnn_fallback=False)
    with pytest.raises(ValueError, match="does not match"):
        Gallery.open_or_create(db, lowres=20)
    with pytest.raises(ValueError, match="searches with the index"):
        Gallery.open_or_create(db, index="hnsw")


def test_new_gallery_takes_a_models_geometry_not_its_fallbacks(tmp_path: Path):
    """A model trained on tight crops (central fraction 0.9) enrols a gallery of ordinary photos: the new gallery
    gets the default fallbacks unless they are given, and the model's chip geometry."""
    model_aligner = FaceAligner(central_fraction=0.9, padding=0.3, cnn_fallback=True)
    with Gallery.open_or_create(tmp_path / "a.sqlite", FAST_MATCHER, geometry=model_aligner) as g:
        assert g.aligner.central_fraction == FaceAligner().central_fraction
        assert g.aligner.cnn_fallback == FaceAligner().cnn_fallback
        assert g.aligner.geometry == model_aligner.geometry
    with Gallery.open_or_create(tmp_path / "b.sqlite", FAST_MATCHER, geometry=model_aligner,
                                central_fraction=0.7, cnn_fallback=True) as g:
        assert g.aligner.central_fraction == 0.7 and g.aligner.cnn_fallback
