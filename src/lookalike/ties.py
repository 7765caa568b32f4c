"""Tied candidates: the one rule for when two candidates of a list tie, the order tied candidates are listed in, and
the words that mark a tie in every output.

A candidate list is ordered by two scores, highest first: the score it is ranked by (the final score; with
``--batch``, the batch distance, negated), then the base score, which decides where the first does not (equal final
scores keep base order, and a re-ranker keeps the candidates it does not move in base order, their final scores
clamped to the one above, so that many neighbours share a final score without a tie). Two neighbours
*tie* when neither score tells them apart (:func:`neighbours_tie`): the base scores (cosine similarities in float32)
are within :data:`BASE_TOLERANCE` (about 16 float32 steps near 1; the same photo enrolled twice scored 0.99999994
and 0.9999999), and the score ranked by within :data:`RANKED_TOLERANCE` of its size (a fused score magnifies that
step: the same photo's final scores were 1.886270 and 1.886268). A run of neighbours that tie one to the next is one
tie; its order is arbitrary, so it is listed by subject name (:func:`settle_ties`) and reruns give the same order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BASE_TOLERANCE = 1e-6  # base scores (cosines, within [-1, 1]) closer than this tie
RANKED_TOLERANCE = 1e-5  # final scores (batch distances) closer than this times max(1, |score|) tie
TIE_EXPLANATION = (f"tied: the scores the list is ranked by are equal (base scores within {BASE_TOLERANCE:.6f}, "
                   f"final scores within 1 part in {round(1 / RANKED_TOLERANCE):,}), so the order between tied "
                   "candidates is arbitrary; they are listed by subject name")


def neighbours_tie(ranked: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Whether each candidate of a list ties with the next (K-1,): ``ranked``, the score the list is ranked by (K,),
    within :data:`RANKED_TOLERANCE` of the larger one's size (at least 1), and ``base``, the base scores (K,), within
    :data:`BASE_TOLERANCE`."""
    r, b = np.asarray(ranked, np.float64), np.asarray(base, np.float64)
    size = np.maximum(1.0, np.maximum(np.abs(r[:-1]), np.abs(r[1:])))
    return (np.abs(r[:-1] - r[1:]) <= RANKED_TOLERANCE * size) & (np.abs(b[:-1] - b[1:]) <= BASE_TOLERANCE)


def tie_runs(ranked: np.ndarray, base: np.ndarray) -> np.ndarray:
    """A run number for each place of a ranked list: neighbours that tie (:func:`neighbours_tie`) share one."""
    if not len(ranked):
        return np.zeros(0, np.int64)
    return np.concatenate([[0], np.cumsum(~neighbours_tie(ranked, base))]).astype(np.int64)


def settle_ties(ranked: np.ndarray, base: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[list[int]]]:
    """(the order that lists each tie of a ranked list by subject name, and for each place in that order the other
    ranks, counted from 1, it ties with). ``ranked``, ``base``: see :func:`neighbours_tie`; ``names``: the
    candidates' subjects; all in the list's order."""
    runs = tie_runs(ranked, base)
    order = np.array(sorted(range(len(runs)), key=lambda i: (runs[i], str(names[i]), i)), np.int64)
    members: dict[int, list[int]] = {}
    for place, i in enumerate(order):
        members.setdefault(int(runs[i]), []).append(place + 1)
    return order, [[r for r in members[int(runs[i])] if r != place + 1] for place, i in enumerate(order)]


def named_ranks(ranks: Sequence[int], candidates: Sequence[dict]) -> str:
    """``#2 twin, #21 (below the list's end)``: ``ranks`` of a list (the JSON ``candidates``) with their subjects."""
    names = {c["rank"]: c["subject"] for c in candidates}
    return ", ".join(f"#{r} {names[r]}" if r in names else f"#{r} (below the list's end)" for r in ranks)


def tie_note(candidate: dict, candidates: Sequence[dict]) -> str:
    """``tied with #2 twin: the order between them is arbitrary`` for a candidate of the list ``candidates`` (the
    JSON's); empty when it ties with none (or the result is from before ties were marked)."""
    ranks = candidate.get("tied_with") or ()
    if not ranks:
        return ""
    return f"tied with {named_ranks(ranks, candidates)}: the order {'between' if len(ranks) == 1 else 'among'} them " \
           "is arbitrary"


def lead_tie(candidates: Sequence[dict]) -> str:
    """When the first of a list's candidates (the JSON ``candidates``) ties: ``#1 s1 is tied with #2 twin: which of
    them is first is arbitrary``; empty otherwise."""
    if not candidates or not candidates[0].get("tied_with"):
        return ""
    return (f"#1 {candidates[0]['subject']} is tied with {named_ranks(candidates[0]['tied_with'], candidates)}: "
            "which of them is first is arbitrary")
