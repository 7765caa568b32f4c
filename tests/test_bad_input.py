"""Whatever users feed us: broken, odd and faceless images are reported with a reason, never fatal."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER, SHARED_DATA, write_synthetic
from PIL import Image

from lookalike.data.images import ImageError, load_image
from lookalike.data.protocol import Protocol
from lookalike.data.table import FaceTable
from lookalike.embed import Embeddings, embed_paths
from lookalike.experiment import ProtocolFeatures, build_split
from lookalike.matchers.align import FaceAligner
from lookalike.metrics import evaluate

NO_FALLBACK = FaceAligner(central_fraction=0)  # shared: loads dlib's shape model once


def _reason(path, **kwargs) -> str:
    with pytest.raises(ImageError) as e:
        load_image(path, **kwargs)
    return e.value.reason


def _good_jpeg(path: Path, size=(200, 160)) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _png_header(w: int, h: int) -> bytes:
    """A tiny PNG file whose header claims w x h pixels (no pixel data worth the name)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------------------- load_image


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _reason(tmp_path / "empty.jpg") == "empty"


def test_missing_file(tmp_path):
    assert _reason(tmp_path / "nope.jpg") == "missing"


def test_truncated_jpeg(tmp_path):
    data = _good_jpeg(tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert _reason(tmp_path / "cut.jpg") == "truncated"


def test_text_file_named_jpg(tmp_path):
    (tmp_path / "notes.jpg").write_text("this is not a JPEG\n" * 20)
    assert _reason(tmp_path / "notes.jpg") == "unreadable"


def test_directory_named_jpg(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    assert _reason(tmp_path / "folder.jpg") == "not_a_regular_file"


def test_greyscale(tmp_path):
    a = np.arange(30 * 40, dtype=np.uint8).reshape(30, 40)
    Image.fromarray(a, "L").save(tmp_path / "g.png")
    img = load_image(tmp_path / "g.png")
    assert img.shape == (30, 40, 3) and img.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], a)


def test_rgba_alpha_composited_on_white(tmp_path):
    a = np.zeros((20, 30, 4), np.uint8)
    a[..., 0] = 200  # red-ish everywhere
    a[:, :10, 3] = 0  # transparent
    a[:, 10:20, 3] = 255  # opaque
    a[:, 20:, 3] = 128  # half
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png").astype(int)
    assert img.shape == (20, 30, 3)
    assert (img[:, :10] == 255).all()  # background shows through
    assert (img[:, 10:20] == [200, 0, 0]).all()
    assert np.allclose(img[:, 20:], [(200 * 128 + 255 * 127) / 255, 127, 127], atol=2)


def test_palette_with_transparency(tmp_path):
    p = Image.new("P", (20, 20), 0)
    p.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    p.save(tmp_path / "p.png", transparency=0)
    assert (load_image(tmp_path / "p.png") == 255).all()


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (40, 30), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)  # pure red in CMYK
    assert Image.open(tmp_path / "c.jpg").mode == "CMYK"
    img = load_image(tmp_path / "c.jpg").astype(int)
    assert img.shape == (30, 40, 3)
    assert np.allclose(img[15, 20], [255, 0, 0], atol=10)


