"""CSV manifests: columns ``path,identity`` and optionally ``role``; relative paths are relative to the CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lookalike.data.table import FaceTable


def load_manifest(csv_path: str | Path) -> FaceTable:
    csv_path = Path(csv_path)
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = set(reader.fieldnames or [])
        if not {"path", "identity"} <= fields:
            raise ValueError(f"{csv_path}: manifest needs 'path' and 'identity' columns, has {sorted(fields)}")
        rows = list(reader)
    paths, ids, roles, missing = [], [], [], 0
    for i, row in enumerate(rows, start=2):
        if not row["path"] or not row["identity"]:
            raise ValueError(f"{csv_path}:{i}: empty path or identity")
        p = Path(row["path"])
        p = p if p.is_absolute() else Path(os.path.normpath(csv_path.parent / p))
        if not p.exists():
            missing += 1
            continue
        paths.append(str(p))
        ids.append(row["identity"])
        roles.append(row.get("role") or "")
    if not paths:
        raise ValueError(f"{csv_path}: no existing images listed")
    return FaceTable(paths, ids, roles, notes={"missing_files": missing} if missing else {})
