"""The lookalike command line: embed, benchmark, train, identify, enroll and gallery."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from lookalike import __version__

DESCRIPTION = """\
1:N face identification that gets the top of the ranked list right. The user's path: train (once), enroll,
identify, serve; embed, benchmark and compare evaluate. `lookalike COMMAND --help` for each.

Bad input is skipped with a reason and listed (skipped.csv); every command ends with a summary."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``lookalike: error: ...`` (exit 2), the usage left to --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"lookalike: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
            hi_open: bool = False, what: str = "") -> Callable[[str], int | float]:
    """An argparse type: ``kind`` within [lo, hi] (open where asked), with a one-line message otherwise."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what or kind.__name__}, got {text!r}") from None
        if not math.isfinite(value):  # NaN or an infinity: said so, whatever the range
            raise argparse.ArgumentTypeError(f"expected {what or 'a finite number'}, got {text}")
        from lookalike.checks import within  # numpy-importing: not at the command line's start-up

        if not within(value, -math.inf if lo is None else lo, math.inf if hi is None else hi, lo_open, hi_open):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
        return value

    return parse


def _lowres(text: str) -> int:
    from lookalike.data.images import check_lowres

    try:
        return check_lowres(int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


POSITIVE = _number(int, 1, what="an integer >= 1")
FRACTION_OPEN = _number(float, 0, 1, lo_open=True, hi_open=True, what="a fraction strictly between 0 and 1")
FRACTION_HALF_OPEN = _number(float, 0, 1, hi_open=True, what="a fraction in [0, 1)")
FRACTION = _number(float, 0, 1, what="a fraction in [0, 1]")


def _common(p: argparse.ArgumentParser) -> None:
    from lookalike.data.images import DEGRADE_KINDS
    from lookalike.matchers import MATCHERS
    from lookalike.matchers.align import CNN_FALLBACK
    from lookalike.matchers.cache import DEFAULT_CACHE

    p.add_argument("--data", required=True, help="folder-per-identity dataset, TinyFace root, or CSV manifest")
    p.add_argument("--lowres", type=_lowres, default=None, metavar="PX",
                   help="degrade faces to about PX pixels across (PX >= 4; TinyFace-like: 20), then upsample")
    p.add_argument("--degrade", choices=DEGRADE_KINDS, default=None,
                   help="how --lowres degrades faces: bicubic (resize down and up; default) or realistic (per image, "
                        "seeded by its content: random blur, downsampling, sensor noise, JPEG 30-90, resize up)")
    p.add_argument("--matcher", choices=MATCHERS, default=None,
                   help="embedding model: torch-flip (the PyTorch port of dlib's network, each chip averaged with its "
                        "mirror: twice the cost; the default, chosen on validation, see README), torch (the port, one "
                        "pass) or dlib (dlib-bin)")
    p.add_argument("--workers", type=POSITIVE, default=2, help="processes for detection and embedding (default: 2)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE),
                   help=f"embedding cache (SQLite; 'none' for none; default: {DEFAULT_CACHE})")
    p.add_argument("--central-fraction", type=FRACTION, default=0.45,
                   help="when no face is detected, align within a centred square of this fraction of the "
                        "shorter side (0 = skip such images; ~0.9 for tightly cropped faces)")
    p.add_argument("--cnn-fallback", action=argparse.BooleanOptionalAction, default=CNN_FALLBACK,
                   help="when the HOG detector finds no face, try dlib's CNN face detector before the centred "
                        "square (finds most tightly cropped faces; 0.2-0.6 s more for such a photo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from lookalike.data.protocol import LOWRES_APPLY

    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(prog="lookalike", description=DESCRIPTION, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, title="commands",
                                metavar="COMMAND")

    e = sub.add_parser("embed", help="embed every image of a dataset into an .npz file", formatter_class=fmt,
                       description="Detect, align and embed every image; skipped images are listed with reasons.")
    _common(e)
    e.add_argument("--out", required=True, help="output .npz (paths, identities, vectors, status)")
    e.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local processes (default) or a Ray Data actor pool (needs lookalike[ray])")
    e.add_argument("--ray-address", default=None,
                   help="engine ray: an existing cluster ('auto' or host:port); default: a local Ray instance "
                        "with --workers CPUs")

    b = sub.add_parser("benchmark", help="run the closed-set identification protocol and write a report",
                       formatter_class=fmt,
                       description="Split people into train/test halves (seeded), enrol one image per test person,\n"
                                   "search, re-rank, and write metrics.json, report.md, cmc.png, fnir_fpir.png and\n"
                                   "ranked lists.\n"
                                   "--data OUT/protocol/protocol.csv reruns a saved protocol exactly: its seed,\n"
                                   "fractions and resolution come from protocol.json beside it.")
    _common(b)
    b.add_argument("--out", required=True, help="output folder; the run writes into its .partial folder and replaces "
                   "earlier results there only when it completes (an interrupted rerun leaves them as they were)")
    b.add_argument("--lowres-apply", choices=LOWRES_APPLY, default=None,
                   help="degrade probes and gallery (as TinyFace; default), probes only (a low-resolution probe "
                        "against a sharp gallery) or gallery only (a sharp probe against a low-resolution gallery); "
                        "train images are degraded only with both")
    b.add_argument("--seed", type=int, default=None,
                   help="seed of the people split, gallery choice and re-ranking (default: 0)")
    b.add_argument("--index", choices=("numpy", "faiss"), default="numpy", help="gallery search implementation")
    b.add_argument("--depth", type=POSITIVE, default=100, help="candidate list length kept per probe (default: 100)")
    b.add_argument("--no-rerank", action="store_true", help="baseline only: no re-ranking methods")
    b.add_argument("--disambiguator", choices=("lda", "finetuned"), default="lda",
                   help="lookalike disambiguator: lda (embedding level, seconds) or finetuned (the face network's "
                        "last block fine-tuned on lookalike pairs; ~1.5 min training on 2 CPU cores for LFW)")
    b.add_argument("--model", default=None, metavar="M.lkm",
                   help="evaluate this trained model as it is (or 'default': the one shipped for the run's faces): "
                        "the test lists re-ranked by it (method lookalike-model) beside the baseline; nothing is "
                        "trained; its preprocessing must match the run's (--central-fraction may differ)")
    b.add_argument("--max-people", type=POSITIVE, default=None, help="use a seeded subset of this many people")
    b.add_argument("--test-fraction", type=FRACTION_OPEN, default=None,
                   help="share of people in the test half (default: 0.5)")
    b.add_argument("--val-fraction", type=FRACTION_HALF_OPEN, default=None,
                   help="share of train people held out for validation (default: 0.3; 0 = none)")

    t = sub.add_parser("train", formatter_class=fmt,
                       help="train a lookalike model on a labelled dataset and save it (.lkm)",
                       description="The people are split by a seeded rule: the disambiguator is fitted on 70% of\n"
                                   "them, and a validation split of the other 30% (--val-fraction) tunes the\n"
                                   "re-ranker and calibrates its open-set thresholds. Writes the model file and,\n"
                                   "beside it, MODEL.skipped.csv (what was left out, and why).\n"
                                   "The smallest dataset accepted (--val-fraction 0.3): 5 people with 2+ usable\n"
                                   "photos each (3 to fit on, 2 to validate). A validation split of fewer than 10\n"
                                   "people or 100 probes, or one where one person holds most probes, cannot tell a\n"
                                   "gain from chance: train warns, and such a model may do worse than no model.")
    _common(t)
    t.add_argument("--model", required=True,
                   help="output model file (.lkm): not an image file's name, not inside --data, and not an existing "
                        "file other than a lookalike model")
    t.add_argument("--lowres-apply", choices=LOWRES_APPLY, default="both",
                   help="the model's faces: probes and gallery degraded to --lowres (as TinyFace), probes only or "
                        "gallery only")
    t.add_argument("--disambiguator", choices=("lda", "finetuned"), default="lda",
                   help="lda (embedding level, seconds) or finetuned (the network's last block, minutes)")
    t.add_argument("--seed", type=int, default=0, help="seed of the validation split and the fits")
    t.add_argument("--val-fraction", type=FRACTION_OPEN, default=0.3, help="fraction of people used for validation")
    t.add_argument("--depth", type=POSITIVE, default=100, help="candidate list length the model re-ranks")
    t.add_argument("--max-people", type=POSITIVE, default=None, help="use a seeded subset of this many people")

    c = sub.add_parser("compare", formatter_class=fmt,
                       help="compare two benchmark runs (or two methods of one) on the same test probes",
                       description="Rank-1 (exact McNemar test) and open-set DIR at FPIR 1% and 10% (paired\n"
                                   "bootstrap) of A against B, from each run's rankings.npz. A and B: RUN or\n"
                                   "RUN:METHOD (default method: lookalike-best, else lookalike-model, else baseline).\n"
                                   "The runs must share their test probes: rerun a protocol with\n"
                                   "--data OUT/protocol/protocol.csv.")
    c.add_argument("a", metavar="A", help="RUN[:METHOD]")
    c.add_argument("b", metavar="B", help="RUN[:METHOD]")
    c.add_argument("--format", choices=("table", "json"), default="table",
                   help="table: Markdown for people (default); json: every figure, for machines")
    c.add_argument("--n-boot", type=POSITIVE, default=1000, help="bootstrap resamples (default: 1000)")
    c.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")

    i = sub.add_parser("identify", formatter_class=fmt, help="search every face of new photos against a gallery",
                       description="For every face of every photo: the candidate list per subject (base and final "
                                   "scores, base -> final rank, lookalike groups) and a decision at --fpir.")
    i.add_argument("photos", nargs="+", help="photo files, folders of photos, or CSV files with a 'path' column")
    i.add_argument("--db", required=True, help="gallery (G.sqlite or postgresql://...)")
    i.add_argument("--model", default=None,
                   help="lookalike model (.lkm) to re-rank with, or 'default': the model shipped with lookalike "
                        "for the gallery's preprocessing; without it, the base matcher with thresholds from the "
                        "gallery itself")
    add_face_size_options(i)
    i.add_argument("--top", type=POSITIVE, default=20, help="candidates listed per face (default: 20)")
    i.add_argument("--fpir", type=FRACTION_OPEN, default=0.01,
                   help="false-positive identification rate of the decision (0.001, 0.01 or 0.1; default 0.01)")
    i.add_argument("--format", choices=("table", "json", "csv", "html"), default="table",
                   help="output format (html: one page with the probe's and each candidate's face, to compare)")
    i.add_argument("--batch", action="store_true",
                   help="re-rank all the faces together, for many photos of the same few unknown people (frames of "
                        "one video, one case's photos): each face's neighbours among the others help decide who it "
                        "is. Uses the model's batch setting, tuned on validation; a model without one (batch "
                        "re-ranking did not win on its validation split) searches face by face and says so")
    i.add_argument("--same-person", action="store_true",
                   help="the photos all show one unknown person (one track, one case): their faces, one a photo, are "
                        "searched as one template (the mean of their embeddings), reported after the photos; a photo "
                        "with several faces is left out")
    i.add_argument("--out", default=None, help="write the output to this file instead of standard output")
    add_blas_threads(i)

    from lookalike.gallery.cli import add_parsers as add_gallery_parsers

    add_gallery_parsers(sub)

    from lookalike.service.cli import add_parser as add_serve

    add_serve(sub)
    return parser


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from lookalike.benchmark import load_dataset
    from lookalike.data.screen import screen_table
    from lookalike.embed import embed_paths
    from lookalike.io import atomic_write, save_npz
    from lookalike.matchers.align import FaceAligner
    from lookalike.matchers.cache import EmbeddingCache
    from lookalike.outputs import check_output_file
    from lookalike.summary import print_fallback_hint, print_summary

    out = check_output_file(args.out, (("embedding cache (--cache)", args.cache), ("dataset (--data)", args.data)))
    cache = EmbeddingCache(None if args.cache == "none" else args.cache)
    table = load_dataset(args.data, exclude=[out.parent])
    screened = screen_table(table, cache.ok_keys(), progress=not args.no_progress)
    kept = screened.table
    aligner = FaceAligner(args.central_fraction, cnn_fallback=args.cnn_fallback)
    emb = embed_paths(kept.paths, args.matcher, aligner, args.lowres, cache,
                      args.workers, progress=not args.no_progress, engine=args.engine, ray_address=args.ray_address,
                      degrade=args.degrade or "bicubic")
    cache.close()
    # every input row in the .npz: rows left out before embedding have their reason as status and zero vectors
    left_out = screened.left_out()
    paths = [*kept.paths.astype(str), *(r[0] for r in left_out)]
    ids = [*kept.identities.astype(str), *(r[1] for r in left_out)]
    status = [*emb.status.astype(str), *(r[2] for r in left_out)]
    vectors = np.concatenate([emb.vectors, np.zeros((len(left_out), emb.vectors.shape[1]), np.float32)])
    face = [*emb.method.astype(str), *([""] * len(left_out))]
    save_npz(out, paths=np.asarray(paths), identities=np.asarray(ids), vectors=vectors, status=np.asarray(status),
             face=np.asarray(face))
    skipped_csv = out.with_name(out.stem + ".skipped.csv")
    with atomic_write(skipped_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity", "reason", "message"])
        w.writerows(left_out)
        w.writerows([kept.paths[i], kept.identities[i], emb.status[i], msg] for i, msg in sorted(emb.messages.items()))
    summary = emb.summary()
    skipped = screened.counts(summary["skipped"])
    summary["skipped"] = skipped
    summary["duplicates"] = len(screened.duplicates)
    print(json.dumps(summary, indent=2))
    print_summary({"images used": int(np.sum(emb.ok)), "skipped": skipped, "duplicates": len(screened.duplicates)},
                  {"skipped": str(skipped_csv), "duplicates": str(skipped_csv)})
    print_fallback_hint(summary["face"], aligner)
    print(f"wrote {out}", file=sys.stderr)
    return 0 if np.any(emb.ok) else 1


def cmd_benchmark(args: argparse.Namespace) -> int:
    from lookalike.benchmark import BenchmarkConfig, run_benchmark
    from lookalike.data.protocol import resolve_settings
    from lookalike.report import method_table
    from lookalike.summary import print_fallback_hint, print_summary

    defaults = {"seed": 0, "lowres": None, "lowres_apply": "both", "degrade": "bicubic", "test_fraction": 0.5,
                "val_fraction": 0.3}
    s = resolve_settings(args.data, {k: getattr(args, k) for k in defaults}, defaults)
    cfg = BenchmarkConfig(
        data=args.data, out=args.out, seed=s["seed"], lowres=s["lowres"], lowres_apply=s["lowres_apply"],
        degrade=s["degrade"], matcher=args.matcher, index=args.index, depth=args.depth, workers=args.workers,
        cache=None if args.cache == "none" else args.cache, rerank=not args.no_rerank,
        disambiguator=args.disambiguator,
        test_fraction=s["test_fraction"], val_fraction=s["val_fraction"],
        central_fraction=args.central_fraction, cnn_fallback=args.cnn_fallback, max_people=args.max_people,
        progress=not args.no_progress, model=args.model)
    metrics = run_benchmark(cfg)
    p = metrics["protocol"]
    for warning in p.get("warnings", []):
        print(f"lookalike: warning: {warning}", file=sys.stderr)
    print(f"{p['name']}: {p['n_probes_searched']} probes, {p['n_gallery_searched']} gallery images "
          f"({p['n_distractors']} distractors)")
    print(method_table(metrics["methods"]))
    print_summary(metrics["inputs"]["counts"], metrics["inputs"]["files"])
    print_fallback_hint(metrics["embedding"]["face"], cfg.aligner())
    print(f"wrote {Path(args.out) / 'report.md'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from lookalike.calibration import MIN_SEARCHES
    from lookalike.io import atomic_write
    from lookalike.outputs import check_output_file
    from lookalike.summary import counted, names_line, one_line, print_fallback_hint
    from lookalike.train import check_model_path, train_model

    check_output_file(args.model, (("embedding cache (--cache)", args.cache), ("dataset (--data)", args.data)),
                      option="--model", example="model.lkm")
    check_model_path(args.model, args.data)

    def print_names(names: list[str]) -> None:  # before training: shown whether training then succeeds or not
        for w in names:
            print(f"name: {one_line(w)}", file=sys.stderr)
        if names:
            print(names_line(len(names), "taken"), file=sys.stderr)

    model, summary = train_model(args.data, args.matcher, args.lowres, args.lowres_apply, args.disambiguator,
                                 args.seed, args.val_fraction, args.depth, None if args.cache == "none" else args.cache,
                                 args.central_fraction, args.workers, args.max_people, not args.no_progress,
                                 args.degrade or "bicubic", args.cnn_fallback, print_names)
    listed = Path(args.model).with_name(Path(args.model).stem + ".skipped.csv")
    with atomic_write(listed, "w", newline="") as f:  # every run, before the model: never an earlier run's list
        w = csv.writer(f)
        w.writerow(["path", "identity", "reason", "message"])
        w.writerows(summary["left_out"])
    model.save(args.model)
    st = model.reranker_.stats
    print(f"trained on {summary['n_train_people']} people ({summary['n_train_images']} images); the settings chosen "
          f"on a validation split of the other people ({summary['n_val_probes']} probes): rank-1 "
          f"{100 * st['val_base_rank1']:.2f} -> {100 * st['val_rank1']:.2f}")
    print(f"chosen: {st['disambiguator']}, {st['selection']}, {st['normaliser']} weight {st['weight']}")
    if st["weight"] == 0:
        print("note: the validation split chose weight 0, so this model keeps the matcher's order (its thresholds and "
              "notes still apply); more training people may let re-ranking pay", file=sys.stderr)
    print("thresholds: " + ", ".join(f"FPIR {f:g}: {t:.4f}" for f, t in model.thresholds_.items()))
    n = model.training_.get("n_nonmated_searches", 0)
    weak = [f for f in model.thresholds_ if n < MIN_SEARCHES / f]
    if weak:
        print(f"note: the thresholds come from {n} non-mated validation searches; at FPIR "
              f"{', '.join(f'{f:g}' for f in weak)} that is fewer than the {MIN_SEARCHES} / FPIR that can hold it, so "
              "identify prefers a gallery's own calibration there, or the stricter of the two (README, 'Where the "
              "decision's threshold comes from'); train on more people for thresholds of its own", file=sys.stderr)
    if model.training_["validation_warning"]:
        print(f"lookalike: warning: {model.training_['validation_warning']} (recorded in the model: "
              "training.validation_warning)", file=sys.stderr)
    skipped = model.training_["embedding"]["skipped"]
    if skipped:
        n = sum(skipped.values())
        print(f"skipped {counted(n, 'entry', 'entries')} "
              f"({', '.join(f'{k} {v}' for k, v in sorted(skipped.items()))}); "
              f"listed in {listed}, counted in the model file (training.embedding)", file=sys.stderr)
    print_fallback_hint(model.training_["embedding"]["face"], model.aligner)
    print(f"wrote {args.model}")
    return 0


PHOTO_REPEATED = "a photo already searched (named again, or a link to it)"


def probe_paths(items: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Photo files from files, folders (every image file below, sorted; linked folders followed, each folder once)
    and CSV files (their 'path' column): (the paths, each distinct file once, searched or reported by its status, a
    missing one as ``missing``; (path, reason) of what is not searched: what the folders hold that is not a photo
    (files that are not image files, broken links, hidden files and folders, a folder reached a second time through a
    link) and every repeat of a photo already given)."""
    from lookalike.data.manifest import read_csv

    out: list[str] = []
    left_out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for item in items:
        p = Path(item)
        if p.is_dir():
            _folder_photos(p, out, left_out, seen)
        elif p.suffix.lower() == ".csv" and p.is_file():
            fields, rows = read_csv(p)
            if "path" not in fields:
                raise ValueError(f"{p}: a probe CSV needs a 'path' column")
            for line, r in enumerate(rows, start=2):
                path = (r["path"] or "").strip()
                if not path:
                    raise ValueError(f"{p}:{line}: empty path")
                out.append(str(path if Path(path).is_absolute() else p.parent / path))
        else:  # a file, or one that is missing: searched, or reported with its status as the others are
            out.append(str(p))
    return _each_file_once(out, left_out), left_out


