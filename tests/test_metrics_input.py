"""Malformed input to the identification metrics, as an engineer calling them on their own score arrays might give
it: a one-line ValueError naming the argument, where there had been a raw numpy or Python error or a silently wrong
number. One test per kind of malformed input; every case failed before the checks (run against the code before)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from lookalike.metrics import (
    OpenSetScores,
    RankedLists,
    average_precision,
    bootstrap_ci,
    bootstrap_p,
    calibrated_threshold,
    cmc_curve,
    dir_replicates,
    evaluate,
    first_hits,
    fnir_at_fpir,
    mate_positions,
    mcnemar,
    open_set_ci,
    open_set_statistics,
    paired_mean,
    threshold_at_fpir,
    unmeasurable_fpirs,
)

TOP = np.linspace(0.1, 1.0, 10)
HIT = np.ones(10, bool)


def _open_set(m: int = 20, n: int = 30) -> OpenSetScores:
    rng = np.random.default_rng(0)
    return OpenSetScores(rng.normal(1, 1, m), rng.random(m) < 0.8, rng.normal(0, 1, n))


def _refused(call: Callable[[], object], match: str) -> None:
    """``call`` raises a one-line ValueError matching ``match``."""
    with pytest.raises(ValueError, match=match) as e:
        call()
    assert "\n" not in str(e.value)


def _lists(indices: list[list[int]]) -> RankedLists:
    indices = np.asarray(indices)
    return RankedLists(indices, -np.arange(indices.size, dtype=float).reshape(indices.shape))


@pytest.mark.parametrize("call, match", [
    (lambda: OpenSetScores(TOP, HIT, np.zeros(0)).fnir_curve(np.array([0.1, 1.0])), "got 10 and 0"),  # IndexError
    (lambda: OpenSetScores(np.zeros(0), np.zeros(0, bool), TOP).fnir_curve(np.array([0.1])), "got 0 and 10"),  # NaN
    (lambda: dir_replicates([OpenSetScores(TOP, HIT, np.zeros(0))], 0.1, 5), "needs mated and non-mated"),
    (lambda: bootstrap_p(np.zeros(0)), "got none"),  # had given p = 1.0
])
def test_no_searches_where_some_are_needed_are_refused(call, match):
    _refused(call, match)


@pytest.mark.parametrize("call, match", [
    (lambda: fnir_at_fpir(TOP, HIT, np.ones((5, 2))), "nonmated_top must be a 1-D array"),  # TypeError
    (lambda: threshold_at_fpir(np.ones((5, 2)), 0.1), "nonmated_top must be a 1-D array"),
    (lambda: OpenSetScores(TOP, HIT, np.ones((5, 2))), "nonmated_top must be a 1-D array"),  # accepted
    (lambda: bootstrap_ci(np.ones((4, 2)), n_boot=10), "values must be a 1-D array"),  # an interval of something
    (lambda: fnir_at_fpir(TOP, HIT, np.array(["a", "b"])), "nonmated_top must hold numbers"),
    (lambda: paired_mean([[1.0], [0.0, 1.0]], [0.0, 1.0]), "one value per search"),
])
def test_scores_of_another_shape_or_kind_are_refused(call, match):
    _refused(call, match)


@pytest.mark.parametrize("indices, match", [
    ([[0, 5]], "gallery row 5, but there are 3 gallery ids"),  # IndexError
    ([[0.0, 1.0]], "integer gallery rows"),  # IndexError
])
def test_gallery_rows_the_gallery_does_not_hold_are_refused(indices, match):
    _refused(lambda: mate_positions(_lists(indices), np.array(["a"]), np.array(["a", "b", "c"]), [np.array([0])]),
             match)


@pytest.mark.parametrize("probe_ids, base_ranks, match", [
    (["a"], [np.array([0]), np.array([1])], "one probe id per list"),  # broadcast over both lists
    (["a", "b"], [np.array([0])], "base_ranks: expected one array per probe"),  # zip()'s own error
])
def test_probe_ids_and_ranks_not_one_per_list_are_refused(probe_ids, base_ranks, match):
    lists = _lists([[0, 1], [1, 0]])
    _refused(lambda: mate_positions(lists, np.array(probe_ids), np.array(["a", "b", "c"]), base_ranks), match)


@pytest.mark.parametrize("call, match", [
    (lambda: average_precision([2, 0]), r"^positions must be .* item 1 is 0 \(after 2\)"),  # a wrong AP
    (lambda: average_precision([1, 1]), r"item 1 is 1 \(after 1\)"),
    (lambda: average_precision([-1]), "item 0 is -1"),
    (lambda: average_precision([0.5]), "item 0 is 0.5"),
    (lambda: evaluate([np.array([0]), np.array([3, 1])], n_boot=0), r"positions\[1\]"),  # a wrong rank-1 and mAP
    (lambda: first_hits([np.array([[0, 1]])]), r"positions\[0\] must be a 1-D array"),
    (lambda: first_hits(np.array([0, 2])), r"positions\[0\] must be a 1-D array"),  # first positions, not lists
    (lambda: mate_positions(_lists([[0, 1]]), np.array(["c"]), np.array(["a", "b", "c"]), [np.array([5, 2])]),
     r"base_ranks\[0\]"),
])
def test_positions_that_are_not_increasing_whole_ranks_are_refused(call, match):
    _refused(call, match)


@pytest.mark.parametrize("call, match", [
    (lambda: mcnemar([0.5, 0], [1, 1]), "base_hits must be booleans"),  # 0.5 had counted as a hit
    (lambda: mcnemar([0, 0], [np.nan, 1]), "new_hits must be booleans"),  # so had NaN
    (lambda: fnir_at_fpir(TOP, np.full(10, 0.5), TOP), "mated_hit must be booleans"),
])
def test_hits_that_are_not_booleans_are_refused(call, match):
    _refused(call, match)


@pytest.mark.parametrize("fpir", [0.0, -0.1, 1.5, float("nan"), "0.1"])
def test_the_fnir_curve_refuses_fpirs_outside_0_1(fpir):
    o = _open_set()
    _refused(lambda: o.fnir_curve(np.array([0.1, fpir], dtype=object)), r"FPIR must be a number in \(0, 1\]")
    assert o.fnir_curve(np.array([1.0]))[0] == pytest.approx(1 - o.mated_hit.mean())  # 1: no threshold, still


@pytest.mark.parametrize("call, match", [
    (lambda: fnir_at_fpir(TOP, HIT, TOP, 0.01), "fpirs must be a non-empty 1-D sequence"),  # TypeError
    (lambda: open_set_statistics({"a": _open_set()}, fpirs=0.1, n_boot=5), "fpirs must be"),
    (lambda: unmeasurable_fpirs(10, ()), "fpirs must be"),
    (lambda: unmeasurable_fpirs(10, (2.0,)), "FPIR must be"),  # had been called measurable
    (lambda: calibrated_threshold({0.01: 0.5}, "0.01"), "FPIR must be"),  # numpy's TypeError
])
def test_fpirs_that_are_not_a_sequence_of_rates_are_refused(call, match):
    _refused(call, match)


@pytest.mark.parametrize("call, match", [
    (lambda: bootstrap_ci(np.array([1.0, np.nan]), n_boot=10), "values contains NaN"),  # had given [nan, nan]
    (lambda: paired_mean(np.array([np.inf, 0.0]), np.zeros(2), n_boot=10), "new contains infinite"),
    (lambda: bootstrap_p(np.array([np.nan] * 9 + [1.0])), "delta contains NaN"),  # had given p = 0.18
])
def test_values_that_must_be_finite_and_are_not_are_refused(call, match):
    _refused(call, match)


@pytest.mark.parametrize("call, match", [
    (lambda: bootstrap_ci(np.ones(5), n_boot=-1), "n_boot must be an integer >= 0"),  # had given [nan, nan]
    (lambda: bootstrap_ci(np.ones(5), level=1.5), "level must be a number strictly between 0 and 1"),
    (lambda: bootstrap_ci(np.ones(5), seed=-1), "seed must be an integer >= 0"),
    (lambda: paired_mean(np.ones(5), np.zeros(5), level=95), "level must be"),
    (lambda: open_set_ci(_open_set(), n_boot=10, level=0), "level must be"),
    (lambda: dir_replicates([_open_set()], 0.1, 10, chunk=0), "chunk must be a positive integer"),  # range() step 0
])
def test_bootstrap_settings_outside_their_range_are_refused(call, match):
    _refused(call, match)


@pytest.mark.parametrize("call, match", [
    (lambda: cmc_curve([np.array([0])], max_rank=0), "max_rank must be a positive integer"),  # had given []
    (lambda: evaluate([np.array([0])], ranks=5, n_boot=0), "ranks must be a non-empty 1-D sequence"),
    (lambda: evaluate([np.array([0])], ranks=(0, 1), n_boot=0), "each of ranks must be a positive integer"),
    (lambda: unmeasurable_fpirs(-5), "n_nonmated must be an integer >= 0"),  # had said none are measurable
])
def test_counts_and_ranks_outside_their_range_are_refused(call, match):
    _refused(call, match)


@pytest.mark.parametrize("call, match", [
    (lambda: open_set_statistics({"a": _open_set()}, (("a", "b"),), n_boot=5), r"pairs must be \(new, old\)"),
    (lambda: dir_replicates([], 0.1, 5), "expected one or more OpenSetScores"),  # IndexError
    (lambda: open_set_ci((TOP, HIT, TOP), n_boot=5), r"OpenSetScores, got \['tuple'\]"),  # AttributeError
])
def test_methods_that_are_not_named_open_set_scores_are_refused(call, match):
    _refused(call, match)


def test_a_cmc_curve_without_probes_is_nan_without_a_numpy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        curve = cmc_curve([], max_rank=5)
    assert curve.shape == (5,) and np.isnan(curve).all()
