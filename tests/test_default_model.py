"""The default model shipped with lookalike: its file (no pickle, its training recorded: LFW without the PubFig
people), ``--model default`` resolving to it for a gallery of its preprocessing, a clear error otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER, write_synthetic

from lookalike.cli import main
from lookalike.gallery import Gallery
from lookalike.matchers.align import FaceAligner
from lookalike.model import MODELS_DIR, LookalikeModel, default_model_paths, load_model
from lookalike.train import data_fingerprint

SHIPPED = MODELS_DIR / "default-lowres20.lkm"
MISSPELT = Path(__file__).parents[1] / "benchmarks" / "pubfig-people-misspelt-in-lfw.txt"
LFW_PEOPLE, PUBFIG_IN_LFW = 5749, 108 + 3  # the overlap list, and three PubFig people LFW misspells


def test_shipped_model_loads_without_pickle_and_records_its_training():
    assert default_model_paths() == [SHIPPED]
    assert SHIPPED.stat().st_size < 5 * 2**20
    with np.load(SHIPPED, allow_pickle=False) as z:
        meta = json.loads(str(z["__model__"]))
    assert meta["format"] == "lookalike-model"
    model = LookalikeModel.load(SHIPPED)
    assert (model.matcher, model.lowres, model.lowres_apply, model.degrade) == ("torch-flip", 20, "both", "bicubic")
    data = model.training_["data_fingerprint"]
    assert data["file"] == "lfw-without-pubfig.csv" and data["people"] == LFW_PEOPLE - PUBFIG_IN_LFW
    assert model.training_["n_train_people"] < data["people"]  # the rest are its validation people


def test_shipped_model_left_out_the_pubfig_people(lfw_dir: Path, shared_data: Path):
    overlap = {n.strip().replace(" ", "_") for n in (shared_data / "pubfig-lfw-overlap.txt").read_text().splitlines()
               if n.strip()}
    misspelt = {n.strip() for n in MISSPELT.read_text().splitlines() if n.strip() and not n.startswith("#")}
    assert len(misspelt) == 3 and not misspelt & overlap and all((lfw_dir / n).is_dir() for n in misspelt)
    overlap |= misspelt
    people = sorted(p.name for p in lfw_dir.iterdir() if p.is_dir() and p.name not in overlap)
    recorded = LookalikeModel.load(SHIPPED).training_["data_fingerprint"]["identities_sha1"]
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
    with Gallery.create(tmp_path / "full.sqlite", matcher=FAST_MATCHER) as g:
        with pytest.raises(ValueError, match=r"no default model for a gallery of 'full' faces .*default-lowres20\.lkm"):
            load_model("default", g)
    padded = FaceAligner(padding=0.3)
    with Gallery.create(tmp_path / "pad.sqlite", matcher=FAST_MATCHER, lowres=20, aligner=padded) as g:
        with pytest.raises(ValueError, match="no default model"):
            load_model("default", g)


def test_identify_default_on_another_gallery_is_a_clear_error(tmp_path: Path, capsys):
    Gallery.create(tmp_path / "full.sqlite", matcher=FAST_MATCHER).close()
    photo = write_synthetic(tmp_path / "p.png", 1, size=(40, 40))
    code = main(["identify", str(photo), "--db", str(tmp_path / "full.sqlite"), "--model", "default"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no default model" in err and "default-lowres20.lkm" in err and "lookalike train" in err


def test_enroll_and_identify_with_the_default_model(orl_dir: Path, tmp_path: Path, capsys):
    """``enroll --model default`` makes a gallery of the model's preprocessing; ``identify --model default``
    re-ranks with the shipped model (people it never saw: ORL)."""
    db = tmp_path / "g.sqlite"
    common = ["--cache", str(tmp_path / "c.sqlite"), "--workers", "1", "--no-progress"]
    gallery = tmp_path / "gallery"
    for k in range(1, 6):
        for n in (1, 2):
            (gallery / f"s{k}").mkdir(parents=True, exist_ok=True)
            (gallery / f"s{k}" / f"{n}.pgm").write_bytes((orl_dir / f"s{k}" / f"{n}.pgm").read_bytes())
    assert main(["enroll", "--gallery", str(gallery), "--db", str(db), "--model", "default", *common]) == 0
    with Gallery.open(db) as g:
        assert g.preprocess == "lowres20-chip22" and g.aligner.name == FaceAligner().name
    capsys.readouterr()
    assert main(["identify", str(orl_dir / "s3" / "7.pgm"), "--db", str(db), "--model", "default", "--format", "json",
                 "--top", "3"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model"]["lowres"] == 20
    assert doc["results"][0]["faces"][0]["candidates"][0]["subject"] == "s3"