def _each_file_once(paths: list[str], left_out: list[tuple[str, str]]) -> list[str]:
    """``paths`` with each file (by its resolved path: links and other spellings followed) once, in the order first
    given; every repeat is added to ``left_out``. Two files with the same bytes are two files: both stay."""
    import os

    first: set[str] = set()
    out = []
    for path in paths:
        real = os.path.realpath(path)
        if real in first:
            left_out.append((path, PHOTO_REPEATED))
        else:
            first.add(real)
            out.append(path)
    return out


def _folder_photos(folder: Path, out: list[str], left_out: list[tuple[str, str]], seen: set[str]) -> None:
    """Add what ``folder`` holds, depth first in name order (as sorting the paths would), to ``out`` (image files by
    their extension, regular or not: a named pipe is reported by its status) or ``left_out``."""
    import os

    from lookalike.data.table import BROKEN_LINK, is_broken_link, is_hidden, is_image_file

    real = os.path.realpath(folder)
    if real in seen:
        left_out.append((str(folder), "a folder already searched (a link to it, or a link loop)"))
        return
    seen.add(real)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        left_out.append((str(folder), f"cannot list the folder ({e.strerror})"))
        return
    for entry in entries:
        f = Path(entry.path)
        if is_hidden(f):
            left_out.append((str(f), "hidden (its name starts with a dot)"))
        elif f.is_dir():
            _folder_photos(f, out, left_out, seen)
        elif is_broken_link(f):
            left_out.append((str(f), BROKEN_LINK))
        elif is_image_file(f):
            out.append(str(f))
        else:
            left_out.append((str(f), "not an image file (by its extension)"))


