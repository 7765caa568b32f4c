"""Labelled validation lists and the one grid search every tunable re-ranker uses.

Tuning happens inside ``fit`` on a validation split of training people (never test people): the val probes
are searched against the val gallery, and each setting of a grid is scored by rank-1 (then mean reciprocal
rank) of the lists it produces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.faces import FaceSet
from lookalike.index import make_index
from lookalike.metrics import RankedLists


@dataclass
class LabelledLists:
    """Val probes searched against a val gallery: base candidate lists plus the identities that label them.

    Only probes with a mate in the gallery are kept (closed set).
    """

    probes: FaceSet
    gallery: FaceSet
    lists: RankedLists

    def __post_init__(self) -> None:
        # integer identity codes: labelling a list is an integer comparison (the grid search does it thousands
        # of times)
        _, codes = np.unique(np.concatenate([self.gallery.identities, self.probes.identities]).astype(str),
                             return_inverse=True)
        self._gallery_codes, self._probe_codes = codes[:len(self.gallery)], codes[len(self.gallery):]

    @classmethod
    def search(cls, probes: FaceSet, gallery: FaceSet, depth: int = 100) -> LabelledLists:
        if len(gallery) == 0 or len(probes) == 0:
            raise ValueError(f"validation needs probes and a gallery, got {len(probes)} and {len(gallery)} images")
        probes = probes.take(np.isin(probes.identities, gallery.identities))
        if len(probes) == 0:
            raise ValueError("no validation probe has a mate in the validation gallery")
        index = make_index("numpy", gallery.vectors.shape[1])
        index.add(gallery.vectors)
        scores, ids = index.search(probes.vectors, depth)
        return cls(probes, gallery, RankedLists(ids, scores))

    @property
    def candidates(self) -> np.ndarray:
        """(Q, K, D) gallery vectors of the candidates."""
        return self.gallery.vectors[self.lists.indices]

    def labels(self, lists: RankedLists | None = None) -> np.ndarray:
        """(Q, K) True where the candidate is the probe's mate."""
        lists = self.lists if lists is None else lists
        return self._gallery_codes[lists.indices] == self._probe_codes[:, None]

    def quality(self, lists: RankedLists | None = None) -> tuple[float, float]:
        """(rank-1, mean reciprocal rank within the lists): the tuning criterion."""
        hits = self.labels(lists)
        first = np.where(hits.any(1), hits.argmax(1), np.inf)
        return float(np.mean(first == 0)), float(np.mean(1.0 / (first + 1)))


def grid_search(settings: Iterable[dict[str, Any]], score: Callable[..., tuple[float, ...]]
                ) -> tuple[dict[str, Any], tuple[float, ...], list[dict[str, Any]]]:
    """Evaluate ``score(**setting)`` for every setting; the best is the highest score tuple, ties going to the
    earliest setting. Returns (best setting, its score, one row per setting)."""
    best, best_score, table = None, None, []
    for setting in settings:
        s = tuple(score(**setting))
        table.append({**{k: repr(v) if not isinstance(v, int | float | str) else v for k, v in setting.items()},
                      "score": s})
        if best_score is None or s > best_score:
            best, best_score = setting, s
    if best is None:
        raise ValueError("empty grid")
    return best, best_score, table


def nonmated_lists(probes: FaceSet, gallery: FaceSet, depth: int = 100) -> RankedLists:
    """Non-mated searches: each probe searched against ``gallery`` without the images of its own identity
    (a distractor searched against the rest of the gallery, or a probe whose mate is taken out)."""
    if len(gallery) == 0:
        raise ValueError("non-mated searches need a gallery")
    per_identity = max(np.unique(gallery.identities, return_counts=True)[1])
    index = make_index("numpy", gallery.vectors.shape[1])
    index.add(gallery.vectors)
    scores, ids = index.search(probes.vectors, depth + int(per_identity))
    keep = gallery.identities[ids] != probes.identities[:, None]
    k = min(depth, int(keep.sum(1).min())) if len(keep) else 0
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept candidates first, in list order
    return RankedLists(np.take_along_axis(ids, order, 1), np.take_along_axis(scores, order, 1))