def test_16bit_png_scaled_not_clipped(tmp_path):
    a = np.array([[0, 1000, 30000, 65535] * 3] * 10, np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    img = load_image(tmp_path / "g16.png")
    assert img.dtype == np.uint8 and img.shape == (10, 12, 3)
    expected = np.round(a / 65535 * 255).astype(np.uint8)  # a linear 16->8-bit scaling, no clipping at 255
    np.testing.assert_allclose(img[..., 0], expected, atol=1)
    assert img[0, 2, 0] == pytest.approx(117, abs=1) and img[0, 3, 0] == 255


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    a[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(a).save(tmp_path / "r.jpg", exif=exif, quality=95)
    img = load_image(tmp_path / "r.jpg")
    assert img.shape == (40, 20, 3)  # 20 wide, 40 high
    assert img[:18].mean() > 240 and img[22:].mean() < 15  # the left half is now on top


def test_tiny_image_too_small(tmp_path):
    Image.new("RGB", (1, 1), (10, 20, 30)).save(tmp_path / "dot.png")
    assert _reason(tmp_path / "dot.png") == "too_small"
    Image.new("RGB", (100, 7)).save(tmp_path / "strip.png")
    assert _reason(tmp_path / "strip.png") == "too_small"
    Image.new("RGB", (8, 8)).save(tmp_path / "ok.png")
    assert load_image(tmp_path / "ok.png").shape == (8, 8, 3)


def test_too_many_pixels(tmp_path):
    Image.new("RGB", (30, 20)).save(tmp_path / "a.png")
    assert _reason(tmp_path / "a.png", max_pixels=599) == "too_large"
    assert load_image(tmp_path / "a.png", max_pixels=600).shape == (20, 30, 3)
    # headers claiming huge images are refused without decoding them (under, at and beyond PIL's own limits)
    for w, h in ((9000, 9000), (12000, 12000), (20000, 20000)):
        (tmp_path / "huge.png").write_bytes(_png_header(w, h))
        assert _reason(tmp_path / "huge.png") == "too_large"


# ----------------------------------------------------------------------------------------------- faces


def test_no_face(tmp_path):
    textured = np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)  # detector at 2x, 4x, 8x
    assert NO_FALLBACK.align(textured) is None
    central = FaceAligner().align(textured)  # default: centred-square fallback for pre-cropped datasets
    assert central is not None and central.method == "central" and central.n_faces == 0
    Image.fromarray(textured).save(tmp_path / "textured.png")
    e = embed_paths([tmp_path / "textured.png"], FAST_MATCHER, NO_FALLBACK, workers=1, progress=False)
    assert e.status.tolist() == ["no_face"] and e.summary()["skipped"] == {"no_face": 1}
    assert not e.ok.any()


def test_blank_frame_has_no_face_even_with_the_central_fallback(tmp_path):
    """A black video frame or a grey card is not a pre-cropped face: the centred square is not used for it."""
    black = np.zeros((240, 320, 3), np.uint8)
    grey = np.full((48, 48, 3), 128, np.uint8)
    almost = np.clip(128 + np.random.default_rng(1).normal(0, 0.7, (64, 64, 3)), 0, 255).astype(np.uint8)
    for image in (black, grey, almost):
        assert FaceAligner().align(image) is None and FaceAligner(central_fraction=0.9).align_all(image) == []
    Image.fromarray(black).save(tmp_path / "black.jpg")
    e = embed_paths([tmp_path / "black.jpg"], FAST_MATCHER, FaceAligner(), workers=1, progress=False)
    assert e.status.tolist() == ["no_face"]


def _lfw(lfw_dir: Path, name: str) -> np.ndarray:
    path = lfw_dir / name.rsplit("_", 1)[0] / f"{name}.jpg"
    if not path.exists():
        pytest.skip(f"{path} not available")
    return load_image(path)


def _centre_x(box) -> float:
    return (box[0] + box[2]) / 2


def test_several_faces_nearest_centre_wins(tmp_path, lfw_dir):
    a, b = _lfw(lfw_dir, "Aaron_Eckhart_0001"), _lfw(lfw_dir, "Aaron_Peirsol_0001")  # 250x250, one face each
    fa, fb = NO_FALLBACK.align(a), NO_FALLBACK.align(b)
    assert fa.n_faces == 1 and fb.n_faces == 1
    for left, right, nearer in ((a, b, "left"), (b, a, "right")):
        canvas = np.full((250, 700, 3), 128, np.uint8)
        x_left = 100 if nearer == "left" else 0  # canvas centre is x=350
        x_right = 450 if nearer == "left" else 300
        canvas[:, x_left:x_left + 250] = left
        canvas[:, x_right:x_right + 250] = right
        al = NO_FALLBACK.align(canvas)
        assert al is not None and al.method == "detected" and al.n_faces == 2
        # Aaron Eckhart (image a) is the nearer face both times
        expected_x = (x_left if nearer == "left" else x_right) + _centre_x(fa.box)
        assert abs(_centre_x(al.box) - expected_x) < 15
    Image.fromarray(canvas).save(tmp_path / "two.png")
    e = embed_paths([tmp_path / "two.png"], FAST_MATCHER, NO_FALLBACK, workers=1, progress=False)
    assert e.status.tolist() == ["ok"] and e.n_faces.tolist() == [2] and e.summary()["several_faces"] == 1




def test_face_in_large_photo_is_detected(lfw_dir):
    face = _lfw(lfw_dir, "Aaron_Eckhart_0001")
    wide = np.full((250, 4100, 3), 128, np.uint8)  # a 4100-pixel-wide photo (e.g. a 6000x4000 camera image)
    wide[:, 2000:2250] = face
    al = NO_FALLBACK.align(wide)
    assert al is not None and al.method == "detected"


def test_mixed_batch_through_embed_paths(tmp_path):
    orl = SHARED_DATA / "orl" / "s1" / "1.pgm"
    if orl.exists():
        good = [Path(shutil.copy(orl.with_name(f"{i}.pgm"), tmp_path / f"good{i}.pgm")) for i in (1, 2)]
    else:  # no shared data: the default aligner's centred-square fallback still embeds these
        good = [write_synthetic(tmp_path / f"good{i}.png", i, (92, 112)) for i in (1, 2)]
    data = _good_jpeg(tmp_path / "full.jpg").read_bytes()
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.jpg").write_text("hello")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    (tmp_path / "huge.png").write_bytes(_png_header(12000, 12000))
    bad = ["empty.jpg", "cut.jpg", "text.jpg", "dot.png", "huge.png", "missing.jpg"]
    paths = [good[0], *(tmp_path / b for b in bad), good[1]]
    expected = ["ok", "empty", "truncated", "unreadable", "too_small", "too_large", "missing", "ok"]
    from lookalike.matchers.cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "c.sqlite")
    e = embed_paths(paths, FAST_MATCHER, workers=1, cache=cache, batch_size=3, progress=False)
    assert e.status.tolist() == expected
    assert e.vectors.shape == (8, 128)
    np.testing.assert_allclose(np.linalg.norm(e.vectors[e.ok], axis=1), 1, atol=1e-4)
    assert not e.vectors[~e.ok].any()
    assert set(e.messages) == {i for i, s in enumerate(expected) if s != "ok"}
    s = e.summary()
    assert s["ok"] == 2 and s["computed"] == 8 and sum(s["skipped"].values()) == 6
    # a second run reuses the stored outcome of every readable file; only the missing path is tried again
    again = embed_paths(paths, FAST_MATCHER, workers=1, cache=cache, progress=False)
    assert again.status.tolist() == expected and again.computed == 1
    np.testing.assert_array_equal(again.vectors, e.vectors)


