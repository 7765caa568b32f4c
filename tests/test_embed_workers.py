"""Embedding worker processes: a program whose main module they cannot import embeds in its own process or fails
with one line, never restarting workers for ever."""

from __future__ import annotations

import signal
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


def _start_embedding(tmp_path: Path, n: int = 40) -> tuple[subprocess.Popen, list[int]]:
    """``lookalike embed`` with two workers in its own process group, once its worker processes exist:
    (the process, the workers' pids)."""
    import os
    import time

    folder = tmp_path / "people"
    for i in range(n):  # a folder per person, as the command line reads datasets
        (folder / f"p{i % 8}").mkdir(parents=True, exist_ok=True)
        write_synthetic(folder / f"p{i % 8}" / f"{i}.png", i, (64, 64))
    cmd = [sys.executable, "-m", "lookalike.cli", "embed", "--data", str(folder), "--matcher", "torch", "--workers",
           "2", "--cache", "none", "--out", str(tmp_path / "e.npz"), "--no-progress"]
    # Ctrl-C's default action in the command, as a shell gives it: a child inherits an ignored SIGINT, and some full
    # test runs had left pytest's own SIGINT ignored (seen as SIG_IGN in one run in three, from no test's own code)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        kids = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "spawn_main"], capture_output=True,
                              text=True).stdout.split()
        if len(kids) >= 2:
            return proc, [int(k) for k in kids]
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, 9)
    raise AssertionError(f"no workers started: {proc.stderr.read()[-2000:]}")


def _gone(pids: list[int], seconds: float = 10) -> bool:
    import os
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = []
        for p in pids:
            try:
                os.kill(p, 0)
                alive.append(p)
            except ProcessLookupError:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_while_workers_start_gives_one_line(tmp_path: Path):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) just as the workers start: the parent
    stops with one line, no worker prints a traceback, none is left behind."""
    import os
    import signal

    proc, workers = _start_embedding(tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines() == ["lookalike: interrupted; nothing was kept (--cache none): a rerun starts "
                                        "again"], err[-2000:]
    assert _gone(workers)


def test_workers_exit_when_the_command_is_killed_or_terminated(tmp_path: Path):
    import os
    import signal

    proc, workers = _start_embedding(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # nothing can run in the parent: the workers notice it is gone
    proc.wait(timeout=30)
    assert _gone(workers)
    (tmp_path / "again").mkdir()
    proc, workers = _start_embedding(tmp_path / "again")
    os.kill(proc.pid, signal.SIGTERM)  # a service manager stopping it: as Ctrl-C, one line
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143 and err.strip().startswith("lookalike: interrupted") and "Traceback" not in err
    assert _gone(workers)


def test_ctrl_c_closes_the_progress_bar_and_says_what_a_rerun_does(tmp_path: Path, capsys, monkeypatch):
    """Ctrl-C while embedding: the bar is closed (its line ended), so the interrupted message starts on a line of its
    own; train's message says what is kept (the cache's embeddings) and that fitting starts again."""
    import numpy as np
    import pytest

    import lookalike.embed as embed
    from lookalike.cli import build_parser, interrupted_message
    from lookalike.matchers.align import FaceAligner

    def interrupted(batch):
        raise KeyboardInterrupt

    monkeypatch.setattr(embed, "_init_worker", lambda *a, **k: None)
    monkeypatch.setattr(embed, "_process", interrupted)
    paths = [str(write_synthetic(tmp_path / f"{i}.png", i)) for i in range(3)]
    with pytest.raises(KeyboardInterrupt) as caught:  # held, as the command's handler holds it while it prints
        embed.embed_paths(np.array(paths), "dlib", FaceAligner(), workers=1, progress=True)
    assert capsys.readouterr().err.endswith("\n") and caught.value is not None
    args = build_parser().parse_args(["train", "--data", "d", "--model", "m.lkm", "--cache", "c.sqlite"])
    message = interrupted_message(args)
    assert "rerun to resume" not in message and "embeddings of finished batches in the cache c.sqlite" in message
    assert "fits the model again (no model was written)" in message
