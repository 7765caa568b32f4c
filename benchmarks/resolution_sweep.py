"""How does the lookalike re-ranking gain change with face size? One benchmark run per size.

For every ``--sizes`` entry (a face width in pixels, or ``full``) this runs the benchmark pipeline
(:func:`lookalike.benchmark.run_benchmark`: seeded people split, embedding through the cache, baseline search,
re-ranking, the saved ``lookalike-best`` model) on ``--data`` with that resolution and ``--degrade`` kind,
and collects baseline vs ``lookalike-best`` rank-1, the exact McNemar p-value, and the headroom numbers
(probes the baseline ranks 2..10 that the model moves to rank 1). Prints a Markdown table, writes
``sweep.json`` (the rows) and ``sweep.png`` (rank-1 and gain against face size) to ``--out``; each size's full
run (report, metrics, model) is kept in ``--out/<size>``.

    python benchmarks/resolution_sweep.py --data ../shared/data/lfw --sizes 12 20 32 full --max-people 2000 \\
        --out runs/sweep-lfw --cache /work/cache/lookalike.sqlite
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lookalike.benchmark import PLAIN, BenchmarkConfig, run_benchmark
from lookalike.data.images import DEGRADE_KINDS, check_lowres
from lookalike.io import atomic_write, write_json
from lookalike.versions import versions

BEST = "lookalike-best"


def parse_size(text: str) -> int | None:
    """A face width in pixels (>= 4), or None for ``full``."""
    if text == "full":
        return None
    try:
        return check_lowres(int(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected 'full' or a face width in pixels >= 4, got {text!r}") from e


def sweep_row(size: int | None, metrics: dict) -> dict:
    """One table row from a run's metrics. ``plain_*``: against the plain matcher (``baseline-plain``, when the
    run's matcher is a test-time-augmented one, e.g. ``torch-flip`` at low resolution; else the baseline itself)."""
    base, best = metrics["methods"]["baseline"], metrics["methods"][BEST]
    plain = metrics["paired"].get(BEST, {}).get(PLAIN)
    plain_rank1 = metrics["methods"][PLAIN]["rank1"] if plain else base["rank1"]
    return {"size": "full" if size is None else size, "matcher": metrics["config"]["matcher"],
            "n_probes": metrics["protocol"]["n_probes_searched"],
            "n_gallery": metrics["protocol"]["n_gallery_searched"], "plain_rank1": plain_rank1,
            "baseline_rank1": base["rank1"], "best_rank1": best["rank1"], "gain": best["rank1"] - base["rank1"],
            "mcnemar_p": best["mcnemar_p"], "fixed": best["fixed"], "broken": best["broken"],
            "gain_vs_plain": best["rank1"] - plain_rank1,
            "mcnemar_p_vs_plain": plain["mcnemar_p"] if plain else best["mcnemar_p"],
            "headroom": best["headroom"], "headroom_fixed": best["headroom_fixed"],
            "headroom_broken": best["headroom_broken"], "seconds": round(metrics["timing"]["total_s"], 1)}


def markdown(rows: list[dict]) -> str:
    lines = ["| face px | matcher | probes | gallery | plain baseline rank-1 | matcher baseline rank-1 "
             "| lookalike-best rank-1 | gain vs plain (p) | gain vs matcher baseline (p) | fixed / broken "
             "| headroom fixed / headroom |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['matcher']} | {r['n_probes']} | {r['n_gallery']} "
                     f"| {100 * r['plain_rank1']:.2f} | {100 * r['baseline_rank1']:.2f} | {100 * r['best_rank1']:.2f} "
                     f"| {100 * r['gain_vs_plain']:+.2f} ({r['mcnemar_p_vs_plain']:.2g}) "
                     f"| {100 * r['gain']:+.2f} ({r['mcnemar_p']:.2g}) "
                     f"| {r['fixed']} / {r['broken']} | {r['headroom_fixed']} / {r['headroom']} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Rank-1 (baseline and model) and the gain against face size; ``full`` is drawn right of the largest size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    numeric = [r["size"] for r in rows if r["size"] != "full"]
    full_x = (max(numeric) * 1.5) if numeric else 1
    xs = [full_x if r["size"] == "full" else r["size"] for r in rows]
    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(xs, [100 * r["plain_rank1"] for r in rows], "o-", label="plain baseline")
    if any(r["plain_rank1"] != r["baseline_rank1"] for r in rows):
        ax1.plot(xs, [100 * r["baseline_rank1"] for r in rows], "^--", label="matcher baseline (flip at low res)")
    ax1.plot(xs, [100 * r["best_rank1"] for r in rows], "s-", label=BEST)
    ax1.set_ylabel("rank-1 (%)")
    ax1.legend()
    ax2.bar(range(len(rows)), [100 * r["gain_vs_plain"] for r in rows], color="tab:green")
    ax2.set_xticks(range(len(rows)), [str(r["size"]) for r in rows])
    ax2.axhline(0, color="black", linewidth=0.8)
    ax2.set_ylabel("gain over the plain baseline (rank-1 points)")
    ax1.set_xticks(xs, [str(r["size"]) for r in rows])
    for ax in (ax1, ax2):
        ax.set_xlabel("face width (px)")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="dataset (folder per identity, TinyFace root or CSV)")
    p.add_argument("--sizes", nargs="+", type=parse_size, required=True, help="face widths in px, or 'full'")
    p.add_argument("--degrade", choices=DEGRADE_KINDS, default="bicubic", help="degradation (default: bicubic)")
    p.add_argument("--max-people", type=int, default=None, help="a seeded subset of this many people")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the fits (default: 0)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--central-fraction", type=float, default=0.45)
    p.add_argument("--out", required=True, help="output folder (one sub-folder per size)")
    p.add_argument("--cache", default=None, help="embedding cache (SQLite)")
    args = p.parse_args(argv)
    if args.max_people is not None and args.max_people < 1:
        p.error("--max-people must be >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        name = "full" if size is None else f"{size}px"
        cfg = BenchmarkConfig(data=args.data, out=str(out / name), seed=args.seed, lowres=size,
                              degrade=args.degrade, workers=args.workers, cache=args.cache,
                              central_fraction=args.central_fraction, max_people=args.max_people)
        t0 = time.perf_counter()
        try:
            metrics = run_benchmark(cfg)
        except ValueError as e:
            print(f"resolution_sweep: error: {name}: {e}", file=sys.stderr)
            return 2
        rows.append(sweep_row(size, metrics))
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        write_json(out / "sweep.json", {"rows": rows, "args": {k: v for k, v in vars(args).items()},
                                        "versions": versions()})
    table = markdown(rows)
    print(table)
    title = f"{Path(args.data).name}, {args.degrade}" + (f", {args.max_people} people" if args.max_people else "")
    plot(rows, out / "sweep.png", title)
    with atomic_write(out / "sweep.md", "w") as f:
        f.write(table + "\n")
    print(f"wrote {out / 'sweep.json'}, {out / 'sweep.png'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
