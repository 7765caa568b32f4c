"""Reader for dlib's binary serialisation of a DNN (``dlib::serialize(net, out)``), as written by
``dlib_face_recognition_resnet_model_v1.dat``.

Format notes (from dlib's ``serialize.h``, ``float_details.h``, ``dnn/tensor.h``, ``dnn/core.h``,
``dnn/layers.h``, ``dnn/input.h`` and ``dnn/loss.h``):

* Integers are variable length: one control byte (low nibble = byte count, ``0x80`` = negative for signed
  types) followed by that many little-endian magnitude bytes. Zero is ``01 00``.
* ``bool`` is one ASCII byte, ``'0'`` or ``'1'``; ``std::string`` is a length integer then raw bytes.
* ``float``/``double`` are portable: an int64 mantissa and an int16 exponent (both variable-length
  integers), value = ``mantissa * 2**exponent``; exponents 32000/32001/32002 mean inf/-inf/NaN.
* A tensor is a version integer, then ``num_samples, k, nr, nc``; version 1 stores every element as a
  portable float, version 2 as raw little-endian IEEE float32. An ``alias_tensor`` is version + 4 dims.
* Networks nest outermost-first: ``add_loss_layer`` = version, loss details, subnet. ``add_layer`` =
  version, *subnet*, details, then its own state (3 bools and 3 tensors). ``add_tag_layer`` and
  ``add_skip_layer`` are just version 1 + subnet: the stream does not say which tag id they carry, so
  :func:`read_dlib_net` reports them as ``"tag"`` markers and the graph is reconstructed by the caller.
  The innermost ``add_layer`` holds the input layer instead of a subnet (its version 3 adds a trailing
  ``sample_expansion_factor``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_SPECIAL_EXPONENTS = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
_INPUT_LAYERS = ("input_rgb_image_sized", "input_rgb_image")


class DlibFormatError(ValueError):
    """The stream is not a dlib network this reader understands."""


@dataclass
class DlibLayer:
    """One layer of a dlib network.

    ``kind`` is the dlib class name without its version suffix (``con``, ``affine``, ``relu``,
    ``max_pool``, ``avg_pool``, ``add_prev``, ``fc``) or ``tag`` for an ``add_tag_layer``/``add_skip_layer``
    marker. ``params`` holds the layer's settings and its weights as float32 arrays.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed network: ``layers`` run from the input (first) to the output (last)."""

    loss: DlibLayer
    input: DlibLayer
    layers: list[DlibLayer]

    def computational(self) -> list[DlibLayer]:
        """The layers without ``tag`` markers."""
        return [layer for layer in self.layers if layer.kind != "tag"]


def decode_float(mantissa: int, exponent: int) -> float:
    """dlib's portable float: ``mantissa * 2**exponent`` (or inf/-inf/NaN for the reserved exponents)."""
    if exponent in _SPECIAL_EXPONENTS:
        return _SPECIAL_EXPONENTS[exponent]
    return math.ldexp(float(mantissa), exponent)


