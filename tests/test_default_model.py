"""The default models shipped with lookalike (20 px and full resolution): their files (no pickle, their training
recorded: LFW without the PubFig people), ``--model default`` resolving to the one for a gallery's preprocessing
(a new gallery: full resolution, or 20 px with ``--lowres 20``), a clear error otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from benchmark_scripts import load_script
from conftest import FAST_MATCHER, write_synthetic
from PIL import Image

from lookalike.cli import main
from lookalike.gallery import Gallery
from lookalike.identify import Identifier
from lookalike.matchers.align import FaceAligner
from lookalike.model import (
    FACE_SIZES,
    MODELS_DIR,
    LookalikeModel,
    default_face_size_model,
    default_model_paths,
    load_model,
)
from lookalike.train import data_fingerprint

SHIPPED = MODELS_DIR / "default-lowres20.lkm"
FULL = MODELS_DIR / "default-full.lkm"
PROBES = MODELS_DIR / "default-lowres20-probes.lkm"
GALLERY = MODELS_DIR / "default-lowres20-gallery.lkm"
MISSPELT = Path(__file__).parents[1] / "benchmarks" / "pubfig-people-misspelt-in-lfw.txt"
LFW_PEOPLE, PUBFIG_IN_LFW = 5749, 108 + 3  # the overlap list, and three PubFig people LFW misspells


@pytest.mark.parametrize(("path", "faces"), [(SHIPPED, ("torch-flip", 20, "both", "bicubic")),
                                            (FULL, ("torch-flip", None, "both", "bicubic")),
                                            (PROBES, ("torch-flip", 20, "probes", "bicubic")),
                                            (GALLERY, ("torch-flip", 20, "gallery", "bicubic"))])
def test_shipped_model_loads_without_pickle_and_records_its_training(path: Path, faces: tuple):
    assert default_model_paths() == [FULL, GALLERY, PROBES, SHIPPED]
    assert path.stat().st_size < 5 * 2**20
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__model__"]))
    assert meta["format"] == "lookalike-model"
    model = LookalikeModel.load(path)
    assert (model.matcher, model.lowres, model.lowres_apply, model.degrade) == faces
    data = model.training_["data_fingerprint"]
    assert data["file"] == "lfw-without-pubfig.csv" and data["people"] == LFW_PEOPLE - PUBFIG_IN_LFW
    assert model.training_["n_train_people"] < data["people"]  # the rest are its validation people


@pytest.mark.parametrize("path", [SHIPPED, FULL, PROBES, GALLERY])
def test_shipped_model_left_out_the_pubfig_people(path: Path, lfw_dir: Path, shared_data: Path):
    overlap = {n.strip().replace(" ", "_") for n in (shared_data / "pubfig-lfw-overlap.txt").read_text().splitlines()
               if n.strip()}
    misspelt = {n.strip() for n in MISSPELT.read_text().splitlines() if n.strip() and not n.startswith("#")}
    assert len(misspelt) == 3 and not misspelt & overlap and all((lfw_dir / n).is_dir() for n in misspelt)
    overlap |= misspelt
    people = sorted(p.name for p in lfw_dir.iterdir() if p.is_dir() and p.name not in overlap)
    recorded = LookalikeModel.load(path).training_["data_fingerprint"]["identities_sha1"]
    assert data_fingerprint("x", np.asarray(people))["identities_sha1"] == recorded


def test_default_resolves_for_a_gallery_of_its_preprocessing(tmp_path: Path):
    # a new 20 px gallery gets the flip matcher by default; the crop fallback (central fraction) is its own
    with Gallery.create(tmp_path / "low.sqlite", lowres=20, aligner=FaceAligner(0.9)) as g:
        assert load_model("default", g).training_ == LookalikeModel.load(SHIPPED).training_
    with Gallery.create(tmp_path / "plain.sqlite", matcher=FAST_MATCHER, lowres=20) as g:  # embedded without flip
        with pytest.raises(ValueError, match=r"no default model for a gallery of 'lowres20-chip22' faces "
                                             r"\(dlib-resnet-v1,.*default-lowres20\.lkm \(dlib-resnet-v1\+flip.*"
                                             r"embedded without flip averaging.*--model default"):
            load_model("default", g)
    with Gallery.create(tmp_path / "full.sqlite") as g:  # a new full-resolution gallery: the flip matcher
        assert load_model("default", g).training_ == LookalikeModel.load(FULL).training_  # not the probes-only one
        small, sharp = (default_face_size_model(k, g.matcher_name, g.aligner, g.preprocess) for k in FACE_SIZES)
        assert small.training_ == LookalikeModel.load(PROBES).training_ and sharp is None
    with Gallery.create(tmp_path / "low20.sqlite", lowres=20) as g:  # a 20 px gallery: a sharp-face model
        assert load_model("default", g).training_ == LookalikeModel.load(SHIPPED).training_  # not the gallery-only
        small, sharp = (default_face_size_model(k, g.matcher_name, g.aligner, g.preprocess) for k in FACE_SIZES)
        assert small is None and sharp.training_ == LookalikeModel.load(GALLERY).training_
        main20 = LookalikeModel.load(SHIPPED)
        with pytest.raises(ValueError, match="trained for sharp probes against a low-resolution gallery"):
            Identifier(g, main20, sharp_faces=LookalikeModel.load(SHIPPED))
        with pytest.raises(ValueError, match="takes the sharp faces of a model that degrades probes"):
            Identifier(g, sharp, sharp_faces=sharp)
    with Gallery.create(tmp_path / "plain-full.sqlite", matcher=FAST_MATCHER) as g:  # enrolled by an earlier default
        with pytest.raises(ValueError, match=r"no default model for a gallery of 'full' faces \(dlib-resnet-v1,.*"
                                             r"embedded without flip averaging.*--model default"):
            load_model("default", g)
    with Gallery.create(tmp_path / "small.sqlite", matcher=FAST_MATCHER, lowres=16) as g:
        with pytest.raises(ValueError, match=r"no default model for a gallery of 'lowres16-chip17' faces .*"
                                             r"default-full\.lkm.*default-lowres20\.lkm"):
            load_model("default", g)
    padded = FaceAligner(padding=0.3)
    with Gallery.create(tmp_path / "pad.sqlite", matcher=FAST_MATCHER, lowres=20, aligner=padded) as g:
        with pytest.raises(ValueError, match="no default model"):
            load_model("default", g)


def test_a_new_gallery_gets_the_default_for_its_faces():
    assert load_model("default").training_ == LookalikeModel.load(FULL).training_
    assert load_model("default", lowres=20).training_ == LookalikeModel.load(SHIPPED).training_
    with pytest.raises(ValueError, match=r"no default model for a new gallery of 24 px faces .*default-full\.lkm"):
        load_model("default", lowres=24)


def test_identify_default_on_another_gallery_is_a_clear_error(tmp_path: Path, capsys):
    Gallery.create(tmp_path / "small.sqlite", matcher=FAST_MATCHER, lowres=16).close()
    photo = write_synthetic(tmp_path / "p.png", 1, size=(40, 40))
    code = main(["identify", str(photo), "--db", str(tmp_path / "small.sqlite"), "--model", "default"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no default model" in err and "default-lowres20.lkm" in err and "lookalike train" in err


def test_enroll_and_identify_with_the_default_model(orl_dir: Path, tmp_path: Path, capsys):
    """``enroll --model default --lowres 20`` makes a gallery of the 20 px model's preprocessing (without
    ``--lowres``, the full-resolution one's); ``identify --model default`` re-ranks with the shipped model that fits
    the gallery (people it never saw: ORL)."""
    db = tmp_path / "g.sqlite"
    common = ["--cache", str(tmp_path / "c.sqlite"), "--workers", "1", "--no-progress"]
    gallery = tmp_path / "gallery"
    for k in range(1, 6):
        for n in (1, 2):
            (gallery / f"s{k}").mkdir(parents=True, exist_ok=True)
            (gallery / f"s{k}" / f"{n}.pgm").write_bytes((orl_dir / f"s{k}" / f"{n}.pgm").read_bytes())
    assert main(["enroll", "--gallery", str(gallery), "--db", str(db), "--model", "default", "--lowres", "20",
                 *common]) == 0
    with Gallery.open(db) as g:
        assert g.preprocess == "lowres20-chip22" and g.aligner.name == FaceAligner().name
    capsys.readouterr()
    # more photos into the same gallery: its faces choose the model; a --lowres that contradicts them is an error
    assert main(["enroll", "--gallery", str(gallery), "--db", str(db), "--model", "default", *common]) == 0
    capsys.readouterr()
    assert main(["enroll", "--gallery", str(gallery), "--db", str(db), "--model", "default", "--lowres", "24",
                 *common]) == 2
    assert "holds 20 px faces, not 24 px ones" in capsys.readouterr().err
    assert main(["identify", str(orl_dir / "s3" / "7.pgm"), "--db", str(db), "--model", "default", "--format", "json",
                 "--top", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["lowres"] == 20 and doc["sharp_face_model"]["lowres_apply"] == "gallery"
    face = doc["results"][0]["faces"][0]  # a 70 px face: kept sharp by the shipped sharp-face model
    assert face["candidates"][0]["subject"] == "s3" and face["face_px"] >= 48 and face["probe_lowres"] is None
    tiny = tmp_path / "tiny.png"  # about 17 px across: degraded to the gallery's 20 px by the 20 px model
    Image.open(orl_dir / "s3" / "7.pgm").resize((18, 22), Image.BICUBIC).save(tiny)
    for photo, extra, lowres in ((tiny, [], 20), (orl_dir / "s3" / "7.pgm", ["--sharp-face-model", "none"], 20)):
        assert main(["identify", str(photo), "--db", str(db), "--model", "default", "--format", "json", *extra]) == 0
        assert json.loads(capsys.readouterr().out)["results"][0]["faces"][0]["probe_lowres"] == lowres
    full = tmp_path / "full.sqlite"
    assert main(["enroll", "--gallery", str(gallery), "--db", str(full), "--model", "default", *common]) == 0
    with Gallery.open(full) as g:
        assert g.preprocess == "full" and g.matcher == "torch-flip"
    capsys.readouterr()
    assert main(["identify", str(orl_dir / "s3" / "7.pgm"), "--db", str(full), "--model", "default", "--format",
                 "json", "--top", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["lowres"] is None and doc["small_face_model"]["lowres_apply"] == "probes"
    face = doc["results"][0]["faces"][0]
    assert face["candidates"][0]["subject"] == "s3" and face["probe_lowres"] is None  # a 70 px face: the full model
    small = tmp_path / "small.png"  # the same face about 17 px across: the shipped small-face model searches it
    Image.open(orl_dir / "s3" / "7.pgm").resize((18, 22), Image.BICUBIC).save(small)
    for extra, lowres in (([], 20), (["--small-face-model", "none"], None)):
        assert main(["identify", str(small), "--db", str(full), "--model", "default", "--format", "json", *extra]) == 0
        face = json.loads(capsys.readouterr().out)["results"][0]["faces"][0]
        assert face["face_px"] <= 20 and face["probe_lowres"] == lowres


def test_rebuild_script_trains_each_shipped_model_with_its_faces(tmp_path: Path):
    """``benchmarks/default_model.py --lowres 20|full``: the same recipe, only the faces differ; the model files are
    the shipped names."""
    script = load_script("default_model")
    model_name, train_command = script.model_name, script.train_command
    assert [model_name(x) for x in (20, "full", "20-probes", "20-gallery")] == [SHIPPED.name, FULL.name, PROBES.name,
                                                                               GALLERY.name]
    probes = train_command(tmp_path / "m.csv", tmp_path / "m.lkm", "c.sqlite", "20-probes")
    assert " ".join(probes).count("--lowres 20 --lowres-apply probes") == 1 and "--matcher" not in probes
    low, full = (train_command(tmp_path / "m.csv", tmp_path / "m.lkm", "c.sqlite", x) for x in (20, "full"))
    assert low[low.index("--lowres") + 1] == "20" and "--lowres" not in full
    assert [a for a in low if a not in ("--lowres", "20")] == full


def test_benchmark_default_picks_the_shipped_model_for_the_runs_probes_too(orl_dir: Path, tmp_path: Path):
    """``benchmark --model default`` on 20 px probes against a sharp gallery evaluates the small-face model, not the
    full-resolution one that searches the same gallery."""
    out = tmp_path / "run"
    assert main(["benchmark", "--data", str(orl_dir), "--lowres", "20", "--lowres-apply", "probes",
                 "--model", "default", "--max-people", "12", "--out", str(out), "--cache",
                 str(tmp_path / "c.sqlite"), "--workers", "1", "--no-progress"]) == 0
    used = json.loads((out / "metrics.json").read_text())["rerank_stats"]["lookalike-model"]
    assert (used["lowres"], used["lowres_apply"]) == (20, "probes")
    assert used["training"] == LookalikeModel.load(PROBES).training_


def test_non_mated_lists_of_the_benchmark_helpers_hold_no_excluded_face():
    """``same_person.search`` with every query's mate excluded: lists cut to the candidates left (a mate never in a
    list, no NaN from fusing an excluded face's -inf), whatever depth is asked."""
    search = load_script("same_person").search
    model = LookalikeModel.load(FULL)
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((6, 128)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    exclude = np.eye(6, dtype=bool)
    found = search(model, gallery.copy(), gallery, depth=100, exclude=exclude)
    assert found.indices.shape == (6, 5) and np.isfinite(found.scores).all()
    assert not exclude[np.arange(6)[:, None], found.indices].any()
