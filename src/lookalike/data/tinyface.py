"""TinyFace (Cheng, Zhu, Gong, ACCV 2018), driven by its official probe/gallery ``.mat`` files.

Layout: ``Training_Set/<id>/*``, ``Testing_Set/Probe/*``, ``Testing_Set/Gallery_Match/*``,
``Testing_Set/Gallery_Distractor/*``. Distractors are labelled ``-100`` as in the official script.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike.data.table import FaceTable, is_image_file

DISTRACTOR_ID = "-100"
PROBE_MAT = "probe_img_ID_pairs.mat"
GALLERY_MAT = "gallery_match_img_ID_pairs.mat"


def read_protocol_mat(path: str | Path, names_key: str, ids_key: str) -> tuple[list[str], list[str]]:
    """File names and identity labels from one official ``.mat`` file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as e:  # scipy raises OSError, ValueError, IndexError, MatReadError... on a damaged file
        raise ValueError(f"{path}: not a readable MATLAB protocol file ({type(e).__name__}: {e})") from None
    if names_key not in mat or ids_key not in mat:
        raise ValueError(f"{path}: expected keys {names_key!r} and {ids_key!r}")
    names = []
    for n in np.asarray(mat[names_key]).ravel():
        cell = np.asarray(n).ravel()
        if cell.size == 0 or not str(cell[0]).strip():
            raise ValueError(f"{path}: an empty file name in {names_key!r} (entry {len(names) + 1})")
        names.append(str(cell[0]))
    raw = np.asarray(mat[ids_key], np.float64).ravel()
    if not np.isfinite(raw).all() or (raw != np.round(raw)).any():
        raise ValueError(f"{path}: {ids_key!r} holds identity labels that are not whole numbers")
    ids = [str(int(i)) for i in raw]
    if len(names) != len(ids):
        raise ValueError(f"{path}: {len(names)} names but {len(ids)} ids")
    return names, ids


def _listed(folder: Path, names: list[str], ids: list[str], role: str) -> tuple[list, list, list, list]:
    """(paths, ids, roles, missing) where ``missing`` holds (path, id) of listed files that are absent."""
    paths, out_ids, roles, missing = [], [], [], []
    for n, i in zip(names, ids, strict=True):
        p = folder / n
        if p.is_file():
            paths.append(str(p))
            out_ids.append(i)
            roles.append(role)
        else:
            missing.append((str(p), i))
    return paths, out_ids, roles, missing


def load_tinyface(root: str | Path, protocol_dir: str | Path | None = None) -> FaceTable:
    """The TinyFace test protocol (probe, gallery, distractor) plus the training set as role ``train``.

    ``protocol_dir`` holds the two ``.mat`` files (default: ``root``, then ``root/Testing_Set``).
    Listed files that are absent are counted in ``notes`` and skipped.
    """
    root = Path(root)
    test = root / "Testing_Set"
    if not test.is_dir():
        raise FileNotFoundError(f"{root}: not a TinyFace folder (no Testing_Set/)")
    candidates = [Path(protocol_dir)] if protocol_dir else [root, test]
    pdir = next((d for d in candidates if (d / PROBE_MAT).exists() and (d / GALLERY_MAT).exists()), None)
    if pdir is None:
        raise FileNotFoundError(f"{PROBE_MAT} and {GALLERY_MAT} not found in {[str(c) for c in candidates]}")
    probe = _listed(test / "Probe", *read_protocol_mat(pdir / PROBE_MAT, "probe_set", "probe_ids"), "probe")
    gallery = _listed(test / "Gallery_Match", *read_protocol_mat(pdir / GALLERY_MAT, "gallery_set", "gallery_ids"),
                      "gallery")
    paths, ids, roles = probe[0] + gallery[0], probe[1] + gallery[1], probe[2] + gallery[2]
    distractors = sorted(p for p in (test / "Gallery_Distractor").glob("*") if p.is_file() and is_image_file(p))
    paths += [str(p) for p in distractors]
    ids += [DISTRACTOR_ID] * len(distractors)
    roles += ["distractor"] * len(distractors)
    train = root / "Training_Set"
    if train.is_dir():
        for person in sorted(p for p in train.iterdir() if p.is_dir()):
            for f in sorted(person.iterdir()):
                if f.is_file() and is_image_file(f):
                    paths.append(str(f))
                    ids.append(f"train:{person.name}")
                    roles.append("train")
    if not probe[0] or not gallery[0]:
        raise ValueError(f"{root}: no probe or gallery images found for the official lists")
    table = FaceTable(paths, ids, roles)
    for reason, missing in (("missing_probe_files", probe[3]), ("missing_gallery_files", gallery[3])):
        for p, i in missing:
            table.drop(p, i, reason, f"{p}: listed in the official protocol but absent")
    return table
