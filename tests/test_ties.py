"""The tie rule (lookalike.ties): which neighbours of a ranked list tie, the order ties are listed in, and the words
that mark them; no face data needed."""

from __future__ import annotations

import csv
import io

import numpy as np

from lookalike.identify_format import format_csv, format_html, format_table
from lookalike.ties import BASE_TOLERANCE, RANKED_TOLERANCE, lead_tie, neighbours_tie, settle_ties, tie_note


def test_equal_scores_and_float32_noise_tie_but_near_ties_do_not():
    one = np.float32(1.0)
    step = float(np.spacing(one))  # one float32 step at 1: what one photo enrolled twice scored apart
    ranked = np.array([1.886270, 1.886268, 0.5, 0.5, 0.5 - 3 * RANKED_TOLERANCE, -4.0, -4.0 - 3 * RANKED_TOLERANCE])
    base = np.array([1.0, 1.0 - step, 0.9, 0.9, 0.9, 0.8, 0.8])
    # tied: the same photo's final scores, equal scores, and 3e-5 apart at a size of 4; not: 3e-5 apart at 0.5
    assert neighbours_tie(ranked, base).tolist() == [True, False, True, False, False, True]
    # the base score decides where the final score does not: equal final scores (a re-ranker's clamp) with base
    # scores apart are no tie; base scores within the tolerance are one, just outside it are not
    assert neighbours_tie(np.array([-2.0, -2.0]), np.array([0.85, 0.85 - 2 * BASE_TOLERANCE])).tolist() == [False]
    assert neighbours_tie(np.array([-2.0, -2.0]), np.array([0.85, 0.85 - BASE_TOLERANCE / 2])).tolist() == [True]
    # the final score's tolerance grows with its size: 1.9e-5 apart at 3.0 ties, 1.9e-5 at 0.3 does not
    assert neighbours_tie(np.array([3.0, 3.0 - 1.9e-5]), np.array([0.9, 0.9])).tolist() == [True]
    assert neighbours_tie(np.array([0.3, 0.3 - 1.9e-5]), np.array([0.9, 0.9])).tolist() == [False]
    assert neighbours_tie(np.array([0.3]), np.array([0.9])).tolist() == []


def test_ties_are_listed_by_name_with_the_ranks_they_tie_with():
    ranked = np.array([2.0, 2.0, 2.0, 1.0, 0.5, 0.5])
    base = np.array([0.95, 0.95, 0.95, 0.9, 0.8, 0.8])
    order, tied = settle_ties(ranked, base, ["s9", "s1", "b", "x", "zed", "amy"])
    assert order.tolist() == [2, 1, 0, 3, 5, 4]  # a three-way tie by name (b, s1, s9), then amy before zed
    assert tied == [[2, 3], [1, 3], [1, 2], [], [6], [5]]
    again, _ = settle_ties(ranked[[1, 0, 2, 3, 5, 4]], base, ["s1", "s9", "b", "x", "amy", "zed"])
    assert np.array(["s1", "s9", "b", "x", "amy", "zed"])[again].tolist() == ["b", "s1", "s9", "x", "amy", "zed"]
    # a chain: each neighbour within the tolerance of the next is one tie, though the ends are further apart
    chain = np.array([1.0, 1.0 - 0.8 * RANKED_TOLERANCE, 1.0 - 1.6 * RANKED_TOLERANCE])
    assert settle_ties(chain, np.full(3, 0.9), ["c", "b", "a"])[1] == [[2, 3], [1, 3], [1, 2]]
    order, tied = settle_ties(np.zeros(0), np.zeros(0), [])
    assert order.tolist() == [] and tied == []


def _result(candidates: list[dict]) -> dict:
    face = {"index": 0, "box": [1, 2, 3, 4], "detection": "detected", "faces_in_photo": 1, "ambiguous": False,
            "candidates": candidates, "decision": {"fpir": 0.01, "threshold": 0.5, "calibrated_on": "gallery",
                                                    "enrolled": True, "subject": candidates[0]["subject"]}}
    return {"gallery": "g.sqlite", "model": None, "fpir": 0.01, "results": [{"photo": "p.jpg", "status": "ok",
                                                                             "faces": [face]}]}


def _cand(rank: int, subject: str, tied: list[int] | None) -> dict:
    c = {"rank": rank, "subject": subject, "image_id": rank, "image": f"{subject}.jpg", "base_score": 0.9,
         "base_rank": rank, "final_score": 0.9, "lookalike_group": None}
    return c if tied is None else {**c, "tied_with": tied}


def test_a_tie_past_the_lists_end_and_results_from_before_ties_were_marked():
    cands = [_cand(1, "a", []), _cand(2, "b", [3])]
    assert tie_note(cands[1], cands) == "tied with #3 (below the list's end): the order between them is arbitrary"
    assert lead_tie(cands) == "" and tie_note(cands[0], cands) == ""
    three = [_cand(1, "a", [2, 3]), _cand(2, "b", [1, 3]), _cand(3, "c", [1, 2])]
    assert lead_tie(three) == "#1 a is tied with #2 b, #3 c: which of them is first is arbitrary"
    assert tie_note(three[2], three) == "tied with #1 a, #2 b: the order among them is arbitrary"
    old = _result([_cand(1, "a", None), _cand(2, "b", None)])  # a stored search from before: no tied_with
    assert "tie" not in format_table(old).split("\n", 1)[1] and "tied" not in format_html(old, {})
    assert [r["tied_with"] for r in csv.DictReader(io.StringIO(format_csv(old)))] == ["", ""]
