"""Flip test-time augmentation: a matcher's embedding of a chip averaged with its embedding of the mirrored chip."""

from __future__ import annotations

import numpy as np

from lookalike.matchers import flipped_name
from lookalike.matchers.base import Matcher, l2_normalize


class FlipAveraged(Matcher):
    """``base``'s L2-normalised embeddings of each chip and of its left-right mirror, summed (``embed``
    normalises the sum). Twice the embedding cost; its own ``name`` (``<base>+flip``), so its embeddings are cached
    and checked apart from the base matcher's."""

    def __init__(self, base: Matcher) -> None:
        self.base = base
        self.name, self.dim, self.chip_size = flipped_name(base.name), base.dim, base.chip_size

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        chips = np.asarray(chips)
        both = self.base.descriptors(np.concatenate([chips, chips[:, :, ::-1]]))
        return l2_normalize(both[:len(chips)]) + l2_normalize(both[len(chips):])
