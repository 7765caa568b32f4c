"""DistilledNet: the top of dlib's network distilled from full-resolution to 20 px ORL chips (small CPU settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("dlib")

from lookalike.disambiguators.base import Disambiguator  # noqa: E402
from lookalike.disambiguators.distilled import DistilledNet  # noqa: E402
from lookalike.faces import FaceSet  # noqa: E402
from lookalike.mining import GENUINE, LOOKALIKE, Pairs, default_miner  # noqa: E402

TRAIN = [f"s{i}" for i in range(1, 21)]  # 20 people x 5 images
HELD = [f"s{i}" for i in range(25, 41)]  # 16 other people, 2 images each: never seen in the fit


def faces_of(orl_dir: Path, people: list[str], images: range, lowres: int) -> FaceSet:
    paths = np.asarray([str(orl_dir / p / f"{i}.pgm") for p in people for i in images])
    ids = np.repeat(np.asarray(people), len(images))
    return FaceSet(paths, ids, np.zeros((len(paths), 128), np.float32), np.full(len(paths), lowres, np.int32))


def small(**kw) -> DistilledNet:
    args = {"trainable": "last", "epochs": 4, "batch_size": 8, "lr": 1e-4, "holdout": 0.25, "cache_path": None,
            "embed_batch": 32}
    return DistilledNet(**{**args, **kw})


@pytest.fixture(scope="module")
def fitted(orl_dir: Path) -> tuple[FaceSet, FaceSet, DistilledNet, DistilledNet]:
    train = faces_of(orl_dir, TRAIN, range(1, 6), 20)
    held = faces_of(orl_dir, HELD, range(1, 3), 20)
    pairs = Pairs([0, 0], [1, 4], [GENUINE, LOOKALIKE], np.zeros(2))  # fit's contract; unused by distillation
    threads = torch.get_num_threads()
    d = small().fit(train, pairs)
    assert torch.get_num_threads() == threads
    return train, held, small(), d


def cos_to_teacher(net: DistilledNet, teacher: DistilledNet, faces: FaceSet) -> np.ndarray:
    target, ok = teacher.teacher_embeddings(faces)
    assert ok.all()
    return np.einsum("ij,ij->i", net.embed_faces(faces), target)


def test_student_moves_towards_the_teacher_on_held_out_people(fitted):
    train, held, base, d = fitted
    st = d.stats
    assert st["failed_images"] == 0 and st["n_train_images"] + st["n_holdout_images"] == len(train)
    assert st["loss_final"] < st["loss_init"], st
    assert st["best_epoch"] > 0 and st["holdout_losses"][st["best_epoch"]] == min(st["holdout_losses"])
    before, after = cos_to_teacher(base, d, held), cos_to_teacher(d, d, held)
    assert before.mean() < 0.99  # 20 px really is degraded: dlib's own 20 px embeddings differ from full res
    # closer to the teacher on new people: on average (a small step on 75 tiny train images) and for most images
    assert after.mean() > before.mean() + 0.001 and (after > before).mean() > 0.55, (before.mean(), after.mean())
    # the teacher: the unfitted network's full-resolution embeddings
    full = FaceSet(held.paths, held.identities, held.vectors, np.zeros(len(held), np.int32))
    np.testing.assert_allclose(base.embed_faces(full), d.teacher_embeddings(held)[0], atol=1e-4)


def test_state_roundtrip(fitted, tmp_path):
    _, held, base, d = fitted
    d.save(tmp_path / "distilled.npz")
    back = Disambiguator.load(tmp_path / "distilled.npz")
    assert isinstance(back, DistilledNet) and back.get_params() == d.get_params()
    assert back.stats["best_epoch"] == d.stats["best_epoch"]
    np.testing.assert_array_equal(back.embed_faces(held), d.embed_faces(held))
    assert np.abs(back.embed_faces(held) - base.embed_faces(held)).max() > 1e-3


def test_full_resolution_keeps_dlib_weights(orl_dir: Path):
    """At full resolution the student already is the teacher: the chosen epoch is 0 (dlib's weights)."""
    train = faces_of(orl_dir, TRAIN[:3], range(1, 4), 0)
    d = small(epochs=1).fit(train, Pairs([0, 0], [1, 3], [GENUINE, LOOKALIKE], np.zeros(2)))
    assert d.stats["loss_init"] < 1e-4 and d.stats["best_epoch"] == 0
    np.testing.assert_allclose(d.embed_faces(train), small().embed_faces(train), atol=1e-6)


def test_combined_loss_uses_the_mined_triplets(fitted):
    train, held, base, d = fitted
    faces = FaceSet(train.paths, train.identities, base.embed_faces(train), train.lowres)  # 20 px vectors to mine
    c = small(triplet_weight=1.0, margin=0.6).fit(faces, default_miner(k=3).mine(faces))
    st = c.stats
    assert st["n_triplets"] > 0 and st["loss_final"] < st["loss_init"], st
    assert np.isfinite(st["holdout_losses"]).all() and len(st["holdout_losses"]) == c.epochs + 1
    assert c.get_params()["triplet_weight"] == 1.0
    assert np.abs(c.embed_faces(held) - d.embed_faces(held)).max() > 1e-4  # not the pure distillation


def test_train_builds_it_by_name():
    from lookalike.train import make_disambiguators

    (d,) = make_disambiguators("distilled", seed=3, cache=None)
    assert isinstance(d, DistilledNet) and d.seed == 3 and d.cache_path is None
