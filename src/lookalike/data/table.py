"""The one dataset representation: a table of (image path, identity, role)."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROLES = ("", "train", "val_gallery", "val_probe", "val_distractor", "gallery", "probe", "distractor")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".heic", ".heif",
                    ".avif")
# image formats Pillow cannot read without plug-ins: reported with their own reason and a remedy
UNSUPPORTED_EXTENSIONS = (".heic", ".heif", ".avif", ".jxl", ".raw", ".cr2", ".nef", ".dng")
# the reason every loader and identify give a symbolic link to nothing (not "missing": a rerun will not find it)
BROKEN_LINK = "broken_link"


@dataclass
class FaceTable:
    """Parallel arrays of image paths, identity labels and protocol roles ("" = not assigned yet).

    ``notes`` counts what a loader skipped (missing files, files without an image extension, ...);
    ``dropped`` lists those items, as (path, identity, reason, message) rows, for skipped.csv.
    Identities are stripped of surrounding whitespace ("alice " and "alice" are one person).
    """

    paths: np.ndarray
    identities: np.ndarray
    roles: np.ndarray = None  # type: ignore[assignment]
    notes: dict[str, int] = field(default_factory=dict)
    dropped: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.paths = np.asarray(self.paths, dtype=object)
        self.identities = np.asarray([str(i).strip() for i in self.identities], dtype=object)
        if self.roles is None:
            self.roles = np.full(len(self.paths), "", dtype=object)
        self.roles = np.asarray(self.roles, dtype=object)
        if not (len(self.paths) == len(self.identities) == len(self.roles)):
            raise ValueError("paths, identities and roles must have the same length")
        unknown = set(self.roles.tolist()) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; expected some of {ROLES}")

    def __len__(self) -> int:
        return len(self.paths)

    def select(self, mask: np.ndarray) -> FaceTable:
        """Rows where ``mask`` (boolean or index array) holds."""
        return FaceTable(self.paths[mask], self.identities[mask], self.roles[mask], dict(self.notes),
                         list(self.dropped))

    def role(self, *roles: str) -> FaceTable:
        """Rows whose role is one of ``roles``."""
        return self.select(np.isin(self.roles, roles))

    def identity_counts(self) -> Counter:
        return Counter(self.identities.tolist())

    def summary(self) -> dict[str, int]:
        counts = Counter(self.roles.tolist())
        return {"images": len(self), "identities": len(set(self.identities.tolist())),
                **{f"role:{r or 'unassigned'}": n for r, n in sorted(counts.items())}, **self.notes}

    def to_csv(self, path: str | Path) -> None:
        """Write ``path,identity,role`` rows (atomically)."""
        from lookalike.io import atomic_write

        with atomic_write(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "identity", "role"])
            w.writerows(zip(self.paths, self.identities, self.roles, strict=True))

    @classmethod
    def concat(cls, tables: list[FaceTable]) -> FaceTable:
        notes: Counter = Counter()
        for t in tables:
            notes.update(t.notes)
        return cls(np.concatenate([t.paths for t in tables]), np.concatenate([t.identities for t in tables]),
                   np.concatenate([t.roles for t in tables]), dict(notes), [r for t in tables for r in t.dropped])

    def drop(self, path: str, identity: str, reason: str, message: str = "") -> None:
        """Record an item a loader or check left out: counted in ``notes`` and listed in ``dropped``."""
        self.notes[reason] = self.notes.get(reason, 0) + 1
        self.dropped.append((str(path), str(identity), reason, message))


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_hidden(path: Path) -> bool:
    """Whether a folder walker leaves ``path`` out as hidden: its name starts with a dot (``.Trashes``, ``.git``,
    macOS's ``._photo.jpg`` copies), never a person or a photo."""
    return path.name.startswith(".")


def is_broken_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link to nothing (reported as :data:`BROKEN_LINK`)."""
    return path.is_symlink() and not path.exists()


def non_image_reason(path: Path) -> tuple[str, str]:
    """(reason, message) for an entry a loader leaves out: not a regular file (a folder, a broken link, a pipe), or a
    file whose extension is not an image's."""
    if is_broken_link(path):
        return BROKEN_LINK, f"{path}: a broken symbolic link"
    if path.is_dir():
        return "nested_folder", f"{path}: a folder inside an identity folder; images are read one level deep"
    if path.exists() and not path.is_file():
        return "not_a_file", f"{path}: not a regular file (a pipe, socket or device)"
    if path.suffix.lower() in UNSUPPORTED_EXTENSIONS:
        return "unsupported_format", f"{path}: {path.suffix} images are not supported; convert them to JPEG or PNG"
    return "non_image_file", f"{path}: not an image file extension ({', '.join(IMAGE_EXTENSIONS)})"
