"""The flip test-time augmentation matcher: each chip and its mirror embedded by the base matcher, averaged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.cli import main
from lookalike.gallery import Gallery
from lookalike.matchers import DEFAULT_MATCHER, MATCHERS, get_matcher, matcher_name
from lookalike.matchers.base import l2_normalize
from lookalike.model import LookalikeModel


def _chips(n: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 150, 150, 3), dtype=np.uint8)


def test_flip_matcher_averages_a_chip_with_its_mirror() -> None:
    base, flip = get_matcher("torch"), get_matcher("torch-flip")
    chips = _chips()
    mirrored = np.ascontiguousarray(chips[:, :, ::-1])
    want = l2_normalize(base.embed(chips) + base.embed(mirrored))
    got = flip.embed(chips)
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(flip.embed(mirrored), got, atol=1e-5)  # a face and its mirror: one embedding
    assert np.abs(got - base.embed(chips)).max() > 1e-3  # and not the base matcher's


def test_flip_matcher_has_its_own_cache_name() -> None:
    assert "torch-flip" in MATCHERS
    assert matcher_name("torch-flip") == matcher_name("torch") + "+flip" == get_matcher("torch-flip").name


def test_default_matcher_is_flip_at_every_resolution(tmp_path: Path) -> None:
    assert DEFAULT_MATCHER == "torch-flip"
    assert LookalikeModel(lowres=20).matcher == LookalikeModel().matcher == "torch-flip"
    assert LookalikeModel("dlib", lowres=20).matcher == "dlib" and LookalikeModel("torch").matcher == "torch"
    with Gallery.create(tmp_path / "low.sqlite", lowres=20) as g:
        assert g.matcher == "torch-flip" and g.matcher_name == matcher_name("torch-flip")
    with Gallery.create(tmp_path / "full.sqlite") as g:
        assert g.matcher == "torch-flip"
    with Gallery.create(tmp_path / "plain.sqlite", matcher="torch") as g:  # a named matcher is kept
        assert g.matcher == "torch"


def test_benchmark_of_a_flip_matcher_reports_the_plain_baseline_beside_it(orl_dir: Path, tmp_path: Path) -> None:
    """No --matcher at --lowres: torch-flip, and the run also searches its test split with plain torch
    (``baseline-plain``), which is exactly what a ``--matcher torch`` run calls its baseline."""
    data = tmp_path / "data.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows([str(orl_dir / f"s{k}" / f"{n}.pgm"), f"s{k}"] for k in range(1, 21)
                    for n in (range(1, 5) if k <= 14 else (1,)))
    common = ["--data", str(data), "--cache", str(tmp_path / "c.sqlite"), "--lowres", "16", "--workers", "1",
              "--no-progress", "--no-rerank"]
    assert main(["benchmark", *common, "--out", str(tmp_path / "flip")]) == 0
    assert main(["benchmark", *common, "--out", str(tmp_path / "plain"), "--matcher", "torch"]) == 0
    flip = json.loads((tmp_path / "flip" / "metrics.json").read_text())
    plain = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert flip["config"]["matcher"] == "torch-flip" and plain["config"]["matcher"] == "torch"
    assert "baseline-plain" not in plain["methods"]
    got, want = flip["methods"]["baseline-plain"], plain["methods"]["baseline"]
    assert got["rank1"] == want["rank1"] and got["mAP"] == pytest.approx(want["mAP"])
    assert flip["open_set"]["baseline-plain"] == plain["open_set"]["baseline"]
    r, p = np.load(tmp_path / "flip" / "rankings.npz"), np.load(tmp_path / "plain" / "rankings.npz")
    np.testing.assert_array_equal(r["baseline-plain.indices"], p["baseline.indices"])
    assert not np.array_equal(r["baseline.indices"], p["baseline.indices"])  # the flipped lists differ
