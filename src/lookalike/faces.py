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
        """Arrays (lists are taken as arrays) of one row per image: a ValueError naming the lengths otherwise (rows of
        different lengths had been paired silently, or failed far from here)."""
        self.paths, self.identities, self.vectors = (np.asarray(a) for a in (self.paths, self.identities,
                                                                              self.vectors))
        if self.lowres is None:
            self.lowres = np.zeros(len(self.paths), np.int32)
        self.lowres = np.asarray(self.lowres)
        if self.vectors.ndim != 2:
            raise ValueError(f"FaceSet vectors must be a 2-D (N, D) array, got shape {self.vectors.shape}")
        lengths = {k: len(getattr(self, k)) for k in ("paths", "identities", "vectors", "lowres")}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"FaceSet needs one row per image in each of its arrays, got lengths {lengths}")

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
