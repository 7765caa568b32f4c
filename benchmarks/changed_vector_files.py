"""Opening a gallery whose vector files were written by another program since lookalike wrote them.

Such files (``state.json``'s stamp of ``vectors.npy`` differs: a restored copy, a touched file) have every row
compared with the database on the next open, not four sampled ones. For galleries of ``--sizes`` faces (SQLite;
synthetic 128-d unit vectors, one subject each: timing only), each open runs in a fresh process after
``vectors.npy``'s modification time was changed (the rows stay the database's, so the open passes and stamps the
files again), ``--repeats`` times with this checkout's code and with ``--reference``'s (another checkout's ``src``,
e.g. the version that compared the rows one by one in a Python loop). Also timed: an open of unchanged files (four
rows checked), alone, the database read that the full check does (``get_embeddings`` of every row, in
``CHECK_BLOCK`` blocks), and ``lookalike gallery verify`` without ``--photos`` (:meth:`Gallery.verify` of a gallery
opened for it, in a fresh process: every row compared, the stored embeddings checked; this checkout only). Prints a
Markdown table of median seconds and the opening processes' peak memory.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/changed_vector_files.py --reference ../main/src \\
        --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lookalike.gallery import Gallery  # noqa: E402
from lookalike.gallery.gallery import CHECK_BLOCK  # noqa: E402
from lookalike.gallery.vectors import read_vectors, vector_dir  # noqa: E402
from lookalike.matchers.base import l2_normalize  # noqa: E402

CHILD = """
import json, resource, sys, time
from lookalike.gallery import Gallery

t = time.perf_counter()
g = Gallery.open(sys.argv[1])
seconds = time.perf_counter() - t
source = g.vectors_source_
g.close()
print(json.dumps({"seconds": seconds, "source": source,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
"""


def synthetic_gallery(db: Path, n: int, seed: int = 0, chunk: int = 50_000) -> None:
    """A SQLite gallery at ``db`` (closed again) of ``n`` random 128-d unit vectors, one subject each."""
    rng = np.random.default_rng(seed)
    with Gallery.create(db, matcher="torch") as g:
        for s in range(0, n, chunk):
            v = l2_normalize(rng.standard_normal((min(chunk, n - s), 128))).astype(np.float32)
            g.add_embeddings([f"synthetic-{s + i:07d}" for i in range(len(v))], v, source="synthetic")


VERIFY = """
import json, sys, time
from lookalike.gallery import Gallery

t = time.perf_counter()
with Gallery.open_for_verify(sys.argv[1]) as g:
    report = g.verify()
print(json.dumps({"seconds": time.perf_counter() - t, "ok": report.ok, "faces": report.faces}))
"""


def timed_verify(db: Path) -> float:
    """Seconds of one verify of ``db`` (opening included) in a fresh process running this checkout's code."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", VERIFY, str(db)], capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["ok"], result
    return result["seconds"]


def touch(db: Path) -> None:
    """Give ``vectors.npy`` another modification time, as a copy restored by another program has."""
    path = vector_dir(db) / "vectors.npy"
    mtime = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(mtime, mtime))


def timed_open(db: Path, src: Path, changed: bool) -> dict:
    """One open of ``db`` in a fresh process running the code in ``src``, after :func:`touch` when ``changed``."""
    if changed:
        touch(db)
        assert read_vectors(vector_dir(db)).changed == ["vectors.npy"]
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", CHILD, str(db)], capture_output=True, text=True, check=True, env=env)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["source"] == "file", result
    return result


def database_read(db: Path) -> float:
    """Seconds to read every row's vector from the store as the full check does (blocks of ``CHECK_BLOCK``)."""
    with Gallery.open(db) as g:
        ids = g.image_ids_.tolist()
        t = time.perf_counter()
        for start in range(0, len(ids), CHECK_BLOCK):
            g.store.get_embeddings(ids[start:start + CHECK_BLOCK], g.matcher_name, g.preprocess)
        return time.perf_counter() - t


def run(n: int, reference: Path, repeats: int, workdir: str | None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        db = Path(tmp) / "g.sqlite"
        t = time.perf_counter()
        synthetic_gallery(db, n)
        built = time.perf_counter() - t
        timed_open(db, ROOT / "src", changed=True)  # warm the page cache for both versions alike
        opens = {name: [timed_open(db, src, changed) for _ in range(repeats)]
                 for name, src, changed in (("unchanged", ROOT / "src", False), ("old", reference, True),
                                            ("new", ROOT / "src", True))}
        row = {name: float(np.median([o["seconds"] for o in runs])) for name, runs in opens.items()}
        peak = max(o["peak_mb"] for runs in opens.values() for o in runs)
        return {"n": n, "built": built, **row, "read": float(np.median([database_read(db) for _ in range(repeats)])),
                "verify": float(np.median([timed_verify(db) for _ in range(repeats)])), "peak": peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, type=Path,
                    help="the src folder of the version to compare with (e.g. ../main/src)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None, help="folder for the temporary galleries")
    args = ap.parse_args()
    rows = ["| gallery | open, files unchanged (s) | open after an outside change: reference (s) | this version (s) "
            "| of which the database read (s) | gallery verify (s) | peak memory of an open (MB) "
            "| gallery built in (s) |",
            "|---|---|---|---|---|---|---|---|"]
    for n in args.sizes:
        r = run(n, args.reference.resolve(), args.repeats, args.workdir)
        rows.append(f"| {n:,} | {r['unchanged']:.2f} | {r['old']:.2f} | {r['new']:.2f} | {r['read']:.2f} "
                    f"| {r['verify']:.2f} | {r['peak']:,} | {r['built']:.0f} |")
        print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
