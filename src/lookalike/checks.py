"""Validation of the numbers callers pass at the boundary (sklearn's ``check_*``): a one-line ValueError naming the
argument, before any work and before numpy turns a bad value into a result of another shape or meaning."""

from __future__ import annotations

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
