"""The gallery's own calibration (identification without a model): its sample follows added faces exactly, is
drawn again after removals or doubling, and is kept beside the gallery for the next process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER

from lookalike import calibration
from lookalike.gallery import Gallery
from lookalike.gallery.store import NewImage
from lookalike.gallery.vectors import vector_dir
from lookalike.identify import Identifier

DIM = 16


def _add(g: Gallery, subjects: list[str], rng: np.random.Generator) -> None:
    v = rng.standard_normal((len(subjects), DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    if g.dim is None:
        g.store.set_meta({"dim": str(DIM)})
    start = len(g.image_ids_)
    g.store.add_images([NewImage(s, f"/x/{start + i}", f"{start + i:040d}", "ok", method="synthetic", embedding=v[i])
                        for i, s in enumerate(subjects)], g.matcher_name, g.preprocess)
    g.refresh()


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


def test_the_sample_is_kept_for_the_next_process(tmp_path: Path, small_sample, monkeypatch) -> None:
    rng = np.random.default_rng(3)
    db = tmp_path / "g.sqlite"
    with Gallery.create(db, matcher=FAST_MATCHER) as g:
        _add(g, [f"p{i % 30}" for i in range(100)], rng)
        cal = Identifier(g).calibration()
        assert cal["n_nonmated"] == 20 and set(cal["thresholds"]) == set(calibration.FPIRS)
    draws = []
    real = calibration.draw
    monkeypatch.setattr(calibration, "draw", lambda g: draws.append(1) or real(g))
    with Gallery.open(db) as g:
        assert Identifier(g).calibration() == cal and not draws  # read, not searched again
        _add(g, ["p1", "new"], rng)
        after = Identifier(g).calibration()
        assert not draws and after["n_nonmated"] == 20  # extended from the saved sample
    path = vector_dir(db) / "derived-calibration.json"
    saved = path.read_text()
    for damage in ("[1, 2", '{"key": {}, "value": {}}', saved.replace('"positions": [', '"positions": [9999, ')):
        path.write_text(damage)
        with Gallery.open(db) as g:  # unreadable, or not a sample: drawn again
            assert Identifier(g).calibration() == calibration.summary(real(g))
    assert len(draws) == 3
