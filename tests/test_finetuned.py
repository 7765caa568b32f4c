"""FineTunedNet: fine-tuning the top of dlib's network on mined ORL lookalikes (small CPU settings)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

dlib = pytest.importorskip("dlib")

from lookalike.disambiguators.base import Disambiguator  # noqa: E402
from lookalike.disambiguators.finetuned import FineTunedNet, n_frozen  # noqa: E402
from lookalike.embed import read_chips  # noqa: E402
from lookalike.faces import FaceSet  # noqa: E402
from lookalike.matchers.align import FaceAligner  # noqa: E402
from lookalike.matchers.base import l2_normalize  # noqa: E402
from lookalike.matchers.cache import EmbeddingCache  # noqa: E402
from lookalike.matchers.dlib_resnet import RESNET_WEIGHTS, model_path  # noqa: E402
from lookalike.matchers.torch_resnet import build_dlib_resnet  # noqa: E402
from lookalike.mining import GENUINE, LOOKALIKE, Pairs, default_miner  # noqa: E402

PEOPLE, PER_PERSON = ("s1", "s2", "s3", "s4", "s5", "s6"), 4
DLIB_TOLERANCE = 1e-4


def small(**kw) -> FineTunedNet:
    args = {"trainable": "last", "epochs": 2, "batch_size": 32, "lr": 1e-3, "margin": 0.6, "holdout": 0.0,
            "cache_path": None, "embed_batch": 32}
    return FineTunedNet(**{**args, **kw})


def dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    """dlib-bin's own network on aligned chips, one call per chip, L2-normalised."""
    net = dlib.face_recognition_model_v1(str(model_path(RESNET_WEIGHTS)))
    raw = np.asarray([np.asarray(net.compute_face_descriptor(np.ascontiguousarray(c))) for c in chips], np.float32)
    return l2_normalize(raw)


