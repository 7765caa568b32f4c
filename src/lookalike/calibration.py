"""A gallery's own open-set calibration: a seeded sample of its faces, each with its best score against the other
subjects (its top non-mated score), and thresholds at FPIR 0.1%, 1%, 10%: on the base score for identification
without a model, and, with a model, on the final score of the same faces searched and re-ranked by it
(:func:`model_top`), because the highest non-mated score grows with the gallery searched and a model's own
thresholds come from its validation gallery (``benchmarks/threshold_drift.py``).

It follows the gallery as faces are added: the sampled faces' top scores are raised by the new faces alone (exact
inner products, milliseconds), so a service that enrols between searches does not search its 2,000 faces again
after every enrolment (a second at a million faces). The sample is drawn again when faces were removed, when it
held the whole gallery (2,000 faces or fewer), or when the gallery has doubled since it was drawn.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from lookalike.gallery import Gallery
from lookalike.gallery.gallery import SubjectLists
from lookalike.metrics import RankedLists, threshold_at_fpir

if TYPE_CHECKING:
    from lookalike.model import LookalikeModel

MAX_NONMATED = 2000  # gallery faces in the sample
FPIRS = (0.001, 0.01, 0.1)
LOOKALIKE_FPIR = 0.01  # two subjects are lookalikes when they match each other above the gallery's 1%-FPIR score
MIN_SEARCHES = 10  # a model's threshold at FPIR f is the gallery's once its sample has MIN_SEARCHES / f searches
MODEL_REGROW = 0.1  # a model's calibration on the gallery is searched again once the gallery has grown by this share
# A sampled face whose best other-subject score is this high has an identical face under another subject: the same
# photo enrolled under two names (``enroll`` lists them). No new probe scores so against a wrong subject, so such faces
# are left out of the thresholds (counted): one of them in a 100-face sample set the 1%-FPIR threshold to 1.0.
DUPLICATE_SCORE = 0.9999


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
    lists: SubjectLists | None = field(default=None, repr=False, compare=False)  # the draw's search, in memory only

    @classmethod
    def from_dict(cls, d: object) -> NonMatedSample | None:
        """The sample :meth:`as_dict` wrote, or None for anything else."""
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
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lists"}


def draw(g: Gallery, depth: int = 2) -> NonMatedSample:
    """A seeded sample of the gallery's faces, each searched against the other subjects. ``depth``: subjects each
    search lists (a model's reach + 1 keeps the search in ``lists`` for :func:`model_top`, which then does not
    search the sample again: 13 s saved the first time at a million faces)."""
    n = len(g.image_ids_)
    rows = np.random.default_rng(0).choice(n, min(n, MAX_NONMATED), replace=False) if n else np.zeros(0, np.int64)
    top, lists = np.full(len(rows), -np.inf), None
    if len(rows) and int(g.subject_codes_.max()) > 0:  # searchable faces of two subjects or more
        lists = g.search(np.asarray(g.vectors_)[rows], k=max(2, depth))
        own = lists.subjects[:, 0] == g.subjects_[rows]
        top = np.where(own, lists.scores[:, 1], lists.scores[:, 0]).astype(np.float64)
    return NonMatedSample(n, n, int(g.image_ids_[n - 1]) if n else -1, rows.tolist(),
                          g.image_ids_[rows].astype(int).tolist(), top.tolist(), lists if depth > 2 else None)


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


def current(s: NonMatedSample | None, g: Gallery, depth: int = 2) -> NonMatedSample:
    """The sample for the gallery as it is now: ``s`` extended when it can be, else drawn again (``depth``: see
    :func:`draw`)."""
    return (extended(s, g) if s is not None else None) or draw(g, depth)


def duplicates(s: NonMatedSample) -> np.ndarray:
    """Which sampled faces have an identical face under another subject (:data:`DUPLICATE_SCORE`)."""
    return np.asarray(s.top, np.float64) >= DUPLICATE_SCORE


def summary(s: NonMatedSample) -> dict:
    """``thresholds`` (FPIR -> threshold), ``n_nonmated`` (sampled faces with another subject to match),
    ``n_duplicates`` (sampled faces left out as the same photo under two names: :func:`duplicates`) and the
    ``lookalike`` threshold (at :data:`LOOKALIKE_FPIR`; +inf without non-mated searches)."""
    dup = duplicates(s)
    thresholds, n = _thresholds(np.asarray(s.top, np.float64)[~dup])
    return {"thresholds": thresholds, "n_nonmated": n, "n_duplicates": int(dup.sum()),
            "lookalike": thresholds.get(LOOKALIKE_FPIR, np.inf)}


def _thresholds(top: np.ndarray) -> tuple[dict[float, float], int]:
    """(FPIR -> threshold at each of :data:`FPIRS`, none without non-mated searches; the non-mated searches): from
    sampled faces' top non-mated scores, -inf where a face had no other subject to match."""
    t = np.asarray(top, np.float64)
    t = t[np.isfinite(t)]
    return ({f: threshold_at_fpir(t, f) for f in FPIRS} if len(t) else {}), int(len(t))


