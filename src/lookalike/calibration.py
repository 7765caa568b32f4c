"""A gallery's own open-set calibration, for identification without a model: a seeded sample of its faces, each
with its best score against the other subjects (its top non-mated score), and thresholds at FPIR 0.1%, 1%, 10%.

It follows the gallery as faces are added: the sampled faces' top scores are raised by the new faces alone (exact
inner products, milliseconds), so a service that enrols between searches does not search its 2,000 faces again
after every enrolment (a second at a million faces). The sample is drawn again when faces were removed, when it
held the whole gallery (2,000 faces or fewer), or when the gallery has doubled since it was drawn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from lookalike.gallery import Gallery
from lookalike.metrics import threshold_at_fpir

MAX_NONMATED = 2000  # gallery faces in the sample
FPIRS = (0.001, 0.01, 0.1)
LOOKALIKE_FPIR = 0.01  # two subjects are lookalikes when they match each other above the gallery's 1%-FPIR score


@dataclass
class NonMatedSample:
    """Sampled gallery rows and their top non-mated scores (-inf while no other subject has a face), up to date
    with the gallery's first ``rows_at`` rows; ``last_id`` is the image id of row ``rows_at - 1`` (image ids only
    grow, so while it stays there no earlier row was removed); ``drawn_at``: the rows when it was drawn."""

    rows_at: int
    drawn_at: int
    last_id: int
    positions: list[int]
    ids: list[int]
    top: list[float]

    @classmethod
    def from_dict(cls, d: object) -> NonMatedSample | None:
        """The sample :func:`dataclasses.asdict` wrote, or None for anything else."""
        try:
            s = cls(**d)  # type: ignore[arg-type]
        except TypeError:
            return None
        try:
            ok = (all(isinstance(x, int) for x in (s.rows_at, s.drawn_at, s.last_id, *s.positions, *s.ids))
                  and len(s.positions) == len(s.ids) == len(s.top) and all(0 <= p < s.rows_at for p in s.positions)
                  and all(isinstance(t, float | int) for t in s.top))
        except TypeError:  # not lists
            return None
        return s if ok else None

    def as_dict(self) -> dict:
        return asdict(self)


def draw(g: Gallery) -> NonMatedSample:
    """A seeded sample of the gallery's faces, each searched against the other subjects."""
    n = len(g.image_ids_)
    rows = np.random.default_rng(0).choice(n, min(n, MAX_NONMATED), replace=False) if n else np.zeros(0, np.int64)
    top = np.full(len(rows), -np.inf)
    if len(rows) and int(g.subject_codes_.max()) > 0:  # searchable faces of two subjects or more
        lists = g.search(np.asarray(g.vectors_)[rows], k=2)
        own = lists.subjects[:, 0] == g.subjects_[rows]
        top = np.where(own, lists.scores[:, 1], lists.scores[:, 0]).astype(np.float64)
    return NonMatedSample(n, n, int(g.image_ids_[n - 1]) if n else -1, rows.tolist(),
                          g.image_ids_[rows].astype(int).tolist(), top.tolist())


def extended(s: NonMatedSample, g: Gallery, block: int = 8192) -> NonMatedSample | None:
    """``s`` brought up to date with faces added since (their scores against the sampled faces), or None when it
    cannot be (see the module's docstring)."""
    n = len(g.image_ids_)
    pos = np.asarray(s.positions, np.int64)
    same_rows = (0 < s.rows_at <= n and int(g.image_ids_[s.rows_at - 1]) == s.last_id
                 and np.array_equal(g.image_ids_[pos], s.ids))
    if not same_rows or s.drawn_at <= MAX_NONMATED or n > 2 * s.drawn_at:
        return None
    if n == s.rows_at:
        return s
    v = np.asarray(g.vectors_)
    sampled, own = v[pos], g.subject_codes_[pos]
    top = np.asarray(s.top, np.float64)
    for start in range(s.rows_at, n, block):
        new = slice(start, min(n, start + block))
        sims = sampled @ v[new].T
        sims[own[:, None] == g.subject_codes_[new][None, :]] = -np.inf
        top = np.maximum(top, sims.max(1))
    return NonMatedSample(n, s.drawn_at, int(g.image_ids_[n - 1]), s.positions, s.ids, top.tolist())


def current(s: NonMatedSample | None, g: Gallery) -> NonMatedSample:
    """The sample for the gallery as it is now: ``s`` extended when it can be, else drawn again."""
    return (extended(s, g) if s is not None else None) or draw(g)


def summary(s: NonMatedSample) -> dict:
    """``thresholds`` (FPIR -> threshold), ``n_nonmated`` (sampled faces with another subject to match) and the
    ``lookalike`` threshold (at :data:`LOOKALIKE_FPIR`; +inf without non-mated searches)."""
    top = np.asarray(s.top, np.float64)
    top = top[np.isfinite(top)]
    thresholds = {f: threshold_at_fpir(top, f) for f in FPIRS} if len(top) else {}
    return {"thresholds": thresholds, "n_nonmated": int(len(top)), "lookalike": thresholds.get(LOOKALIKE_FPIR, np.inf)}