# ----------------------------------------------------------------------------------------------- build_split


def _features(rows: list[tuple[str, str, str, list[float]]]) -> ProtocolFeatures:
    """(identity, role, status, vector) rows -> ProtocolFeatures without running any model."""
    ids, roles, status, vecs = zip(*rows, strict=True)
    v = np.asarray(vecs, np.float32)
    v[np.asarray(status) != "ok"] = 0
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.where(norms > 0, v / np.maximum(norms, 1e-12), 0).astype(np.float32)
    n = len(rows)
    table = FaceTable([f"/x/{i}.jpg" for i in range(n)], list(ids), list(roles))
    emb = Embeddings(v, np.asarray(status, object), np.full(n, "detected", object), np.ones(n, np.int32))
    return ProtocolFeatures(Protocol(table), emb)


def test_probes_without_mate_are_counted_and_excluded():
    f = _features([
        ("A", "gallery", "ok", [1, 0, 0, 0]),
        ("B", "gallery", "ok", [0, 1, 0, 0]),
        ("C", "gallery", "no_face", [0, 0, 1, 0]),  # C's only gallery image failed
        ("D", "distractor", "ok", [0, 0.8, 0.6, 0]),
        ("A", "probe", "ok", [0.9, 0.1, 0, 0.1]),
        ("A", "probe", "ok", [1, 0, 0.2, 0]),
        ("B", "probe", "ok", [0, 0.75, 0.66, 0]),  # nearer the distractor than B's own image
        ("B", "probe", "truncated", [0, 1, 0, 0]),
        ("C", "probe", "ok", [0, 0, 1, 0]),
        ("E", "probe", "ok", [0, 0, 0, 1]),  # E was never enrolled
        ("A", "train", "ok", [1, 0, 0, 0]),  # other roles stay out of the test split
    ])
    split = build_split(f, "test", depth=10)
    assert split.notes["probes_without_mate"] == 2
    assert split.notes["skipped_probes"] == {"truncated": 1}
    assert split.notes["skipped_gallery"] == {"no_face": 1}
    assert split.probes.identities.tolist() == ["A", "A", "B"]
    assert len(split.gallery) == 3 and split.is_distractor.tolist() == [False, False, True]
    assert split.lists.indices.shape == (3, 3)
    pos = split.positions()
    assert [p.tolist() for p in pos] == [[0], [0], [1]]
    m = evaluate(pos, ranks=(1, 2), n_boot=50)
    assert m["rank1"] == pytest.approx(2 / 3) and m["rank2"] == 1.0
    # official AP of a single mate at position 1: trapezoid between precision 0 (position 0) and 1/2
    assert m["mAP"] == pytest.approx((1 + 1 + 0.25) / 3)


