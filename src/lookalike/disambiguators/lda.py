"""Lookalike discriminant analysis: a closed-form projection that whitens genuine variation and keeps the
directions along which mined lookalike pairs differ most (an LDA whose between-class scatter is the
lookalike-pair scatter; with ``dim=None`` it reduces to within-class whitening, WCCN)."""

from __future__ import annotations

import numpy as np
from scipy.linalg import eigh

from lookalike.checks import check_int, check_range
from lookalike.disambiguators.base import EmbeddingDisambiguator, l2n
from lookalike.faces import FaceSet
from lookalike.mining import Pairs

SHRINK_GRID = (0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0)
FALLBACK_SHRINK = 0.5  # when too few train people to hold some out for choosing the shrinkage


def pair_scatter(x: np.ndarray, pairs: Pairs) -> np.ndarray:
    d = x[pairs.left] - x[pairs.right]
    return d.T @ d / max(len(d), 1)


class LookalikeLDA(EmbeddingDisambiguator):
    """Cosine after projecting onto ``W``, where ``W.T @ S_genuine @ W = I`` and ``W`` maximises the
    lookalike scatter; ``shrink`` regularises S_genuine towards a scaled identity."""

    def __init__(self, dim: int | None = None, shrink: float | str = "auto", center: bool = True,
                 power: float = 0.0, shrink_grid: tuple[float, ...] = SHRINK_GRID, holdout: float = 0.25,
                 cohort_n: int = 0, cohort_beta: float = 0.5, cohort_size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.dim, self.shrink, self.center, self.power = dim, shrink, center, power
        self.shrink_grid, self.holdout, self.seed = tuple(shrink_grid), holdout, seed
        self.cohort_n, self.cohort_beta, self.cohort_size = cohort_n, cohort_beta, cohort_size
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.cohort_: np.ndarray | None = None

    @property
    def input_dim(self) -> int | None:
        return None if self.components_ is None else int(self.components_.shape[0])

    def _check_fit(self, train: FaceSet) -> None:
        """The parameters (``dim`` None or >= 1: -1 had dropped the last direction, 0 meant None; ``shrink`` "auto"
        or in [0, 1]; ``holdout`` in [0, 1); ...) and the train vectors, before any work."""
        super()._check_fit(train)
        if self.dim is not None:
            check_int(self.dim, "dim")
        if not (isinstance(self.shrink, str) and self.shrink == "auto"):
            check_range(self.shrink, "shrink ('auto' or a number)", 0, 1)
        if not self.shrink_grid:
            raise ValueError("shrink_grid must hold at least one value")
        for v in self.shrink_grid:
            check_range(v, "shrink_grid values", 0, 1)
        check_range(self.holdout, "holdout", 0, 1, hi_open=True)
        check_range(self.power, "power", -np.inf, np.inf)
        check_range(self.cohort_beta, "cohort_beta", -np.inf, np.inf)
        check_int(self.cohort_n, "cohort_n", least=0)
        if self.cohort_size is not None:
            check_int(self.cohort_size, "cohort_size")
        check_int(self.seed, "seed", least=0)

    def _solve(self, x: np.ndarray, pairs: Pairs, shrink: float,
               rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, components, eigenvalues); the mean over ``rows`` (default all), pairs index ``x``."""
        mean = x[rows if rows is not None else slice(None)].mean(0) if self.center else np.zeros(x.shape[1])
        sg, sl = pair_scatter(x, pairs.genuine), pair_scatter(x, pairs.lookalike)
        d = x.shape[1]
        sg = (1 - shrink) * sg + shrink * np.trace(sg) / d * np.eye(d)
        evals, evecs = eigh(sl, sg)
        order = np.argsort(-evals)[: self.dim or d]
        # power > 0 weights each direction by its lookalike/genuine ratio (0: plain whitening)
        return mean, evecs[:, order] * np.maximum(evals[order], 1e-12) ** (self.power / 2), evals[order]

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        x = np.asarray(train.vectors, np.float64)
        shrink, scores = self.shrink, {}
        if shrink == "auto":
            scores = self._select_shrink(x, train.identities, pairs)
            shrink = max(scores, key=lambda s: (scores[s], s)) if scores else FALLBACK_SHRINK
        self.mean_, self.components_, evals = self._solve(x, pairs, float(shrink))
        self.cohort_ = self._cohort(x) if self.cohort_n > 0 else None
        self.stats = {"eig_top": evals[:5].round(3).tolist(), "dim": int(len(evals)), "shrink": float(shrink),
                      "holdout_rank1": scores}

    def _cohort(self, x: np.ndarray) -> np.ndarray:
        """The projected (float32, as :meth:`transform` returns them) train faces, or a seeded sample of
        ``cohort_size`` of them: each probe's cohort term reads the whole cohort, so its size is most of what
        re-ranking one search costs."""
        if self.cohort_size is not None and self.cohort_size < len(x):
            x = x[np.sort(np.random.default_rng(self.seed).choice(len(x), self.cohort_size, replace=False))]
        return self.transform(x)

    def _select_shrink(self, x: np.ndarray, ids: np.ndarray, pairs: Pairs) -> dict[float, float]:
        """Rank-1 of a small closed-set search among held-out train people (identity-disjoint from the
        fitting people; one gallery image per person, at most 5 probes each) for each shrinkage value; empty
        when the held-out people give no search or the rest no genuine and lookalike pairs."""
        rng = np.random.default_rng(self.seed)
        people = np.unique(ids)
        held = np.isin(ids, rng.choice(people, int(round(self.holdout * len(people))), replace=False))
        fit_pairs = pairs.subset(~held[pairs.left] & ~held[pairs.right])
        gallery, probes = [], []
        for person in np.unique(ids[held]):
            rows = rng.permutation(np.flatnonzero(ids == person))
            gallery.append(rows[0])
            probes.extend(rows[1:6].tolist())
        gallery, probes = np.asarray(gallery, np.int64), np.asarray(probes, np.int64)
        if len(probes) == 0 or len(gallery) < 2 or not (len(fit_pairs.genuine) and len(fit_pairs.lookalike)):
            return {}
        out = {}
        for s in self.shrink_grid:
            mean, w, _ = self._solve(x, fit_pairs, s, ~held)
            sim = l2n((x[probes] - mean) @ w) @ l2n((x[gallery] - mean) @ w).T
            out[float(s)] = round(float((ids[gallery][sim.argmax(1)] == ids[probes]).mean()), 4)
        return out

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        if self.components_ is None:
            raise RuntimeError("fit first")
        return l2n((np.asarray(vectors, np.float64) - self.mean_) @ self.components_)

    def _state(self) -> dict[str, np.ndarray]:
        cohort = {} if self.cohort_ is None else {"cohort": self.cohort_}
        return {"mean": self.mean_, "components": self.components_, **cohort}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        """The learned arrays of a saved model, checked: finite, ``mean`` (D,), ``components`` (D, D') with D' at
        most D, ``cohort`` (N, D') (a NaN had given NaN scores, another shape a matmul error at the first search)."""
        mean, components, cohort = (np.asarray(state[k]) if k in state else None for k in ("mean", "components",
                                                                                             "cohort"))
        if mean is None or components is None:
            raise ValueError("the lookalike LDA's mean or components are missing")
        if components.ndim != 2 or mean.shape != components.shape[:1] or components.shape[1] > components.shape[0] \
                or (cohort is not None and (cohort.ndim != 2 or cohort.shape[1] != components.shape[1])):
            raise ValueError(f"the lookalike LDA's arrays do not fit together: mean {mean.shape}, components "
                             f"{components.shape}, cohort {None if cohort is None else cohort.shape}")
        for name, a in (("mean", mean), ("components", components), ("cohort", cohort)):
            if a is not None and not (np.issubdtype(a.dtype, np.floating) and np.isfinite(a).all()):
                raise ValueError(f"the lookalike LDA's {name} holds NaN, infinite or non-float values")
        self.mean_, self.components_, self.cohort_ = mean, components, cohort
