"""Memory of a process that opens a large gallery and enrols into it (the service's engine, `lookalike enroll`).

For each ``--sizes`` N: a SQLite gallery with the ``--index`` spec (200 real LFW faces plus synthetic subjects up to
N, timing and memory only) is built and closed; then a new process opens it, searches once, enrols ``--repeats``
real faces one at a time (each followed by a search) and reports its resident memory (VmRSS) after opening, after
the enrolments, and its peak. Run it with the previous version's code (``PYTHONPATH=<checkout>/src``) for the
reference.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/enrol_memory.py --cache /work/cache/lookalike.sqlite --sizes 1000000
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enroll_one import gallery_runs, padded_gallery, print_table  # noqa: E402

from lookalike.matchers.cache import EmbeddingCache  # noqa: E402

CHILD = """
import json, resource, sys
from pathlib import Path
import numpy as np
from lookalike.gallery import Gallery
from lookalike.matchers.cache import EmbeddingCache

def rss():
    return next(int(x.split()[1]) // 1024 for x in open("/proc/self/status") if x.startswith("VmRSS"))

db, cache, photos = sys.argv[1], EmbeddingCache(sys.argv[2]), sys.argv[3:]
g = Gallery.open(db)
g.search(np.asarray(g.vectors_[:1]), k=5)
opened = rss()
for p in photos:
    g.enroll([p], [Path(p).parent.name], cache=cache, progress=False, workers=1)
    g.search(np.asarray(g.vectors_[:1]), k=5)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
print(json.dumps({"opened": opened, "enrolled": rss(), "peak": peak}))
"""


def run(n: int, spec: str, photos: list[Path], cache: EmbeddingCache, repeats: int, workdir: str | None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        db = Path(tmp) / "g.sqlite"
        faces = padded_gallery(db, n, spec, photos, cache)
        child = [sys.executable, "-c", CHILD, str(db), str(cache.path), *map(str, photos[200:200 + repeats])]
        out = subprocess.run(child, capture_output=True, text=True, check=True)
        return {"n": faces, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    args, rows = gallery_runs(__doc__, 3, run)
    print_table(f"A process opening the gallery and enrolling {args.repeats} faces (index {args.index}; VmRSS, MB)",
                {"gallery faces": "{n:,}", "after opening and a search": "{opened}",
                 "after the enrolments": "{enrolled}", "peak": "{peak}"}, rows)


if __name__ == "__main__":
    main()
