"""Joint Bayesian pair scoring (Chen et al., ECCV 2012) on the matcher's embeddings, with the between-person
covariance measured on mined lookalike pairs.

An embedding is modelled as x = mu + eps with identity part mu ~ N(0, S_mu) and photo noise
eps ~ N(0, S_eps). The log-likelihood ratio of "same person" is
``r(x1, x2) = x1' A x1 + x2' A x2 - 2 x1' G x2``; its self terms penalise faces in crowded regions of the
space (faces that look like many people), which is what a lookalike disambiguator should do. Genuine pairs
give ``S_eps = Cov(x1 - x2) / 2``; lookalike pairs give ``S_mu + S_eps = Cov(x1 - x2) / 2``, i.e. the
between-person covariance among people that are easily confused.
"""

from __future__ import annotations

import numpy as np

from lookalike.disambiguators.base import EmbeddingDisambiguator, distinct_rows
from lookalike.disambiguators.lda import pair_scatter
from lookalike.faces import FaceSet
from lookalike.mining import Pairs


def _psd(m: np.ndarray, floor: float) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.maximum(w, floor)) @ v.T


class JointBayesian(EmbeddingDisambiguator):
    """Joint Bayesian log-likelihood ratio; ``shrink`` regularises both covariances towards scaled
    identities, ``self_weight`` scales the self terms (1: the exact model, 0: a Mahalanobis inner product)."""

    def __init__(self, shrink: float = 0.1, self_weight: float = 1.0) -> None:
        super().__init__()
        self.shrink, self.self_weight = shrink, self_weight
        self.mean_: np.ndarray | None = None
        self.a_: np.ndarray | None = None
        self.g_: np.ndarray | None = None

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        x = np.asarray(train.vectors, np.float64)
        self.mean_ = x.mean(0)
        d = x.shape[1]
        s_eps = pair_scatter(x, pairs.genuine) / 2
        s_tot = pair_scatter(x, pairs.lookalike) / 2
        shrink = lambda m: (1 - self.shrink) * m + self.shrink * np.trace(m) / d * np.eye(d)  # noqa: E731
        s_eps = shrink(s_eps)
        s_mu = _psd(shrink(s_tot) - s_eps, 1e-3 * np.trace(s_eps) / d)
        f = np.linalg.inv(s_eps)
        g = -np.linalg.solve(2 * s_mu + s_eps, s_mu) @ f
        self.a_ = np.linalg.inv(s_mu + s_eps) - (f + g)
        self.g_ = g
        self.stats = {"trace_mu": float(np.trace(s_mu)), "trace_eps": float(np.trace(s_eps))}

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """Centred embeddings (the model's input space); scores are not cosines here."""
        if self.mean_ is None:
            raise RuntimeError("fit first")
        return np.asarray(vectors, np.float64) - self.mean_

    def _self(self, z: np.ndarray) -> np.ndarray:
        return self.self_weight * np.einsum("nd,de,ne->n", z, self.a_, z)

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        rows, inverse = distinct_rows(candidates, ids)
        p, c = self.transform(probes), self.transform(rows)
        cross = np.einsum("qd,qkd->qk", p @ self.g_, c[inverse])
        return self._self(p)[:, None] + self._self(c)[inverse] - 2 * cross

    def _state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "a": self.a_, "g": self.g_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean_, self.a_, self.g_ = state["mean"], state["a"], state["g"]

