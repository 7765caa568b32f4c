"""Output locations, checked before any work: a run's folder (or file) must be writable, and a reused folder
is cleared of the outputs an earlier run wrote there, so that a report never shows stale figures."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lookalike.data.folders import OUTPUT_MARKER
from lookalike.data.table import is_image_file

# What `lookalike benchmark` writes into its --out folder (files and folders); nothing else there is touched.
BENCHMARK_OUTPUTS = ("metrics.json", "report.md", "cmc.png", "fnir_fpir.png", "examples.png", "rankings.npz",
                     "ranked_baseline.csv", "images.csv", "skipped.csv", "duplicates.csv", "set_aside.csv",
                     "disambiguator.npz", "model.lkm", "mining", "protocol")


def _check_writable(folder: Path, what: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lookalike-write-test.")
        os.close(fd)
        os.unlink(tmp)
    except FileExistsError as e:
        raise ValueError(f"{what} {folder}: exists and is not a folder") from e
    except OSError as e:
        raise ValueError(f"{what} {folder}: not writable ({e.strerror or e}); choose another --out") from e


def prepare_output_folder(out: str | Path, keep: list[str | Path] = (),
                          owned: tuple[str, ...] = BENCHMARK_OUTPUTS) -> Path:
    """Check that ``out`` is (or can become) a writable folder, mark it as lookalike output, and remove the
    ``owned`` outputs of an earlier run, except any that contain a path in ``keep`` (e.g. the input)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not (out / OUTPUT_MARKER).exists():
        photos = [f.name for f in out.iterdir() if f.name not in owned and f.is_file() and is_image_file(f)]
        if photos:  # a person's folder of a dataset, say: results written there would be enrolled or lost
            raise ValueError(f"--out {out}: holds photos ({photos[0]}, ...) and is not a lookalike output folder; "
                             "choose a new or empty folder")
    _check_writable(out, "--out")
    keep_abs = [os.path.abspath(k) for k in keep]
    for name in owned:
        target = out / name
        if not target.exists() and not target.is_symlink():
            continue
        t = os.path.abspath(target)
        if any(k == t or k.startswith(t + os.sep) for k in keep_abs):
            continue
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink()
    (out / OUTPUT_MARKER).write_text("written by lookalike; dataset loaders skip folders holding this file\n")
    return out


def check_not_an_input(path: str | Path, option: str, inputs: tuple[tuple[str, str | Path | None], ...]) -> None:
    """A one-line ValueError when the file ``path`` (given as ``option``) that a command writes is one of the
    ``inputs`` ((what, path) pairs; None or "none": absent), which writing it would destroy."""
    real = os.path.realpath(path)
    for what, other in inputs:
        if other is not None and str(other) != "none" and os.path.realpath(other) == real:
            raise ValueError(f"{option} {path}: is the {what}; writing there would destroy it, choose another file")


def check_output_file(path: str | Path, inputs: tuple[tuple[str, str | Path | None], ...] = (), option: str = "--out",
                      example: str = "embeddings.npz") -> Path:
    """Check that ``path`` (given as ``option``) can be written (not a folder, ``example`` naming a file to give
    instead; its folder writable) and is none of the ``inputs`` (:func:`check_not_an_input`) before any work."""
    path = Path(path)
    check_not_an_input(path, option, inputs)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file name such as {path / example}")
    _check_writable(path.parent, f"{option} folder")
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path}: not writable")
    return path
