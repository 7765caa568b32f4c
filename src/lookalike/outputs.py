"""Output locations, checked before any work: a run's folder (or file) must be writable. A run writes into a staging
folder inside its folder and replaces the outputs an earlier run wrote there only when it completes, so a report
never shows stale figures and an interrupted rerun leaves the earlier run's outputs as they were."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from lookalike.data.folders import OUTPUT_MARKER
from lookalike.data.table import is_image_file

STAGING = ".partial"  # where a run in progress writes, inside its --out folder

# What `lookalike benchmark` writes into its --out folder (files and folders); nothing else there is touched.
BENCHMARK_OUTPUTS = ("metrics.json", "report.md", "cmc.png", "fnir_fpir.png", "examples.png", "rankings.npz",
                     "ranked_baseline.csv", "images.csv", "skipped.csv", "duplicates.csv", "set_aside.csv",
                     "disambiguator.npz", "model.lkm", "mining", "protocol")


def _check_writable(folder: Path, what: str, option: str = "--out") -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".lookalike-write-test.")
        os.close(fd)
        os.unlink(tmp)
    except FileExistsError as e:
        raise ValueError(f"{what} {folder}: exists and is not a folder") from e
    except OSError as e:
        raise ValueError(f"{what} {folder}: not writable ({e.strerror or e}); choose another {option}") from e


def prepare_output_folder(out: str | Path, keep: list[str | Path] = (),
                          owned: tuple[str, ...] = BENCHMARK_OUTPUTS) -> Path:
    """Check that ``out`` is (or can become) a writable folder and mark it as lookalike output; remove what an
    interrupted run left (its staging folder, half-written temporary files of the ``owned`` outputs); return the
    empty staging folder the run writes into (:func:`publish_outputs` moves its outputs into ``out``)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and not (out / OUTPUT_MARKER).exists():
        photos = [f.name for f in out.iterdir() if f.name not in owned and f.is_file() and is_image_file(f)]
        if photos:  # a person's folder of a dataset, say: results written there would be enrolled or lost
            raise ValueError(f"--out {out}: holds photos ({photos[0]}, ...) and is not a lookalike output folder; "
                             "choose a new or empty folder")
    _check_writable(out, "--out")
    for name in owned:  # io.atomic_write's temporaries of a write that was killed
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
    staging = out / STAGING
    _remove(staging)
    staging.mkdir()
    (out / OUTPUT_MARKER).write_text("written by lookalike; dataset loaders skip folders holding this file\n")
    return staging


def publish_outputs(staging: Path, keep: list[str | Path] = (), owned: tuple[str, ...] = BENCHMARK_OUTPUTS) -> None:
    """Replace the ``owned`` outputs of the run folder (``staging``'s parent) by those of the completed run in
    ``staging``: one the run did not write is removed (never stale), except any that contain a path in ``keep`` (e.g.
    the input), which the new one is merged into; metrics.json goes last, so a folder whose metrics.json is new holds
    the new run's outputs. Then ``staging`` is removed."""
    out = staging.parent
    keep_abs = [os.path.abspath(k) for k in keep]
    for name in sorted(owned, key=lambda n: n == "metrics.json"):
        new, target = staging / name, out / name
        t = os.path.abspath(target)
        if any(k == t or k.startswith(t + os.sep) for k in keep_abs):
            if new.is_dir():
                shutil.copytree(new, target, dirs_exist_ok=True)
            elif new.exists():
                shutil.copy2(new, target)
            continue
        _remove(target)
        if new.exists() or new.is_symlink():
            os.replace(new, target)
    _remove(staging)


def published_paths(obj, staging: Path):
    """``obj`` (JSON-like) with every path string in ``staging`` pointing to where :func:`publish_outputs` puts it."""
    if isinstance(obj, dict):
        return {k: published_paths(v, staging) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(published_paths(v, staging) for v in obj)
    if isinstance(obj, str) and (obj == str(staging) or obj.startswith(str(staging) + os.sep)):
        return str(staging.parent) + obj[len(str(staging)):]
    return obj


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()


def check_not_an_input(path: str | Path, option: str, inputs: tuple[tuple[str, str | Path | None], ...]) -> None:
    """A one-line ValueError when the file ``path`` (given as ``option``) that a command writes is one of the
    ``inputs`` ((what, path) pairs; None or "none": absent), which writing it would destroy."""
    real = os.path.realpath(path)
    for what, other in inputs:
        if other is not None and str(other) != "none" and os.path.realpath(other) == real:
            from lookalike.gallery import display_db  # a database URL is shown without its password

            raise ValueError(f"{option} {display_db(other)}: is the {what}; writing there would destroy it, choose "
                             "another file")


def check_not_an_image_name(path: str | Path, option: str, writes: str, example: str) -> None:
    """A one-line ValueError when the file ``path`` (given as ``option``) that a command ``writes`` (what it writes,
    for the message) has an image file's extension: a slip that would overwrite a photo (one enrolled or trained on)
    with the output."""
    if is_image_file(Path(path)):
        raise ValueError(f"{option} {path}: names an image file; {writes} there: give a name such as {example}")


def check_output_file(path: str | Path, inputs: tuple[tuple[str, str | Path | None], ...] = (), option: str = "--out",
                      example: str = "embeddings.npz") -> Path:
    """Check that ``path`` (given as ``option``) can be written (not a folder, ``example`` naming a file to give
    instead; its folder writable) and is none of the ``inputs`` (:func:`check_not_an_input`) before any work."""
    path = Path(path)
    check_not_an_input(path, option, inputs)
    if path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; give a file name such as {path / example}")
    _check_writable(path.parent, f"{option} folder", option)
    if path.exists() and not os.access(path, os.W_OK):
        raise ValueError(f"{option} {path}: not writable")
    return path
