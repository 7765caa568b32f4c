"""The flip test-time augmentation matcher: each chip and its mirror embedded by the base matcher, averaged."""

from __future__ import annotations

import numpy as np

from lookalike.matchers import MATCHERS, get_matcher, matcher_name
from lookalike.matchers.base import l2_normalize


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
