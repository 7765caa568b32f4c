"""The gallery's own calibration (identification without a model): its sample follows added faces exactly, is
drawn again after removals or doubling, and is kept beside the gallery for the next process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER

from lookalike import calibration
from lookalike.gallery import Gallery
from lookalike.identify import Identifier, TemplateFace
from lookalike.identify_format import verdict

DIM = 16


def _add(g: Gallery, subjects: list[str], rng: np.random.Generator) -> None:
    v = rng.standard_normal((len(subjects), DIM)).astype(np.float32)
    g.add_embeddings(subjects, v / np.linalg.norm(v, axis=1, keepdims=True))


def _brute_top(g: Gallery, rows: list[int]) -> np.ndarray:
    """Each row's best score against the faces of the other subjects, over the whole gallery."""
    v = np.asarray(g.vectors_)
    sims = v[rows] @ v.T
    sims[g.subject_codes_[rows][:, None] == g.subject_codes_[None, :]] = -np.inf
    return sims.max(1)


@pytest.fixture
def small_sample(monkeypatch):
    monkeypatch.setattr(calibration, "MAX_NONMATED", 20)


def test_added_faces_extend_the_sample_exactly(tmp_path: Path, small_sample, monkeypatch) -> None:
    rng = np.random.default_rng(1)
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER) as g:
        _add(g, [f"p{i % 30}" for i in range(100)], rng)
        first = calibration.draw(g)
        assert len(first.positions) == 20 and np.allclose(first.top, _brute_top(g, first.positions), atol=1e-6)
        _add(g, [f"p{i % 40}" for i in range(60)], rng)  # faces of known and of new subjects
        monkeypatch.setattr(g, "search", None)  # extending searches nothing
        grown = calibration.current(first, g)
        assert grown.positions == first.positions and grown.rows_at == 160 and grown.drawn_at == 100
        assert np.allclose(grown.top, _brute_top(g, first.positions), atol=1e-6)
        assert all(a >= b for a, b in zip(grown.top, first.top, strict=True))
        assert calibration.current(grown, g) is grown  # nothing new: the same sample


def test_the_sample_is_drawn_again_after_a_removal_or_when_the_gallery_doubled(tmp_path: Path, small_sample):
    rng = np.random.default_rng(2)
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER) as g:
        _add(g, [f"p{i % 30}" for i in range(100)], rng)
        s = calibration.draw(g)
        g.remove("p3")
        assert calibration.extended(s, g) is None and calibration.current(s, g).rows_at == len(g.image_ids_)
        s = calibration.draw(g)
        _add(g, [f"q{i}" for i in range(2 * len(g.image_ids_))], rng)
        assert calibration.extended(s, g) is None  # more than doubled: a fresh sample
    with Gallery.create(tmp_path / "small.sqlite", matcher=FAST_MATCHER) as g:
        _add(g, ["a", "b", "a"], rng)  # the sample is the whole gallery: new faces must join it
        s = calibration.draw(g)
        _add(g, ["c"], rng)
        assert calibration.extended(s, g) is None and len(calibration.current(s, g).positions) == 4


def test_the_sample_is_kept_for_the_next_process(db: str, small_sample, monkeypatch) -> None:
    """In the gallery's database (SQLite, or PostgreSQL with no vector files), so every later process reads it."""
    rng = np.random.default_rng(3)
    with Gallery.create(db, matcher=FAST_MATCHER) as g:
        _add(g, [f"p{i % 30}" for i in range(100)], rng)
        cal = Identifier(g).calibration()
        assert cal["n_nonmated"] == 20 and set(cal["thresholds"]) == set(calibration.FPIRS)
        gen = g.store.generation()
        assert g.store.get_derived("calibration") is not None and g.generation_ == gen  # saved, not a change
    draws = []
    real = calibration.draw
    monkeypatch.setattr(calibration, "draw", lambda g, depth=2: draws.append(1) or real(g, depth))
    with Gallery.open(db) as g:
        assert Identifier(g).calibration() == cal and not draws  # read, not searched again
        _add(g, ["p1", "new"], rng)
        after = Identifier(g).calibration()
        assert not draws and after["n_nonmated"] == 20  # extended from the saved sample
        saved = g.store.get_derived("calibration")
    for damage in ("[1, 2", '{"key": {}, "value": {}}', saved.replace('"positions": [', '"positions": [9999, ')):
        with Gallery.open(db) as g:  # unreadable, or not a sample: drawn again
            g.store.put_derived("calibration", damage)
            assert Identifier(g).calibration() == {**calibration.summary(real(g)), "model": None}
    assert len(draws) == 3