def add_blas_threads(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--blas-threads", type=POSITIVE, default=1,
                        help="threads NumPy's BLAS may use (default: 1). One probe's products are small: more BLAS "
                             "threads only spin against the face network's own threads (measured on 2 cores: "
                             "embedding 15 ms a face with 1, 65 ms with 2)")


def blas_threads(n: int):
    """A context in which NumPy's BLAS uses ``n`` threads (the face network's torch threads are not touched)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n, user_api="blas")


def cmd_compare(args: argparse.Namespace) -> int:
    import json

    from lookalike.compare import compare, format_comparison, load_method

    result = compare(load_method(args.a), load_method(args.b), n_boot=args.n_boot, seed=args.seed)
    print(json.dumps(result, indent=2) if args.format == "json" else format_comparison(result))
    return 0


def add_face_size_options(parser: argparse.ArgumentParser) -> None:
    """``--small-face-model``, ``--sharp-face-model`` (models for faces of other sizes) and ``--every-scale``
    (small faces beside a large one), for identify and serve."""
    tail = ("(one photo at a time; not batches or templates): a file, 'default' (the shipped one for the gallery, if "
            "any) or 'none'; default: 'default' with --model default, else none")
    parser.add_argument("--small-face-model", default=None, metavar="S.lkm|default|none",
                        help="model for faces at most PX px across on a full-resolution gallery, trained with "
                             f"--lowres PX --lowres-apply probes {tail}")
    parser.add_argument("--sharp-face-model", default=None, metavar="S.lkm|default|none",
                        help="model for faces at least 48 px across on a low-resolution gallery, trained with "
                             f"--lowres PX --lowres-apply gallery {tail}")
    parser.add_argument("--every-scale", action="store_true",
                        help="look for faces at every upsampling, not only until the first face is found: small "
                             "faces beside a large one (a group photo) are found too; slower on large photos")


NOTHING_SEARCHED = 1  # identify's exit status when no photo gave a face to search (its outputs are still written)


def cmd_identify(args: argparse.Namespace) -> int:
    from lookalike.gallery import Gallery
    from lookalike.identify import identify, result_faces
    from lookalike.identify_format import format_csv, format_html, format_table, summary
    from lookalike.io import write_json
    from lookalike.model import load_face_size_model, load_model

    paths, left_out = probe_paths(args.photos)
    if not paths:
        raise ValueError("no probe photos given" + (f" ({len(left_out)} entries left out: "
                                                    f"{left_out[0][0]}: {left_out[0][1]}, ...)" if left_out else ""))
    if args.out:
        from lookalike.outputs import check_not_an_image_name, check_output_file

        example = f"identify.{'txt' if args.format == 'table' else args.format}"
        check_output_file(args.out, (("gallery database (--db)", args.db), ("model (--model)", args.model),
                                     *(("probe photo", p) for p in paths)), example=example)
        check_not_an_image_name(args.out, "--out", f"identify writes its {args.format} output", example)
    with Gallery.open(args.db) as gallery, blas_threads(args.blas_threads):
        model = load_model(args.model, gallery) if args.model else None
        small, sharp = (load_face_size_model(kind, getattr(args, f"{kind}_face_model"), gallery, args.model)
                        for kind in ("small", "sharp"))
        result = identify(paths, gallery, model, args.top, args.fpir, batch=args.batch, same_person=args.same_person,
                          small_faces=small, sharp_faces=sharp, every_scale=args.every_scale)
        faces = result_faces(result, gallery) if args.format == "html" else {}
    result["left_out"] = [{"path": p, "reason": why} for p, why in left_out]
    if args.format == "json":
        if args.out:
            write_json(args.out, result)
        else:
            print(json.dumps(result, indent=2))
    else:
        text = (format_table(result) if args.format == "table" else format_csv(result) if args.format == "csv"
                else format_html(result, faces))
        if args.out:
            from lookalike.io import atomic_write

            with atomic_write(args.out, "w", newline="") as f:
                f.write(text)
        else:
            print(text, end="")
    if args.batch and result["batch"]["note"]:
        print(f"--batch: {result['batch']['note']}", file=sys.stderr)
    searched = sum(len(r["faces"]) for r in result["results"])
    print(summary(result), file=sys.stderr)
    return 0 if searched else NOTHING_SEARCHED


# What a rerun of an interrupted command does with the embeddings its cache kept (enroll resumes where it stopped).
RERUN = {"embed": "a rerun reuses them and embeds only the rest",
         "train": "a rerun reuses them, embeds only the rest and fits the model again (no model was written)",
         "benchmark": "a rerun reuses them, embeds only the rest and runs the protocol again (--out keeps an earlier "
                      "run's results as they were)",
         "enroll": "a rerun resumes where it stopped"}


def interrupted_message(args: argparse.Namespace) -> str:
    """What an interrupted command kept (the cache's finished batches, the gallery's enrolled images, or nothing) and
    what a rerun does with it."""
    cache = getattr(args, "cache", "none")
    if args.command not in RERUN:
        return "lookalike: interrupted; nothing was written"
    kept = [] if cache in (None, "none") else [f"the embeddings of finished batches in the cache {cache}"]
    if args.command == "enroll":
        kept.insert(0, "the images enrolled so far in the gallery")
    if not kept:
        return "lookalike: interrupted; nothing was kept (--cache none): a rerun starts again"
    return f"lookalike: interrupted; {' and '.join(kept)} are kept: {RERUN[args.command]}"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a service manager stopping the command): stops it as Ctrl-C does."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading
    import warnings

    from lookalike.gallery.cli import COMMANDS as GALLERY_COMMANDS
    from lookalike.gallery.gallery import GalleryFilesWarning

    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread and args.command != "serve" else None
    shown = warnings.showwarning

    def show(message, category, *rest, **kw) -> None:  # ours in one line; the rest as Python shows them
        if issubclass(category, GalleryFilesWarning):
            print(f"lookalike: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, *rest, **kw)

    warnings.showwarning = show
    try:
        if args.command == "serve":
            from lookalike.service.cli import cmd_serve

            return cmd_serve(args)
        return {"embed": cmd_embed, "benchmark": cmd_benchmark, "train": cmd_train, "compare": cmd_compare,
                "identify": cmd_identify, **GALLERY_COMMANDS}[args.command](args)
    except BrokenPipeError:  # the reader went away (`lookalike gallery list | head`): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:
        print(interrupted_message(args), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except (OSError, ValueError) as e:  # CacheError is a ValueError; file problems are OSErrors
        print(f"lookalike: error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
