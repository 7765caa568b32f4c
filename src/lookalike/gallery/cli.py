"""The gallery commands of the ``lookalike`` CLI: ``enroll`` and ``gallery stats|list|remove|rebuild-vectors|
prune-searches|verify|backup``.

:func:`add_parsers` adds them to the main parser; :data:`COMMANDS` maps their names to their functions.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

from lookalike.gallery import display_db

MAX_LISTED = 20
MAX_DAYS = 100_000  # prune-searches --older-than: about 270 years
PROBLEMS_FOUND = 1  # gallery verify's exit status when the gallery is not intact (2: an error, as everywhere)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from lookalike.cli import FRACTION, POSITIVE, _lowres, _number
    from lookalike.matchers import MATCHERS
    from lookalike.matchers.cache import DEFAULT_CACHE

    e = sub.add_parser("enroll", help="enrol a dataset's faces into a persistent gallery (created if needed)",
                       description="Detect, align, embed and store every image under its subject. Rerunning skips "
                                   "images already enrolled; an interrupted run resumes.")
    e.add_argument("--gallery", required=True, metavar="DIR|CSV",
                   help="folder per subject, or a CSV manifest with path,identity columns")
    e.add_argument("--db", required=True, metavar="G.sqlite|postgresql://...", help="the gallery database")
    e.add_argument("--model", default=None, metavar="M.lkm",
                   help="take matcher, aligner and resolution from this lookalike model (the gallery it searches); "
                        "'default': the model shipped with lookalike for the gallery's faces (a new gallery: full "
                        "resolution, or the 20 px one with --lowres 20)")
    e.add_argument("--lowres", type=_lowres, default=None, metavar="PX",
                   help="degrade faces to about PX pixels across (new gallery; must match an existing one)")
    e.add_argument("--matcher", choices=MATCHERS, default=None,
                   help="embedding model of a new gallery (default: torch-flip); must "
                        "match an existing one")
    e.add_argument("--central-fraction", type=FRACTION, default=None,
                   help="aligner fallback for a new gallery (default 0.45, see `lookalike embed --help`)")
    e.add_argument("--cnn-fallback", action=argparse.BooleanOptionalAction, default=None,
                   help="a new gallery's faces that HOG misses are looked for by dlib's CNN detector before the "
                        "centred square (see `lookalike embed --help`); must match an existing gallery")
    e.add_argument("--index", type=_index_spec, default=None, metavar="SPEC",
                   help="search index of a new gallery, kind[:param=value,...]: numpy (exact, default), faiss "
                        "(exact), hnsw, ivf, pq (approximate, re-scored exactly; e.g. hnsw:m=32,ef_search=128); "
                        "saved with the gallery")
    e.add_argument("--cache", default=str(DEFAULT_CACHE),
                   help=f"embedding cache (SQLite; 'none' for none; default: {DEFAULT_CACHE})")
    e.add_argument("--workers", type=POSITIVE, default=2, help="processes for detection and embedding (default: 2)")
    e.add_argument("--chunk-size", type=POSITIVE, default=None,
                   help="images embedded and stored per transaction (default: 256, with --engine ray 2048)")
    e.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local processes, or a Ray Data pipeline (pip install 'lookalike[ray]')")
    e.add_argument("--ray-address", default=None,
                   help="with --engine ray: an existing cluster ('auto' or host:port); default: a local Ray instance")
    e.add_argument("--format", choices=("table", "json"), default="table",
                   help="the enrolment report as a table (default) or JSON")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")

    g = sub.add_parser("gallery", help="inspect or edit a gallery: stats, list, remove, rebuild-vectors, "
                                       "prune-searches, verify, backup",
                       description="Inspect or edit a persistent gallery.")
    gsub = g.add_subparsers(dest="gallery_command", required=True)
    for name, help_ in (("stats", "counts and settings"), ("list", "subjects with image counts"),
                        ("remove", "remove a subject and delete its images"),
                        ("rebuild-vectors", "rewrite the vector files (and saved index) beside a SQLite gallery "
                                            "from its database"),
                        ("prune-searches", "delete the service's searches older than --older-than days that no "
                                           "examiner reviewed, and the probe photos no search shows any more, in "
                                           "one transaction; reviewed searches are kept (the audit trail)"),
                        ("verify", "check, writing nothing, that every vector the gallery searches is the database's "
                                   "embedding, each embedding is finite and of unit length, a saved index matches "
                                   "the vectors and, with --photos, every enrolled photo is still the file enrolled; "
                                   "exit status 0: intact, 1: problems found (each listed with its remedy), "
                                   "2: an error"),
                        ("backup", "copy a SQLite gallery (database, vector files, saved index; not the photos) to "
                                   "--out while other processes use it, then check the copy as verify does; exit "
                                   "status 0: the copy is intact, 1: problems found, 2: an error")):
        p = gsub.add_parser(name, help=help_, description=help_[0].upper() + help_[1:] + ".")
        if name == "remove":
            p.add_argument("subject", help="subject name, exactly as enrolled")
        p.add_argument("--db", required=True, metavar="G.sqlite|postgresql://...", help="the gallery database")
        if name == "prune-searches":
            p.add_argument("--older-than", required=True, metavar="DAYS",
                           type=_number(float, 0, MAX_DAYS, what=f"a number of days from 0 to {MAX_DAYS}"),
                           help="delete unreviewed searches made more than DAYS days ago (fractions allowed)")
            p.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        if name == "verify":
            p.add_argument("--photos", action="store_true",
                           help="also re-read every enrolled face's photo and compare its SHA-1 with the one enrolled")
        if name == "backup":
            p.add_argument("--out", required=True, metavar="BACKUP.sqlite",
                           help="the copy's database (its vector files go beside it); must not exist")
        if name in ("verify", "backup"):
            p.add_argument("--no-progress", action="store_true", help="no progress bars")
        if name in ("stats", "list", "prune-searches", "verify", "backup"):
            p.add_argument("--format", choices=("table", "json"), default="table",
                           help="a table for people (default) or JSON")


def _index_spec(text: str) -> str:
    """An argparse type: an index spec, checked (one-line message otherwise) and written canonically."""
    from lookalike.index import format_index_spec, parse_index_spec

    try:
        return format_index_spec(*parse_index_spec(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Database failures become the CLI's one-line ValueError."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except sqlite3.Error as e:
            if "disk is full" in str(e):  # the file is sound: every committed enrolment is kept
                raise ValueError(f"gallery database {display_db(args.db)}: the disk is full; free some space and "
                                 "rerun (what was enrolled before is kept)") from e
            raise ValueError(f"gallery database error: {e}") from e
        except Exception as e:
            if type(e).__module__.startswith("psycopg"):
                raise ValueError(f"gallery database error: {str(e).strip().splitlines()[0]}") from e
            raise

    return run


def _open_or_create(args: argparse.Namespace):
    from lookalike.gallery import Gallery

    geometry = None  # a model's aligner: the gallery's chips must be shaped as the model's were
    if args.model:
        from lookalike.model import DEFAULT, check_model_fits_db, load_model_for_db

        if args.matcher or (args.lowres is not None and args.model != DEFAULT):
            raise ValueError("--model sets the matcher, resolution and aligner: drop --matcher and --lowres")
        model = load_model_for_db(args.model, args.db, args.lowres)  # default: --lowres picks it for a new gallery
        if args.lowres is not None and model.gallery_lowres != args.lowres:
            faces = "full-resolution" if model.gallery_lowres is None else f"{model.gallery_lowres} px"
            raise ValueError(f"{display_db(args.db)} holds {faces} faces, not {args.lowres} px ones: drop --lowres "
                             "(the gallery's faces choose the default model)")
        check_model_fits_db(model, args.db)
        if model.gallery_lowres is not None and model.degrade != "bicubic":
            raise ValueError(f"{args.model}: galleries support the bicubic degradation only; this model degrades "
                             f"its gallery faces the {model.degrade!r} way (train it with --degrade bicubic, or with "
                             "--lowres-apply probes to leave the gallery sharp)")
        args.matcher, args.lowres, geometry = model.matcher, model.gallery_lowres, model.aligner
    return Gallery.open_or_create(args.db, args.matcher, args.lowres, geometry, args.central_fraction,
                                  args.cnn_fallback, args.index)


@_errors
def cmd_enroll(args: argparse.Namespace) -> int:
    from lookalike.benchmark import load_dataset
    from lookalike.matchers.cache import EmbeddingCache
    from lookalike.outputs import check_not_an_input
    from lookalike.summary import names_line, print_fallback_hint

    started = time.perf_counter()  # the enrolment's time counts the folder's listing and the gallery's opening too
    if args.chunk_size is None:
        args.chunk_size = 2048 if args.engine == "ray" else 256
    if args.workers < 1 or args.chunk_size < 1:
        raise ValueError("--workers and --chunk-size must be at least 1")
    check_not_an_input(args.cache, "--cache", (("gallery database (--db)", args.db),))  # the cache is written too
    table = load_dataset(args.gallery)
    cache = EmbeddingCache(None if args.cache == "none" else args.cache)
    with _open_or_create(args) as gallery:
        report = gallery.enroll(table.paths, table.identities, cache=cache, workers=args.workers,
                                progress=not args.no_progress, chunk_size=args.chunk_size, engine=args.engine,
                                ray_address=args.ray_address, started=started)
        for _, _, reason, message in table.dropped:  # what the folder or CSV loader left out: counted, listed
            report.skip(reason, message)
        total, aligner = gallery.stats(), gallery.aligner
    names = report.name_warnings
    cache.close()
    from lookalike.summary import one_line

    for msg in report.messages[:MAX_LISTED]:
        print(f"skipped: {one_line(msg)}", file=sys.stderr)
    for d in report.duplicates[:MAX_LISTED]:
        print(f"duplicate: {one_line(d['path'])} ({d['subject']!r}) has the same bytes as images of "
              f"{', '.join(map(repr, d['also_under']))}", file=sys.stderr)
    for w in names[:MAX_LISTED]:
        print(f"name: {one_line(w)}", file=sys.stderr)
    more = sum(max(0, len(x) - MAX_LISTED) for x in (report.messages, report.duplicates, names))
    if more:
        print(f"... and {more} more (see --format json)", file=sys.stderr)
    if args.format == "json":
        print(json.dumps({**report.summary(), "name_warnings": len(names), "messages": report.messages,
                          "duplicates": report.duplicates, "names": names, "gallery": total}, indent=2))
    else:
        print(report.format())
        if names:
            print(names_line(len(names), "enrolled"))
        print(f"gallery {total['store']}: {total['subjects']} subjects, {total['images']} images")
    print_fallback_hint(report.faces, aligner, " in a new gallery (a gallery keeps its own)")
    return 0


@_errors
def cmd_gallery(args: argparse.Namespace) -> int:
    from lookalike.gallery import Gallery

    if args.gallery_command == "prune-searches":
        return prune_searches(args)
    if args.gallery_command == "verify":
        return verify(args)
    if args.gallery_command == "backup":
        return backup(args)
    rebuild = args.gallery_command == "rebuild-vectors"
    with (Gallery.rebuild_vectors if rebuild else Gallery.open)(args.db) as gallery:
        if rebuild:
            if gallery.vector_dir is None:
                print(f"{gallery.store.url}: nothing to rebuild (the vectors of a PostgreSQL gallery live in memory)")
            else:
                print(f"rewrote {gallery.vector_dir} from the database: {len(gallery.image_ids_)} vectors at "
                      f"generation {gallery.generation_}, index {gallery.index}")
        elif args.gallery_command == "remove":
            n = gallery.remove(args.subject)
            print(f"removed {args.subject!r} ({n} images deleted)")
        elif args.gallery_command == "stats":
            stats = gallery.stats()
            if args.format == "json":
                print(json.dumps(stats, indent=2))
            else:
                print("| | |\n|---|---|")
                for k, v in stats.items():
                    print(f"| {k} | {v} |")
        else:
            subjects = gallery.store.list_subjects()
            if args.format == "json":
                print(json.dumps([{"subject": s.name, "images": s.n_images, "unusable": s.n_skipped,
                                   "created": s.created} for s in subjects], indent=2))
            else:
                print("| subject | images | unusable |\n|---|---:|---:|")
                for s in subjects:
                    print(f"| {_cell(s.name)} | {s.n_images} | {s.n_skipped} |")
    return 0


def prune_searches(args: argparse.Namespace) -> int:
    """``gallery prune-searches``: the store's :meth:`~lookalike.gallery.store.GalleryStore.prune_searches` from
    ``--older-than`` days ago, reported as a table or JSON."""
    from lookalike.gallery import open_store
    from lookalike.summary import counted

    before = (datetime.now(UTC) - timedelta(days=args.older_than)).isoformat(timespec="milliseconds")
    with open_store(args.db, create=False) as store:  # the database only: no vectors are read
        report = store.prune_searches(before, args.dry_run)
    if args.format == "json":
        print(json.dumps({"gallery": display_db(args.db), **asdict(report)}, indent=2))
        return 0
    verb = "would delete" if report.dry_run else "deleted"
    print(f"{display_db(args.db)}: {verb} {counted(report.searches_deleted, 'search', 'searches')} made before "
          f"{report.before} that no examiner reviewed, and {counted(report.photos_deleted, 'probe photo')} no search "
          f"shows any more ({report.photo_bytes_deleted:,} bytes)")
    print(f"kept {counted(report.reviewed_kept, 'reviewed search', 'reviewed searches')} made before then (their "
          f"reviews are the audit trail) and {counted(report.newer_kept, 'newer one')}; "
          f"{counted(report.photos_moved, 'photo')} still shown by a kept search "
          f"{'would move' if report.dry_run else 'moved'} to it from a deleted one")
    return 0


def verify(args: argparse.Namespace) -> int:
    """``gallery verify``: :meth:`~lookalike.gallery.Gallery.verify` of a gallery opened for it (nothing written),
    as lines (each problem, each remedy, a summary) or JSON; :data:`PROBLEMS_FOUND` when it is not intact."""
    from lookalike.gallery import Gallery

    with Gallery.open_for_verify(args.db) as gallery:
        report = gallery.verify(photos=args.photos, progress=not args.no_progress)
    if args.format == "json":
        print(json.dumps(report.summary(), indent=2))
    else:
        _problem_lines(report)
        print("\n".join(report.format()))
    return 0 if report.ok else PROBLEMS_FOUND


def backup(args: argparse.Namespace) -> int:
    """``gallery backup``: :func:`~lookalike.gallery.backup.backup` of ``--db`` to ``--out``, reported as lines (the
    copy's problems and remedies as verify lists them, then a summary) or JSON; :data:`PROBLEMS_FOUND` when the copy
    is not intact."""
    from lookalike.gallery.backup import backup as backup_gallery

    report = backup_gallery(args.db, args.out, progress=not args.no_progress)
    if args.format == "json":
        print(json.dumps(report.summary(), indent=2))
    else:
        _problem_lines(report.verify)
        print("\n".join(report.format()))
    return 0 if report.ok else PROBLEMS_FOUND


def _problem_lines(report) -> None:
    """A verify report's problems (the first :data:`MAX_LISTED`) and one remedy per kind, as lines."""
    from lookalike.summary import one_line

    for p in report.problems[:MAX_LISTED]:
        print(f"problem: {p['kind']}: {one_line(p['message'])}")
    if len(report.problems) > MAX_LISTED:
        print(f"... and {len(report.problems) - MAX_LISTED} more (see --format json)")
    for kind, remedy in report.remedies.items():
        print(f"remedy ({kind}): {remedy}")


def _cell(text: str) -> str:
    """A Markdown table cell showing ``text`` verbatim (pipes escaped, control characters visible)."""
    return text.replace("|", "\\|") if text.isprintable() else repr(text)


COMMANDS = {"enroll": cmd_enroll, "gallery": cmd_gallery}
