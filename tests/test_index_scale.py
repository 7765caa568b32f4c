"""Search at scale: blocked exact search, memory-mapped galleries, approximate indexes, save/load and mismatch."""

from __future__ import annotations

import mmap
import time

import numpy as np
import pytest

from lookalike.index import (
    ApproximateIndex,
    FaissIndex,
    HNSWIndex,
    IndexMismatchError,
    IVFIndex,
    NumpyIndex,
    build_index,
    exact_topk,
    load_index,
    make_index,
)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, n: int, d: int, centres: int = 50) -> np.ndarray:
    c = rng.standard_normal((centres, d))
    return _unit(c[rng.integers(0, centres, n)] + 0.5 * rng.standard_normal((n, d)))


def _stable_topk(q: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """Reference: best first, ties by gallery order."""
    return np.argsort(-(q @ g.T), axis=1, kind="stable")[:, :k]


def _memory_mapped(a: np.ndarray) -> bool:
    while a is not None:
        if isinstance(a, np.memmap | mmap.mmap):
            return True
        a = getattr(a, "base", None)
    return False


def _recall(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.mean([len(np.intersect1d(a, b)) / len(b) for a, b in zip(got, ref, strict=True)]))


# ----------------------------------------------------------------------------------------------- exact, blocked


@pytest.mark.parametrize("k", [1, 7, 50, 130])
def test_exact_topk_blocked_over_queries_and_gallery(k):
    rng = np.random.default_rng(k)
    g = rng.integers(-2, 3, (700, 6)).astype(np.float32)  # integer dot products: many exact ties
    q = rng.integers(-2, 3, (45, 6)).astype(np.float32)
    ref = _stable_topk(q, g, k)
    for block, gallery_block in ((1024, None), (8, 64), (1, 100), (45, 699)):
        s, i = exact_topk(q, g, k, block=block, gallery_block=gallery_block)
        np.testing.assert_array_equal(i, ref)
        np.testing.assert_array_equal(s, np.take_along_axis(q @ g.T, ref, axis=1))


def test_exact_topk_many_entrants_per_block():
    # gallery in increasing similarity to the query: every block brings more than k new entrants
    rng = np.random.default_rng(0)
    q = _unit(rng.standard_normal((3, 16)))
    g = _unit(rng.standard_normal((2000, 16)))
    g = g[np.argsort(g @ q[0])]
    s, i = exact_topk(q, g, 20, gallery_block=128)
    np.testing.assert_array_equal(i, _stable_topk(q, g, 20))
    assert exact_topk(q, g[:0], 5)[1].shape == (3, 0)


def test_memmap_index_equals_in_memory_index_without_copy(tmp_path):
    rng = np.random.default_rng(1)
    g, q = _clustered(rng, 3000, 32), _clustered(rng, 40, 32)
    np.save(tmp_path / "vectors.npy", g)
    mm = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    mapped = NumpyIndex.from_array(mm, gallery_block=500)
    assert np.shares_memory(mapped.vectors, mm)  # searched in place, not copied
    memory = NumpyIndex(32)
    memory.add(g)
    for k in (1, 50):
        sm, im = mapped.search(q, k)
        s0, i0 = memory.search(q, k)
        np.testing.assert_array_equal(im, i0)
        np.testing.assert_allclose(sm, s0, atol=1e-6)
    mapped.add(g[:5])  # adding copies into memory; the file is untouched
    assert len(mapped) == 3005 and not np.shares_memory(mapped.vectors, mm)
    np.testing.assert_array_equal(np.load(tmp_path / "vectors.npy"), g)


@pytest.mark.parametrize("kind,params", [("numpy", {}), ("faiss", {}), ("hnsw", {"m": 8}),
                                         ("ivf", {"nlist": 20, "nprobe": 4})])
def test_add_in_place_searches_the_given_rows_like_add(tmp_path, kind, params):
    """Rows another process appended to the shared vector files: the index adds them and searches the file in
    place (kinds that keep their own copy just add); the same results as adding them."""
    rng = np.random.default_rng(5)
    g, q = _clustered(rng, 1500, 16), _clustered(rng, 30, 16)
    np.save(tmp_path / "vectors.npy", g)
    mm = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    shared, copied = build_index(kind, mm[:1200], **params), build_index(kind, g[:1200], **params)
    shared.add_in_place(g[1200:], mm)
    copied.add(g[1200:])
    assert len(shared) == len(copied) == 1500
    for a, b in zip(shared.search(q, 25), copied.search(q, 25), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.shares_memory(shared.vectors, mm) == (kind != "faiss")
    with pytest.raises(ValueError, match="rows must hold"):
        shared.add_in_place(g[:3], mm)


# ----------------------------------------------------------------------------------------------- approximate


@pytest.mark.parametrize("kind,params", [("hnsw", {"m": 16}), ("hnsw", {"m": 16, "storage": "SQ8"}),
                                         ("ivf", {"nprobe": 8}),
                                         ("ivf", {"nprobe": 8, "storage": "PQ32x4fs", "overfetch": 8})])
def test_ann_recall_and_exact_rescoring(kind, params):
    rng = np.random.default_rng(2)
    g, q = _clustered(rng, 4000, 32), _clustered(rng, 100, 32)
    ix = make_index(kind, 32, **params)
    ix.add(g[:2500])
    ix.add(g[2500:])
    s, i = ix.search(q, 20)
    ref = _stable_topk(q, g, 20)
    assert _recall(i, ref) >= 0.95
    for r in (0, 7):  # one query alone (FAISS may scan it on several threads) finds what the batch found
        s1, i1 = ix.search(q[r:r + 1], 20)
        np.testing.assert_array_equal(i1[0], i[r])
    # scores are the exact similarities of the returned ids, best first
    np.testing.assert_allclose(s, np.einsum("qd,qkd->qk", q, g[i]), atol=1e-6)
    assert (np.diff(s, axis=1) <= 0).all()
    # a worse candidate generator (no over-fetch, few probes) recalls less: the test can fail
    weak = make_index(kind, 32, overfetch=1, **({"ef_search": 1, "m": 4} if kind == "hnsw" else {"nprobe": 1}))
    weak.add(g)
    assert _recall(weak.search(q, 20)[1], ref) < _recall(i, ref)


def test_fast_scan_searches_from_several_threads_keep_their_scan_choice(monkeypatch):
    """A single query scans its lists on all FAISS threads (implementation 14), a batch splits the queries (0):
    the choice is set on the shared FAISS index, so concurrent searches must not change it under each other."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    g, q = _clustered(rng, 3000, 32), _clustered(rng, 16, 32)
    ix = make_index("ivf", 32, nprobe=8, storage="PQ32x4fs", overfetch=8)
    ix.add(g)
    want = {n: ix.search(q[:n], 10) for n in (1, 16)}
    seen, base = [], ApproximateIndex._candidates

    def slow(self, queries, fetch):  # the FAISS call, with a window for another thread to change the setting
        before = self._index.implem
        time.sleep(0.005)
        seen.append((len(queries), before, self._index.implem))
        return base(self, queries, fetch)

    monkeypatch.setattr(ApproximateIndex, "_candidates", slow)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda n: (n, ix.search(q[:n], 10)), [1, 16] * 20))
    assert len(seen) == 40 and all(b == a == (14 if n == 1 else 0) for n, b, a in seen), seen
    for n, (_, i) in got:
        np.testing.assert_array_equal(i, want[n][1])


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_ties_ordered_by_id(kind):
    g = np.tile(np.eye(8, dtype=np.float32), (100, 1))  # 100 copies of each basis vector
    ix = make_index(kind, 8)
    ix.add(g)
    s, i = ix.search(np.eye(8, dtype=np.float32)[:2], 5)
    assert i.tolist() == [[0, 8, 16, 24, 32], [1, 9, 17, 25, 33]]
    assert (s == 1).all()


def test_ann_parameters_and_checks():
    with pytest.raises(ValueError, match="overfetch"):
        HNSWIndex(8, overfetch=0)
    with pytest.raises(TypeError):
        make_index("hnsw", 8, nprobe=3)
    with pytest.raises(ValueError, match="storage must be one of Flat, SQ8"):
        make_index("hnsw", 8, storage="PQ4")
    ix = make_index("ivf", 8)
    assert len(ix) == 0 and ix.search(np.full((2, 8), 8 ** -0.5, np.float32), 5)[1].shape == (2, 0)  # unit queries
    ix.add(_unit(np.random.default_rng(0).standard_normal((390, 8))))
    assert ix.nlist_ == 10  # 4 * sqrt(390) capped at 390 / 39 lists
    with pytest.raises(ValueError, match="shape"):
        ix.add(np.zeros((3, 5), np.float32))


@pytest.mark.parametrize("kind,params,enough", [("ivf", {"nlist": 10}, 390), ("pq", {"m": 8}, 624)])
def test_trained_kinds_search_exactly_until_they_can_train(tmp_path, kind, params, enough):
    rng = np.random.default_rng(6)
    g, q = _clustered(rng, 3000, 16), _clustered(rng, 20, 16)
    few = build_index(kind, g[:enough - 1], **params)  # too few vectors to train on: a flat FAISS scan
    assert type(few._index).__name__ == "IndexFlatIP" and few.trained_on_ == enough - 1
    np.testing.assert_array_equal(few.search(q, 10)[1], _stable_topk(q, g[:enough - 1], 10))
    few.save(tmp_path / "few")
    back = load_index(tmp_path / "few")
    assert back.trained_on_ == enough - 1 and type(back._index).__name__ == "IndexFlatIP"
    np.testing.assert_array_equal(back.search(q, 10)[1], few.search(q, 10)[1])
    # grown by add until the training set would double: then it is worth rebuilding (trained this time)
    assert not few.outgrown(2 * (enough - 1) - 1) and few.outgrown(2 * (enough - 1))
    trained = build_index(kind, g, **params)
    assert type(trained._index).__name__ != "IndexFlatIP"
    assert trained.trained_on_ == {"ivf": 256 * 10, "pq": 3000}[kind]  # at most 256 per list / all of them
    assert not trained.outgrown(3000)


def test_ivf_training_grows_with_the_gallery_and_hnsw_never_needs_a_rebuild():
    rng = np.random.default_rng(7)
    g = _clustered(rng, 4000, 8)
    ivf = build_index("ivf", g[:1000])
    assert (ivf.nlist_, ivf.trained_on_) == (25, 1000)  # 4 * sqrt(1000) lists, at most 1000 / 39
    assert not ivf.outgrown(1999) and ivf.outgrown(2000)
    fixed = build_index("ivf", g, nlist=4)  # trains on at most 256 * 4 vectors: no more to gain from growth
    assert fixed.trained_on_ == 1024 and not fixed.outgrown(10**6)
    hnsw = build_index("hnsw", g[:10])
    assert hnsw.trained_on_ == 0 and not hnsw.outgrown(10**6)
    with pytest.raises(ValueError, match="storage 'PQ5' is not a FAISS code for 8-d vectors"):
        make_index("ivf", 8, storage="PQ5")
    with pytest.raises(ValueError, match="m=3 must divide the dimension 8"):
        make_index("pq", 8, m=3)


# ----------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("kind,params", [("numpy", {"gallery_block": 700}), ("faiss", {}), ("hnsw", {"m": 8}),
                                         ("ivf", {"nlist": 20, "nprobe": 4})])
def test_save_load_round_trip(tmp_path, kind, params):
    rng = np.random.default_rng(3)
    g, q = _clustered(rng, 2000, 16), _clustered(rng, 30, 16)
    ix = make_index(kind, 16, **params)
    ix.add(g)
    ix.save(tmp_path / "ix")
    back = load_index(tmp_path / "ix")
    assert type(back) is type(ix) and back.params() == ix.params() and len(back) == 2000
    for a, b in zip(ix.search(q, 25), back.search(q, 25), strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.matches(g) and not back.matches(g[:-1])
    assert not list(tmp_path.glob("ix/*.pkl")) and (tmp_path / "ix" / "index.json").is_file()
    if kind != "faiss":
        assert _memory_mapped(back.vectors)  # the saved vectors are mapped, not read into memory


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "numpy", "faiss"])
def test_index_loaded_for_other_vectors_is_detected(tmp_path, kind):
    rng = np.random.default_rng(4)
    g = _clustered(rng, 1000, 16)
    ix = make_index(kind, 16)
    ix.add(g)
    ix.save(tmp_path / "ix", with_vectors=False)
    assert type(load_index(tmp_path / "ix", vectors=g)) is type(ix)
    changed = g.copy()
    changed[500, 0] += 1e-3  # same count and dim, one value differs
    assert ix.matches(g) and not ix.matches(changed) and not ix.matches(np.vstack([g, g[:1]]))
    for other in (changed, g[:-1], np.vstack([g, g[:3]])):
        with pytest.raises(IndexMismatchError, match="rebuild"):
            load_index(tmp_path / "ix", vectors=other)
    if kind != "faiss":
        with pytest.raises(FileNotFoundError, match="vectors"):
            load_index(tmp_path / "ix")  # saved without its vectors and none given
    with pytest.raises(FileNotFoundError, match="no saved index"):
        load_index(tmp_path / "nothing")


def test_ann_loaded_over_memory_mapped_gallery_vectors(tmp_path):
    rng = np.random.default_rng(5)
    g, q = _clustered(rng, 3000, 16), _clustered(rng, 20, 16)
    np.save(tmp_path / "vectors.npy", g)
    mm = np.load(tmp_path / "vectors.npy", mmap_mode="r")
    built = IVFIndex.from_array(mm, nprobe=4)
    assert np.shares_memory(built.vectors, mm)
    built.save(tmp_path / "ix", with_vectors=False)
    back = load_index(tmp_path / "ix", vectors=mm)
    assert np.shares_memory(back.vectors, mm)
    np.testing.assert_array_equal(back.search(q, 10)[1], built.search(q, 10)[1])
    assert isinstance(FaissIndex.load(tmp_path / "ix", vectors=mm), IVFIndex)