def test_a_gallery_that_cannot_be_written_still_identifies(tmp_path: Path, small_sample, monkeypatch) -> None:
    """Saving a calibration is a convenience: where the database refuses the write, identify goes on (and the
    next process computes it again)."""
    import sqlite3

    rng = np.random.default_rng(4)
    db = tmp_path / "g.sqlite"
    with Gallery.create(db, matcher=FAST_MATCHER) as g:
        _add(g, [f"p{i % 30}" for i in range(100)], rng)
    with Gallery.open(db) as g:
        real_exec = g.store._exec

        def refuse(sql: str, params=()):
            if sql.startswith("INSERT INTO derived"):
                raise sqlite3.OperationalError("attempt to write a readonly database")
            return real_exec(sql, params)

        monkeypatch.setattr(g.store, "_exec", refuse)
        cal = Identifier(g).calibration()
        assert cal["n_nonmated"] == 20 and g.store.get_derived("calibration") is None
        assert g.store.put_derived("x", "{}") is False
        g.store.add_subject("still-writable")  # the failed write left no transaction open


def test_a_models_thresholds_come_from_the_gallery_when_its_sample_is_large_enough(tmp_path: Path, synthetic_model,
                                                                                   monkeypatch) -> None:
    """With a model, each sampled gallery face is searched like a probe without its own subject and re-ranked: its
    first final score equals a brute-force search of the other subjects re-ranked the same way; the thresholds at
    the FPIRs the sample is large enough for replace the model's, the others stay the model's; the result is kept
    beside the gallery and searched again only when the model changes or the gallery grows by over 10%."""
    from lookalike.metrics import RankedLists, threshold_at_fpir

    model, people = synthetic_model
    monkeypatch.setattr(calibration, "MIN_SEARCHES", 10)  # 10 / 0.1 = 100 searches for FPIR 10%, 1,000 for 1%
    monkeypatch.setattr(calibration, "MAX_NONMATED", 200)
    db = tmp_path / "g.sqlite"
    prepared = []  # rows of candidate faces the disambiguator projects and cohort-scores
    real_prepare = type(model.disambiguator_)._prepare_gallery
    monkeypatch.setattr(type(model.disambiguator_), "_prepare_gallery",
                        lambda self, rows: prepared.append(len(rows)) or real_prepare(self, rows))
    with Gallery.create(db, matcher=model.matcher) as g:
        g.add_embeddings(people.identities[:400], people.vectors[:400])
        ident = Identifier(g, model)
        searches, real_search = [], g.search
        monkeypatch.setattr(g, "search", lambda v, k=20: searches.append(k) or real_search(v, k))
        cal = ident.calibration()
        monkeypatch.setattr(g, "search", real_search)
        assert sum(prepared) <= 400  # a gallery face in many sampled lists is prepared once, not once a list
        # the sample is searched once, as deep as the model reaches, for both calibrations; the search is not kept
        assert searches == [model.reach + 1] and ident._sample.lists is None
        sample = ident._sample
        pos = np.asarray(sample.positions)
        v = np.asarray(g.vectors_)
        sims = v[pos] @ v.T
        sims[g.subject_codes_[pos][:, None] == g.subject_codes_[None, :]] = -np.inf
        tops = []  # each sampled face's best image per other subject, best first (the gallery's lists), re-ranked
        for i in range(len(pos)):
            order = np.argsort(-sims[i], kind="stable")
            seen, rows = set(), []
            for j in order[np.isfinite(sims[i, order])]:
                if g.subject_codes_[j] not in seen:
                    seen.add(g.subject_codes_[j])
                    rows.append(j)
                if len(rows) == model.reach:
                    break
            rows = np.asarray(rows)
            lists = RankedLists(np.arange(len(rows))[None], sims[i, rows][None].astype(np.float32))
            tops.append(model.rerank(v[pos[i]][None], lists, v[rows][None]).scores[0, 0])
        assert cal["model"]["n_nonmated"] == len(pos) == 200
        assert np.allclose(ident._model_top.top, tops, atol=1e-5)
        assert cal["model"]["enough"] == {0.001: False, 0.01: False, 0.1: True}
        assert ident.threshold(0.1) == (threshold_at_fpir(np.asarray(tops), 0.1), "gallery")
        for f in (0.01, 0.001):  # 200 searches are too few: the stricter of the model's and the sample's
            sample_t = threshold_at_fpir(np.asarray(tops), f)
            assert ident.threshold(f) == max((sample_t, "gallery-sample"), (model.threshold(f), "model"))
    searched = []
    real = calibration.model_top
    monkeypatch.setattr(calibration, "model_top", lambda *a: searched.append(1) or real(*a))
    with Gallery.open(db) as g:
        assert Identifier(g, model).calibration()["model"] == cal["model"] and not searched  # read from beside it
        g.add_embeddings(people.identities[400:430], people.vectors[400:430])  # +7.5%: kept
        assert Identifier(g, model).calibration()["model"] == cal["model"] and not searched
        g.add_embeddings(people.identities[430:], people.vectors[430:])  # over 10% more: searched again
        assert Identifier(g, model).calibration()["model"]["n_nonmated"] > 0 and len(searched) == 1
    with Gallery.open(db) as g, pytest.MonkeyPatch.context() as m:
        m.setattr(type(model), "fingerprint", lambda self: "another model")
        Identifier(g, model).calibration()
        assert len(searched) == 2  # another model: its own scores


