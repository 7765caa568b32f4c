"""One table of several benchmark runs: the saved model (``lookalike-best``) against the baselines and the
comparisons the accuracy issue asks for, read from each run's ``metrics.json`` (nothing is recomputed).

    python benchmarks/runs_summary.py runs/lfw runs/lfw-s1 runs/pubfig runs/lfw-lowres20 runs/lfw-lowres20-s1 \\
        runs/pubfig-lowres20 runs/pubfig-lowres20-s1 [--out summary]

Prints Markdown (rank-1 %, 95% bootstrap CI, exact McNemar p, probes fixed / broken), then a table per setting (data,
face size, degradation) over its seeds: the saved model's gain over the plain baseline on each seed, their mean and
range, and on how many seeds p < 0.01. With ``--out`` it writes ``summary.md`` and ``summary.json`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lookalike.io import atomic_write, write_json
from lookalike.report import format_p

BEST = "lookalike-best"
AGAINST = ("baseline-plain", "lookalike-disamb-only", "lookalike-global", "kreciprocal-transductive")
BATCH = "lookalike-batch"
BATCH_AGAINST = ("baseline-plain", "kreciprocal-transductive", BEST)
OPEN_AGAINST = ("baseline-plain", "lookalike-disamb-only", "lookalike-global")
FPIRS = ("0.01", "0.1")


def against_baseline(methods: dict, name: str) -> dict:
    """``name``'s paired test against the run's own baseline, as a "vs baseline-plain" entry: at full resolution the
    run's matcher is the plain one, and every method's McNemar test is already against it."""
    m = methods[name]
    return {"rank1_diff": m["rank1"] - methods["baseline"]["rank1"], "mcnemar_p": m["mcnemar_p"], "fixed": m["fixed"],
            "broken": m["broken"]}


class RunError(ValueError):
    """A run folder this summary cannot read (one line)."""


def read_metrics(run: Path) -> dict:
    """A run's ``metrics.json`` with the saved model's figures, or a :class:`RunError` saying why not."""
    try:
        m = json.loads((run / "metrics.json").read_text())
    except OSError as e:
        raise RunError(f"{run}: no readable metrics.json ({e.strerror or e})") from None
    except ValueError as e:
        raise RunError(f"{run}/metrics.json: not valid JSON ({e}); run the benchmark again") from None
    if not isinstance(m, dict) or BEST not in m.get("methods", {}) or "config" not in m:
        raise RunError(f"{run}: no {BEST} in its metrics.json (a --no-rerank or --model run has no saved model to "
                       "summarise)")
    return m


def dataset_name(m: dict) -> str:
    """The dataset a run is of: its data folder's or file's name; for a rerun of a saved protocol.csv, the name of
    the protocol it saved (before ``-closedset``), so two datasets' protocols are not one setting."""
    name = Path(m["config"]["data"]).name
    if name.lower() == "protocol.csv":
        name = str(m.get("protocol", {}).get("name") or name).split("-closedset")[0]
    return name


def run_row(run: Path) -> dict:
    """The figures of one run: its protocol, the baselines' and the saved model's rank-1, and the paired tests of
    the saved model against each method of :data:`AGAINST` the run has."""
    m = read_metrics(run)
    methods, cfg = m["methods"], m["config"]
    plain = "baseline-plain" if "baseline-plain" in methods else "baseline"
    paired = dict(m.get("paired", {}).get(BEST, {}))
    if plain == "baseline":
        paired["baseline-plain"] = against_baseline(methods, BEST)
    probes = m["protocol"].get("n_probes_searched", m["protocol"].get("n_probes"))
    batch = None
    if BATCH in methods:
        b, bp = methods[BATCH], dict(m["paired"].get(BATCH, {}))
        if plain == "baseline":
            bp["baseline-plain"] = against_baseline(methods, BATCH)
        tuning = m["rerank_stats"][BATCH]["tuning"]
        batch = {"rank1": b["rank1"], "transductive": methods.get("kreciprocal-transductive", {}).get("rank1"),
                 "kept": tuning["kept"], "val_rank1": tuning["val_rank1"],
                 "per_photo_val_rank1": tuning["per_photo_val_rank1"],
                 "setting": m["rerank_stats"][BATCH]["batch"], "paired": {k: bp[k] for k in BATCH_AGAINST if k in bp}}
    return {"run": str(run), "data": dataset_name(m), "seed": cfg["seed"], "lowres": cfg.get("lowres"),
            "open_set": open_set_row(m, plain),
            "degrade": cfg.get("degrade", "bicubic"), "lowres_apply": cfg.get("lowres_apply", "both"), "probes": probes,
            "plain": methods[plain]["rank1"], "baseline": methods["baseline"]["rank1"],
            "best": methods[BEST]["rank1"], "best_ci": methods[BEST]["rank1_ci95"],
            "paired": {k: paired[k] for k in AGAINST if k in paired}, "batch": batch, "versions": m.get("versions", {})}


