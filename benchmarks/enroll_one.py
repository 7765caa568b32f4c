"""Enrolling one face at a time into a large gallery (what the service does for each photo it is sent).

For each ``--sizes`` N: a SQLite gallery with the ``--index`` spec holding 200 real LFW faces plus synthetic
distractor subjects up to N subjects (timing only), searched once (the index is built and saved), then ``--repeats``
single real LFW faces enrolled one by one (``Gallery.enroll``: embedding from the warm cache, the store's
transaction, the vector files appended, the index extended and saved), each followed by a search and by the
gallery's own calibration that an identify without a model needs (``Identifier.calibration``, brought up to date
with the new face), and by the next search of a second gallery object open on the same database (another
process of a service: it catches up on the added face; the same run also times, on a third object, the whole
reload it did before, ``Gallery._load``); then the gallery reopened and searched. Prints a Markdown table of
seconds; the first enrolment of a process also builds what later ones reuse (the subject-code table, the growable
vector buffer, the index checksum).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/enroll_one.py --cache /work/cache/lookalike.sqlite \\
        --sizes 100000 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from identify_latency import pad  # noqa: E402

from lookalike.gallery import Gallery  # noqa: E402
from lookalike.identify import Identifier  # noqa: E402
from lookalike.matchers.cache import EmbeddingCache  # noqa: E402

HEADLINE = "ivf:nlist=1024,storage=PQ128x4fs,nprobe=384,overfetch=8"


def run(n: int, spec: str, photos: list[Path], cache: EmbeddingCache, repeats: int, workdir: str | None) -> dict:
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        db = Path(tmp) / "g.sqlite"
        g = Gallery.create(db, index=spec)
        seed = photos[:200]
        g.enroll([str(p) for p in seed], [p.parent.name for p in seed], cache=cache, progress=False)
        t = time.perf_counter()
        pad(g, n, 0)
        g.search(np.asarray(g.vectors_[:1]), k=5)
        prepared, faces = time.perf_counter() - t, len(g.vectors_)
        ident = Identifier(g)
        ident.calibration()
        other, third = Gallery.open(db), Gallery.open(db)  # another process following the gallery; the old way
        other.search(np.asarray(g.vectors_[:1]), k=5)
        enrol, search, calibrate, follow, reload = [], [], [], [], []
        for p in photos[200:200 + repeats]:
            t = time.perf_counter()
            rep = g.enroll([str(p)], [p.parent.name], cache=cache, progress=False)
            t1 = time.perf_counter()
            g.search(np.asarray(g.vectors_[:1]), k=5)
            t2 = time.perf_counter()
            ident.calibration()
            enrol.append(t1 - t)
            search.append(t2 - t1)
            calibrate.append(time.perf_counter() - t2)
            assert rep.added == 1, rep
            t = time.perf_counter()
            other.search(np.asarray(g.vectors_[:1]), k=5)
            follow.append(time.perf_counter() - t)
            assert len(other.vectors_) == len(g.vectors_)
            t = time.perf_counter()
            third._load()
            reload.append(time.perf_counter() - t)
        other.close()
        third.close()
        g.close()
        t = time.perf_counter()
        with Gallery.open(db) as g2:
            g2.search(np.asarray(g2.vectors_[:1]), k=5)
            assert (len(g2.vectors_), g2.index_source_) == (faces + repeats, "saved"), (len(g2.vectors_),
                                                                                         g2.index_source_)
        reopen = time.perf_counter() - t
    return {"n": faces, "prepared": prepared, "first": enrol[0], "later": float(np.median(enrol[1:])) if repeats > 1
            else float("nan"), "search": float(np.median(search)), "calibrate": float(np.median(calibrate)),
            "reopen": reopen, "follow": float(np.median(follow)), "reload": float(np.median(reload))}


def padded_gallery(db: Path, n: int, spec: str, photos: list[Path], cache: EmbeddingCache) -> int:
    """A SQLite gallery at ``db`` (closed again): the first 200 ``photos`` enrolled and synthetic subjects up to ``n``
    faces, searched once (its index built and saved, as after an enrolment). Returns its number of faces."""
    with Gallery.create(db, index=spec) as g:
        seed = photos[:200]
        g.enroll([str(p) for p in seed], [p.parent.name for p in seed], cache=cache, progress=False)
        pad(g, n, 0)
        g.search(np.asarray(g.vectors_[:1]), k=5)
        return len(g.vectors_)


def gallery_runs(doc: str, repeats: int, run: Callable[..., dict], extra: int | None = None
                 ) -> tuple[argparse.Namespace, list[dict]]:
    """Parse :func:`gallery_args`' command line and call ``run(n, index spec, photos, cache, repeats, workdir)`` for
    each gallery size: (the arguments, the rows). ``extra``: real photos needed beyond the 200 enrolled first
    (default: one per repeat)."""
    args = gallery_args(doc, repeats).parse_args()
    photos, cache = real_photos(args, 200 + (args.repeats if extra is None else extra))
    return args, [run(n, args.index, photos, cache, args.repeats, args.workdir) for n in args.sizes]


def print_table(title: str, columns: dict[str, str], rows: list[dict]) -> None:
    """``title``, then a Markdown table of ``rows``: a column per ``columns`` item (header -> ``str.format`` pattern
    over a row's fields)."""
    print(f"\n{title}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(pattern.format(**r) for pattern in columns.values()) + " |")


def gallery_args(doc: str, repeats: int) -> argparse.ArgumentParser:
    """The options of the large-gallery benchmarks (this one, ``identify_cli.py``): real photos and their cache,
    gallery sizes, index spec, repeats, where the temporary galleries go."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lfw", help="real photos (folder per person)")
    ap.add_argument("--cache", default="cache/lookalike.sqlite", help="embedding cache (warm: embedding is free)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--index", default=HEADLINE, help=f"gallery index spec (default: {HEADLINE})")
    ap.add_argument("--repeats", type=int, default=repeats)
    ap.add_argument("--workdir", default=None, help="folder for the temporary galleries")
    return ap


def real_photos(args: argparse.Namespace, needed: int) -> tuple[list[Path], EmbeddingCache]:
    """The photos under ``--data`` (sorted; at least ``needed``, else a one-line exit) and the ``--cache``."""
    photos = sorted(Path(args.data).glob("*/*.jpg"))
    if len(photos) < needed:
        raise SystemExit(f"{Path(sys.argv[0]).stem}: error: need {needed} photos under {args.data}")
    return photos, EmbeddingCache(args.cache)


def main() -> None:
    args, rows = gallery_runs(__doc__, 5, run)
    print_table(f"Enrolling one face at a time (index {args.index}; seconds; later = median of {args.repeats - 1})",
                {"gallery faces": "{n:,}", "padding + first search s": "{prepared:.1f}",
                 "first enrolment s": "{first:.3f}", "later enrolments s": "{later:.3f}", "search s": "{search:.4f}",
                 "calibration after an enrolment s": "{calibrate:.4f}",
                 "another process's next search s": "{follow:.4f}", "its reload, the previous way s": "{reload:.2f}",
                 "reopen + search s": "{reopen:.2f}"}, rows)


if __name__ == "__main__":
    main()
