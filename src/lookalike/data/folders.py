"""Folder-per-identity datasets (LFW, ORL, a user's own gallery): ``root/<identity>/<image>``."""

from __future__ import annotations

from pathlib import Path

from lookalike.data.table import FaceTable, is_image_file


def load_folders(root: str | Path) -> FaceTable:
    """Every image under ``root/<identity>/`` (one level deep), sorted; other files are counted and skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    paths, ids, skipped = [], [], 0
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(person.iterdir()):
            if f.is_file() and is_image_file(f):
                paths.append(str(f))
                ids.append(person.name)
            else:
                skipped += 1
    if not paths:
        raise ValueError(f"no images found in identity folders under {root} (expected root/<identity>/<image>)")
    return FaceTable(paths, ids, notes={"skipped_non_image_files": skipped} if skipped else {})
