"""Validation of the numbers callers pass at the boundary (sklearn's ``check_*``): a one-line ValueError naming the
argument, before any work and before numpy turns a bad value into a result of another shape or meaning."""

from __future__ import annotations

import os

import numpy as np


def check_int(value: object, name: str, least: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool) of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        bound = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def check_fpir(fpir: object) -> float:
    """A target false-positive identification rate: a number strictly between 0 and 1, else a one-line ValueError
    (a negative or NaN FPIR would give a threshold, and a DIR, that mean nothing)."""
    number = isinstance(fpir, int | float | np.integer | np.floating) and not isinstance(fpir, bool)
    f = float(fpir) if number else float("nan")
    if not 0 < f < 1:
        raise ValueError(f"FPIR must be a number strictly between 0 and 1, got {fpir!r}")
    return f


def check_range(value: object, name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float when it is a finite real number (not a bool) within [lo, hi] (open where asked): the
    bounds the command line's number options take (``lookalike.cli._number``)."""
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    f = float(value) if number else float("nan")
    if not (np.isfinite(f) and (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi)):
        bounds = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be {'a finite number' if np.isinf([lo, hi]).all() else bounds}, got {value!r}")
    return f


def check_strings(values: object, name: str) -> list[str]:
    """A list of ``values`` when it is a sequence of strings: one string is refused (iterated, it would be read a
    character at a time), and so is any item that is not a string (None or 11 would become "None" or "11")."""
    if isinstance(values, str | bytes) or not _iterable(values):
        raise TypeError(f"{name} must be a list of strings, got {type(values).__name__} {values!r:.80}")
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{name} must hold strings, got {type(v).__name__} {v!r:.80}")
    return out


def check_paths(paths: object, name: str = "paths") -> list[str]:
    """``paths`` (a list or array of str or ``os.PathLike``) as a list of str; one path (a str, bytes or Path) is
    refused: iterated, a path string is read a character at a time."""
    if isinstance(paths, str | bytes | os.PathLike) or not _iterable(paths):
        raise TypeError(f"{name} must be a list of paths, got {type(paths).__name__} {paths!r:.80}: "
                        "wrap one path in a list")
    out = list(paths)
    for p in out:
        if not isinstance(p, str | os.PathLike):
            raise TypeError(f"{name} must hold str or os.PathLike paths, got {type(p).__name__} {p!r:.80}")
    return [os.fspath(p) for p in out]


def _iterable(values: object) -> bool:
    return not isinstance(values, dict) and hasattr(values, "__iter__")


def check_vectors(vectors: object, what: str = "vectors", dim: int | None = None) -> np.ndarray:
    """Embeddings as a float32 C-contiguous (N, D) array (no copy when they already are one, memory maps included):
    real numbers (not bool, complex, object or text) of dimension ``dim`` when given, finite and of unit length
    (scores are cosines only for unit vectors; thresholds and re-ranking assume them). One-line ValueError naming
    ``what`` otherwise."""
    x = np.asarray(vectors)
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, {dim or 'D'}) array, got shape {x.shape}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what} have dimension {x.shape[1]} (shape {x.shape}), expected {dim}")
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{what} must be a numeric (integer or float) array, got {x.dtype}")
    x = np.ascontiguousarray(x, np.float32)
    check_unit(x, what)
    return x


def check_unit(x: np.ndarray, what: str) -> None:
    """A one-line ValueError unless every row of the float (N, D) ``x`` is finite and of unit length (one pass:
    a NaN or infinite value makes its row's squared norm non-finite)."""
    sq = np.einsum("ij,ij->i", x, x)
    if not np.isfinite(sq).all() and not np.isfinite(x).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    off = ~(np.abs(sq - 1) <= 2e-3)  # |norm - 1| <= 1e-3
    if off.any():
        raise ValueError(f"{int(off.sum())} of {len(x)} {what} are not of unit length: L2-normalise them "
                         "(lookalike.matchers.base.l2_normalize)")
