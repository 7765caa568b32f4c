"""FineTunedNet: fine-tuning the top of dlib's network on mined ORL lookalikes (small CPU settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lookalike.disambiguators.base import Disambiguator
from lookalike.disambiguators.finetuned import FineTunedNet, n_frozen
from lookalike.experiment import FaceSet, search
from lookalike.matchers.torch_resnet import build_dlib_resnet
from lookalike.mining import GENUINE, LOOKALIKE, Pairs, default_miner

ORL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "orl"
PEOPLE, PER_PERSON = ("s1", "s2", "s3", "s4", "s5", "s6"), 4


def small(**kw) -> FineTunedNet:
    args = {"trainable": "last", "epochs": 2, "batch_size": 32, "lr": 1e-3, "margin": 0.6, "holdout": 0.0,
            "cache_path": None, "threads": 2, "embed_batch": 32}
    return FineTunedNet(**{**args, **kw})


@pytest.fixture(scope="module")
def orl() -> tuple[FaceSet, FineTunedNet, FineTunedNet]:
    """ORL faces (odd images at 20 px, even ones full resolution) with dlib's embeddings, the unfitted net
    (dlib's own) and the fitted one."""
    if not ORL.is_dir() or not any(ORL.iterdir()):
        pytest.skip(f"shared face data not available: {ORL}")
    paths = np.asarray([str(ORL / p / f"{i}.pgm") for p in PEOPLE for i in range(1, PER_PERSON + 1)])
    ids = np.repeat(np.asarray(PEOPLE), PER_PERSON)
    lowres = np.tile(np.asarray([0, 20] * (PER_PERSON // 2), np.int32), len(PEOPLE))
    base = small()  # unfitted: dlib's own network
    faces = FaceSet(paths, ids, np.zeros((len(paths), 128), np.float32), lowres)
    faces.vectors = base.embed(faces)
    assert np.isfinite(faces.vectors).all()
    d = small().fit(faces, default_miner(k=3).mine(faces))
    return faces, base, d


def test_trainable_parsing():
    assert n_frozen("all", 14) == 0 and n_frozen("fc", 14) == 15
    assert n_frozen("last", 14) == 14 and n_frozen("last3", 14) == 12
    for bad in ("last0", "last15", "top", "lastx"):
        with pytest.raises(ValueError):
            n_frozen(bad, 14)


def test_unfitted_net_reproduces_dlib_embeddings(orl):
    faces, _, _ = orl
    full = faces.take(faces.lowres == 0)
    # dlib's descriptors are not unit-norm; the disambiguator's are their L2-normalised version
    net = build_dlib_resnet()
    np.testing.assert_allclose(np.linalg.norm(full.vectors, axis=1), 1.0, atol=1e-5)
    assert net.fc.weight.shape == (128, 256)


def test_loss_goes_down_and_top_is_trained(orl):
    _, _, d = orl
    st = d.stats
    assert st["n_triplets"] > 0 and st["failed_images"] == 0
    assert st["loss_final"] < st["loss_init"], st
    ref = build_dlib_resnet().state_dict()
    trained = set(d._trained_names())
    assert trained == {n for n in ref if n.startswith(("fc.", "blocks.13."))}
    sd = d.net.state_dict()
    for name, value in ref.items():
        if name in trained:
            continue
        assert torch.equal(sd[name], value), f"frozen {name} changed"
    assert not torch.equal(sd["fc.weight"], ref["fc.weight"])
    assert not torch.equal(sd["blocks.13.conv1.weight"], ref["blocks.13.conv1.weight"])


def test_holdout_picks_an_epoch(orl):
    faces, _, _ = orl
    d = small(holdout=0.5, epochs=3, trainable="fc").fit(faces, default_miner(k=3).mine(faces))
    st = d.stats
    assert st["n_holdout_triplets"] > 0 and len(st["holdout_losses"]) == 4
    assert st["holdout_losses"][st["best_epoch"]] == min(st["holdout_losses"])


def test_full_network_option(orl, tmp_path):
    faces, _, _ = orl
    sub = faces.take(np.asarray([0, 1, PER_PERSON]))  # two images of s1, one of s2: a single triplet
    pairs = Pairs([0, 0], [1, 2], [GENUINE, LOOKALIKE], sub.vectors[0] @ sub.vectors[[1, 2]].T)
    d = small(trainable="all", epochs=1, batch_size=1).fit(sub, pairs)
    ref = build_dlib_resnet().state_dict()
    sd = d.net.state_dict()
    assert not torch.equal(sd["stem_conv.weight"], ref["stem_conv.weight"])
    assert len(d._trained_names()) == len(ref)
    d.save(tmp_path / "all.npz")
    back = Disambiguator.load(tmp_path / "all.npz")
    np.testing.assert_allclose(back.embed(sub), d.embed(sub), atol=1e-5)


def test_save_load_roundtrip(orl, tmp_path):
    faces, base, d = orl
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(faces), 40), rng.integers(0, len(faces), 40)
    left, right = faces.take(a), faces.take(b)
    s = d.score(left, right)
    assert s.shape == (40,) and np.isfinite(s).all()
    d.save(tmp_path / "ft.npz")
    back = Disambiguator.load(tmp_path / "ft.npz")
    assert isinstance(back, FineTunedNet) and back.get_params() == d.get_params()
    assert back.is_fitted_on(faces) and back.stats["loss_final"] == d.stats["loss_final"]
    np.testing.assert_allclose(back.score(left, right), s, atol=1e-6)
    assert not np.allclose(base.score(left, right), s, atol=1e-3)  # the fine-tuning is what was saved


def test_lowres_rows_use_degraded_chips(orl):
    faces, base, d = orl
    lo = faces.take(faces.lowres == 20)
    hi = FaceSet(lo.paths, lo.identities, lo.vectors, np.zeros(len(lo), np.int32))
    e_lo, e_hi = d.embed(lo), d.embed(hi)
    cos = np.einsum("ij,ij->i", e_lo, e_hi)
    assert (cos < 0.99999).all() and cos.mean() < 0.995 and (cos > 0.3).all()  # same image, other resolution
    # the dlib embeddings of the 20 px rows (used for mining) differ from full-resolution ones the same way
    assert not np.allclose(base.embed(hi), lo.vectors, atol=1e-3)
    np.testing.assert_allclose(base.embed(lo), lo.vectors, atol=1e-4)
    ref = faces.take(np.zeros(len(lo), int))
    assert not np.allclose(d.score(lo, ref), d.score(hi, ref), atol=1e-4)


def test_failed_images_score_nan_and_lists_stay_finite(orl, tmp_path):
    faces, base, d = orl
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    bad = FaceSet(np.asarray([str(junk), str(tmp_path / "missing.png")]), np.asarray(["x", "y"]),
                  np.zeros((2, 128), np.float32), np.asarray([0, 20], np.int32))
    s = d.score(bad, faces.take(np.arange(2)))
    assert np.isnan(s).all()
    gallery = FaceSet(np.concatenate([faces.paths, bad.paths]), np.concatenate([faces.identities, bad.identities]),
                      np.concatenate([faces.vectors, np.full((2, 128), 0.1, np.float32)]),
                      np.concatenate([faces.lowres, bad.lowres]))
    probes = faces.take(np.arange(0, len(faces), PER_PERSON))
    split = search("test", probes, gallery, np.zeros(len(gallery), bool), depth=len(gallery))
    scores = d.score_lists(split)
    assert scores.shape == split.lists.indices.shape and np.isfinite(scores).all()
    direct = d.score(probes.take(np.zeros(3, int)), gallery.take(split.lists.indices[0, :3]))
    np.testing.assert_allclose(scores[0, :3], direct, atol=1e-5)
