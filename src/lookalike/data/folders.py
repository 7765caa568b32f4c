"""Folder-per-identity datasets (LFW, ORL, a user's own gallery): ``root/<identity>/<image>``."""

from __future__ import annotations

import os
from pathlib import Path

from lookalike.data.table import FaceTable, is_hidden, is_image_file, non_image_reason

# Written into every folder lookalike writes results to, so that a later run never enrols its figures as faces.
OUTPUT_MARKER = ".lookalike-output"


def _same(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def load_folders(root: str | Path, exclude: list[str | Path] = ()) -> FaceTable:
    """Every image under ``root/<identity>/`` (one level deep), sorted. Other files, hidden files and folders (a name
    starting with a dot), empty and unreadable identity folders, ``exclude`` folders and lookalike output folders are
    counted and listed in ``dropped``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    table = FaceTable([], [])
    paths, ids = [], []
    try:
        entries = sorted(root.iterdir())
    except OSError as e:
        raise ValueError(f"cannot list the dataset folder {root} ({e.strerror})") from e
    people = []
    for p in entries:
        if is_hidden(p) and p.name != OUTPUT_MARKER:  # .Trashes, .git, macOS's ._ copies: never a person
            table.drop(p, "", "hidden", f"{p}: hidden (its name starts with a dot); not loaded")
        elif p.is_dir():
            people.append(p)
        elif p.name != OUTPUT_MARKER:
            table.drop(p, "", "outside_identity_folder",
                       f"{p}: not in an identity folder (expected root/<identity>/<image>); not loaded")
    for person in people:
        if any(_same(person, Path(x)) for x in exclude) or (person / OUTPUT_MARKER).exists():
            table.drop(person, person.name, "output_folder",
                       f"{person}: a lookalike output folder inside the dataset; not loaded")
            continue
        try:
            files = sorted(person.iterdir())
        except OSError as e:
            table.drop(person, person.name, "unreadable_folder", f"{person}: cannot list ({e.strerror})")
            continue
        if not files:
            table.drop(person, person.name, "empty_folder", f"{person}: an empty identity folder; no one enrolled")
        for f in files:
            if is_hidden(f):
                table.drop(f, person.name, "hidden", f"{f}: hidden (its name starts with a dot); not loaded")
            elif f.is_file() and is_image_file(f):
                paths.append(str(f))
                ids.append(person.name)
            else:
                reason, msg = non_image_reason(f)
                table.drop(f, person.name, "skipped_non_image_files" if reason == "non_image_file" else reason, msg)
    if not paths:
        raise ValueError(f"no images found in identity folders under {root} (expected root/<identity>/<image>)")
    return FaceTable(paths, ids, notes=table.notes, dropped=table.dropped)
