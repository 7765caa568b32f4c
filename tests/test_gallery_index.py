"""A gallery's search index chosen by spec (recorded with the gallery; an approximate one saved beside the vectors
and reused while it matches them) and the refusal of vector files that disagree with the database."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER

from lookalike.cli import main
from lookalike.gallery import Gallery, StoreError, VectorsMismatchError
from lookalike.gallery.store import NewImage
from lookalike.gallery.vectors import read_vectors, vector_dir, write_vectors
from lookalike.index import (
    HNSWIndex,
    IndexMismatchError,
    NumpyIndex,
    build_index,
    exact_topk,
    fingerprint,
    format_index_spec,
    load_index,
    parse_index_spec,
)
from lookalike.matchers.cache import EmbeddingCache

DIM = 16
SPEC = "hnsw:m=16,ef_search=64"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _add(g: Gallery, subjects: int, per: int, seed: int) -> None:
    """``subjects`` x ``per`` synthetic unit vectors (clustered by subject) stored directly, then loaded."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((subjects, DIM)))
    images = [NewImage(f"s{seed}-{s:04d}", f"/synthetic/{seed}/{s}/{i}", f"{seed:04d}{s:06d}{i:030d}", "ok",
                       method="synthetic", embedding=_unit(centres[s] + 0.4 * rng.standard_normal(DIM)))
              for s in range(subjects) for i in range(per)]
    if g.dim is None:
        g.store.set_meta({"dim": str(DIM)})
    g.store.add_images(images, g.matcher_name, g.preprocess)
    g.refresh()


def _gallery(db: Path, index: str = SPEC, subjects: int = 60, per: int = 5, seed: int = 1) -> Gallery:
    g = Gallery.create(db, matcher=FAST_MATCHER, index=index)
    _add(g, subjects, per, seed)
    return g


def _probes(g: Gallery, n: int = 12, seed: int = 9) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(g.vectors_), n, replace=False)
    return _unit(np.asarray(g.vectors_)[rows] + 0.3 * rng.standard_normal((n, DIM)))


def _assert_same_lists(a, b) -> None:
    np.testing.assert_array_equal(a.subjects, b.subjects)
    np.testing.assert_array_equal(a.image_ids, b.image_ids)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)


# --- index specs ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,kind,params", [
    ("numpy", "numpy", {}), (SPEC, "hnsw", {"m": 16, "ef_search": 64}),
    (" ivf: nlist=64 , storage=SQ8 ", "ivf", {"nlist": 64, "storage": "SQ8"}),
    ("pq:m=8,overfetch=60", "pq", {"m": 8, "overfetch": 60}), ("numpy:gallery_block=4096", "numpy",
                                                               {"gallery_block": 4096}),
])
def test_index_specs_are_parsed_and_written_back(spec: str, kind: str, params: dict) -> None:
    assert parse_index_spec(spec) == (kind, params)
    assert parse_index_spec(format_index_spec(kind, params)) == (kind, params)


@pytest.mark.parametrize("spec,message", [
    ("annoy", "unknown kind 'annoy'; choose one of numpy, faiss, hnsw, ivf, pq"),
    ("hnsw:nprobe=3", "hnsw has no parameter 'nprobe'; it takes m, ef_construction, ef_search, overfetch, storage"),
    ("faiss:m=8", "faiss has no parameter 'm'; it takes none"),
    ("hnsw:m=many", "m must be an integer, got 'many'"),
    ("ivf:nprobe=0", "nprobe must be >= 1, got 0"),
    ("hnsw:m=1", "m must be >= 2, got 1"),  # FAISS's HNSW with m=1 crashed the process
    ("hnsw:m", "expected param=value, got 'm'"),
    ("hnsw:m=8,m=16", "m given twice"),
])
def test_bad_index_specs_are_one_line_errors(tmp_path: Path, spec: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        parse_index_spec(spec)
    assert str(e.value) == f"index {spec!r}: {message}"
    with pytest.raises(ValueError, match="index"):
        Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER, index=spec)
    assert not (tmp_path / "g.sqlite").exists()


