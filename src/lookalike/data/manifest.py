"""CSV manifests: columns ``path,identity`` and optionally ``role``; relative paths are relative to the CSV.

Cells are stripped of surrounding whitespace; rows naming a missing file or something other than a regular
file (a folder, a named pipe) are counted and listed in the table's ``dropped`` rows."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

from lookalike.data.table import BROKEN_LINK, FaceTable, is_broken_link


def read_csv(csv_path: str | Path) -> tuple[set[str], list[dict[str, str | None]]]:
    """(column names, rows) of a UTF-8 CSV file with a header row; a one-line ValueError naming the file when it is
    not UTF-8 text."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            return set(reader.fieldnames or []), list(reader)
    except UnicodeDecodeError as e:
        raise ValueError(f"{csv_path}: not UTF-8 text (byte {e.start}); save the CSV file as UTF-8") from None
    except csv.Error as e:
        raise ValueError(f"{csv_path}: not a readable CSV file ({e})") from None


def load_manifest(csv_path: str | Path) -> FaceTable:
    csv_path = Path(csv_path)
    fields, rows = read_csv(csv_path)
    if not {"path", "identity"} <= fields:
        raise ValueError(f"{csv_path}: manifest needs 'path' and 'identity' columns, has {sorted(fields)}")
    paths, ids, roles = [], [], []
    table = FaceTable([], [])
    for i, row in enumerate(rows, start=2):
        path, identity = (row["path"] or "").strip(), (row["identity"] or "").strip()
        if not path or not identity:
            raise ValueError(f"{csv_path}:{i}: empty path or identity")
        p = Path(path)
        p = p if p.is_absolute() else Path(os.path.normpath(csv_path.parent / p))
        try:
            st = p.stat()
        except OSError:
            if is_broken_link(p):
                table.drop(p, identity, BROKEN_LINK, f"{csv_path}:{i}: {p} is a broken symbolic link")
            else:
                table.drop(p, identity, "missing_files", f"{csv_path}:{i}: {p} does not exist")
            continue
        if not stat.S_ISREG(st.st_mode):  # a folder, a named pipe (would block), a device: never opened
            table.drop(p, identity, "not_a_regular_file", f"{csv_path}:{i}: {p} is not a regular file")
            continue
        paths.append(str(p))
        ids.append(identity)
        roles.append((row.get("role") or "").strip())
    if not paths:
        first = f"{table.dropped[0][3]}; " if table.dropped else ""
        raise ValueError(f"{csv_path}: no existing images listed ({first}a relative path is read from the CSV's "
                         f"folder, {csv_path.parent})")
    return FaceTable(paths, ids, roles, notes=table.notes, dropped=table.dropped)
