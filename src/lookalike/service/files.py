"""Uploaded image bytes kept by the service: files named by their content hash under a data folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lookalike.io import atomic_write

EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif", "webp": ".webp",
              "pnm": ".pgm", "heif": ".heic", "avif": ".avif"}


class ImageFiles:
    """``root/<sha256[:2]>/<sha256>.<ext>``; a file is written atomically (fsync, rename) before the gallery
    records it, so the gallery never names a half-written file. Names come from the content, never a request."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:  # a file in the way, no permission: said at start-up, not as every upload's 500
            if self.root.exists() and not self.root.is_dir():
                raise ValueError(f"the image folder {self.root} is a file, not a folder (--data-dir)")
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"the image folder {self.root} cannot be used: {e.strerror or e}") from None

    def path_for(self, data: bytes, kind: str) -> Path:
        digest = hashlib.sha256(data).hexdigest()
        return self.root / digest[:2] / (digest + EXTENSIONS[kind])

    def put(self, data: bytes, kind: str) -> Path:
        """Store ``data`` (an image of type ``kind``); returns its path (the same for the same bytes)."""
        path = self.path_for(data, kind)
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return path
        with atomic_write(path, "wb") as f:
            f.write(data)
        return path
