"""Embedding worker processes: a program whose main module they cannot import embeds in its own process or fails
with one line, never restarting workers for ever."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import write_synthetic

SCRIPT = """
from lookalike.embed import embed_paths
import glob, sys
paths = sorted(glob.glob(sys.argv[-1] + "/*.png"))
r = embed_paths(paths, "torch", workers=2, cache=None, progress=False, batch_size=4)
print("embedded", r.summary()["images"], "ok", r.summary()["ok"])
"""


def _images(tmp_path: Path, n: int = 10) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(n):
        write_synthetic(folder / f"{i}.png", i, (64, 64))
    return folder


def test_script_from_standard_input_embeds_in_its_own_process(tmp_path: Path):
    folder = _images(tmp_path)
    out = subprocess.run([sys.executable, "-", str(folder)], input=SCRIPT, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "embedded 10 ok 10" in out.stdout and "Traceback" not in out.stderr


def test_unguarded_script_fails_fast_with_one_clear_error(tmp_path: Path):
    """A script without ``if __name__ == "__main__":`` cannot start spawned workers: a WorkerError, not a hang."""
    folder = _images(tmp_path)
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(folder)], capture_output=True, text=True, timeout=240)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("lookalike.embed.WorkerError:") and "workers=1" in last
