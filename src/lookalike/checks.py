"""Validation of the numbers callers pass at the boundary (sklearn's ``check_*``): a one-line ValueError naming the
argument, before any work and before numpy turns a bad value into a result of another shape or meaning."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def check_int(value: object, name: str, least: int = 1) -> int:
    """``value`` as an int when it is an integer (not a bool) of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        bound = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return int(value)


def within(f: float, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> bool:
    """Whether ``f`` is a finite number within [lo, hi] (open where asked): the one range rule of the checks here and
    of the command line's number options (NaN is within no range)."""
    return math.isfinite(f) and (f > lo if lo_open else f >= lo) and (f < hi if hi_open else f <= hi)


def _real(value: object) -> float:
    """``value`` as a float when it is a real number (not a bool), else NaN (which :func:`within` refuses)."""
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    return float(value) if number else float("nan")


def check_rate(value: object, name: str, upto_one: bool = False) -> float:
    """``value`` as a float when it is a number strictly between 0 and 1 (or 1 itself, with ``upto_one``)."""
    f = _real(value)
    if not within(f, 0, 1, lo_open=True, hi_open=not upto_one):
        bound = "in (0, 1]" if upto_one else "strictly between 0 and 1"
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return f


def check_fpir(fpir: object, upto_one: bool = False) -> float:
    """A target false-positive identification rate: a number strictly between 0 and 1, else a one-line ValueError
    (a negative or NaN FPIR would give a threshold, and a DIR, that mean nothing). ``upto_one``: FPIR 1 too (no
    threshold at all, as the last point of an FNIR-FPIR curve)."""
    return check_rate(fpir, "FPIR", upto_one)


def check_fpirs(fpirs: object, upto_one: bool = False) -> tuple[float, ...]:
    """A non-empty sequence of :func:`check_fpir` FPIRs, as floats."""
    return check_each(fpirs, "fpirs", lambda f: check_fpir(f, upto_one))


def check_each(items: object, name: str, check: Callable[[object], T]) -> tuple[T, ...]:
    """A non-empty 1-D sequence ``items`` (a list, tuple or array; not a bare value, which would not iterate)
    checked one by one with ``check``."""
    values = np.asarray(items, dtype=object)
    if values.ndim != 1 or not len(values):
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got {items!r}")
    return tuple(check(v) for v in values)


def check_paired(a: object, b: object, what: str) -> None:
    """A one-line ValueError unless ``a`` and ``b`` hold one value per search each (same length, 1-D): numpy would
    broadcast a length-1 array over the other and give a number about nothing."""
    shapes = [_shape(x) for x in (a, b)]
    if None in shapes or len(shapes[0]) != 1 or shapes[0] != shapes[1]:
        got = " and ".join("(ragged)" if s is None else str(s) for s in shapes)
        raise ValueError(f"{what}: expected one value per search in each, got shapes {got}")


def _shape(x: object) -> tuple[int, ...] | None:
    """``x``'s numpy shape; None for nested sequences of different lengths."""
    try:
        return np.shape(x)
    except ValueError:
        return None


def _numbers(x: object, name: str, kinds: str = "biuf") -> np.ndarray:
    """``x`` as a 1-D array of numbers (of numpy's ``kinds``: booleans, integers, floats), else a one-line ValueError
    naming it."""
    try:
        a = np.asarray(x)
    except ValueError:  # ragged nesting
        raise ValueError(f"{name} must be a 1-D array of numbers, got nested sequences of different lengths") from None
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array (one value per search or probe), got shape {a.shape}")
    if a.dtype.kind not in kinds:
        raise ValueError(f"{name} must hold numbers, got {a.dtype} values")
    return a


def check_scores(x: object, name: str, finite: bool = False) -> np.ndarray:
    """``x`` as a 1-D float64 array without NaN (nor infinities when ``finite``: a mean or difference of them is
    not a number; a score of -inf is one that no threshold reaches)."""
    a = _numbers(x, name).astype(np.float64)
    if np.isnan(a).any():
        raise ValueError(f"{name} contains NaN")
    if finite and np.isinf(a).any():
        raise ValueError(f"{name} contains infinite values")
    return a


def check_flags(x: object, name: str) -> np.ndarray:
    """``x`` as a 1-D bool array: booleans, or numbers that are all 0 or 1 (numpy would read 0.5 or NaN as True)."""
    a = _numbers(x, name)
    if a.dtype.kind != "b" and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must be booleans (or 0 and 1), got {a[~np.isin(a, (0, 1))][0].item()!r}")
    return a.astype(bool)


def check_position_lists(lists: Sequence, name: str) -> list[np.ndarray]:
    """Each of ``lists`` as a 1-D array of 0-based ranking positions: whole numbers >= 0, strictly increasing (a
    probe's mates, best first; an unsorted or repeated position would give a wrong first hit and precision)."""
    return _positions([np.asarray(p) for p in lists], lambda i: f"{name}[{i}]", name)


def check_positions(positions: object, name: str) -> np.ndarray:
    """One probe's positions (:func:`check_position_lists`)."""
    return _positions([np.asarray(positions)], lambda i: name, name)[0]


def _positions(arrays: list[np.ndarray], label: Callable[[int], str], name: str) -> list[np.ndarray]:
    """:func:`check_position_lists` of ``arrays``, checked as one concatenation; ``label(i)`` names array i."""
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise ValueError(f"{label(i)} must be a 1-D array of positions, got shape {a.shape}")
    lengths = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
    flat = _numbers(np.concatenate(arrays) if arrays else np.zeros(0), name, kinds="iuf")
    good = flat >= 0
    if flat.dtype.kind == "f":
        good &= np.isfinite(flat) & (flat == np.floor(flat))
    ends = np.cumsum(lengths)
    rising = np.ones(len(flat), bool)
    rising[1:] = flat[1:] > flat[:-1]
    rising[(ends - lengths)[lengths > 0]] = True  # each array's first item follows nothing
    bad = np.flatnonzero(~(good & rising))
    if len(bad):
        i = int(np.searchsorted(ends, bad[0], side="right"))
        j = int(bad[0] - (ends[i] - lengths[i]))
        raise ValueError(f"{label(i)} must be 0-based positions, whole numbers >= 0 in increasing order; its item {j} "
                         f"is {arrays[i][j].item()!r}" + (f" (after {arrays[i][j - 1].item()!r})" if j else ""))
    return arrays


def check_range(value: object, name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> float:
    """``value`` as a float when it is a finite real number (not a bool) within [lo, hi] (open where asked): the
    bounds the command line's number options take (``lookalike.cli._number``)."""
    f = _real(value)
    if not within(f, lo, hi, lo_open, hi_open):
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


def non_unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of the rows of the float (N, D) ``x`` that hold a NaN or infinite value, and of the finite rows
    not of unit length (|norm - 1| > 1e-3). One pass: a NaN or infinite value makes its row's squared norm
    non-finite, so the values are looked at only then."""
    sq = np.einsum("ij,ij->i", x, x)
    finite = np.isfinite(sq)
    not_finite = np.zeros(len(x), bool) if finite.all() else ~np.isfinite(x).all(axis=1)
    return not_finite, ~not_finite & ~(np.abs(sq - 1) <= 2e-3)


def check_unit(x: np.ndarray, what: str) -> None:
    """A one-line ValueError unless every row of the float (N, D) ``x`` is finite and of unit length."""
    not_finite, off = non_unit_rows(x)
    if not_finite.any():
        raise ValueError(f"{what} contain NaN or infinite values")
    if off.any():
        raise ValueError(f"{int(off.sum())} of {len(x)} {what} are not of unit length: L2-normalise them "
                         "(lookalike.matchers.base.l2_normalize)")