def open_set_row(m: dict, plain: str) -> dict | None:
    """The saved model's DIR at each FPIR with its CI, the plain baseline's, and the paired bootstrap tests of the
    saved model against each method of :data:`OPEN_AGAINST` (None for a run without them: no distractors, or a
    ``metrics.json`` older than the open-set statistics)."""
    o, paired = m.get("open_set", {}), m.get("paired_open_set", {}).get(BEST, {})
    if f"dir@fpir={FPIRS[0]}_ci95" not in o.get(BEST, {}) or plain not in paired:
        return None
    paired = {"baseline-plain" if k == plain else k: v for k, v in paired.items()}
    return {f: {"plain": o[plain][f"dir@fpir={f}"], "plain_ci": o[plain][f"dir@fpir={f}_ci95"],
                "best": o[BEST][f"dir@fpir={f}"], "best_ci": o[BEST][f"dir@fpir={f}_ci95"],
                "paired": {k: {"diff": paired[k][f"dir@fpir={f}_diff"], "ci": paired[k][f"dir@fpir={f}_diff_ci95"],
                               "p": paired[k][f"dir@fpir={f}_p"], "n_boot": m["config"]["n_boot"]}
                           for k in OPEN_AGAINST if k in paired}}
            for f in FPIRS}


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def markdown(rows: list[dict]) -> str:
    head = ("| data | seed | face | probes | plain baseline | run's baseline | `lookalike-best` [95% CI] | "
            + " | ".join(f"vs {k}: diff (p; fixed / broken)" for k in AGAINST) + " |")
    lines = [head, "|" + "---|" * (7 + len(AGAINST))]
    for r in rows:
        cells = []
        for k in AGAINST:
            p = r["paired"].get(k)
            cells.append("–" if p is None else f"{100 * p['rank1_diff']:+.2f} ({p['mcnemar_p']:.2g}; "
                                               f"{p['fixed']} / {p['broken']})")
        ci = f"[{pct(r['best_ci'][0])}, {pct(r['best_ci'][1])}]"
        lines.append(f"| {r['data']} | {r['seed']} | {face(r)} | {r['probes']} | {pct(r['plain'])} | "
                     f"{pct(r['baseline'])} | {pct(r['best'])} {ci} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_batch(rows: list[dict]) -> str:
    """The batch setting (every test probe re-ranked together) of the runs that have it: ``lookalike-batch`` against
    the plain baseline, the transductive k-reciprocal (the same setting) and the per-photo saved model."""
    head = ("| data | seed | face | plain baseline | `lookalike-best` (per photo) | `kreciprocal-transductive` | "
            "`lookalike-batch` | " + " | ".join(f"vs {k}: diff (p; fixed / broken)" for k in BATCH_AGAINST)
            + " | validation rank-1: per photo → batch (kept) |")
    lines = [head, "|" + "---|" * (8 + len(BATCH_AGAINST))]
    for r in rows:
        b = r["batch"]
        if b is None:
            continue
        cells = []
        for k in BATCH_AGAINST:
            p = b["paired"].get(k)
            cells.append("–" if p is None else f"{100 * p['rank1_diff']:+.2f} ({p['mcnemar_p']:.2g}; "
                                               f"{p['fixed']} / {p['broken']})")
        kt = "–" if b["transductive"] is None else pct(b["transductive"])
        lines.append(f"| {r['data']} | {r['seed']} | {face(r)} | {pct(r['plain'])} | {pct(r['best'])} | {kt} | "
                     f"{pct(b['rank1'])} | " + " | ".join(cells) + f" | {pct(b['per_photo_val_rank1'])} → "
                     f"{pct(b['val_rank1'])} ({'yes' if b['kept'] else 'no'}) |")
    return "\n".join(lines) + "\n"


def open_cell(p: dict) -> str:
    """A paired open-set test: the difference [95% CI] (p; "≤ p" where no resample fell on the far side of zero)."""
    lo, hi = p["ci"]
    return f"{100 * p['diff']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] ({format_p(p['p'], p['n_boot'])})"


def markdown_open_set(rows: list[dict]) -> str:
    """Open set of the runs that have its statistics: DIR at each FPIR of the plain baseline and the saved model
    (bootstrap 95% CI), and the saved model minus each method of :data:`OPEN_AGAINST` (paired bootstrap CI, p)."""
    head = ("| data | seed | face | FPIR | plain baseline DIR [95% CI] | `lookalike-best` DIR [95% CI] | "
            + " | ".join(f"vs {k}: diff [95% CI] (p)" for k in OPEN_AGAINST) + " |")
    lines = [head, "|" + "---|" * (6 + len(OPEN_AGAINST))]
    for r in rows:
        for f, o in (r["open_set"] or {}).items():
            cells = ["–" if k not in o["paired"] else open_cell(o["paired"][k]) for k in OPEN_AGAINST]
            lines.append(f"| {r['data']} | {r['seed']} | {face(r)} | {pct(float(f))}% | {pct(o['plain'])} "
                         f"[{pct(o['plain_ci'][0])}, {pct(o['plain_ci'][1])}] | {pct(o['best'])} "
                         f"[{pct(o['best_ci'][0])}, {pct(o['best_ci'][1])}] | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def face(r: dict) -> str:
    """``full``, ``~20 px``, ``~20 px realistic``; ``, probes only`` or ``, gallery only`` when one side is degraded."""
    if not r["lowres"]:
        return "full"
    side = {"both": "", "probes": ", probes only", "gallery": ", gallery only"}[r.get("lowres_apply", "both")]
    return f"~{r['lowres']} px" + ("" if r["degrade"] == "bicubic" else f" {r['degrade']}") + side


def by_setting(rows: list[dict]) -> list[dict]:
    """Per (data, face): the seeds and the saved model's gain over the plain baseline (and its p) on each."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["data"], face(r)), []).append(r)
    out = []
    for (data, f), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        gains = [r["paired"]["baseline-plain"]["rank1_diff"] for r in rs]
        ps = [r["paired"]["baseline-plain"]["mcnemar_p"] for r in rs]
        out.append({"data": data, "face": f, "seeds": [r["seed"] for r in rs], "gains": gains, "p": ps,
                    "mean": sum(gains) / len(gains), "min": min(gains), "max": max(gains),
                    "significant": sum(p < 0.01 for p in ps)})
    return out


def markdown_by_setting(settings: list[dict]) -> str:
    lines = ["| data | face | seeds | gain over the plain baseline, per seed | mean | range | seeds at p < 0.01 |",
             "|---|---|---|---|---|---|---|"]
    for s in settings:
        per = ", ".join(f"{100 * g:+.2f}" for g in s["gains"])
        lines.append(f"| {s['data']} | {s['face']} | {', '.join(map(str, s['seeds']))} | {per} | "
                     f"{100 * s['mean']:+.2f} | {100 * s['min']:+.2f} to {100 * s['max']:+.2f} | "
                     f"{s['significant']} of {len(s['seeds'])} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="benchmark output folders (each with metrics.json)")
    ap.add_argument("--out", default=None, help="write summary.md and summary.json into this folder")
    args = ap.parse_args()
    missing = [r for r in args.runs if not (Path(r) / "metrics.json").is_file()]
    if missing:
        sys.exit(f"runs_summary: error: no metrics.json in {', '.join(missing)}")
    try:
        rows = [run_row(Path(r)) for r in args.runs]
    except RunError as e:
        sys.exit(f"runs_summary: error: {e}")
    seen: dict[tuple, str] = {}
    for r in rows:  # one run a setting and seed: a second would count as another seed in the per-setting table
        key = (r["data"], face(r), r["seed"])
        if key in seen:
            sys.exit(f"runs_summary: error: {seen[key]} and {r['run']} are both {r['data']}, {face(r)}, seed "
                     f"{r['seed']}; give one run a setting and seed")
        seen[key] = r["run"]
    settings = by_setting(rows)
    text = markdown(rows) + "\n" + markdown_by_setting(settings)
    if any(r["batch"] for r in rows):
        text += "\nBatch setting (every test probe re-ranked together; `identify --batch`):\n\n" + markdown_batch(rows)
    if any(r["open_set"] for r in rows):
        text += ("\nOpen set (DIR at FPIR, each method thresholding its own final score; bootstrap over mated and "
                 "non-mated searches; p: paired bootstrap, two-sided):\n\n" + markdown_open_set(rows))
    print(text)
    if args.out:
        with atomic_write(Path(args.out) / "summary.md") as f:
            f.write(text)
        write_json(Path(args.out) / "summary.json", {"runs": rows, "settings": settings})


if __name__ == "__main__":
    main()