@pytest.fixture(scope="module")
def orl(orl_dir: Path) -> tuple[FaceSet, np.ndarray, FineTunedNet, FineTunedNet]:
    """ORL faces (odd images at 20 px, even ones full resolution) with dlib-bin's own embeddings, their chips,
    the unfitted net and the fitted one (neither may touch torch's thread count)."""
    paths = np.asarray([str(orl_dir / p / f"{i}.pgm") for p in PEOPLE for i in range(1, PER_PERSON + 1)])
    ids = np.repeat(np.asarray(PEOPLE), PER_PERSON)
    lowres = np.tile(np.asarray([0, 20] * (PER_PERSON // 2), np.int32), len(PEOPLE))
    chips = np.zeros((len(paths), 150, 150, 3), np.uint8)
    cache, aligner = EmbeddingCache(None), FaceAligner()
    for lr in (0, 20):
        rows = np.flatnonzero(lowres == lr)
        c, ok = read_chips(list(paths[rows]), cache, aligner, lr or None, align_missing=True)
        assert ok.all()
        chips[rows] = c
    faces = FaceSet(paths, ids, dlib_descriptors(chips), lowres)
    threads = torch.get_num_threads()
    base = small()  # unfitted: dlib's own network
    d = small().fit(faces, default_miner(k=3).mine(faces))
    d.embed_chips(chips[:2])
    assert torch.get_num_threads() == threads
    return faces, chips, base, d


def test_trainable_parsing():
    assert n_frozen("all", 14) == 0 and n_frozen("fc", 14) == 15
    assert n_frozen("last", 14) == 14 and n_frozen("last3", 14) == 12
    for bad in ("last0", "last15", "top", "lastx", "last-1"):
        with pytest.raises(ValueError):
            n_frozen(bad, 14)


def test_unfitted_net_reproduces_dlib_embeddings(orl):
    faces, chips, base, _ = orl
    ours = base.embed_chips(chips)
    assert ours.shape == (len(chips), 128) and ours.dtype == np.float32
    diff = np.abs(ours - faces.vectors).max()  # faces.vectors: dlib-bin's compute_face_descriptor
    assert diff <= DLIB_TOLERANCE, diff
    # from the FaceSet (paths + lowres) through the same chip pipeline: the same numbers
    np.testing.assert_allclose(base.embed_faces(faces), faces.vectors, atol=DLIB_TOLERANCE)
    # the 20 px rows really are degraded: dlib's full-resolution embeddings of them differ
    lo = faces.lowres == 20
    full = FaceSet(faces.paths[lo], faces.identities[lo], faces.vectors[lo], np.zeros(lo.sum(), np.int32))
    assert not np.allclose(base.embed_faces(full), faces.vectors[lo], atol=1e-3)


def test_embed_chips_validates_input(orl):
    _, chips, base, _ = orl
    for bad in (chips[0], chips.astype(np.float32), chips[:, :100], np.zeros((2, 150, 150, 4), np.uint8)):
        with pytest.raises(ValueError, match="uint8 chips"):
            base.embed_chips(bad)
    assert base.embed_chips(chips[:0]).shape == (0, 128)
    with pytest.raises(RuntimeError, match="fit first"):
        base.score_lists(np.zeros((1, 128)), np.zeros((1, 2, 128)))


def test_loss_goes_down_and_top_is_trained(orl):
    _, _, _, d = orl
    st = d.stats
    assert st["n_triplets"] > 0 and st["failed_images"] == 0
    assert st["loss_final"] < st["loss_init"], st
    ref = build_dlib_resnet().state_dict()
    trained = set(d._trained_names())
    assert trained == {n for n in ref if n.startswith(("fc.", "blocks.13."))}
    sd = d.net_.state_dict()
    for name, value in ref.items():
        if name in trained:
            continue
        assert torch.equal(sd[name], value), f"frozen {name} changed"
    assert not torch.equal(sd["fc.weight"], ref["fc.weight"])
    assert not torch.equal(sd["blocks.13.conv1.weight"], ref["blocks.13.conv1.weight"])


def test_refit_starts_from_dlib_weights(orl):
    faces, chips, _, d = orl
    pairs = default_miner(k=3).mine(faces)
    again = small().fit(faces, pairs).fit(faces, pairs)  # not fine-tuned twice
    np.testing.assert_allclose(again.embed_chips(chips), d.embed_chips(chips), atol=1e-5)


def test_holdout_picks_an_epoch(orl):
    faces, _, _, _ = orl
    d = small(holdout=0.5, epochs=3, trainable="fc").fit(faces, default_miner(k=3).mine(faces))
    st = d.stats
    assert st["n_holdout_triplets"] > 0 and len(st["holdout_losses"]) == 4
    assert st["holdout_losses"][st["best_epoch"]] == min(st["holdout_losses"])


def test_full_network_option(orl, tmp_path):
    faces, chips, _, _ = orl
    sub = faces.take(np.asarray([0, 1, PER_PERSON]))  # two images of s1, one of s2: a single triplet
    pairs = Pairs([0, 0], [1, 2], [GENUINE, LOOKALIKE], sub.vectors[0] @ sub.vectors[[1, 2]].T)
    d = small(trainable="all", epochs=1, batch_size=1).fit(sub, pairs)
    ref = build_dlib_resnet().state_dict()
    sd = d.net_.state_dict()
    assert not torch.equal(sd["stem_conv.weight"], ref["stem_conv.weight"])
    assert len(d._trained_names()) == len(ref)
    d.save(tmp_path / "all.npz")
    back = Disambiguator.load(tmp_path / "all.npz")
    np.testing.assert_array_equal(back.embed_chips(chips[:4]), d.embed_chips(chips[:4]))
    np.testing.assert_allclose(back.embed_faces(sub), d.embed_faces(sub), atol=1e-6)


def test_state_roundtrip_reproduces_embeddings(orl, tmp_path):
    faces, chips, base, d = orl
    meta, state = d.to_state()
    assert set(state) == {f"net.{n}" for n in d._trained_names()}  # the trained layers only
    back = Disambiguator.from_state(meta, state)
    assert isinstance(back, FineTunedNet) and back.get_params() == d.get_params()
    assert back.is_fitted_on(faces) and back.stats["loss_final"] == d.stats["loss_final"]
    np.testing.assert_array_equal(back.embed_chips(chips), d.embed_chips(chips))
    d.save(tmp_path / "ft.npz")
    np.testing.assert_array_equal(Disambiguator.load(tmp_path / "ft.npz").embed_chips(chips), d.embed_chips(chips))
    # the fine-tuning is what was saved
    assert np.abs(back.embed_chips(chips) - base.embed_chips(chips)).max() > 1e-3
    # a state that does not fit the parameters is refused
    with pytest.raises(ValueError, match="does not match"):
        Disambiguator.from_state({**meta, "params": {**meta["params"], "trainable": "fc"}}, state)
    with pytest.raises(ValueError, match="does not match"):
        Disambiguator.from_state(meta, {k: v for k, v in state.items() if not k.startswith("net.fc.")})


def test_lists_score_the_cosine_of_fine_tuned_embeddings(orl):
    faces, chips, base, d = orl
    z = d.embed_faces(faces)
    np.testing.assert_allclose(z, d.embed_chips(chips), atol=1e-6)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(faces), (5, 7))
    s = d.score_lists(z[:5], z[idx])
    np.testing.assert_allclose(s, np.einsum("qd,qkd->qk", z[:5], z[idx]), atol=1e-6)
    np.testing.assert_array_equal(d.score_lists(z[:5], z[idx], ids=idx), s)  # gallery ids: the same scores
    np.testing.assert_allclose(d.score(z[:5], z[idx[:, 0]]), s[:, 0], atol=1e-6)
    # fine-tuned and dlib's embeddings of a 20 px row and of the same image at full resolution differ
    lo = faces.take(faces.lowres == 20)
    hi = FaceSet(lo.paths, lo.identities, lo.vectors, np.zeros(len(lo), np.int32))
    cos = np.einsum("ij,ij->i", d.embed_faces(lo), d.embed_faces(hi))
    assert (cos < 0.99999).all() and cos.mean() < 0.995 and (cos > 0.3).all()


def test_failed_images_get_nan_embeddings_and_lists_stay_finite(orl, tmp_path):
    faces, _, _, d = orl
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    bad = FaceSet(np.asarray([str(junk), str(tmp_path / "missing.png")]), np.asarray(["x", "y"]),
                  np.zeros((2, 128), np.float32), np.asarray([0, 20], np.int32))
    before = d.stats.get("embed_failed", 0)
    zb = d.embed_faces(bad)
    assert zb.shape == (2, 128) and np.isnan(zb).all()
    assert d.stats["embed_failed"] == before + 2
    d.embed_faces(bad)  # memoised: not counted twice
    assert d.stats["embed_failed"] == before + 2
    z = d.embed_faces(faces)
    # each probe against 3 good candidates and the 2 failed ones: the failed ones get the list's mean
    probes = z[:3]
    candidates = np.concatenate([z[3:12].reshape(3, 3, 128), np.broadcast_to(zb, (3, 2, 128))], axis=1)
    s = d.score_lists(probes, candidates)
    assert s.shape == (3, 5) and np.isfinite(s).all()
    good = np.einsum("qd,qkd->qk", probes, candidates[:, :3])
    np.testing.assert_allclose(s[:, :3], good, atol=1e-6)
    np.testing.assert_allclose(s[:, 3:], np.repeat(good.mean(1, keepdims=True), 2, 1), atol=1e-6)
    # a probe whose image failed: a whole list of fill values, still finite
    assert np.isfinite(d.score_lists(zb[:1], candidates[:1])).all()


def test_chips_are_aligned_with_the_datas_central_fraction(orl):
    """Uncached images are aligned as the data was (a tight-crop dataset's --central-fraction), not with the
    default fallback; the setting is a parameter, so a saved model keeps it."""
    faces = orl[0]
    for fraction in (0.45, 0.9):
        d = small(central_fraction=fraction)
        chips, ok = d._chips(list(faces.paths[:2]), [0, 0])
        assert ok.all() and d._aligner.central_fraction == fraction and d.get_params()["central_fraction"] == fraction
        want, _ = read_chips(list(faces.paths[:2]), EmbeddingCache(None), FaceAligner(fraction), None,
                             align_missing=True)
        np.testing.assert_array_equal(chips, want)
