"""``lookalike gallery backup`` of synthetic SQLite galleries: the copy (database through SQLite's online backup, vector
files copied and stamped), the audit of the copy, and, for comparison, the other way to make the copy's vector files:
rebuilding them from the copied database (``Gallery.rebuild_vectors``). Galleries of ``--sizes`` faces are built as
``changed_vector_files.py`` builds them (128-d unit vectors, one subject each; timing only). Prints a Markdown table of
median seconds.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/gallery_backup.py --sizes 100000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from changed_vector_files import synthetic_gallery  # noqa: E402

from lookalike.gallery import Gallery  # noqa: E402
from lookalike.gallery.backup import _copy_database, backup  # noqa: E402
from lookalike.gallery.vectors import vector_dir  # noqa: E402


def timed_backup(db: Path, out: Path) -> dict:
    t = time.perf_counter()
    report = backup(db, out)
    total = time.perf_counter() - t
    assert report.ok and report.vectors == "copied", report.summary()
    return {"copy": report.seconds, "verify": report.verify.seconds, "total": total,
            "bytes": report.database_bytes + report.vector_bytes}


def timed_rebuild(db: Path, out: Path) -> float:
    """The database copied, then the copy's vector files rebuilt from it (no verify)."""
    t = time.perf_counter()
    _copy_database(db, out, progress=False)
    with Gallery.rebuild_vectors(out):
        pass
    return time.perf_counter() - t


def clear(out: Path) -> None:
    out.unlink(missing_ok=True)
    shutil.rmtree(vector_dir(out), ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="folder for the temporary galleries")
    args = ap.parse_args()
    print("| faces | gallery size (MB) | backup: copy (s) | audit of the copy (s) | whole backup (s) "
          "| database copy + vector files rebuilt instead (s) |\n|---|---|---|---|---|---|")
    for n in args.sizes:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            db, out = Path(tmp) / "g.sqlite", Path(tmp) / "b.sqlite"
            synthetic_gallery(db, n)
            runs, rebuilds = [], []
            for _ in range(args.repeats):
                clear(out)
                runs.append(timed_backup(db, out))
                clear(out)
                rebuilds.append(timed_rebuild(db, out))
            med = {k: float(np.median([r[k] for r in runs])) for k in ("copy", "verify", "total")}
            print(f"| {n:,} | {runs[0]['bytes'] / 1e6:.0f} | {med['copy']:.2f} | {med['verify']:.2f} "
                  f"| {med['total']:.2f} | {float(np.median(rebuilds)):.2f} |", flush=True)


if __name__ == "__main__":
    main()
