"""Dataset loaders (folders, CSV manifests, TinyFace) and identification protocols."""

from __future__ import annotations

import csv
import os
import shutil
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from conftest import PERSON_COUNTS, write_synthetic
from PIL import Image

from lookalike.data.folders import load_folders
from lookalike.data.manifest import load_manifest
from lookalike.data.protocol import Protocol, make_protocol
from lookalike.data.table import FaceTable
from lookalike.data.tinyface import DISTRACTOR_ID, GALLERY_MAT, PROBE_MAT, load_tinyface

TEST_ROLES = ("gallery", "probe", "distractor")
TRAIN_ROLES = ("train", "val_gallery", "val_probe", "val_distractor")


# ----------------------------------------------------------------------------------------------- FaceTable


def test_face_table_checks_lengths_and_roles():
    with pytest.raises(ValueError, match="same length"):
        FaceTable(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="unknown roles"):
        FaceTable(["a"], ["x"], ["enrolled"])
    t = FaceTable(["a", "b", "c"], [1, 2, 2], ["probe", "gallery", "probe"], {"missing_files": 2})
    assert t.identities.tolist() == ["1", "2", "2"]  # identities are strings
    assert len(t.role("probe")) == 2 and t.role("probe").notes == {"missing_files": 2}
    assert t.identity_counts() == {"1": 1, "2": 2}
    s = t.summary()
    assert s["images"] == 3 and s["identities"] == 2 and s["role:probe"] == 2 and s["missing_files"] == 2
    c = FaceTable.concat([t, FaceTable(["d"], ["3"], notes={"missing_files": 1})])
    assert len(c) == 4 and c.notes == {"missing_files": 3} and c.roles[-1] == ""


# ----------------------------------------------------------------------------------------------- folders


def test_load_folders_sorted_and_complete(face_folders):
    t = load_folders(face_folders)
    assert len(t) == sum(PERSON_COUNTS.values())
    assert t.paths.tolist() == sorted(t.paths.tolist())
    assert t.identity_counts() == PERSON_COUNTS
    assert all(Path(p).parent.name == i for p, i in zip(t.paths, t.identities, strict=True))
    assert (t.roles == "").all()
    assert t.notes == {}


def test_load_folders_counts_and_skips_non_images(face_folders):
    (face_folders / "p05" / "readme.txt").write_text("not an image")
    (face_folders / "p05" / ".DS_Store").write_bytes(b"\0\0")
    (face_folders / "p06" / "nested").mkdir()
    (face_folders / "p07" / "UPPER.PNG").write_bytes((face_folders / "p07" / "0.png").read_bytes())
    (face_folders / "p06" / "gone.png").symlink_to(face_folders / "p06" / "nowhere.png")
    (face_folders / "stray.png").write_bytes((face_folders / "p07" / "0.png").read_bytes())
    (face_folders / "p07" / "._0.png").write_bytes(b"\0\5\x16\7")  # a macOS resource-fork copy: not a photo
    (face_folders / ".Trashes" / "old").mkdir(parents=True)  # a volume's hidden folder: never a person
    (face_folders / "nobody").mkdir()
    t = load_folders(face_folders)
    assert t.notes == {"skipped_non_image_files": 1, "hidden": 3, "nested_folder": 1, "broken_link": 1,
                       "outside_identity_folder": 1, "empty_folder": 1}
    assert {r[0] for r in t.dropped if r[2] == "empty_folder"} == {str(face_folders / "nobody")}
    assert {r[2] for r in t.dropped if r[0].endswith("gone.png")} == {"broken_link"}
    assert not any(p.endswith((".txt", ".DS_Store")) for p in t.paths)
    assert t.identity_counts()["p07"] == PERSON_COUNTS["p07"] + 1  # upper-case extension is an image


def test_a_broken_link_has_one_reason_in_enroll_and_identify(face_folders, tmp_path):
    """The folder loader (enroll, embed, train, benchmark), a CSV manifest and identify's folder walker give a link to
    nothing the same reason: enroll had counted it as ``missing`` (a file a rerun may find), identify "broken link"."""
    from lookalike.cli import probe_paths

    gone = face_folders / "p06" / "gone.png"
    gone.symlink_to(face_folders / "p06" / "nowhere.png")
    loaded = {r[0]: r[2] for r in load_folders(face_folders).dropped}
    _, left_out = probe_paths([str(face_folders / "p06")])
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,identity\n{gone},p06\n{face_folders / 'p06' / '0.png'},p06\n")
    listed = {r[0]: r[2] for r in load_manifest(manifest).dropped}
    assert loaded[str(gone)] == dict(left_out)[str(gone)] == listed[str(gone)] == "broken_link"


