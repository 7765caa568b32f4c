"""Two processes enrolling into one gallery at once (one of them also removing a subject) while a third searches
without pause: does the searching process, catching up on what they add, end holding exactly what a fresh load
holds? Prints the answer, how often it had to reload instead, and its searches.

    .venv/bin/python benchmarks/concurrent_followers.py --cache /work/cache/lookalike.sqlite \\
        --db 'postgresql:///test?schema=followers_1'     # or --db /tmp/followers/g.sqlite (a new gallery)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np

from lookalike.gallery import Gallery
from lookalike.matchers.cache import EmbeddingCache

SEED, PER_WRITER = 10, 80


def photos(data: str) -> list[Path]:
    return sorted(Path(data).glob("*/*_0001.jpg"))[:SEED + 2 * PER_WRITER]


def writer(db: str, data: str, cache: str, part: int) -> None:
    mine = photos(data)[SEED + part * PER_WRITER:SEED + (part + 1) * PER_WRITER]
    with Gallery.open(db) as g:
        for i, p in enumerate(mine):
            if part == 1 and i == PER_WRITER // 2:
                g.remove(photos(data)[3].parent.name)  # a removal in the middle: the follower must reload
            g.enroll([str(p)], [p.parent.name], cache=EmbeddingCache(cache), progress=False, workers=1)


def follower(db: str, stop, out) -> None:
    g = Gallery.open(db)
    loads, real = [], g._load
    g._load = lambda *a, **k: (loads.append(1), real(*a, **k))[1]
    searches = 0
    while not stop.is_set():
        g.search(np.asarray(g.vectors_[:1]), k=5)
        searches += 1
    g.search(np.asarray(g.vectors_[:1]), k=5)
    with Gallery.open(db) as fresh:
        same = (np.array_equal(g.image_ids_, fresh.image_ids_) and np.array_equal(g.vectors_, fresh.vectors_)
                and list(g.subjects_) == list(fresh.subjects_) and list(g.paths_) == list(fresh.paths_))
        out.put({"same_as_a_fresh_load": same, "reloads": len(loads), "searches": searches,
                 "rows": len(g.image_ids_)})
    g.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="a new gallery: SQLite path or PostgreSQL URL")
    ap.add_argument("--data", default="../shared/data/lfw")
    ap.add_argument("--cache", default="cache/lookalike.sqlite")
    args = ap.parse_args()
    seed = photos(args.data)[:SEED]
    with Gallery.create(args.db, matcher="torch") as g:
        g.enroll([str(p) for p in seed], [p.parent.name for p in seed], cache=EmbeddingCache(args.cache),
                 progress=False, workers=1)
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    f = ctx.Process(target=follower, args=(args.db, stop, out))
    f.start()
    time.sleep(3)
    ws = [ctx.Process(target=writer, args=(args.db, args.data, args.cache, i)) for i in (0, 1)]
    for w in ws:
        w.start()
    for w in ws:
        w.join()
    stop.set()
    print(out.get(timeout=300))
    f.join()


if __name__ == "__main__":
    main()
