"""Checks every image before a protocol assigns roles, so that a broken or duplicate file never becomes a
person's only gallery image (which would silently set that person's good probes aside).

An image is kept when it is a regular file with a UTF-8 name whose bytes decode (``load_image``); the first
copy of identical bytes is kept. Duplicates: further copies under the *same* identity are dropped; copies
under *different* identities are a label conflict and every copy is dropped, since either label may be
wrong and a kept copy would let a probe match its own bytes. Everything left out is listed, with a reason.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.data.images import ImageError, load_image
from lookalike.data.table import UNSUPPORTED_EXTENSIONS, FaceTable, non_image_reason
from lookalike.matchers.cache import content_key

DUPLICATE_HEADER = ["path", "identity", "same_as", "same_as_identity", "action"]


@dataclass
class Screened:
    """The usable rows of a table, and what was left out."""

    table: FaceTable  # usable rows, in the original order, with the loader's notes and dropped rows
    skipped: list[tuple[str, str, str, str]] = field(default_factory=list)  # (path, identity, reason, message)
    duplicates: list[tuple[str, str, str, str, str]] = field(default_factory=list)  # DUPLICATE_HEADER rows
    keys: np.ndarray | None = None  # content key of each usable row

    def counts(self, embedding: dict[str, int] | None = None) -> dict[str, int]:
        """Images left out by reason (loader and screening), duplicates included; with ``embedding`` (the embedding
        summary's ``skipped``), the images embedding left out too."""
        out: dict[str, int] = {}
        for _, _, reason, _ in [*self.table.dropped, *self.skipped]:
            out[reason] = out.get(reason, 0) + 1
        for reason, n in (embedding or {}).items():
            out[reason] = out.get(reason, 0) + n
        return out

    def left_out(self) -> list[tuple[str, ...]]:
        """(path, identity, reason, message) of every row left out (loader and screening), as text any file takes
        (:func:`printable`)."""
        return [tuple(printable(str(x)) for x in r) for r in (*self.table.dropped, *self.skipped)]


def _repeat(path: str, identity: str, same_as: str, same_as_identity: str) -> str:
    """How a duplicate repeats another row: the same file listed twice (under which names, when they differ), or
    another file with the same bytes."""
    if os.path.realpath(path) != os.path.realpath(same_as):
        return f"same bytes as {same_as}"
    names = f" (as {same_as_identity!r} and as {identity!r})" if identity != same_as_identity else ""
    return f"the same file listed twice{names}"


def printable(path: str) -> str:
    """A file name as text that any UTF-8 file, console or database takes (undecodable bytes as \\xNN)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8: a name read from the file system with no undecodable bytes, a
    request's text with no lone surrogate (JSON allows ``\\ud800``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_file(path: str, known_ok: bool = False, identity: str = "") -> tuple[str, str] | None:
    """None when the file is usable, else (reason, message). ``known_ok`` skips the decode (cache says ok)."""
    if not is_utf8(path) or not is_utf8(identity):
        return "non_utf8_name", f"{printable(path)}: the file or folder name is not valid UTF-8; rename it"
    try:
        st = os.stat(path)
    except OSError as e:
        return "missing", f"{path}: cannot read ({e.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "not_a_regular_file", f"{path}: not a regular file"
    if os.path.splitext(path)[1].lower() in UNSUPPORTED_EXTENSIONS:
        return non_image_reason(Path(path))
    if not os.access(path, os.R_OK):
        return "unreadable", f"{path}: no permission to read"
    if known_ok:
        return None
    try:
        load_image(path)
    except ImageError as e:
        return e.reason, str(e)
    return None


def screen_table(table: FaceTable, known_ok: set[str] | None = None, progress: bool = True) -> Screened:
    """Check every row of ``table`` (see the module docstring); deterministic: rows are visited in order.

    ``known_ok`` holds content keys already known to decode (e.g. from the embedding cache): not decoded again.
    """
    known_ok = known_ok or set()
    n = len(table)
    keep = np.zeros(n, bool)
    keys = np.full(n, "", dtype=object)
    skipped: list[tuple[str, str, str, str]] = []
    first: dict[str, int] = {}  # content key -> first usable row with it
    for i in tqdm(range(n), desc="check images", disable=not progress, leave=False):
        path, identity = str(table.paths[i]), str(table.identities[i])
        problem = check_file(path, known_ok=True, identity=identity)  # cheap checks first: name, type, access
        if problem is None:
            keys[i] = content_key(path)
            if keys[i].startswith("missing:"):
                problem = ("unreadable", f"{path}: cannot read")
            elif keys[i] not in known_ok and keys[i] not in first:
                problem = check_file(path)
        if problem is not None:
            skipped.append((printable(path), printable(identity), *problem))
            continue
        if keys[i] in first:
            continue  # resolved below, once every copy is known
        first[keys[i]] = i
        keep[i] = True
    duplicates: list[tuple[str, str, str, str, str]] = []
    copies: dict[int, list[int]] = {}
    for i in range(n):
        j = first.get(keys[i]) if keys[i] else None
        if j is not None and j != i:
            copies.setdefault(j, []).append(i)
    for j, rows in copies.items():
        conflict = any(table.identities[i] != table.identities[j] for i in rows)
        if conflict:
            keep[j] = False
            i = rows[0]
            duplicates.append((str(table.paths[j]), str(table.identities[j]), str(table.paths[i]),
                               str(table.identities[i]), "dropped: label conflict"))
        for i in rows:
            action = "dropped: label conflict" if conflict else "dropped: duplicate of a kept image"
            duplicates.append((str(table.paths[i]), str(table.identities[i]), str(table.paths[j]),
                               str(table.identities[j]), action))
    for path, identity, same_as, same_as_identity, action in duplicates:
        reason = "label_conflict" if "conflict" in action else "duplicate"
        skipped.append((path, identity, reason, f"{path}: {_repeat(path, identity, same_as, same_as_identity)}"))
    kept = table.select(keep)
    return Screened(kept, skipped, duplicates, keys[keep])
