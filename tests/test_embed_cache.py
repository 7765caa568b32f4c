"""The embedding cache (content keys, SQLite rows) and embed_paths' resumable, cached runs on real faces."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3

import numpy as np
import pytest
from conftest import FAST_MATCHER, need_data, write_synthetic
from PIL import Image

import lookalike.embed as embed_module
from lookalike.embed import embed_paths, preprocess_key
from lookalike.matchers import matcher_name
from lookalike.matchers.align import Alignment, FaceAligner
from lookalike.matchers.cache import CacheError, EmbeddingCache, content_key

# ----------------------------------------------------------------------------------------------- cache unit


def test_content_key(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"hello")
    (tmp_path / "b.bin").write_bytes(b"hello")
    (tmp_path / "c.bin").write_bytes(b"hellO")
    (tmp_path / "e.bin").write_bytes(b"")
    hello = hashlib.sha1(b"hello").hexdigest()
    assert content_key(tmp_path / "a.bin") == content_key(str(tmp_path / "b.bin")) == hello
    assert content_key(tmp_path / "c.bin") != content_key(tmp_path / "a.bin")
    assert content_key(tmp_path / "e.bin") == hashlib.sha1(b"").hexdigest()
    assert content_key(tmp_path / "gone.bin") == f"missing:{tmp_path / 'gone.bin'}"


def _alignment(seed: int) -> Alignment:
    rng = np.random.default_rng(seed)
    return Alignment("detected", 2, (1, 2, 30, 40), rng.random((5, 2)).astype(np.float32) * 30)


def test_cache_rows_roundtrip_and_persist(tmp_path):
    path = tmp_path / "sub" / "c.sqlite"
    cache = EmbeddingCache(path)
    v = np.arange(128, dtype=np.float32) / 100
    cache.put("al", "m", "full", [
        ("k1", "ok", "", _alignment(1), v),
        ("k2", "no_face", "k2: no face found", None, None),
        ("missing:/x.jpg", "missing", "gone", None, None),  # never stored: the file may appear later
    ])
    cache.close()
    cache = EmbeddingCache(path)  # reopened from disk
    got = cache.get_alignments(["k1", "k2", "k3", "missing:/x.jpg", "k1"], "al")
    assert set(got) == {"k1", "k2"}
    st, msg, al = got["k1"]
    assert st == "ok" and al.method == "detected" and al.n_faces == 2 and al.box == (1, 2, 30, 40)
    np.testing.assert_array_equal(al.landmarks, _alignment(1).landmarks)
    assert got["k2"] == ("no_face", "k2: no face found", None)
    assert cache.get_alignments(["k1"], "other-aligner") == {}
    emb = cache.get_embeddings(["k1", "k2"], "al", "m", "full")
    assert set(emb) == {"k1"} and emb["k1"].dtype == np.float32
    np.testing.assert_array_equal(emb["k1"], v)
    assert cache.get_embeddings(["k1"], "al", "m", "lowres16") == {}
    assert cache.get_embeddings(["k1"], "al", "m2", "full") == {}
    many = [f"x{i}" for i in range(1200)]  # more keys than one SQL chunk
    cache.put("al", "m", "full", [(k, "ok", "", _alignment(2), v) for k in many])
    assert len(cache.get_embeddings(many + ["k1"], "al", "m", "full")) == 1201
    assert cache.get_embeddings(["k1"], "other-aligner", "m", "full") == {}  # another aligner's chip: its own
    cache.close()
    mem = EmbeddingCache(None)
    assert mem.path is None and mem.get_embeddings(["k1"], "al", "m", "full") == {}


def test_names_and_keys():
    assert preprocess_key(None) == "full" and preprocess_key(12) == "lowres12-chip13"
    assert matcher_name("dlib") == "dlib-resnet-v1"
    with pytest.raises(ValueError):
        matcher_name("nope")
    assert FaceAligner().name != FaceAligner(central_fraction=0).name != FaceAligner(padding=0.3).name


# ----------------------------------------------------------------------------------------------- embed_paths


class CountingAligner(FaceAligner):
    """A FaceAligner that counts detector runs (cached alignments must not be recomputed)."""

    calls = 0

    def align(self, image):
        CountingAligner.calls += 1
        return super().align(image)


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def orl_runs(tmp_path_factory):
    """One sequence of cached runs on 6 ORL images (2 people x 3), shared by the tests below."""
    orl = need_data("orl")
    paths = [str(orl / p / f"{i}.pgm") for p in ("s1", "s2") for i in (1, 2, 3)]
    for p in paths:
        if not (orl / p).exists():
            pytest.skip(f"{p} not available")
    tmp = tmp_path_factory.mktemp("embed_cache")
    db = tmp / "cache.sqlite"
    aligner = CountingAligner()
    out: dict = {"paths": paths}
    run = {"matcher": FAST_MATCHER, "aligner": aligner, "workers": 1, "progress": False}

    # 1. a run that dies after its first batch of 2 (e.g. Ctrl-C): that batch is already on disk
    real = embed_module._process
    n_batches = []

    def dying(items):
        n_batches.append(len(items))
        if len(n_batches) > 1:
            raise Interrupted
        return real(items)

    cache = EmbeddingCache(db)
    with pytest.MonkeyPatch.context() as mp, pytest.raises(Interrupted):
        mp.setattr(embed_module, "_process", dying)
        embed_paths(paths, cache=cache, batch_size=2, **run)
    cache.close()
    cache = EmbeddingCache(db)
    keys = [content_key(p) for p in paths]
    out["after_interrupt"] = sorted(cache.get_embeddings(keys, aligner.name, matcher_name(FAST_MATCHER), "full"))
    out["interrupt_keys"] = keys[:2]
    # 2. resume on a subset, 3. then on everything
    out["first3"] = embed_paths(paths[:3], cache=cache, **run)
    out["all"] = embed_paths(paths, cache=cache, **run)
    cache.close()
    # 4. a fresh process' view of the same file, plus a byte-identical copy under another name
    copy = shutil.copy(paths[0], tmp / "renamed.pgm")
    CountingAligner.calls = 0
    cache = EmbeddingCache(db)
    out["again"] = embed_paths(paths + [str(copy)], cache=cache, **run)
    out["again_align_calls"] = CountingAligner.calls
    # 5. the low-resolution view reuses the alignments but has its own embeddings
    out["lowres"] = embed_paths(paths, cache=cache, lowres=12, **run)
    out["lowres_align_calls"] = CountingAligner.calls
    out["lowres_again"] = embed_paths(paths, cache=cache, lowres=12, **run)
    cache.close()
    return out


def test_interrupted_run_resumes(orl_runs):
    assert orl_runs["after_interrupt"] == sorted(orl_runs["interrupt_keys"])
    assert orl_runs["first3"].computed == 1  # images 0 and 1 were finished before the interruption
    assert orl_runs["first3"].summary()["cached"] == 2
    assert orl_runs["all"].computed == 3
    assert orl_runs["all"].ok.all()


def test_second_run_computes_nothing_and_is_identical(orl_runs):
    again, first = orl_runs["again"], orl_runs["all"]
    s = again.summary()
    assert s["computed"] == 0 and s["cached"] == 7 and s["ok"] == 7
    assert orl_runs["again_align_calls"] == 0
    np.testing.assert_array_equal(again.vectors[:6], first.vectors)
    np.testing.assert_array_equal(again.vectors[6], first.vectors[0])  # same bytes, same key
    assert again.method[:6].tolist() == first.method.tolist()
    assert again.n_faces[:6].tolist() == first.n_faces.tolist()
    np.testing.assert_array_equal(orl_runs["first3"].vectors, first.vectors[:3])


def test_embeddings_are_normalised(orl_runs):
    e = orl_runs["all"]
    assert e.vectors.shape == (6, 128) and e.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e.vectors, axis=1), 1, atol=1e-5)
    assert set(e.method.tolist()) <= {"detected", "central"}


def test_lowres_differs_and_reuses_alignment(orl_runs):
    full, low = orl_runs["all"], orl_runs["lowres"]
    assert low.computed == 6 and low.ok.all()
    assert orl_runs["lowres_align_calls"] == 0
    np.testing.assert_allclose(np.linalg.norm(low.vectors, axis=1), 1, atol=1e-5)
    cos = (full.vectors * low.vectors).sum(1)
    assert (cos < 0.9999).all()  # a different view ...
    assert (cos > 0.5).all()  # ... of the same face
    assert orl_runs["lowres_again"].computed == 0
    np.testing.assert_array_equal(orl_runs["lowres_again"].vectors, low.vectors)


def test_same_person_more_similar(orl_runs):
    v = orl_runs["all"].vectors
    sim = v @ v.T
    person = np.array([0, 0, 0, 1, 1, 1])
    same = (person[:, None] == person[None, :]) & ~np.eye(6, dtype=bool)
    diff = person[:, None] != person[None, :]
    assert sim[same].mean() > sim[diff].mean()
    # (dlib's cosines are all high; in Euclidean distance these two people are cleanly separated)
    dist = np.sqrt(np.maximum(2 - 2 * sim, 0))
    assert dist[same].max() < dist[diff].min()


def test_read_chips_aligns_missing_only_when_asked(orl_dir, tmp_path):
    from lookalike.data.images import ImageError, degrade
    from lookalike.embed import face_chip, read_chips

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    paths = [str(orl_dir / "s1" / "1.pgm"), str(junk), str(tmp_path / "missing.png")]
    aligner, cache = FaceAligner(), EmbeddingCache(None)
    chips, ok = read_chips(paths, cache, aligner)  # nothing cached: nothing read
    assert not ok.any() and not chips.any()
    chips, ok = read_chips(paths, cache, aligner, 20, align_missing=True)
    assert ok.tolist() == [True, False, False] and not chips[1:].any()
    full, al = face_chip(paths[0], aligner)
    assert full.shape == (150, 150, 3) and al.method in ("detected", "central")
    np.testing.assert_array_equal(chips[0], degrade(full, 20))
    np.testing.assert_array_equal(face_chip(paths[0], aligner, al, 20)[0], chips[0])
    for bad, reason in ((junk, "unreadable"), (tmp_path / "missing.png", "missing")):
        with pytest.raises(ImageError) as e:
            face_chip(bad, aligner)
        assert e.value.reason == reason
    noise = write_synthetic(tmp_path / "noise.png", 0, (92, 112))
    with pytest.raises(ImageError) as e:
        face_chip(noise, FaceAligner(central_fraction=0))
    assert e.value.reason == "no_face"


def test_two_aligners_never_share_an_embedding(tmp_path):
    """An undetected face is cut by each aligner's own fallback (here two central fractions): one cache must give each
    aligner the embedding of its own chip, whichever ran first (it once gave both the last one written)."""
    photo = tmp_path / "noise.png"  # no detector finds a face in noise: the centred square
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 100, 3), np.uint8)).save(photo)
    run = {"matcher": FAST_MATCHER, "workers": 1, "progress": False}
    alone = {f: embed_paths([str(photo)], aligner=FaceAligner(f), **run).vectors[0] for f in (0.45, 0.9)}
    assert not np.allclose(alone[0.45], alone[0.9], atol=1e-3)
    cache = EmbeddingCache(tmp_path / "c.sqlite")
    for f in (0.9, 0.45, 0.9, 0.45):  # each written, then read back after the other was written
        got = embed_paths([str(photo)], aligner=FaceAligner(f), cache=cache, **run)
        np.testing.assert_allclose(got.vectors[0], alone[f], atol=1e-6)
    assert got.computed == 0
    cache.close()


def test_a_cache_from_before_the_aligner_key_is_migrated(tmp_path):
    """A version-1 cache (embeddings without their aligner): an image aligned by one aligner keeps its embeddings,
    under that aligner; one aligned by two loses them (whose chip they came from is unknown); alignments stay."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE alignments (image TEXT NOT NULL, aligner TEXT NOT NULL, status TEXT NOT NULL, message TEXT,
            method TEXT, n_faces INTEGER, geometry BLOB, PRIMARY KEY (image, aligner));
        CREATE TABLE embeddings (image TEXT NOT NULL, matcher TEXT NOT NULL, preprocess TEXT NOT NULL,
            vector BLOB NOT NULL, PRIMARY KEY (image, matcher, preprocess));
        PRAGMA user_version = 1;""")
    row = _alignment(1).to_row()
    v = np.arange(4, dtype=np.float32)
    db.executemany("INSERT INTO alignments VALUES (?,?,?,?,?,?,?)",
                   [("one", "a1", "ok", "", *row), ("two", "a1", "ok", "", *row), ("two", "a2", "ok", "", *row)])
    db.executemany("INSERT INTO embeddings VALUES (?,?,?,?)",
                   [("one", "m", "full", v.tobytes()), ("one", "m", "lowres16", v.tobytes()),
                    ("two", "m", "full", v.tobytes())])
    db.commit()
    db.close()
    cache = EmbeddingCache(path)
    assert set(cache.get_embeddings(["one", "two"], "a1", "m", "full")) == {"one"}
    np.testing.assert_array_equal(cache.get_embeddings(["one"], "a1", "m", "lowres16")["one"], v)
    assert cache.get_embeddings(["one", "two"], "a2", "m", "full") == {}
    assert set(cache.get_alignments(["one", "two"], "a2")) == {"two"}
    assert cache._db.execute("PRAGMA user_version").fetchone()[0] == 2
    cache.close()
    again = EmbeddingCache(path)  # reopening migrates nothing more
    assert set(again.get_embeddings(["one", "two"], "a1", "m", "full")) == {"one"}
    again.close()


def test_a_failed_migration_leaves_the_old_cache_as_it_was(tmp_path):
    """The migration is one transaction: if it fails (here: no alignments table to attribute embeddings from), the
    old embeddings table is still there, whole, and the error names the file."""
    path = tmp_path / "odd.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE embeddings (image TEXT NOT NULL, matcher TEXT NOT NULL, preprocess TEXT NOT NULL, "
               "vector BLOB NOT NULL, PRIMARY KEY (image, matcher, preprocess))")
    db.execute("INSERT INTO embeddings VALUES ('one', 'm', 'full', x'00000000')")
    db.commit()
    db.close()
    with pytest.raises(CacheError, match=str(path)):
        EmbeddingCache(path)
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"embeddings"} and db.execute("SELECT COUNT(*) FROM embeddings").fetchone() == (1,)
    db.close()
