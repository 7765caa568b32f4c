"""Saving a gallery's vector files after an enrolment: append the new rows in place vs rewrite the whole matrix.

For galleries of ``--sizes`` faces (random unit vectors, 128-d; timing only), the files are written once, then
``--new`` faces are enrolled ``--repeats`` times and saved with :func:`lookalike.gallery.vectors.write_vectors`:
appended in place (what a gallery does) and rewritten whole (``append=False``, what it did before, and still does
after a removal), each followed by the fsyncs both do. Prints a Markdown table of median seconds per save.

    .venv/bin/python benchmarks/vector_files.py --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lookalike.gallery.vectors import read_vectors, write_vectors  # noqa: E402
from lookalike.matchers.base import l2_normalize  # noqa: E402


def timed_saves(folder: Path, vectors: np.ndarray, n: int, new: int, repeats: int, append: bool) -> list[float]:
    """Seconds of each save of ``new`` more rows, starting from the first ``n`` rows saved."""
    state = {"generation": 1, "matcher": "synthetic", "preprocess": "full", "dim": vectors.shape[1]}
    write_vectors(folder, np.arange(n), vectors[:n], state, lambda: True, append=False)
    out = []
    for r in range(1, repeats + 1):
        m = n + r * new
        t0 = time.perf_counter()
        write_vectors(folder, np.arange(m), vectors[:m], {**state, "generation": r + 1}, lambda: True, append)
        out.append(time.perf_counter() - t0)
    saved = read_vectors(folder)
    assert saved.state["count"] == n + repeats * new and np.array_equal(saved.vectors, vectors[:len(saved.ids)])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--new", type=int, nargs="+", default=[1, 256], help="faces enrolled between saves")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workdir", default=None, help="where the files go (default: a temporary folder)")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    rows = ["| gallery | faces added | rewrite whole (s) | append in place (s) | speedup |", "|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in args.sizes:
            vectors = l2_normalize(rng.standard_normal((n + args.repeats * max(args.new), 128)))
            for new in args.new:
                whole = np.median(timed_saves(Path(tmp) / "whole", vectors, n, new, args.repeats, append=False))
                appended = np.median(timed_saves(Path(tmp) / "append", vectors, n, new, args.repeats, append=True))
                rows.append(f"| {n:,} | {new} | {whole:.3f} | {appended:.4f} | {whole / appended:.0f}x |")
                print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