@dataclass
class ModelTop:
    """A model's top non-mated final scores on a gallery's sample (:func:`model_top`), for the gallery's first
    ``rows_at`` rows (``last_id``: the image id of row ``rows_at - 1``), the model and the sample named by
    ``key``."""

    key: str
    rows_at: int
    last_id: int
    top: list[float]

    @classmethod
    def from_dict(cls, d: object) -> ModelTop | None:
        """The value :meth:`as_dict` wrote, or None for anything else."""
        try:
            m = cls(**d)  # type: ignore[arg-type]
            ok = isinstance(m.key, str) and isinstance(m.rows_at, int) and isinstance(m.last_id, int) \
                and all(isinstance(t, float | int) for t in m.top)
        except TypeError:
            return None
        return m if ok else None

    def as_dict(self) -> dict:
        return asdict(self)


def model_key(s: NonMatedSample, model_fingerprint: str) -> str:
    """What a :class:`ModelTop` was computed for: the model and the sampled faces."""
    return hashlib.sha1(f"{model_fingerprint} {s.ids}".encode()).hexdigest()[:16]


def model_top(s: NonMatedSample, g: Gallery, model: LookalikeModel,
              as_probes: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """Each sampled face's first final score when it is searched like a probe against the other subjects (its own
    subject left out of its list) and re-ranked by ``model``; -inf where no other subject has a face.
    ``as_probes``: for a model that prepares probes otherwise than the gallery, the sampled faces' vectors prepared
    as its probes are (one row per sampled face, NaN where a face could not be prepared: -inf too)."""
    pos = np.asarray(s.positions, np.int64)
    reach = model.reach
    if not len(pos) or int(g.subject_codes_.max(initial=0)) == 0:
        return np.full(len(pos), -np.inf)
    vectors = np.asarray(g.vectors_)[pos] if as_probes is None else as_probes()
    usable = ~np.isnan(vectors).any(1)
    top = np.full(len(pos), -np.inf)
    if not usable.any():
        return top
    pos, vectors = pos[usable], vectors[usable]
    n, lists = len(g.image_ids_), s.lists
    fresh = as_probes is None and lists is not None and s.rows_at == n and int(g.image_ids_[n - 1]) == s.last_id
    if not (fresh and lists.scores.shape[1] >= min(reach + 1, int(g.subject_codes_.max()) + 1)):
        lists = g.search(vectors, k=reach + 1)
    own = lists.subjects == g.subjects_[pos][:, None]
    keep = np.argsort(own, axis=1, kind="stable")[:, : lists.scores.shape[1] - 1]  # the other subjects, in order
    scores = np.take_along_axis(lists.scores, keep, 1)
    candidates = np.take_along_axis(lists.vectors, keep[:, :, None], 1)
    ids = np.take_along_axis(lists.image_ids, keep, 1)  # a gallery face in many lists is prepared once
    top[usable] = model.rerank(vectors, RankedLists(ids, scores), candidates).scores[:, 0]
    return top


def model_current(m: ModelTop | None, s: NonMatedSample, g: Gallery, model: LookalikeModel,
                  fingerprint: str, as_probes: Callable[[], np.ndarray] | None = None) -> ModelTop:
    """``m`` while it still describes this model, sample and gallery (no face removed, grown by at most
    :data:`MODEL_REGROW`), else computed again (``as_probes``: see :func:`model_top`)."""
    n = len(g.image_ids_)
    key = model_key(s, fingerprint)
    if m is not None and m.key == key and 0 < m.rows_at <= n <= (1 + MODEL_REGROW) * m.rows_at \
            and int(g.image_ids_[m.rows_at - 1]) == m.last_id:
        return m
    return ModelTop(key, n, int(g.image_ids_[n - 1]) if n else -1, model_top(s, g, model, as_probes).tolist())


def model_summary(m: ModelTop, s: NonMatedSample) -> dict:
    """``thresholds`` (FPIR -> threshold) from the sample ``s`` the model searched (its :func:`duplicates` left out)
    at every FPIR (none without non-mated searches), ``enough`` (FPIR -> whether the sample holds
    :data:`MIN_SEARCHES` / FPIR searches) and ``n_nonmated``."""
    thresholds, n = _thresholds(np.asarray(m.top, np.float64)[~duplicates(s)])
    return {"thresholds": thresholds, "enough": {f: n >= MIN_SEARCHES / f for f in FPIRS}, "n_nonmated": n}
