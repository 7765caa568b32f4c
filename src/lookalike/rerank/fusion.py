"""Score normalisers and weighted fusion of the base matcher's score with the disambiguator's."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Normaliser(ABC):
    """Maps raw scores to a common scale with an affine map learned from labelled val candidates.

    The map is the same for every list (no per-list statistics), so a fused score means the same thing in
    every list and the first candidate's fused score can be thresholded for open-set decisions.
    """

    state_fields: tuple[str, ...] = ()

    @abstractmethod
    def fit(self, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> Normaliser:
        """Learn from the val candidates in ``mask`` (label: candidate is a mate)."""

    @abstractmethod
    def transform(self, scores: np.ndarray) -> np.ndarray:
        """Normalised scores, same shape."""

    def get_state(self) -> dict[str, float]:
        return {f: float(getattr(self, f)) for f in self.state_fields}

    def set_state(self, state: dict[str, float]) -> Normaliser:
        for f in self.state_fields:
            setattr(self, f, float(state[f]))
        return self


class ZScore(Normaliser):
    """Standardise with the mean and standard deviation of the selected val candidates' scores."""

    state_fields = ("mean_", "scale_")

    def __init__(self) -> None:
        self.mean_, self.scale_ = 0.0, 1.0

    def fit(self, scores: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> ZScore:
        x = np.asarray(scores, np.float64)[mask]
        if len(x):
            self.mean_, sd = float(x.mean()), float(x.std())
            self.scale_ = sd if sd > 1e-12 else 1.0
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, np.float64) - self.mean_) / self.scale_


class LogLikelihoodRatio(Normaliser):
    """Calibrated log-likelihood ratio of "mate" vs "non-mate", by logistic regression on val candidates."""

    state_fields = ("coef_", "intercept_", "prior_logit_")

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

    def transform(self, scores: np.ndarray) -> np.ndarray:
        return self.coef_ * np.asarray(scores, np.float64) + self.intercept_ - self.prior_logit_


NORMALISERS = {"zscore": ZScore, "llr": LogLikelihoodRatio}


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

    def normalised(self, base: np.ndarray, disamb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both sources on the common scale."""
        return self.norms_[0].transform(base), self.norms_[1].transform(disamb)

    def fuse(self, base: np.ndarray, disamb: np.ndarray) -> np.ndarray:
        b, d = self.normalised(base, disamb)
        return (1 - self.weight) * b + self.weight * d

    def with_weight(self, weight: float) -> WeightedFusion:
        """A copy with another weight and the same fitted normalisers."""
        out = WeightedFusion(self.normaliser, weight)
        out.norms_ = self.norms_
        return out

    def to_dict(self) -> dict:
        return {"normaliser": self.normaliser, "weight": self.weight, "state": [n.get_state() for n in self.norms_]}

    @classmethod
    def from_dict(cls, d: dict) -> WeightedFusion:
        out = cls(d["normaliser"], float(d["weight"]))
        out.norms_ = [n.set_state(st) for n, st in zip(out.norms_, d["state"], strict=True)]
        return out