def test_build_split_without_usable_probes_raises():
    f = _features([("A", "gallery", "ok", [1, 0]), ("A", "probe", "no_face", [1, 0])])
    with pytest.raises(ValueError, match="usable probes"):
        build_split(f, "test")
    with pytest.raises(ValueError, match="usable probes"):
        build_split(f, "val")


# ----------------------------------------------------------------------------------------------- phone formats


def _heic(image: Image.Image, path: Path) -> Path:
    import pillow_heif

    pillow_heif.from_pillow(image.convert("RGB")).save(path, quality=90)
    return path


def test_heic_and_avif_photos_are_read(tmp_path):
    """What phones save photos as: HEIC (HEVC in HEIF, read by pillow-heif) and AVIF (read by Pillow)."""
    from lookalike.data.images import sniff_image_type

    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (12, 16, 3)), np.ones((10, 10, 1))).astype(np.uint8)  # 120 x 160
    original = Image.fromarray(smooth)
    original.save(tmp_path / "a.avif", quality=90)
    for path, kind in ((_heic(original, tmp_path / "a.heic"), "heif"), (tmp_path / "a.avif", "avif")):
        assert sniff_image_type(path.read_bytes()) == kind
        img = load_image(path)
        assert img.shape == (120, 160, 3) and np.abs(img.astype(int) - smooth).mean() < 8
        assert _reason(path, max_pixels=120 * 160 - 1) == "too_large"
        data = path.read_bytes()
        for cut in (data[:40], data[: len(data) // 2]):
            (tmp_path / f"cut{path.suffix}").write_bytes(cut)
            assert _reason(tmp_path / f"cut{path.suffix}") in ("unreadable", "truncated")


def test_heic_photos_are_enrolled_and_identified(tmp_path, orl_dir, capsys):
    import json

    from lookalike.cli import main

    for person in (1, 2, 3):
        (tmp_path / "gallery" / f"s{person}").mkdir(parents=True)
        for i in (1, 2):
            _heic(Image.open(orl_dir / f"s{person}" / f"{i}.pgm"), tmp_path / "gallery" / f"s{person}" / f"{i}.heic")
    probe = _heic(Image.open(orl_dir / "s2" / "5.pgm"), tmp_path / "probe.heic")
    db = tmp_path / "g.sqlite"
    assert main(["enroll", "--gallery", str(tmp_path / "gallery"), "--db", str(db), "--matcher", FAST_MATCHER,
                 "--central-fraction", "0.9", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["identify", str(probe), "--db", str(db), "--format", "json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["status"] == "ok" and result["faces"][0]["candidates"][0]["subject"] == "s2"
