"""The embedding-model interface every face matcher implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

CHIP_SIZE = 150


class Matcher(ABC):
    """Maps aligned face chips to L2-normalised embeddings; similarity is the dot product (cosine).

    ``name`` identifies the model and its weights: it is part of every embedding-cache key, so change it
    whenever the numbers a matcher produces could change.
    """

    name: str
    dim: int
    chip_size: int = CHIP_SIZE

    @abstractmethod
    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        """Raw model outputs for uint8 RGB chips of shape (N, chip_size, chip_size, 3): float32 (N, dim)."""

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """L2-normalised float32 embeddings, shape (N, dim)."""
        chips = np.asarray(chips)
        if chips.ndim != 4 or chips.shape[1:] != (self.chip_size, self.chip_size, 3) or chips.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: expected uint8 chips of shape (N, {self.chip_size}, {self.chip_size}, 3), "
                f"got {chips.dtype} {chips.shape}"
            )
        if len(chips) == 0:
            return np.zeros((0, self.dim), np.float32)
        return l2_normalize(self.descriptors(chips))


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation in float32."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
