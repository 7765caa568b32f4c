"""The PyTorch port of dlib's face ResNet: the .dat reader and numerical equivalence with dlib-bin.

``LOOKALIKE_EQUIV_N`` (default 24) sets how many real chips the equivalence test compares; half come
from LFW and half from ORL when both are present.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

torch = pytest.importorskip("torch")
dlib = pytest.importorskip("dlib")

from lookalike.matchers.dlib_format import (  # noqa: E402
    DlibFormatError,
    DlibReader,
    decode_float,
    read_dlib_net,
)
from lookalike.matchers.dlib_resnet import DlibResNetMatcher, model_path  # noqa: E402
from lookalike.matchers.torch_resnet import (  # noqa: E402
    TorchResNetMatcher,
    build_dlib_resnet,
    fuse_affine,
    preprocess,
)

DATA = SHARED_DATA  # ../shared/data or LOOKALIKE_SHARED_DATA
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def net():
    return read_dlib_net(model_path("dlib_face_recognition_resnet_model_v1.dat"))


# --------------------------------------------------------------------------------------------------
# format primitives


def test_variable_length_ints() -> None:
    r = DlibReader(bytes([0x01, 0x00, 0x01, 0x96, 0x02, 0x80, 0x12, 0x81, 0x11, 0x82, 0x34, 0x12]))
    assert [r.read_int() for _ in range(5)] == [0, 150, 0x1280, -17, -0x1234]
    with pytest.raises(DlibFormatError):
        DlibReader(bytes([0x81, 0x01])).read_uint()


def test_portable_float_decoding() -> None:
    # 122.782f as dlib writes it: mantissa 0xf59062 (3 bytes), exponent -17
    r = DlibReader(bytes([0x03, 0x62, 0x90, 0xF5, 0x81, 0x11]))
    assert np.float32(r.read_float()) == np.float32(122.782)
    # 1.0 as a double: mantissa 16, exponent -4; 0.0: mantissa 0, exponent 11 (after byte compaction)
    r = DlibReader(bytes([0x01, 0x10, 0x81, 0x04, 0x01, 0x00, 0x01, 0x0B]))
    assert (r.read_float(), r.read_float()) == (1.0, 0.0)
    assert decode_float(-3, -1) == -1.5
    assert decode_float(0, 32000) == math.inf and decode_float(0, 32001) == -math.inf
    assert math.isnan(decode_float(0, 32002))


def test_tensor_versions() -> None:
    raw = np.array([1.5, -2.0], "<f4").tobytes()
    dims = bytes([0x01, 0x01, 0x01, 0x02, 0x01, 0x01, 0x01, 0x01])  # 1 x 2 x 1 x 1
    t2 = DlibReader(bytes([0x01, 0x02]) + dims + raw).read_tensor()
    portable = bytes([0x01, 0x03, 0x81, 0x01, 0x81, 0x01, 0x01, 0x01])  # 3 * 2**-1, -1 * 2**1
    t1 = DlibReader(bytes([0x01, 0x01]) + dims + portable).read_tensor()
    assert t2.shape == t1.shape == (1, 2, 1, 1)
    np.testing.assert_array_equal(t2.ravel(), [1.5, -2.0])
    np.testing.assert_array_equal(t1.ravel(), [1.5, -2.0])


# --------------------------------------------------------------------------------------------------
# the real file


def test_reader_on_shipped_model(net) -> None:
    assert net.loss.kind == "loss_metric"
    assert net.input.kind == "input_rgb_image_sized" and net.input.params["size"] == (150, 150)
    np.testing.assert_allclose(net.input.params["avg_rgb"], (122.782, 117.001, 104.298), rtol=1e-6)
    kinds = [layer.kind for layer in net.layers]
    counts = {k: kinds.count(k) for k in set(kinds)}
    assert counts == {
        "con": 29, "affine": 29, "relu": 29, "add_prev": 14, "tag": 14 + 2 * 4,
        "max_pool": 1, "avg_pool": 5, "fc": 1,
    }
    assert len(net.computational()) == 108
    con = [layer for layer in net.layers if layer.kind == "con"]
    assert con[0].params["weight"].shape == (32, 3, 7, 7)
    assert con[0].params["stride"] == (2, 2) and con[0].params["padding"] == (0, 0)
    assert con[1].params["weight"].shape == (32, 32, 3, 3) and con[1].params["padding"] == (1, 1)
    assert con[-1].params["weight"].shape == (256, 256, 3, 3)
    fc = net.layers[-1].params
    assert fc["weight"].shape == (256, 128) and fc["bias"] is None
    n_params = sum(v.size for layer in net.layers for v in layer.params.values() if isinstance(v, np.ndarray))
    assert n_params == 5_614_592
    assert all(np.isfinite(v).all() for layer in net.layers for v in layer.params.values()
               if isinstance(v, np.ndarray))


def test_module_structure_and_training_step() -> None:
    model = build_dlib_resnet()
    assert len(model.blocks) == 14 and sum(b.downsample for b in model.blocks) == 4
    assert sum(p.numel() for p in model.parameters()) == 5_614_592
    # the unfused module is trainable: in-place relu/add must not break autograd
    model.train()
    x = torch.randn(2, 3, 150, 150)
    out = model(x)
    assert out.shape == (2, 128)
    out.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.inference_mode():
        np.testing.assert_allclose(fuse_affine(model)(x).numpy(), model(x).numpy(), atol=1e-5)


def test_split_forward_is_the_forward_pass() -> None:
    model = build_dlib_resnet()
    x = torch.randn(1, 3, 150, 150)
    with torch.inference_mode():
        whole = model(x)
        assert model.n_layers == 15
        for k in (0, 8, 14):  # frozen part then trained part, as fine-tuning runs them
            np.testing.assert_array_equal(model.head(model.trunk(model.trunk(x, 0, k), k)).numpy(), whole.numpy())
        np.testing.assert_array_equal(model.features(x).numpy(), model.trunk(x).mean(dim=(2, 3)).numpy())
    for bad in ((-1, 3), (5, 4), (0, 16)):
        with pytest.raises(ValueError, match="layer range"):
            model.trunk(x, *bad)


def test_matcher_leaves_torch_threads_alone() -> None:
    before = torch.get_num_threads()
    matcher = TorchResNetMatcher(batch_size=2)
    matcher.descriptors(np.zeros((3, 150, 150, 3), np.uint8))
    assert torch.get_num_threads() == before


def test_preprocess_matches_dlib_input_layer() -> None:
    chips = np.zeros((1, 150, 150, 3), np.uint8)
    chips[0, 0, 0] = (255, 0, 128)
    x = preprocess(chips)
    assert x.shape == (1, 3, 150, 150) and x.dtype == torch.float32
    expected = (np.float32([255, 0, 128]) - np.float32([122.782, 117.001, 104.298])) / np.float32(256)
    np.testing.assert_array_equal(x[0, :, 0, 0].numpy(), expected)


# --------------------------------------------------------------------------------------------------
# equivalence with dlib on real aligned chips


def _image_files(n: int) -> list[Path]:
    lfw = sorted((DATA / "lfw").glob("*/*.jpg"))
    orl = sorted((DATA / "orl").glob("s*/*.pgm"))
    pools = [p for p in (lfw, orl) if p]
    files: list[Path] = []
    for i, pool in enumerate(pools):  # evenly spread picks, split across the datasets
        want = n // len(pools) + (1 if i < n % len(pools) else 0)
        step = max(1, len(pool) // max(want * 2, 1))
        files.extend(pool[::step][: want * 2])  # extras in case detection fails
    return files


def _make_chips(n: int) -> tuple[np.ndarray, dict[str, int]]:
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
    by_set: dict[str, list[np.ndarray]] = {}
    for f in _image_files(n):
        img = np.asarray(Image.open(f).convert("RGB"))
        dets = detector(img, 1)
        if not dets:
            continue
        chip = dlib.get_face_chip(img, shapes(img, dets[0]), size=150, padding=0.25)
        by_set.setdefault(f.suffix, []).append(chip)
    n_sets = len(by_set)
    groups = {k: g[: n // n_sets + (1 if i < n % n_sets else 0)] for i, (k, g) in enumerate(by_set.items())}
    chips = [c for g in groups.values() for c in g]
    counts = {"lfw" if k == ".jpg" else "orl": len(g) for k, g in groups.items()}
    return (np.stack(chips) if chips else np.zeros((0, 150, 150, 3), np.uint8)), counts


@pytest.mark.realdata
def test_descriptors_equal_dlib() -> None:
    if not (DATA / "lfw").is_dir() and not (DATA / "orl").is_dir():
        pytest.skip(f"no face data in {DATA}")
    n = int(os.environ.get("LOOKALIKE_EQUIV_N", "24"))
    chips, counts = _make_chips(n)
    assert len(chips) >= min(n, 8), "too few faces detected"
    reference = DlibResNetMatcher().descriptors(chips)
    matcher = TorchResNetMatcher(batch_size=16)
    ours = matcher.descriptors(chips)
    assert ours.shape == reference.shape == (len(chips), 128) and ours.dtype == np.float32
    diff = float(np.abs(ours - reference).max())
    print(f"\n{len(chips)} chips {counts}: max abs diff torch vs dlib = {diff:.3g}")
    assert diff <= TOLERANCE
    with torch.inference_mode():
        unfused = build_dlib_resnet()(preprocess(chips)).numpy()
    assert float(np.abs(unfused - reference).max()) <= TOLERANCE
    assert matcher.name == DlibResNetMatcher.name
    np.testing.assert_allclose(np.linalg.norm(matcher.embed(chips), axis=1), 1.0, atol=1e-5)