def test_search_scale_benchmark_reads_specs_with_the_same_parser() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from search_scale import parse_ann
    finally:
        sys.path.pop(0)
    assert parse_ann("ivf:storage=SQ8,overfetch=20,probe_fraction=0.3,max_n=100000") == (
        "ivf", {"storage": "SQ8", "overfetch": 20}, 0.3, 100000)
    assert parse_ann("hnsw:m=32,ef_search=128,overfetch=4") == (
        "hnsw", {"m": 32, "ef_search": 128, "overfetch": 4}, None, None)
    with pytest.raises(ValueError, match="hnsw has no parameter 'nlist'"):
        parse_ann("hnsw:nlist=3,max_n=10")


# --- the index saved with the gallery --------------------------------------------------------------------------
def test_approximate_index_is_saved_reused_and_equals_exact_search(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    with _gallery(db) as g:
        assert g.index == SPEC and isinstance(g.index_, HNSWIndex) and g.index_source_ == "built"
        assert g.index_.params()["m"] == 16 and len(g.index_) == 300
        probes = _probes(g)
        first = g.search(probes, k=10)
    saved = json.loads((vector_dir(db) / "index" / "index.json").read_text())
    assert (saved["kind"], saved["params"]["m"], saved["params"]["ef_search"], saved["vectors"]["n"]) == \
           ("hnsw", 16, 64, 300)
    assert (vector_dir(db) / "index" / "index.faiss").stat().st_size > 300 * DIM * 4
    with Gallery.open(db) as g:
        assert (g.index, g.vectors_source_, g.index_source_) == (SPEC, "file", "saved")
        assert isinstance(g.index_, HNSWIndex) and np.shares_memory(g.index_.vectors, g.vectors_)
        stats = g.stats()
        assert (stats["index"], stats["index_source"]) == (SPEC, "saved")
        again = g.search(probes, k=10)
    with Gallery.open(db, index="numpy") as exact:  # an override for this session only
        assert (exact.index, exact.index_source_) == ("numpy", "built") and isinstance(exact.index_, NumpyIndex)
        reference = exact.search(probes, k=10)
    _assert_same_lists(first, reference)
    _assert_same_lists(again, reference)
    assert json.loads((vector_dir(db) / "index" / "index.json").read_text()) == saved  # not overwritten
    with Gallery.open(db) as g:
        assert g.index_source_ == "saved"


def _foreign(db: Path) -> None:
    """Replace the index with that of another gallery (other vectors)."""
    other = db.with_name("other.sqlite")
    _gallery(other, seed=2).close()
    shutil.rmtree(vector_dir(db) / "index")
    shutil.copytree(vector_dir(other) / "index", vector_dir(db) / "index")


def _other_faiss(db: Path) -> None:
    """Another gallery's FAISS file under this gallery's index.json."""
    other = db.with_name("other.sqlite")
    _gallery(other, subjects=30, seed=2).close()
    shutil.copy(vector_dir(other) / "index" / "index.faiss", vector_dir(db) / "index" / "index.faiss")


def _same_shape_faiss(db: Path) -> None:
    """Another gallery's FAISS file of the same size and kind (other vectors) under this gallery's index.json: it
    loads and counts right, so only the stamp of the index's files can tell (every probe lost its true match)."""
    other = db.with_name("other.sqlite")
    _gallery(other, seed=2).close()
    shutil.copy(vector_dir(other) / "index" / "index.faiss", vector_dir(db) / "index" / "index.faiss")


def _edit_meta(**changes):
    def edit(db: Path) -> None:
        path = vector_dir(db) / "index" / "index.json"
        meta = json.loads(path.read_text())
        path.write_text(json.dumps({**meta, **{k: {**meta[k], **v} for k, v in changes.items()}}))
    return edit


@pytest.mark.parametrize("damage", [
    _foreign, _other_faiss, _same_shape_faiss, _edit_meta(params={"m": 8}), _edit_meta(params={"bogus": 1}),
    _edit_meta(vectors={"checksum": "0" * 32}),
    lambda db: (vector_dir(db) / "index" / "index.faiss").write_bytes(b"not a faiss index"),
    lambda db: (vector_dir(db) / "index" / "index.faiss").unlink(),
    lambda db: (vector_dir(db) / "index" / "index.json").write_text("[1, 2"),
    lambda db: (vector_dir(db) / "index" / "index.json").write_text("[1, 2]"),
], ids=["foreign", "other-faiss", "same-shape-faiss", "other-params", "unknown-param", "checksum", "garbage-faiss",
        "no-faiss", "bad-json", "not-a-dict"])
def test_a_tampered_or_foreign_saved_index_is_rebuilt(tmp_path: Path, damage) -> None:
    db = tmp_path / "g.sqlite"
    with _gallery(db) as g:
        probes = _probes(g)
        expect = g.search(probes, k=10)
    damage(db)
    with Gallery.open(db) as g:
        assert (g.vectors_source_, g.index_source_) == ("file", "built")
        assert len(g.index_) == 300 and g.index_.params()["m"] == 16
        _assert_same_lists(g.search(probes, k=10), expect)
    with Gallery.open(db) as g:
        assert g.index_source_ == "saved"  # re-saved in good order


def test_the_vectors_are_hashed_on_opening_only_when_their_file_changed(tmp_path: Path, monkeypatch) -> None:
    """A saved index is reused without re-hashing vectors.npy while the file is the one it was saved beside (its
    recorded size, modification time and inode); once the file is rewritten its rows are hashed and checked."""
    import lookalike.index as index_module
    hashed = []
    real = index_module._hash_rows
    monkeypatch.setattr(index_module, "_hash_rows", lambda h, v, start, *a: hashed.append(len(v) - start) or
                        real(h, v, start, *a))
    db = tmp_path / "g.sqlite"
    with _gallery(db) as g:
        probes = _probes(g)
        expect = g.search(probes, k=10)
    hashed.clear()
    with Gallery.open(db) as g:
        assert g.index_source_ == "saved" and sum(hashed) == 0
        _assert_same_lists(g.search(probes, k=10), expect)
        _add(g, subjects=5, per=2, seed=7)  # faces added: the index is saved again, its rows hashed once
        assert sum(hashed) == len(g.vectors_) == 310
        grown = g.search(probes, k=10)
    hashed.clear()
    with Gallery.open(db) as g:
        assert (g.index_source_, sum(hashed)) == ("saved", 0)
        _assert_same_lists(g.search(probes, k=10), grown)
    path = vector_dir(db) / "vectors.npy"
    path.write_bytes(path.read_bytes())  # the same rows, another modification time: hashed, found equal, reused
    with Gallery.open(db) as g:
        assert (g.index_source_, sum(hashed)) == ("saved", 310)
    for stamp in ({"size": 1}, "[1, 2"):  # a stamp of another file, or an unreadable one: hashed, not trusted
        hashed.clear()
        (vector_dir(db) / "index" / "vectors-stamp.json").write_text(json.dumps(stamp) if isinstance(stamp, dict)
                                                                     else stamp)
        with Gallery.open(db) as g:
            assert (g.index_source_, sum(hashed)) == ("saved", 310)
            _assert_same_lists(g.search(probes, k=10), grown)


def test_exact_and_overridden_indexes_save_nothing(tmp_path: Path) -> None:
    with _gallery(tmp_path / "e.sqlite", index="numpy") as g:
        assert g.index_source_ == "built"
    assert not (vector_dir(tmp_path / "e.sqlite") / "index").exists()
    with Gallery.open(tmp_path / "e.sqlite", index="hnsw") as g:
        assert g.index == "hnsw" and isinstance(g.index_, HNSWIndex)
    assert not (vector_dir(tmp_path / "e.sqlite") / "index").exists()
    with Gallery.create(tmp_path / "empty.sqlite", matcher=FAST_MATCHER, index=SPEC) as g:
        assert g.index_ is None
        with pytest.raises(ValueError, match="no enrolled images"):
            g.search(np.ones((1, DIM), np.float32))


def test_galleries_without_a_recorded_index_search_exactly(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    _gallery(db).close()
    with Gallery.open(db) as g:
        g.store._exec("DELETE FROM meta WHERE key = 'index'")  # as made before galleries recorded it
    with Gallery.open(db) as g:
        assert g.index == "numpy" and isinstance(g.index_, NumpyIndex)
    with Gallery.open(db) as g:
        g.store.set_meta({"index": "annoy:trees=8"})  # e.g. written by a newer lookalike
    with pytest.raises(StoreError, match="index cannot be built by this lookalike"):
        Gallery.open(db)
    with Gallery.open(db, index="faiss") as g:
        assert g.index == "faiss"


# --- enrolment appends to the saved index ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingCache:
    return EmbeddingCache(tmp_path_factory.mktemp("cache") / "embeddings.sqlite")


def test_enrolment_appends_to_the_saved_index(tmp_path: Path, face_folders: Path, cache: EmbeddingCache) -> None:
    paths = sorted(str(p) for p in face_folders.glob("*/*"))
    subjects = [Path(p).parent.name for p in paths]
    first, second = slice(0, None, 2), slice(1, None, 2)  # interleaved: subjects with 2+ images in both
    db = tmp_path / "g.sqlite"
    with Gallery.create(db, matcher=FAST_MATCHER, index="hnsw:m=8") as g:
        g.enroll(paths[first], subjects[first], cache=cache, workers=1, progress=False, chunk_size=4)
    with Gallery.open(db) as g:
        assert (g.index_source_, len(g.index_)) == ("saved", len(paths[first]))
        index = g.index_
        g.enroll(paths[second], subjects[second], cache=cache, workers=1, progress=False, chunk_size=4)
        assert g.index_ is index and len(index) == len(paths)  # appended, not rebuilt
        assert np.shares_memory(index.vectors, g.vectors_)  # it searches the gallery's matrix: no second copy
        pairs = set(zip(g.subject_codes_.tolist(), g.subjects_.tolist(), strict=True))  # codes appended, not redone
        assert len(pairs) == len(set(g.subject_codes_.tolist())) == len(set(subjects)) == len(set(g.subjects_))
        assert set(subjects[first]) & set(subjects[second])  # subjects in both halves keep their first code
        probes = np.asarray(g.vectors_)[::5].copy()
        got = g.search(probes, k=5)
    with Gallery.open(db) as g:
        assert (g.vectors_source_, g.index_source_, len(g.index_)) == ("file", "saved", len(paths))
        _assert_same_lists(g.search(probes, k=5), got)
    with Gallery.open(db, index="numpy") as exact:
        _assert_same_lists(exact.search(probes, k=5), got)


@pytest.mark.parametrize("spec", ["numpy", "hnsw:m=8"])
def test_an_index_fingerprint_is_continued_as_it_grows(tmp_path: Path, spec: str) -> None:
    """Saving after each enrolment hashes only the new rows; the checksum is that of all the vectors."""
    kind, params = parse_index_spec(spec)
    rng = np.random.default_rng(3)
    v = _unit(rng.standard_normal((700, DIM)))
    index = build_index(kind, v[:300], **params)
    assert index.fingerprint() == fingerprint(v[:300])
    for stop in (301, 500, 700):
        index.add(v[len(index):stop])
        assert index.fingerprint() == fingerprint(v[:stop])
    index.save(tmp_path / "ix", with_vectors=False)
    loaded = load_index(tmp_path / "ix", v)
    loaded.add(v[:5])
    assert loaded.fingerprint() == fingerprint(np.concatenate([v, v[:5]]))
    with pytest.raises(IndexMismatchError):
        load_index(tmp_path / "ix", v[:699])


def _inodes(folder: Path) -> dict[str, int]:
    return {name: (folder / name).stat().st_ino for name in ("vectors.npy", "ids.npy")}


def test_new_faces_are_appended_to_the_vector_files_in_place(tmp_path: Path) -> None:
    """Enrolling writes only the new rows (same files, longer), readable by np.load and by a reader that mapped the
    files before; a removal or a rebuild asked for rewrites them whole (new files)."""
    db, folder = tmp_path / "g.sqlite", vector_dir(tmp_path / "g.sqlite")
    with _gallery(db, index="numpy", subjects=20, per=5) as g:
        inodes, earlier = _inodes(folder), np.load(folder / "vectors.npy", mmap_mode="r")
        first = np.array(earlier)
        _add(g, 10, 5, seed=2)
        snap = g.store.snapshot(g.matcher_name, g.preprocess)
        assert _inodes(folder) == inodes and len(snap.image_ids) == 150
        saved = read_vectors(folder)
        assert saved.state["count"] == 150 and saved.state["generation"] == g.generation_
        np.testing.assert_array_equal(saved.ids, snap.image_ids)
        np.testing.assert_array_equal(saved.vectors, snap.vectors)
        np.testing.assert_array_equal(np.load(folder / "vectors.npy"), snap.vectors)
        np.testing.assert_array_equal(np.load(folder / "ids.npy"), snap.image_ids)
        np.testing.assert_array_equal(earlier, first)  # the 100 rows mapped before are untouched
        g.remove(str(snap.subjects[0]))
        assert all(a != b for a, b in zip(_inodes(folder).values(), inodes.values(), strict=True))
        kept = g.store.snapshot(g.matcher_name, g.preprocess)
        np.testing.assert_array_equal(read_vectors(folder).vectors, kept.vectors)
    with Gallery.open(db) as g:
        assert g.vectors_source_ == "file"
        np.testing.assert_array_equal(g.vectors_, kept.vectors)
    inodes = _inodes(folder)
    with Gallery.rebuild_vectors(db) as g:  # asked for: rewritten whole, never appended to
        assert all(a != b for a, b in zip(_inodes(folder).values(), inodes.values(), strict=True))
        np.testing.assert_array_equal(read_vectors(folder).vectors, kept.vectors)


def test_an_append_cut_short_is_rewritten_from_the_store(tmp_path: Path) -> None:
    """New faces committed to the database and their rows (and the new length) appended, but ``state.json`` not
    yet written, as after kill -9 during an enrolment: the files are rebuilt from the database on opening."""
    db, folder = tmp_path / "g.sqlite", vector_dir(tmp_path / "g.sqlite")
    with _gallery(db, index="numpy", subjects=20, per=5) as g:
        old_state = (folder / "state.json").read_text()
        g.store.add_images([NewImage("late", f"/synthetic/late/{i}", f"late{i:032d}", "ok", method="synthetic",
                                     embedding=_unit(np.full(DIM, i + 1.0))) for i in range(7)],
                           g.matcher_name, g.preprocess)  # committed: the database is a generation ahead
        snap = g.store.snapshot(g.matcher_name, g.preprocess)
        write_vectors(folder, snap.image_ids, snap.vectors, {**json.loads(old_state), "generation": snap.generation},
                      still_current=lambda: True)
    (folder / "state.json").write_text(old_state)  # the state of before the append
    assert np.load(folder / "vectors.npy", mmap_mode="r").shape == (107, DIM)
    with Gallery.open(db) as g:
        assert g.vectors_source_.startswith("store (vector files rebuilt: ")
        np.testing.assert_array_equal(g.vectors_, snap.vectors)
    with Gallery.open(db) as g:
        assert g.vectors_source_ == "file" and len(g.vectors_) == 107


def test_a_postgres_gallery_keeps_vector_files_in_the_folder_its_url_names(tmp_path: Path) -> None:
    """``?vectors=DIR``: a PostgreSQL gallery's matrix is memory-mapped from DIR and its approximate index saved
    there and reused; after another client enrolls, the files catch up with the database on the next refresh."""
    import uuid

    import psycopg
    from conftest import pg_base

    base = pg_base()
    schema = f"lookalike_test_{uuid.uuid4().hex[:12]}"
    folder = tmp_path / "faces.vectors"
    url = f"{base}?schema={schema}&vectors={folder}"
    try:
        with _gallery(url, subjects=20, per=5) as g:
            assert g.vector_dir == folder and g.vectors_source_.startswith("store")
            probes = _probes(g)
            expect = g.search(probes, k=10)
        with Gallery.open(url) as g:
            assert (g.vectors_source_, g.index_source_) == ("file", "saved")
            assert isinstance(g.vectors_, np.memmap) or isinstance(g.vectors_.base, np.memmap)
            _assert_same_lists(g.search(probes, k=10), expect)
            with Gallery.open(f"{base}?schema={schema}") as other:  # another client, without local files
                assert other.vector_dir is None and other.vectors_source_ == "store"
                _add(other, 5, 4, seed=7)
            assert g.refresh() and len(g.vectors_) == 120
            assert read_vectors(folder).state["count"] == 120
        with Gallery.open(url) as g:
            assert g.vectors_source_ == "file" and len(g.vectors_) == 120
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# --- vector files that disagree with the database ----------------------------------------------------------------
def _forge(db: Path, rows: slice = slice(None), extra_dim: int = 0, **state) -> None:
    """Rewrite the vector files, consistent with themselves, with other rows, dimension or state."""
    saved = read_vectors(vector_dir(db))
    vectors = np.asarray(saved.vectors)[rows]
    vectors = np.hstack([vectors, np.zeros((len(vectors), extra_dim), np.float32)])
    write_vectors(vector_dir(db), saved.ids[rows], vectors,
                  {**saved.state, "dim": vectors.shape[1], **state}, still_current=lambda: True)


@pytest.mark.parametrize("forge,problem", [
    (lambda db, gen: _forge(db, rows=slice(0, -1)), lambda gen: "saved count 299, the database's 300"),
    (lambda db, gen: _forge(db, extra_dim=1), lambda gen: "saved dim 17, the database's 16"),
    (lambda db, gen: _forge(db, matcher="other-net"),
     lambda gen: "saved matcher 'other-net', the database's 'dlib-resnet-v1'"),
    (lambda db, gen: _forge(db, preprocess="lowres16-chip17"),
     lambda gen: "saved preprocess 'lowres16-chip17', the database's 'full'"),
    (lambda db, gen: _forge(db, generation=gen + 3), lambda gen: f"saved generation {gen + 3}, the database's {gen}"),
], ids=["count", "dim", "matcher", "preprocess", "newer"])
def test_vector_files_at_the_stores_generation_that_disagree_are_refused(tmp_path: Path, forge, problem,
                                                                         capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "g.sqlite"
    with _gallery(db) as g:
        gen = g.generation_
        probes = _probes(g)
        expect = g.search(probes, k=10)
    forge(db, gen)
    with pytest.raises(VectorsMismatchError) as e:
        Gallery.open(db)
    assert str(e.value) == (f"{vector_dir(db)}: vector files disagree with the database ({problem(gen)}); rewrite "
                            f"them with `lookalike gallery rebuild-vectors --db {db}`")
    assert main(["gallery", "list", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert err == f"lookalike: error: {e.value}\n"
    with Gallery.rebuild_vectors(db) as g:  # the remedy, in Python
        assert g.vectors_source_ == "store (vector files rebuilt: rebuild asked)" and g.index_source_ == "built"
        _assert_same_lists(g.search(probes, k=10), expect)
    with Gallery.open(db) as g:
        assert (g.vectors_source_, g.index_source_) == ("file", "saved")


def test_vector_rows_overwritten_in_place_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A row of vectors.npy overwritten by another program (same size: four spot-checked rows miss it): the file's
    stamp in state.json differs, so every row is compared with the database, and the files are refused with the
    remedy, where the row had been searched silently (its face lost to every probe). Files merely rewritten with the
    same rows (a restored copy) pass that check once and are stamped again."""
    db = tmp_path / "g.sqlite"
    with _gallery(db) as g:
        probes = _probes(g)
        expect = g.search(probes, k=10)
        row = np.asarray(g.vectors_)[7].tobytes()
    path = vector_dir(db) / "vectors.npy"
    data = bytearray(path.read_bytes())
    start = len(data) - 300 * len(row) + 5 * len(row)  # row 5's bytes := row 7's
    data[start:start + len(row)] = row
    path.write_bytes(bytes(data))
    changed = r"differs from the database's \(vectors.npy changed since lookalike wrote them\).*rebuild-vectors"
    with pytest.raises(VectorsMismatchError, match=changed):
        Gallery.open(db)
    with Gallery.rebuild_vectors(db) as g:
        _assert_same_lists(g.search(probes, k=10), expect)
    with Gallery.open(db) as g:
        assert g.vectors_source_ == "file"
    state = json.loads((vector_dir(db) / "state.json").read_text())
    path.write_bytes(path.read_bytes())  # the same rows, another modification time
    with Gallery.open(db) as g:
        assert g.vectors_source_ == "file"
        _assert_same_lists(g.search(probes, k=10), expect)
    again = json.loads((vector_dir(db) / "state.json").read_text())
    assert again["files"]["vectors.npy"] != state["files"]["vectors.npy"] and again["generation"] == state["generation"]


@pytest.mark.parametrize("row, nan", [(0, False), (123, True), (299, False)])
def test_every_block_of_changed_vector_files_is_compared(tmp_path: Path, monkeypatch, row: int, nan: bool) -> None:
    """Changed files are compared with the database a block of rows at a time (each block as one matrix): a row
    overwritten in place in the first, a middle or the last block, with another face's vector or with NaN, is
    found and its image named."""
    monkeypatch.setattr("lookalike.gallery.gallery.CHECK_BLOCK", 7)
    db = tmp_path / "g.sqlite"
    with _gallery(db, index="numpy") as g:
        image, other = int(g.image_ids_[row]), np.asarray(g.vectors_)[(row + 1) % len(g.vectors_)].copy()
    vectors = np.load(vector_dir(db) / "vectors.npy", mmap_mode="r+")
    vectors[row] = np.nan if nan else other
    vectors.flush()
    del vectors
    with pytest.raises(VectorsMismatchError, match=f"saved vector of image {image} differs from the database's"):
        Gallery.open(db)


def test_differing_rows_are_those_without_an_equal_stored_vector() -> None:
    from lookalike.gallery.gallery import _differing_rows

    saved = np.arange(12, dtype=np.float32).reshape(4, 3)
    saved[3] = np.nan
    stored = {10: saved[0].copy(), 11: saved[1] + 1, 13: saved[3].copy(), 14: saved[0][:2].copy()}
    # 11 differs, 12 has no stored vector, 13 is NaN (equal to nothing), 14's stored vector is of another size
    assert _differing_rows(saved[[0, 1, 2, 3, 0]], np.array([10, 11, 12, 13, 14]), stored).tolist() == [1, 2, 3, 4]
    assert _differing_rows(saved[:1], np.array([10]), stored).tolist() == []


def test_vector_files_older_than_the_store_are_brought_up_to_date(tmp_path: Path) -> None:
    db = tmp_path / "g.sqlite"
    with _gallery(db) as g:
        gen = g.generation_
        snap = g.store.snapshot(g.matcher_name, g.preprocess)
    _forge(db, rows=slice(0, 100), generation=gen - 1)  # as if an enrolment stopped before writing them
    with Gallery.open(db) as g:
        assert g.vectors_source_ == f"store (vector files rebuilt: saved at generation {gen - 1}, the database is " \
                                    f"at {gen})"
        np.testing.assert_array_equal(g.vectors_, snap.vectors)
        assert len(g.index_) == 300
    with Gallery.open(db) as g:
        assert (g.vectors_source_, g.index_source_) == ("file", "saved")
        assert read_vectors(vector_dir(db)).state["generation"] == gen


def test_the_service_refuses_a_gallery_with_disagreeing_vector_files(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    from lookalike.service.core import Service

    db = tmp_path / "g.sqlite"
    _gallery(db).close()
    _forge(db, matcher="other-net")
    with pytest.raises(VectorsMismatchError, match="rebuild-vectors"):
        Service(str(db), data_dir=tmp_path / "images", engines=1)
    assert main(["serve", "--db", str(db), "--create-token"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lookalike: error:") and "rebuild-vectors" in err and err.count("\n") == 1


# --- command line ----------------------------------------------------------------------------------------------
def test_cli_enroll_index_stats_and_errors(face_folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           cache: EmbeddingCache) -> None:
    db = str(tmp_path / "g.sqlite")
    args = ["enroll", "--gallery", str(face_folders), "--db", db, "--matcher", FAST_MATCHER, "--cache",
            str(cache.path), "--workers", "1", "--no-progress"]
    assert main(args + ["--index", "hnsw: m=8"]) == 0
    capsys.readouterr()
    assert main(["gallery", "stats", "--db", db]) == 0
    out = capsys.readouterr().out
    assert "| index | hnsw:m=8 |" in out and "| index_source | saved |" in out
    assert main(["gallery", "stats", "--db", db, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["index"] == "hnsw:m=8"
    assert main(args + ["--index", "hnsw:m=8"]) == 0  # the gallery's own index: fine
    capsys.readouterr()
    assert main(args + ["--index", "hnsw:m=16"]) == 2
    err = capsys.readouterr().err
    assert err == f"lookalike: error: {db} searches with the index 'hnsw:m=8'; --index sets the index of a new " \
                  "gallery only\n"
    with pytest.raises(SystemExit) as e:  # argparse's own one-line error
        main(args + ["--index", "annoy"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "argument --index: index 'annoy': unknown kind 'annoy'" in err and \
           err.count("\n") == 1
    _forge(Path(db), rows=slice(0, -1))
    assert main(["gallery", "stats", "--db", db]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lookalike: error: {vector_dir(db)}: vector files disagree") and err.count("\n") == 1
    assert main(["gallery", "rebuild-vectors", "--db", db]) == 0
    assert f"rewrote {vector_dir(db)} from the database" in capsys.readouterr().out
    assert main(["gallery", "stats", "--db", db, "--format", "json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["vectors_source"], stats["index_source"], stats["vectors"]) == ("file", "saved", stats["images"])


def test_an_approximate_search_that_finds_too_few_is_completed_exactly(tmp_path: Path) -> None:
    """IVF probing one small list finds fewer candidates than asked: those queries are searched exactly, so no
    padding id (-1, read as the last gallery row) ever becomes a candidate."""
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((40, 32))
    v = np.repeat(centres, 50, 0) + 0.3 * rng.standard_normal((2000, 32))
    v = (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)
    q = v[::100] + 0.01
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    scores, ids = build_index("ivf", v, nprobe=1).search(q, 200)
    assert (ids >= 0).all() and np.isfinite(scores).all() and ids.shape == (len(q), 200)
    exact_scores, _ = exact_topk(q, v, 200)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)  # 200 of ~50-vector lists: exact here
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER, index="ivf:nprobe=1") as g:
        g.add_embeddings([f"s{i // 50}" for i in range(2000)], v)
        found = g.search(q, 20)
        assert found.subjects.shape == (len(q), 20) and np.isfinite(found.scores).all()


def test_add_embeddings_refuses_vectors_a_cosine_search_cannot_use(tmp_path: Path) -> None:
    """A NaN row once left the gallery unopenable (its vector files never matched the database); an unnormalised
    one outranked every face. Both are refused, and nothing is stored."""
    v = np.eye(4, dtype=np.float32)
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER) as g:
        assert g.add_embeddings(["a", "b"], v[:2]) == 2
        assert g.add_embeddings(["a", "b", "a"], v[:3]) == 1  # the vectors a and b already have: not added again
        for bad, message in ((np.full((1, 4), np.nan), "NaN"), (v[2:3] * 50, "unit length"),
                             (np.zeros((1, 4)), "unit length"), (np.full((1, 8), 0.5), "8-d vectors")):
            with pytest.raises(ValueError, match=message):
                g.add_embeddings(["c"], bad)
        assert len(g.image_ids_) == 3
        for bad in (v[:1] * 100, np.zeros((1, 4))):  # a probe too long had scored 100.0, past every threshold
            with pytest.raises(ValueError, match="1 of 1 probe vectors are not of unit length"):
                g.search(bad, k=2)
    with Gallery.open(tmp_path / "g.sqlite") as g:
        assert g.subjects() == ["a", "b"]


@pytest.mark.parametrize("kind", ["numpy", "faiss", "hnsw", "ivf"])
def test_every_index_refuses_a_bad_k_or_a_nan_query(kind: str) -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((300, 8)).astype(np.float32)
    index = build_index(kind, v / np.linalg.norm(v, axis=1, keepdims=True))
    for k in (-1, -5, 2.5, True):  # faiss had returned n + k columns for a negative k
        with pytest.raises(ValueError, match="k must be"):
            index.search(v[:2], k)
    with pytest.raises(ValueError, match="NaN"):
        index.search(np.full((1, 8), np.nan, np.float32), 5)


def test_a_read_only_vector_folder_is_read(tmp_path: Path) -> None:
    """Vector files on a read-only mount (as root only a bind mount makes a folder read-only): searched from the
    files, where taking the lock had failed (the lock file was opened for writing) and nothing could be opened."""
    import subprocess
    import sys

    db = tmp_path / "g.sqlite"
    with _gallery(db) as g:
        expect = g.search(_probes(g), k=5).subjects.tolist()
    script = ("import sys, numpy as np; sys.path[:0] = sys.argv[1:3]; from lookalike.gallery import Gallery; "
              "from test_gallery_index import _probes; g = Gallery.open(sys.argv[3]); "
              "print(g.vectors_source_, g.search(_probes(g), k=5).subjects.tolist())")
    folder = vector_dir(db)
    here = Path(__file__).resolve()
    cmd = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && touch {folder}/x 2>/dev/null "
           f"&& echo WRITABLE || {sys.executable} -c '{script}' {here.parents[1] / 'src'} {here.parent} {db}")
    r = subprocess.run(["unshare", "-m", "bash", "-c", cmd], capture_output=True, text=True)
    if r.returncode != 0 and "Traceback" not in r.stderr:
        pytest.skip(f"no read-only bind mount here: {r.stderr.strip()[:200]}")
    assert r.returncode == 0 and "WRITABLE" not in r.stdout, r.stderr[-2000:]
    assert r.stdout.strip() == f"file {expect}"
