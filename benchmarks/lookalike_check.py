"""The look-alike name check at gallery sizes of millions: the service's ``_check_lookalike`` (made on every new
subject, under the enrolment lock) and ``Gallery.enroll``'s name warnings.

For each of ``--sizes`` subjects (SQLite; names ``Person 0000001``, every tenth ``Zoë 0000010``: timing only), a
schema-7 gallery is made with ``--reference``'s code (another checkout's ``src``: the version that read and keyed
every live name on each check), its subjects inserted directly. Each check then runs in a fresh process, ``--repeats``
times (median), with the reference's code on that gallery and with this checkout's on a copy, which its first open
migrates (schema 8: each subject's ``lookalike_key`` stored, indexed; that open is timed too). Timed: the service's
check of a new name that looks like no subject (passes) and of one that looks like a subject (``person 0000001``:
refused, 409); ``Gallery.enroll`` of one missing photo under a new name (the name warnings, and the photo skipped).
Prints a Markdown table of median milliseconds (the migration in seconds).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/lookalike_check.py --reference ../main/src \\
        --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MAKE = """
import sys
from lookalike.gallery import Gallery
Gallery.create(sys.argv[1], matcher="torch").close()
"""

MIGRATE = """
import json, sys, time
from lookalike.gallery import open_store
t = time.perf_counter()
s = open_store(sys.argv[1])
seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "schema": s.schema_version()}))
s.close()
"""

CHECK = """
import json, statistics, sys, time, types
from lookalike.gallery import Gallery
from lookalike.service.core import Service, ServiceError

db, repeats = sys.argv[1], int(sys.argv[2])
g = Gallery.open(db)
e = types.SimpleNamespace(gallery=g)  # what the check reads of the service's engine


def refused(name):
    try:
        Service._check_lookalike(e, name)
    except ServiceError as err:
        assert err.code == "name_looks_alike", err.code
        return True
    return False


def median(f, expected):
    seconds = []
    for _ in range(repeats):
        t = time.perf_counter()
        assert f() == expected
        seconds.append(time.perf_counter() - t)
    return statistics.median(seconds)


out = {"schema": g.store.schema_version(),
       "new name": median(lambda: refused("Nobody New"), False),
       "look-alike": median(lambda: refused("person 0000001"), True),
       "enroll": median(lambda: g.enroll(["/nonexistent/new.jpg"], ["Nobody New"], workers=1, progress=False)
                        .name_warnings, [])}
g.close()
print(json.dumps(out))
"""


def run(code: str, src: Path, *args: str) -> dict:
    """``code`` in a fresh process with the package in ``src``; its last line's JSON."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def name(i: int) -> str:
    return f"Zoë {i:07d}" if i % 10 == 0 else f"Person {i:07d}"


def old_gallery(db: Path, n: int, reference: Path) -> None:
    """A schema-7 gallery at ``db`` made by the reference code, holding ``n`` subjects without images."""
    run(MAKE + "print('{}')", reference, str(db))
    con = sqlite3.connect(db)
    assert con.execute("SELECT schema_version FROM state").fetchone()[0] == 7, "--reference must write schema 7"
    with con:
        con.executemany("INSERT INTO subjects (name, created) VALUES (?, '2026-01-01T00:00:00.000+00:00')",
                        ((name(i),) for i in range(n)))
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="src folder of the code before (schema 7)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            old, new = Path(tmp) / f"old-{n}.sqlite", Path(tmp) / f"new-{n}.sqlite"
            old_gallery(old, n, args.reference)
            shutil.copy(old, new)
            before = run(CHECK, args.reference, str(old), str(args.repeats))
            migrated = run(MIGRATE, ROOT / "src", str(new))
            after = run(CHECK, ROOT / "src", str(new), str(args.repeats))
            assert before["schema"] == 7 and migrated["schema"] == after["schema"] == 8
            rows.append((n, before, after, migrated["seconds"]))
            for p in Path(tmp).iterdir():
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    print("| subjects | check, new name (ms): before | after | check, look-alike (409): before | after "
          "| enroll 1 photo: before | after | migration on first open (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for n, b, a, m in rows:
        ms = [f"{x[k] * 1000:,.2f}" for k in ("new name", "look-alike", "enroll") for x in (b, a)]
        print(f"| {n:,} | {' | '.join(ms)} | {m:.2f} |")


if __name__ == "__main__":
    main()
