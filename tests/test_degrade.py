"""Degradation protocols: bicubic (unchanged) and realistic (per-image random camera chain, seeded by content)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER, write_synthetic
from PIL import Image

from lookalike.cli import build_parser, main
from lookalike.data.images import DEGRADE_KINDS, check_degrade, degrade, lowres_chip_size, seed_from_key
from lookalike.data.protocol import Protocol, make_protocol
from lookalike.data.table import FaceTable
from lookalike.embed import embed_paths, face_chip, preprocess_key
from lookalike.matchers.align import FaceAligner
from lookalike.matchers.cache import EmbeddingCache, content_key


def _chip(seed: int = 0, size: int = 150) -> np.ndarray:
    """A smooth random RGB chip (structure at several scales, so that blur and resizing change it)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
    base = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC), np.int16)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def test_bicubic_is_the_old_resize_down_and_up():
    chip = _chip()
    img = Image.fromarray(chip)
    small = lowres_chip_size(20)
    old = np.asarray(img.resize((small, small), Image.BICUBIC, reducing_gap=None).resize((150, 150), Image.BICUBIC))
    np.testing.assert_array_equal(degrade(chip, 20), old)
    np.testing.assert_array_equal(degrade(chip, 20, "bicubic", seed=123), old)  # the seed plays no part


def test_realistic_is_deterministic_per_seed_and_differs_from_bicubic():
    chip = _chip()
    a = degrade(chip, 20, "realistic", seed=7)
    assert a.shape == chip.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, degrade(chip, 20, "realistic", seed=7))
    assert not np.array_equal(a, degrade(chip, 20, "realistic", seed=8))
    bicubic = degrade(chip, 20)
    assert np.abs(a.astype(int) - bicubic.astype(int)).mean() > 1.0
    # no seed: drawn from the chip's own pixels, still deterministic
    np.testing.assert_array_equal(degrade(chip, 20, "realistic"), degrade(chip.copy(), 20, "realistic"))
    # a face already no larger than the requested size is left alone
    np.testing.assert_array_equal(degrade(chip[:20, :20], 20, "realistic", seed=1), chip[:20, :20])


def test_realistic_loses_detail_like_a_small_face():
    """The realistic chip is far from the original (as the bicubic one is), not just noisier."""
    chip = _chip(3)
    err = {k: np.abs(degrade(chip, 12, k, seed=1).astype(int) - chip.astype(int)).mean() for k in DEGRADE_KINDS}
    assert err["realistic"] > 0.5 * err["bicubic"] > 0


def test_check_degrade_and_seed_from_key():
    assert [check_degrade(k) for k in DEGRADE_KINDS] == list(DEGRADE_KINDS)
    with pytest.raises(ValueError, match="degrade must be one of bicubic, realistic, got 'jpeg'"):
        check_degrade("jpeg")
    with pytest.raises(ValueError, match="degrade must be"):
        degrade(_chip(), 20, "blurry")
    assert seed_from_key("abc") == seed_from_key("abc") != seed_from_key("abd")


def test_preprocess_keys():
    assert preprocess_key(20) == preprocess_key(20, "bicubic") == "lowres20-chip22"  # unchanged: the warm caches
    assert preprocess_key(12) == "lowres12-chip13"
    assert preprocess_key(20, "realistic") == "lowres20-chip22-realistic"
    assert preprocess_key(None) == preprocess_key(None, "realistic") == "full"
    with pytest.raises(ValueError, match="degrade must be"):
        preprocess_key(20, "nope")


class _CropAligner:
    """Aligns every image to its top-left 150x150 square (no detector needed)."""

    name = "crop"
    chip_size = 150

    def align(self, image):
        return "crop"

    def chip(self, image, al):
        return image[:150, :150]


def test_face_chip_seeds_by_file_content(tmp_path):
    pixels = _chip(5, 160)
    a, b, c = tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.png"
    Image.fromarray(pixels).save(a, compress_level=6)
    b.write_bytes(a.read_bytes())  # the same file content elsewhere
    Image.fromarray(pixels).save(c, compress_level=1)  # the same pixels, other bytes: another draw
    assert content_key(a) == content_key(b) != content_key(c)
    aligner = _CropAligner()
    chip_a, chip_b, chip_c = (face_chip(p, aligner, None, 20, "realistic")[0] for p in (a, b, c))
    np.testing.assert_array_equal(chip_a, chip_b)
    assert not np.array_equal(chip_a, chip_c)
    np.testing.assert_array_equal(chip_a, degrade(pixels[:150, :150], 20, "realistic", seed_from_key(content_key(a))))
    np.testing.assert_array_equal(face_chip(a, aligner, None, 20)[0], degrade(pixels[:150, :150], 20))


