"""A bad-input corpus, generated on the fly (no binaries in the repository): every kind of broken image and
odd file beside good synthetic faces, in a folder-per-identity dataset and a CSV manifest.

``build_corpus(root)`` returns a :class:`Corpus`: the dataset folder, a manifest, and for every bad file the
reason lookalike must report for it.
"""

from __future__ import annotations

import csv
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_SIZE = (92, 112)  # ORL-like: the default aligner's centred-square fallback embeds these


def good_image(path: Path, seed: int) -> Path:
    """A distinct synthetic greyscale face-sized PNG per seed."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (GOOD_SIZE[1], GOOD_SIZE[0]), dtype=np.uint8), "L").save(path)
    return path


def png_header(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def truncated_jpeg(path: Path) -> Path:
    rng = np.random.default_rng(99)
    Image.fromarray(rng.integers(0, 256, (160, 200, 3), dtype=np.uint8)).save(path, "JPEG", quality=90)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@dataclass
class Corpus:
    folder: Path  # root/<identity>/<image>
    manifest: Path  # the same files (and a few more bad rows) as a CSV
    bad: dict[str, str] = field(default_factory=dict)  # file path (printable) -> expected reason
    people: dict[str, int] = field(default_factory=dict)  # identity -> usable images
    fifo: Path | None = None


def build_corpus(root: Path, people: int = 10, per_person: int = 4, seed: int = 0) -> Corpus:
    """``people`` good identities with ``per_person`` images each, plus one bad file of every kind."""
    folder = root / "faces"
    c = Corpus(folder, root / "manifest.csv")
    s = seed * 1000
    for p in range(people):
        d = folder / f"person{p:02d}"
        d.mkdir(parents=True)
        for i in range(per_person):
            good_image(d / f"{i}.png", s)
            s += 1
        c.people[d.name] = per_person
    p0, p1, p2 = (folder / f"person{p:02d}" for p in range(3))

    def bad(path: Path, reason: str) -> Path:
        c.bad[os.fsencode(path).decode("utf-8", "backslashreplace")] = reason
        return path

    bad(p0 / "zero.jpg", "empty").write_bytes(b"")
    bad(truncated_jpeg(p0 / "cut.jpg"), "truncated")
    bad(p0 / "notes.jpg", "unreadable").write_text("this is not a JPEG\n" * 20)
    Image.new("RGB", (1, 1)).save(bad(p1 / "dot.png", "too_small"))
    bad(p1 / "bomb.png", "too_large").write_bytes(png_header(20000, 20000))
    bad(p1 / "photo.heic", "unsupported_format").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    bad(p2 / "readme.txt", "skipped_non_image_files").write_text("not an image")
    # the same bytes twice under one person (one copy kept), and under two people (a label conflict)
    (p2 / "dup.png").write_bytes((p2 / "0.png").read_bytes())
    bad(p2 / "dup.png", "duplicate")
    conflict = folder / f"person{people - 1:02d}" / "0.png"
    (p1 / "conflict.png").write_bytes(conflict.read_bytes())
    bad(p1 / "conflict.png", "label_conflict")
    bad(conflict, "label_conflict")
    c.people[conflict.parent.name] -= 1
    name = os.fsdecode(os.fsencode(str(p2)) + b"/caf\xe9.png")  # Latin-1 bytes: not UTF-8
    good_image(Path(name), 12345)
    bad(Path(name), "non_utf8_name")
    if hasattr(os, "mkfifo"):
        c.fifo = root / "pipe.png"
        os.mkfifo(c.fifo)
    # a trailing space in the manifest's identity is the same person
    rows = [["path", "identity"]]
    for d in sorted(folder.iterdir()):
        for f in sorted(d.iterdir()):
            try:
                rel = os.path.relpath(f, root)
                rel.encode("utf-8")
            except UnicodeEncodeError:
                continue  # a CSV cannot hold a non-UTF-8 name
            ident = d.name + (" " if f.name == "1.png" else "")
            rows.append([rel, ident])
    rows.append(["faces/person00/gone.png", "person00"])
    if c.fifo:
        rows.append(["pipe.png", "person03"])
    with open(c.manifest, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return c


def shaped_dataset(root: Path, counts: list[int], seed: int = 0) -> Path:
    """Good images only: ``counts[i]`` images of person i."""
    s = seed * 1000
    for p, n in enumerate(counts):
        d = root / f"p{p:02d}"
        d.mkdir(parents=True)
        for i in range(n):
            good_image(d / f"{i}.png", s)
            s += 1
    return root
