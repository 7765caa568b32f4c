"""Small file helpers: atomic writes and JSON."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place only when the block succeeds; a failed
    write (a full disk, say) is a :class:`WriteError` naming ``path``, and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise WriteError(path, e) from e
        raise


class WriteError(OSError):
    """A file that could not be written: its path and why, in one line (a full disk said as such)."""

    def __init__(self, path: str | Path, cause: OSError) -> None:
        full = cause.errno == errno.ENOSPC or ("written" in str(cause) and _nearly_full(Path(path).parent))
        why = "the disk is full" if full else (cause.strerror or str(cause))
        super().__init__(cause.errno, f"cannot write {path}: {why}")
        self.path = Path(path)

    def __str__(self) -> str:
        return self.strerror


def _nearly_full(folder: Path) -> bool:
    """Under 1 MB free where ``folder`` is (numpy's short writes say only "N requested and M written")."""
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, default=_json_default)
        f.write("\n")


def read_json(path: str | Path) -> Any:
    with open(path) as f:
        return json.load(f)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    with atomic_write(path, "wb") as f:
        np.savez_compressed(f, **arrays)
