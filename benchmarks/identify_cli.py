"""One photo identified from the command line against a large gallery: the whole ``lookalike identify`` command.

For each ``--sizes`` N: a SQLite gallery (``--index`` spec) of 200 real LFW faces plus synthetic subjects up to N
(timing only), then ``lookalike identify PHOTO --db G.sqlite --format json`` run ``--repeats`` times as a new
process (wall clock: start-up, opening the gallery, detection, embedding, the gallery's calibration, search). The
first run computes the gallery's calibration and saves it; later runs read it. Prints a Markdown table of seconds.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/identify_cli.py --cache /work/cache/lookalike.sqlite \\
        --sizes 100000 1000000
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enroll_one import gallery_runs, padded_gallery, print_table  # noqa: E402

from lookalike.matchers.cache import EmbeddingCache  # noqa: E402


def run(n: int, spec: str, photos: list[Path], cache: EmbeddingCache, repeats: int, workdir: str | None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        db = Path(tmp) / "g.sqlite"
        faces = padded_gallery(db, n, spec, photos, cache)
        probe = photos[200]
        cmd = [sys.executable, "-m", "lookalike.cli", "identify", str(probe), "--db", str(db), "--format", "json"]
        times, docs = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            times.append(time.perf_counter() - t)
            docs.append(json.loads(out))
        same = all({**d, "timing": None} == {**docs[0], "timing": None} for d in docs)
        stages = docs[-1]["timing"]
    return {"n": faces, "first": times[0], "later": float(np.median(times[1:])) if repeats > 1 else float("nan"),
            "same": same, **stages}


def main() -> None:
    args, rows = gallery_runs(__doc__, 4, run, extra=1)
    print_table(f"One photo, `lookalike identify` as a new process (index {args.index}; seconds; later = median of "
                f"{args.repeats - 1})",
                {"gallery faces": "{n:,}", "first run (calibrates)": "{first:.2f}", "later runs": "{later:.2f}",
                 "of which detect + align": "{detect_align_s:.2f}", "embed": "{embed_s:.2f}",
                 "search": "{search_s:.3f}", "same output every run": "{same}"}, rows)


if __name__ == "__main__":
    main()