class DlibReader:
    """Sequential reader of dlib's primitive encodings over an in-memory byte string."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of stream at byte {self.pos} (wanted {n} bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def read_int(self, signed: bool = True) -> int:
        """A variable-length integer (see the module docstring)."""
        ctrl = self._take(1)[0]
        size = ctrl & 0x0F
        if size == 0 or size > 8 or (ctrl & 0x70):
            raise DlibFormatError(f"bad integer control byte 0x{ctrl:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        if ctrl & 0x80:
            if not signed:
                raise DlibFormatError(f"negative value for an unsigned integer at byte {self.pos - size - 1}")
            value = -value
        return value

    def read_uint(self) -> int:
        return self.read_int(signed=False)

    def read_float(self) -> float:
        """A portable float (``float_details``): int64 mantissa then int16 exponent."""
        if self.data[self.pos] & 0x70:
            raise DlibFormatError(f"old ASCII float encoding at byte {self.pos} is not supported")
        mantissa = self.read_int()
        exponent = self.read_int()
        return decode_float(mantissa, exponent)

    def read_bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def read_str(self) -> str:
        n = self.read_uint()
        return self._take(n).decode("latin-1")

    def peek_str(self) -> str | None:
        """The string at the current position if one plausibly starts there, without consuming it."""
        save = self.pos
        try:
            n = self.read_uint()
            if n > 256:
                return None
            raw = self._take(n)
            text = raw.decode("latin-1")
            return text if text.isascii() and text.isprintable() else None
        except DlibFormatError:
            return None
        finally:
            self.pos = save

    def read_tensor(self) -> np.ndarray:
        """A ``resizable_tensor`` as a float32 array of shape (num_samples, k, nr, nc)."""
        version = self.read_int()
        shape = tuple(self.read_int() for _ in range(4))
        count = math.prod(shape)
        if version == 2:
            return np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32).reshape(shape)
        if version == 1:
            values = np.fromiter((self.read_float() for _ in range(count)), dtype=np.float64, count=count)
            return values.astype(np.float32).reshape(shape)
        raise DlibFormatError(f"unsupported tensor version {version}")

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.read_int()
        if version != 1:
            raise DlibFormatError(f"unsupported alias_tensor version {version}")
        n, k, nr, nc = (self.read_int() for _ in range(4))
        return n, k, nr, nc


# ---------------------------------------------------------------------------------------------------
# layer details


def _read_pool(r: DlibReader, kind: str) -> DlibLayer:
    nr, nc = r.read_int(), r.read_int()
    stride_y, stride_x = r.read_int(), r.read_int()
    padding_y, padding_x = r.read_int(), r.read_int()
    return DlibLayer(
        kind,
        {"nr": nr, "nc": nc, "stride": (stride_y, stride_x), "padding": (padding_y, padding_x)},
    )


def _read_con(r: DlibReader) -> DlibLayer:
    params = r.read_tensor().reshape(-1)
    num_filters, nr, nc = r.read_int(), r.read_int(), r.read_int()
    stride_y, stride_x = r.read_int(), r.read_int()
    padding_y, padding_x = r.read_int(), r.read_int()
    filt = r.read_alias_tensor()
    bias = r.read_alias_tensor()
    for _ in range(4):  # learning-rate / weight-decay multipliers
        r.read_float()
    n_filt = math.prod(filt)
    if filt[0] != num_filters or filt[2:] != (nr, nc) or params.size != n_filt + math.prod(bias):
        raise DlibFormatError(f"inconsistent con_ layer: filters {filt}, biases {bias}, params {params.size}")
    return DlibLayer(
        "con",
        {
            "weight": params[:n_filt].reshape(filt),  # (out, in, nr, nc): cross-correlation filters
            "bias": params[n_filt:].copy(),
            "stride": (stride_y, stride_x),
            "padding": (padding_y, padding_x),
        },
    )


def _read_affine(r: DlibReader) -> DlibLayer:
    params = r.read_tensor().reshape(-1)
    gamma = r.read_alias_tensor()
    beta = r.read_alias_tensor()
    mode = r.read_int()  # 0 = CONV_MODE (per channel), 1 = FC_MODE (per element)
    n = math.prod(gamma)
    if params.size != n + math.prod(beta):
        raise DlibFormatError(f"inconsistent affine_ layer: gamma {gamma}, beta {beta}, params {params.size}")
    return DlibLayer(
        "affine",
        {"gamma": params[:n].reshape(gamma), "beta": params[n:].reshape(beta), "mode": mode},
    )


def _read_fc(r: DlibReader) -> DlibLayer:
    num_outputs, num_inputs = r.read_uint(), r.read_uint()
    params = r.read_tensor().reshape(-1)
    weights = r.read_alias_tensor()
    r.read_alias_tensor()  # biases (shape only)
    bias_mode = r.read_int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
    for _ in range(4):
        r.read_float()
    n_w = num_inputs * num_outputs
    if math.prod(weights) != n_w:
        raise DlibFormatError(f"inconsistent fc_ layer: weights {weights}, {num_inputs}x{num_outputs}")
    has_bias = bias_mode == 0
    return DlibLayer(
        "fc",
        {
            "weight": params[:n_w].reshape(num_inputs, num_outputs),  # output = input @ weight
            "bias": params[n_w : n_w + num_outputs].copy() if has_bias else None,
            "num_inputs": num_inputs,
            "num_outputs": num_outputs,
        },
    )


def _read_details(r: DlibReader) -> DlibLayer:
    at = r.pos
    name = r.read_str()
    if name == "con_4":
        return _read_con(r)
    if name == "affine_":
        return _read_affine(r)
    if name == "relu_":
        return DlibLayer("relu")
    if name == "add_prev_":
        return DlibLayer("add_prev")
    if name == "max_pool_2":
        return _read_pool(r, "max_pool")
    if name == "avg_pool_2":
        return _read_pool(r, "avg_pool")
    if name == "fc_2":
        return _read_fc(r)
    raise DlibFormatError(f"unsupported layer {name!r} at byte {at}")


def _read_input(r: DlibReader) -> DlibLayer:
    name = r.read_str()
    avg = tuple(r.read_float() for _ in range(3))
    params: dict[str, Any] = {"avg_rgb": avg}
    if name == "input_rgb_image_sized":
        params["size"] = (r.read_uint(), r.read_uint())
    elif name != "input_rgb_image":
        raise DlibFormatError(f"unsupported input layer {name!r}")
    return DlibLayer(name, params)


def _read_loss(r: DlibReader) -> DlibLayer:
    name = r.read_str()
    if name == "loss_metric_2":
        return DlibLayer("loss_metric", {"margin": r.read_float(), "dist_thresh": r.read_float()})
    if name == "loss_metric_":
        return DlibLayer("loss_metric", {"margin": 0.1, "dist_thresh": 0.75})
    raise DlibFormatError(f"unsupported loss layer {name!r}")


def _skip_layer_state(r: DlibReader, n_tensors: int) -> None:
    """The per-layer training state that follows the details: 3 bools and some (usually empty) tensors."""
    for _ in range(3):
        r.read_bool()
    for _ in range(n_tensors):
        r.read_tensor()


def parse_dlib_net(data: bytes) -> DlibNet:
    """Parse a serialised ``add_loss_layer<...>`` network (see the module docstring)."""
    r = DlibReader(data)
    if r.read_int() != 1:
        raise DlibFormatError("expected add_loss_layer version 1")
    loss = _read_loss(r)
    # The subnet chain, outermost first, is a run of version integers until the input layer's name.
    versions: list[int] = []
    while True:
        versions.append(r.read_int())
        name = r.peek_str()
        if name in _INPUT_LAYERS:
            break
        if len(versions) > 100_000:
            raise DlibFormatError("no input layer found")
    input_version = versions.pop()
    if input_version not in (2, 3):
        raise DlibFormatError(f"unsupported input add_layer version {input_version}")
    input_layer = _read_input(r)
    layers = [_read_details(r)]
    _skip_layer_state(r, 3)
    if input_version == 3:
        r.read_uint()  # sample_expansion_factor
    for version in reversed(versions):  # innermost (closest to the input) first
        if version == 1:
            layers.append(DlibLayer("tag"))
        elif version == 2:
            layers.append(_read_details(r))
            _skip_layer_state(r, 3)
        else:
            raise DlibFormatError(f"unsupported add_layer version {version}")
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes after the network")
    return DlibNet(loss=loss, input=input_layer, layers=layers)


def read_dlib_net(path: str | Path) -> DlibNet:
    """Read a ``.dat`` file written by ``dlib::serialize(filename) << net``."""
    return parse_dlib_net(Path(path).read_bytes())
