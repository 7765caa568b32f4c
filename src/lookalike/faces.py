"""The labelled face container training and evaluation share: image paths, identities and embeddings."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FaceSet:
    """Embedded images: paths, identity labels and L2-normalised vectors (row-aligned)."""

    paths: np.ndarray
    identities: np.ndarray
    vectors: np.ndarray
    lowres: np.ndarray | None = None  # (N,) face width in px each image was degraded to; 0 = full resolution

    def __post_init__(self) -> None:
        if self.lowres is None:
            self.lowres = np.zeros(len(self.paths), np.int32)

    def __len__(self) -> int:
        return len(self.paths)

    def take(self, rows: np.ndarray) -> FaceSet:
        """The rows ``rows`` (boolean mask or indices)."""
        return FaceSet(self.paths[rows], self.identities[rows], self.vectors[rows], self.lowres[rows])

    @classmethod
    def concat(cls, *sets: FaceSet) -> FaceSet:
        """The rows of several FaceSets, in order."""
        return cls(*(np.concatenate([getattr(f, a) for f in sets]) for a in ("paths", "identities", "vectors",
                                                                            "lowres")))
