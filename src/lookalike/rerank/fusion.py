"""Score normalisers and weighted fusion of the base matcher's score with the disambiguator's."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Normaliser(ABC):
    """Maps (Q, K) raw scores to a common scale, using the entries selected by ``mask`` only."""

    def fit(self, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> Normaliser:
        """Learn from labelled val candidates (label: candidate is a mate); most normalisers learn nothing."""
        return self

    @abstractmethod
    def transform(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(Q, K) normalised scores (entries outside the mask are undefined)."""


class ZScore(Normaliser):
    """Standardise within each list's selection (mean 0, std 1; constant selections map to 0)."""

    def transform(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        n = np.maximum(mask.sum(1, keepdims=True), 1)
        mean = np.where(mask, scores, 0).sum(1, keepdims=True) / n
        var = np.where(mask, (scores - mean) ** 2, 0).sum(1, keepdims=True) / n
        return (scores - mean) / np.where(var > 1e-12, np.sqrt(var), 1.0)


class MinMax(Normaliser):
    """Rescale each list's selection to [0, 1]."""

    def transform(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        lo = np.where(mask, scores, np.inf).min(1, keepdims=True)
        hi = np.where(mask, scores, -np.inf).max(1, keepdims=True)
        span = hi - lo
        return (scores - lo) / np.where(np.isfinite(span) & (span > 1e-12), span, 1.0)


class LogLikelihoodRatio(Normaliser):
    """Calibrated log-likelihood ratio of "mate" vs "non-mate", by logistic regression on val candidates."""

    def __init__(self, c: float = 1.0) -> None:
        self.c = c
        self.coef_, self.intercept_, self.prior_logit_ = 1.0, 0.0, 0.0

    def fit(self, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> LogLikelihoodRatio:
        """1-D logistic regression (L2 penalty ``1 / c`` on the slope) by Newton's method."""
        x, y = scores[mask].astype(np.float64), labels[mask].astype(np.float64)
        if len(np.unique(y)) < 2:
            return self
        mu, sd = x.mean(), max(x.std(), 1e-12)
        xs = np.stack([(x - mu) / sd, np.ones_like(x)], 1)
        w = np.zeros(2)
        reg = np.diag([1.0 / self.c, 0.0])
        for _ in range(50):
            p = 1 / (1 + np.exp(-np.clip(xs @ w, -30, 30)))
            grad = xs.T @ (p - y) + reg @ w
            hess = (xs * (p * (1 - p))[:, None]).T @ xs + reg + 1e-9 * np.eye(2)
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        self.coef_, self.intercept_ = float(w[0] / sd), float(w[1] - w[0] * mu / sd)
        prior = y.mean()
        self.prior_logit_ = float(np.log(prior / (1 - prior)))
        return self

    def transform(self, scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.coef_ * scores + self.intercept_ - self.prior_logit_


NORMALISERS = {"zscore": ZScore, "minmax": MinMax, "llr": LogLikelihoodRatio}


def make_normaliser(name: str) -> Normaliser:
    if name not in NORMALISERS:
        raise ValueError(f"unknown normaliser {name!r}; choose one of {sorted(NORMALISERS)}")
    return NORMALISERS[name]()


class WeightedFusion:
    """``(1 - weight) * norm(base) + weight * norm(disambiguator)``, one normaliser per source."""

    def __init__(self, normaliser: str = "zscore", weight: float = 0.5) -> None:
        self.normaliser, self.weight = normaliser, weight
        self.norms_ = [make_normaliser(normaliser), make_normaliser(normaliser)]

    def fit(self, base: np.ndarray, disamb: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> WeightedFusion:
        self.norms_ = [make_normaliser(self.normaliser).fit(base, labels, mask),
                       make_normaliser(self.normaliser).fit(disamb, labels, mask)]
        return self

    def normalised(self, base: np.ndarray, disamb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both sources on the common scale (0 outside the mask)."""
        b, d = (np.where(mask, n.transform(s, mask), 0.0) for n, s in zip(self.norms_, (base, disamb), strict=True))
        return b, d

    def fuse(self, base: np.ndarray, disamb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        b, d = self.normalised(base, disamb, mask)
        return (1 - self.weight) * b + self.weight * d