def test_protocol_records_degrade(tmp_path):
    paths = [str(write_synthetic(tmp_path / f"{p}{i}.png", n)) for n, (p, i) in
             enumerate((p, i) for p in "abcdef" for i in range(3))]
    table = FaceTable(paths, [Path(p).stem[0] for p in paths])
    p = make_protocol(table, seed=1, lowres=16, degrade="realistic")
    assert p.degrade == "realistic" and p.settings()["degrade"] == "realistic"
    p.save(tmp_path / "proto")
    meta = json.loads((tmp_path / "proto" / "protocol.json").read_text())
    assert meta["degrade"] == "realistic"
    assert Protocol.load(tmp_path / "proto").degrade == "realistic"
    del meta["degrade"]  # a protocol saved before the option existed
    (tmp_path / "proto" / "protocol.json").write_text(json.dumps(meta))
    assert Protocol.load(tmp_path / "proto").degrade == "bicubic"
    with pytest.raises(ValueError, match="degrade must be"):
        make_protocol(table, lowres=16, degrade="pixelate")


def test_embed_realistic_is_cached_apart(orl_dir, tmp_path):
    paths = [str(orl_dir / "s1" / f"{i}.pgm") for i in (1, 2, 3)]
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    run = {"matcher": FAST_MATCHER, "cache": cache, "workers": 1, "progress": False}
    bicubic = embed_paths(paths, lowres=16, **run)
    real = embed_paths(paths, lowres=16, degrade="realistic", **run)
    assert real.computed == 3 and real.ok.all()  # not served the bicubic rows
    assert not np.allclose(real.vectors, bicubic.vectors)
    again = embed_paths(paths, lowres=16, degrade="realistic", **run)
    assert again.computed == 0
    np.testing.assert_array_equal(again.vectors, real.vectors)
    keys = [content_key(p) for p in paths]
    from lookalike.matchers import matcher_name

    name = FaceAligner().name
    assert len(cache.get_embeddings(keys, name, matcher_name(FAST_MATCHER), "lowres16-chip17-realistic")) == 3
    assert len(cache.get_embeddings(keys, name, matcher_name(FAST_MATCHER), "lowres16-chip17")) == 3
    with pytest.raises(ValueError, match="degrade must be"):
        embed_paths(paths, lowres=16, degrade="nope", **run)


@pytest.mark.parametrize("command", ["benchmark", "embed", "train"])
def test_cli_accepts_and_rejects_degrade(command, tmp_path, capsys):
    out = ["--model", str(tmp_path / "m.lkm")] if command == "train" else ["--out", str(tmp_path / "o")]
    base = [command, "--data", str(tmp_path), *out]
    for kind in DEGRADE_KINDS:
        assert build_parser().parse_args([*base, "--degrade", kind]).degrade == kind
    assert build_parser().parse_args(base).degrade is None  # each command's default: bicubic
    with pytest.raises(SystemExit) as e:
        main([*base, "--degrade", "jpeg"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("lookalike") and "--degrade" in err[-1] and "invalid choice" in err[-1]


def test_finetuned_with_realistic_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    code = main(["train", "--data", str(tmp_path / "data"), "--model", str(tmp_path / "m.lkm"), "--lowres", "20",
                 "--degrade", "realistic", "--disambiguator", "finetuned", "--cache", "none"])
    assert code == 2
    assert "supports --degrade bicubic only" in capsys.readouterr().err


def test_enrol_refuses_a_model_with_realistic_gallery_faces(tmp_path, face_folders, capsys):
    from lookalike.model import LookalikeModel
    from lookalike.rerank.synthetic import synthetic_faces, synthetic_split

    val = synthetic_split(synthetic_faces(40, seed=2, prefix="va"), "val")
    model = LookalikeModel(depth=20, lowres=20, degrade="realistic")
    model.fit(synthetic_faces(60, seed=1, prefix="tr"), val.probes, val.gallery).save(tmp_path / "r.lkm")
    code = main(["enroll", "--gallery", str(face_folders), "--db", str(tmp_path / "g.sqlite"), "--model",
                 str(tmp_path / "r.lkm"), "--cache", "none"])
    assert code == 2
    assert "galleries support the bicubic degradation only" in capsys.readouterr().err
    assert not (tmp_path / "g.sqlite").exists()