def test_both_folder_walkers_leave_out_the_same_hidden_names(face_folders):
    """One rule (``is_hidden``: a name starting with a dot) for the folder loader and identify's walker."""
    from lookalike.cli import probe_paths
    from lookalike.data.table import is_hidden

    person = face_folders / "p05"
    for name in ("._0.png", ".DS_Store", ".hidden.png"):
        (person / name).write_bytes((person / "0.png").read_bytes())
    (person / ".git").mkdir()
    hidden = {str(p) for p in person.iterdir() if is_hidden(p)}
    assert {Path(p).name for p in hidden} == {"._0.png", ".DS_Store", ".hidden.png", ".git"}
    loaded = {r[0] for r in load_folders(face_folders).dropped if r[2] == "hidden"}
    photos, left_out = probe_paths([str(person)])
    assert loaded == {p for p, why in left_out if why.startswith("hidden")} == hidden
    assert not hidden & set(photos)


def test_load_folders_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_folders(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        load_folders(tmp_path / "empty")
    (tmp_path / "only_text" / "alice").mkdir(parents=True)
    (tmp_path / "only_text" / "alice" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        load_folders(tmp_path / "only_text")


# ----------------------------------------------------------------------------------------------- manifest


def _write_csv(path: Path, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    with open(path, "w", newline="", encoding=encoding) as f:
        csv.writer(f).writerows(rows)
    return path


def test_manifest_relative_absolute_and_missing(tmp_path):
    (tmp_path / "imgs").mkdir()
    a = write_synthetic(tmp_path / "imgs" / "a.png", 1)
    b = write_synthetic(tmp_path / "imgs" / "b.png", 2)
    csv_path = _write_csv(tmp_path / "m.csv", [
        ["path", "identity"],
        ["imgs/a.png", "alice"],  # relative to the CSV, not to the working directory
        [str(b.resolve()), "bob"],  # absolute
        ["imgs/gone.png", "carol"],  # missing
        ["imgs/also_gone.png", "carol"],
    ])
    cwd = os.getcwd()
    try:
        os.chdir(Path(cwd).anchor)  # somewhere else entirely
        t = load_manifest(csv_path)
    finally:
        os.chdir(cwd)
    assert [Path(p).resolve() for p in t.paths] == [a.resolve(), b.resolve()]
    assert t.identities.tolist() == ["alice", "bob"]
    assert t.roles.tolist() == ["", ""]
    assert t.notes == {"missing_files": 2}


def test_manifest_roles(tmp_path):
    write_synthetic(tmp_path / "a.png", 1)
    write_synthetic(tmp_path / "b.png", 2)
    t = load_manifest(_write_csv(tmp_path / "m.csv", [["identity", "role", "path"], ["x", "probe", "a.png"],
                                                      ["x", "gallery", "b.png"]]))
    assert t.roles.tolist() == ["probe", "gallery"] and t.notes == {}
    with pytest.raises(ValueError, match="unknown roles"):
        rows = [["path", "identity", "role"], ["a.png", "x", "bogus"]]
        load_manifest(_write_csv(tmp_path / "bad.csv", rows))


def test_manifest_errors(tmp_path):
    write_synthetic(tmp_path / "a.png", 1)
    with pytest.raises(ValueError, match="'path' and 'identity'"):
        load_manifest(_write_csv(tmp_path / "m1.csv", [["file", "identity"], ["a.png", "x"]]))
    with pytest.raises(ValueError, match="'path' and 'identity'"):
        load_manifest(_write_csv(tmp_path / "m2.csv", [["path"], ["a.png"]]))
    with pytest.raises(ValueError, match="'path' and 'identity'"):
        load_manifest(_write_csv(tmp_path / "m3.csv", []))
    with pytest.raises(ValueError, match="empty path or identity"):
        load_manifest(_write_csv(tmp_path / "m4.csv", [["path", "identity"], ["a.png", ""]]))
    with pytest.raises(ValueError, match="no existing images"):
        load_manifest(_write_csv(tmp_path / "m5.csv", [["path", "identity"], ["gone.png", "x"]]))
    with pytest.raises(FileNotFoundError):
        load_manifest(tmp_path / "absent.csv")




def test_manifest_with_utf8_bom(tmp_path):
    write_synthetic(tmp_path / "a.png", 1)
    rows = [["path", "identity"], ["a.png", "x"]]
    t = load_manifest(_write_csv(tmp_path / "m.csv", rows, encoding="utf-8-sig"))
    assert t.identities.tolist() == ["x"]


# ----------------------------------------------------------------------------------------------- TinyFace


def _mat_lists(mat_path: Path, names_key: str, ids_key: str) -> tuple[list[str], list[str]]:
    """Reference reading of an official .mat file, independent of lookalike's reader."""
    from scipy.io import loadmat

    m = loadmat(str(mat_path))
    names = [str(np.asarray(c).item()) for c in m[names_key][:, 0]]
    ids = [str(int(i)) for i in m[ids_key][:, 0]]
    return names, ids


def _tiny_jpeg() -> bytes:
    buf = BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(buf, "JPEG")  # 16 wide, 20 high
    return buf.getvalue()


@pytest.fixture
def tinyface_root(tmp_path, tinyface_protocol_dir):
    """A TinyFace-shaped folder with a subset of the officially listed files (tiny JPEGs)."""
    root = tmp_path / "tinyface"
    test = root / "Testing_Set"
    data = _tiny_jpeg()
    probe_names, _ = _mat_lists(tinyface_protocol_dir / PROBE_MAT, "probe_set", "probe_ids")
    gallery_names, _ = _mat_lists(tinyface_protocol_dir / GALLERY_MAT, "gallery_set", "gallery_ids")
    created = {"Probe": set(probe_names[::13]), "Gallery_Match": set(gallery_names[::16])}
    for sub, names in created.items():
        (test / sub).mkdir(parents=True)
        for n in names:
            (test / sub / n).write_bytes(data)
    (test / "Gallery_Distractor").mkdir()
    for n in ("d_1.jpg", "d_2.jpg", "d_3.jpg"):
        (test / "Gallery_Distractor" / n).write_bytes(data)
    (test / "Gallery_Distractor" / "Thumbs.db").write_bytes(b"junk")
    for person, n in (("10001", 2), ("10002", 3), ("10003", 2), ("10004", 2), ("10005", 1)):
        (root / "Training_Set" / person).mkdir(parents=True)
        for i in range(n):
            (root / "Training_Set" / person / f"{person}_{i}.jpg").write_bytes(data)
    return root, created


def test_tinyface_official_lists(tinyface_root, tinyface_protocol_dir):
    root, created = tinyface_root
    t = load_tinyface(root, protocol_dir=tinyface_protocol_dir)
    for sub, role, mat, keys in (("Probe", "probe", PROBE_MAT, ("probe_set", "probe_ids")),
                                 ("Gallery_Match", "gallery", GALLERY_MAT, ("gallery_set", "gallery_ids"))):
        names, ids = _mat_lists(tinyface_protocol_dir / mat, *keys)
        expected = {n: i for n, i in zip(names, ids, strict=True) if n in created[sub]}
        rows = t.role(role)
        got = {Path(p).name: i for p, i in zip(rows.paths, rows.identities, strict=True)}
        assert got == expected
        assert all(Path(p).parent == root / "Testing_Set" / sub for p in rows.paths)
        missing_key = "missing_probe_files" if role == "probe" else "missing_gallery_files"
        assert t.notes[missing_key] == len(names) - len(created[sub])
    assert len(names) == 4443  # the official gallery list
    d = t.role("distractor")
    assert sorted(Path(p).name for p in d.paths) == ["d_1.jpg", "d_2.jpg", "d_3.jpg"]  # Thumbs.db is not one
    assert set(d.identities.tolist()) == {DISTRACTOR_ID} == {"-100"}
    tr = t.role("train")
    assert len(tr) == 10
    assert set(tr.identities.tolist()) == {f"train:1000{i}" for i in range(1, 6)}
    # training identities never collide with test identities
    assert not set(tr.identities.tolist()) & set(t.role(*TEST_ROLES).identities.tolist())


def test_a_tinyface_run_missing_official_files_is_warned_about(tinyface_root, tinyface_protocol_dir):
    """Part of the official images (here 1 in 13 probes): the run's figures are not comparable with published ones,
    and the benchmark says so (printed, and kept in metrics.json)."""
    from lookalike.benchmark import protocol_warnings

    root, _ = tinyface_root
    t = load_tinyface(root, protocol_dir=tinyface_protocol_dir)
    (warning,) = protocol_warnings(root, t, saved=False)
    assert "files the official protocol lists are absent (missing_probe_files" in warning
    assert "not comparable with published ones" in warning
    whole = FaceTable(t.paths, t.identities, t.roles)  # every listed file present: no warning
    assert protocol_warnings(root, whole, saved=False) == []


def test_tinyface_protocol_files_found_in_root_or_testing_set(tinyface_root, tinyface_protocol_dir):
    root, _ = tinyface_root
    with pytest.raises(FileNotFoundError, match=PROBE_MAT):
        load_tinyface(root)
    for name in (PROBE_MAT, GALLERY_MAT):
        shutil.copy(tinyface_protocol_dir / name, root / "Testing_Set" / name)
    a = load_tinyface(root)
    b = load_tinyface(root, protocol_dir=tinyface_protocol_dir)
    assert a.paths.tolist() == b.paths.tolist() and a.identities.tolist() == b.identities.tolist()
    with pytest.raises(FileNotFoundError, match="Testing_Set"):
        load_tinyface(root / "Training_Set")


def test_tinyface_protocol_keeps_test_roles_and_splits_train(tinyface_root, tinyface_protocol_dir):
    root, _ = tinyface_root
    t = load_tinyface(root, protocol_dir=tinyface_protocol_dir)
    p = make_protocol(t, seed=3, val_fraction=0.6)
    test_rows = np.isin(t.roles, TEST_ROLES)
    assert p.table.roles[test_rows].tolist() == t.roles[test_rows].tolist()
    train_roles = p.table.roles[~test_rows]
    assert set(train_roles.tolist()) <= set(TRAIN_ROLES)
    assert {"val_probe", "val_gallery"} <= set(train_roles.tolist())


# ----------------------------------------------------------------------------------------------- protocol


def _people(table: FaceTable, *roles: str) -> set[str]:
    return set(table.identities[np.isin(table.roles, roles)].tolist())


def test_protocol_roles_and_splits(face_folders):
    t = load_folders(face_folders)
    p = make_protocol(t, seed=7, test_fraction=0.5, val_fraction=0.5)
    pt = p.table
    assert (pt.paths == t.paths).all() and (pt.identities == t.identities).all()
    assert "" not in set(pt.roles.tolist())
    test_people, train_people = _people(pt, *TEST_ROLES), _people(pt, *TRAIN_ROLES)
    assert not test_people & train_people  # identity-disjoint
    assert test_people | train_people == set(PERSON_COUNTS)
    assert len(test_people) == round(len(PERSON_COUNTS) * 0.5)
    val_people = _people(pt, "val_gallery", "val_probe", "val_distractor")
    for prefix, people in (("", test_people), ("val_", val_people)):
        assert people
        for person in people:
            roles = pt.roles[pt.identities == person].tolist()
            if PERSON_COUNTS[person] == 1:
                assert roles == [f"{prefix}distractor"]
            else:
                assert roles.count(f"{prefix}gallery") == 1
                assert roles.count(f"{prefix}probe") == PERSON_COUNTS[person] - 1
    assert val_people < train_people and not val_people & test_people
    assert _people(pt, "train") == train_people - val_people
    c = p.counts()
    assert c["n_probes"] + c["n_gallery"] == sum(PERSON_COUNTS[x] for x in test_people)
    assert c["n_enrolled"] == sum(PERSON_COUNTS[x] > 1 for x in test_people)


def test_protocol_no_val_split(face_folders):
    p = make_protocol(load_folders(face_folders), seed=1, val_fraction=0)
    assert not set(p.table.roles.tolist()) & {"val_gallery", "val_probe", "val_distractor"}
    assert "train" in set(p.table.roles.tolist())


def test_protocol_seeded(face_folders):
    t = load_folders(face_folders)
    a = make_protocol(t, seed=11)
    b = make_protocol(t, seed=11)
    assert a.table.roles.tolist() == b.table.roles.tolist()
    others = [make_protocol(t, seed=s).table.roles.tolist() for s in (12, 13)]
    assert any(o != a.table.roles.tolist() for o in others)
    # a table loaded in another order (shuffled rows) gets the same people split for the same seed
    perm = np.random.default_rng(0).permutation(len(t))
    c = make_protocol(t.select(perm), seed=11)
    assert _people(c.table, *TEST_ROLES) == _people(a.table, *TEST_ROLES)


def test_protocol_save_load_roundtrip(face_folders, tmp_path):
    t = load_folders(face_folders)
    p = make_protocol(t, seed=5, test_fraction=0.4, val_fraction=0.25, name="demo", lowres=16,
                      lowres_apply="probes")
    p.save(tmp_path / "proto")
    q = Protocol.load(tmp_path / "proto")
    assert q.settings() == p.settings()
    assert q.counts() == p.counts()
    assert q.table.paths.tolist() == p.table.paths.tolist()
    assert q.table.identities.tolist() == p.table.identities.tolist()
    assert q.table.roles.tolist() == p.table.roles.tolist()
    # the saved metadata is readable JSON with the counts
    from lookalike.io import read_json

    meta = read_json(tmp_path / "proto" / "protocol.json")
    assert meta["seed"] == 5 and meta["lowres"] == 16 and meta["n_probes"] == p.counts()["n_probes"]


def test_protocol_odd_identities_roundtrip(tmp_path):
    people = ("007", "7", "-100", "1e3", "Doe, John", 'say "cheese"')
    for i, person in enumerate(people):
        (tmp_path / "d" / person).mkdir(parents=True)
        for j in range(2):
            write_synthetic(tmp_path / "d" / person / f"{j}.png", 10 * i + j)
    p = make_protocol(load_folders(tmp_path / "d"), test_fraction=1.0, val_fraction=0)
    p.save(tmp_path / "proto")
    q = Protocol.load(tmp_path / "proto")
    assert sorted(set(q.table.identities.tolist())) == sorted(people)
    assert q.table.paths.tolist() == p.table.paths.tolist()




def test_protocol_roundtrip_with_relative_dataset_path(face_folders, tmp_path, monkeypatch):
    monkeypatch.chdir(face_folders.parent)
    p = make_protocol(load_folders(face_folders.name), seed=2)  # relative paths like "faces/p01/0.png"
    p.save(tmp_path / "runs" / "proto")
    q = Protocol.load(tmp_path / "runs" / "proto")
    assert [os.path.realpath(x) for x in q.table.paths] == [os.path.realpath(x) for x in p.table.paths]


def test_protocol_roundtrip_keeps_notes(face_folders, tmp_path):
    (face_folders / "p05" / "readme.txt").write_text("x")
    p = make_protocol(load_folders(face_folders), seed=5)
    assert p.table.notes == {"skipped_non_image_files": 1}
    p.save(tmp_path / "proto")
    assert Protocol.load(tmp_path / "proto").table.notes == p.table.notes


def test_protocol_lowres_settings(face_folders):
    t = load_folders(face_folders)
    with pytest.raises(ValueError, match="lowres"):
        make_protocol(t, lowres=3)
    with pytest.raises(ValueError, match="lowres_apply"):
        make_protocol(t, lowres=16, lowres_apply="probe")
    with pytest.raises(ValueError, match="lowres"):
        Protocol(t, lowres=0)
    full = make_protocol(t)
    assert not any(full.degraded(r) for r in ("probe", "gallery", "distractor", "val_probe"))
    both = make_protocol(t, lowres=16)
    assert all(both.degraded(r) for r in ("probe", "gallery", "distractor", "val_probe", "val_gallery"))
    probes = make_protocol(t, lowres=16, lowres_apply="probes")
    assert probes.degraded("probe") and probes.degraded("val_probe")
    assert not any(probes.degraded(r) for r in ("gallery", "distractor", "val_gallery", "val_distractor", "train"))
    gallery = make_protocol(t, lowres=16, lowres_apply="gallery")
    assert all(gallery.degraded(r) for r in ("gallery", "distractor", "val_gallery", "val_distractor"))
    assert not any(gallery.degraded(r) for r in ("probe", "val_probe", "train"))


def test_protocol_rejects_bad_tables(face_folders):
    t = load_folders(face_folders)
    partial = FaceTable(t.paths, t.identities, ["probe"] + [""] * (len(t) - 1))
    with pytest.raises(ValueError, match="some images but not others"):
        make_protocol(partial)
    singles = t.select(np.isin(t.identities, [p for p, n in PERSON_COUNTS.items() if n == 1]))
    with pytest.raises(ValueError, match="no probes"):
        make_protocol(singles, test_fraction=1.0)


# ----------------------------------------------------------------------------------------------- io


def test_atomic_write_replaces_only_on_success(tmp_path):
    from lookalike.io import atomic_write

    target = tmp_path / "sub" / "out.txt"
    with atomic_write(target) as f:
        f.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write("half-written")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]  # no temporary files left behind
    with atomic_write(target, "wb") as f:
        f.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"


def test_json_and_npz_helpers(tmp_path):
    from lookalike.io import read_json, save_npz, write_json

    obj = {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "p": Path("/x/y"), "n": None}
    write_json(tmp_path / "o.json", obj)
    assert read_json(tmp_path / "o.json") == {"i": 3, "f": 0.5, "a": [0, 1, 2], "p": "/x/y", "n": None}
    with pytest.raises(TypeError):
        write_json(tmp_path / "bad.json", {"s": {1, 2}})
    assert not (tmp_path / "bad.json").exists()
    save_npz(tmp_path / "a.npz", v=np.eye(3, dtype=np.float32), ids=np.array([1, 2]))
    with np.load(tmp_path / "a.npz") as z:
        np.testing.assert_array_equal(z["v"], np.eye(3))
        np.testing.assert_array_equal(z["ids"], [1, 2])




def test_atomic_write_respects_umask(tmp_path):
    from lookalike.io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "o.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "o.json").stat().st_mode & 0o777 == 0o644


def test_a_damaged_tinyface_protocol_file_is_one_line_naming_it(tmp_path):
    from scipy.io import savemat

    from lookalike.data.tinyface import read_protocol_mat

    names = np.empty((2, 1), object)
    names[0, 0], names[1, 0] = np.array(["1_1.jpg"]), np.array(["2_1.jpg"])
    good = tmp_path / "good.mat"
    savemat(good, {"names": names, "ids": np.array([[1], [2]])})
    assert read_protocol_mat(good, "names", "ids") == (["1_1.jpg", "2_1.jpg"], ["1", "2"])
    data = good.read_bytes()
    (tmp_path / "cut.mat").write_bytes(data[: len(data) // 2])
    (tmp_path / "tiny.mat").write_bytes(data[:100])
    savemat(tmp_path / "frac.mat", {"names": names, "ids": np.array([[1.7], [2]])})
    savemat(tmp_path / "nan.mat", {"names": names, "ids": np.array([[np.nan], [2]])})
    for bad, message in (("cut.mat", "not a readable MATLAB"), ("tiny.mat", "not a readable MATLAB"),
                         ("frac.mat", "not whole numbers"), ("nan.mat", "not whole numbers")):
        with pytest.raises(ValueError, match=message) as e:
            read_protocol_mat(tmp_path / bad, "names", "ids")
        assert str(e.value).startswith(str(tmp_path / bad))


def test_a_file_listed_twice_is_reported_as_listed_twice(tmp_path: Path):
    """A CSV row repeated (the same file, once under two names too) is reported as the same file listed twice, not
    as having "the same bytes as" itself; a copy with the same bytes is still reported as such."""
    from lookalike.data.screen import screen_table

    a, b = write_synthetic(tmp_path / "a.png", 1), write_synthetic(tmp_path / "b.png", 2)
    copy = tmp_path / "copy.png"
    shutil.copy(a, copy)
    s = screen_table(FaceTable([str(a), str(b), str(a), str(b), str(copy)], ["ann", "bob", "ann", "eve", "ann"]),
                     progress=False)
    messages = {(Path(p).name, who, reason): msg for p, who, reason, msg in s.skipped}
    assert messages[("a.png", "ann", "duplicate")] == f"{a}: the same file listed twice"
    assert messages[("b.png", "eve", "label_conflict")] == f"{b}: the same file listed twice (as 'bob' and as 'eve')"
    assert messages[("copy.png", "ann", "duplicate")] == f"{copy}: same bytes as {a}"