def test_a_small_gallery_takes_the_stricter_threshold_and_one_subject_the_models(tmp_path: Path, synthetic_model,
                                                                                monkeypatch):
    """Too few sampled searches for an FPIR: whichever of the model's and the sample's thresholds is higher (the
    label says which); no non-mated search at all (one subject): the model's; no model: the gallery's base score
    (labelled by whether its sample holds 10 / FPIR searches)."""
    model, people = synthetic_model
    with Gallery.create(tmp_path / "g.sqlite", matcher=model.matcher) as g:
        g.add_embeddings(people.identities[:60], people.vectors[:60])
        ident = Identifier(g, model)
        cal = ident.calibration()
        assert cal["model"]["n_nonmated"] == 60 and not any(cal["model"]["enough"].values())
        sample_t, model_t = cal["model"]["thresholds"][0.1], model.threshold(0.1)
        assert ident.threshold(0.1) == max((sample_t, "gallery-sample"), (model_t, "model"))
        monkeypatch.setattr(model, "thresholds_", {**model.thresholds_, 0.1: sample_t - 1})
        assert ident.threshold(0.1) == (sample_t, "gallery-sample")
        monkeypatch.setattr(model, "thresholds_", {**model.thresholds_, 0.1: sample_t + 1})
        assert ident.threshold(0.1) == (sample_t + 1, "model")
        # no model: the gallery's base-score threshold, labelled as a sample too small to hold 10% (60 < 100)
        assert Identifier(g).calibration()["model"] is None and Identifier(g).threshold(0.1)[1] == "gallery-sample"
    with Gallery.create(tmp_path / "one.sqlite", matcher=model.matcher) as g:
        g.add_embeddings(["ann"] * 3, people.vectors[:3])
        assert Identifier(g, model).threshold(0.01) == (model.threshold(0.01), "model")


def test_the_same_photo_under_two_names_is_left_out_of_the_thresholds(tmp_path: Path, small_sample,
                                                                      synthetic_model) -> None:
    """A face enrolled under two subjects scores 1.0 against the other: no new probe does so against a wrong
    subject, and one such face set a small gallery's 1%-FPIR threshold to 1.0 (nothing could pass it). Such faces
    are counted and left out, with a model and without; the decision says so."""
    rng = np.random.default_rng(4)
    model, people = synthetic_model
    with Gallery.create(tmp_path / "clean.sqlite", matcher=FAST_MATCHER) as g:
        _add(g, [f"p{i}" for i in range(20)], rng)
        clean = Identifier(g).calibration()
        vectors = np.asarray(g.vectors_).copy()
    with Gallery.create(tmp_path / "dup.sqlite", matcher=FAST_MATCHER) as g:
        g.add_embeddings([f"p{i}" for i in range(20)], vectors)
        g.add_embeddings(["copy-of-p3"], vectors[3:4])  # p3's photo filed under another name too
        cal = Identifier(g).calibration()
        assert cal["n_duplicates"] == 2 and cal["n_nonmated"] == 20 - 2  # the sample: 20 of the 21 faces
        assert max(cal["thresholds"].values()) < 0.9999 and clean["n_duplicates"] == 0
        result = Identifier(g).search_face(TemplateFace(vectors[5], ["probe"]), top=3)
        assert result["decision"]["duplicates_left_out"] == 2
        assert "2 of its sampled faces left out" in verdict(result["decision"])
    with Gallery.create(tmp_path / "model.sqlite", matcher=model.matcher) as g:
        g.add_embeddings(people.identities[:15], people.vectors[:15])  # the sample: every face
        g.add_embeddings(["copy"], people.vectors[:1])
        cal = Identifier(g, model).calibration()
        assert cal["n_duplicates"] == 2 and cal["model"]["n_nonmated"] == cal["n_nonmated"]
