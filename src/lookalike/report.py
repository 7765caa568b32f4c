"""What a benchmark writes for people: report.md, the CMC plot and example montages."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike.io import atomic_write
from lookalike.metrics import OpenSetScores, unmeasurable_fpirs

RANK_KEYS = ("rank1", "rank5", "rank10", "rank20", "rank50", "mAP")


def _pct(x: float) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.2f}"


def _ci(o: dict, key: str) -> str:
    lo, hi = o.get(f"{key}_ci95", [None, None])
    return f"{_pct(lo)}–{_pct(hi)}"


def format_p(p: float, n_boot: int | None) -> str:
    """A bootstrap p-value, "≤ p" at its floor for ``n_boot`` resamples (no resample on the far side of zero)."""
    return f"{'≤ ' if n_boot is not None and p <= 2 / (n_boot + 1) + 1e-12 else ''}{p:.2g}"


def _paired(r: dict, key: str, n_boot: int | None) -> str:
    """A paired bootstrap difference in points: ``r``'s ``{key}_diff`` [its 95% CI], p."""
    lo, hi = r[f"{key}_diff_ci95"]
    return f"{100 * r[f'{key}_diff']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}], p {format_p(r[f'{key}_p'], n_boot)}"


def method_table(methods: dict[str, dict]) -> str:
    """Markdown table of every method's metrics (percentages), with CI and paired statistics."""
    head = ("| method | rank-1 | 95% CI | rank-5 | rank-10 | rank-20 | rank-50 | mAP | 95% CI | McNemar p | fixed | "
            "broken | headroom fixed |")
    lines = [head, "|" + "---|" * 13]
    for name, m in methods.items():
        p = m.get("mcnemar_p")
        lines.append(
            f"| {name} | {_pct(m['rank1'])} | {_ci(m, 'rank1')} | {_pct(m['rank5'])} | {_pct(m['rank10'])} | "
            f"{_pct(m['rank20'])} | {_pct(m.get('rank50'))} | {_pct(m['mAP'])} | {_ci(m, 'mAP')} | "
            f"{'–' if p is None else f'{p:.2g}'} | {m.get('fixed', '–')} | {m.get('broken', '–')} | "
            + (f"{m['headroom_fixed']} of {m['headroom']} |" if "headroom" in m else "– |"))
    return "\n".join(lines)


def rows_table(rows: list[dict], seconds_key: str) -> str:
    """:func:`method_table` of rows that each carry a ``method`` name, then each row's seconds."""
    times = ", ".join(f"{r['method']} {r[seconds_key]:.1f}" for r in rows)
    return method_table({r["method"]: r for r in rows}) + f"\nseconds: {times}"


def open_set_section(open_set: dict[str, dict], paired: dict[str, dict[str, dict]] | None = None,
                     n_boot: int | None = None) -> list[str]:
    """Markdown lines: every method's FNIR and DIR at FPIR 1% and 10%, from its own final scores, with DIR's
    bootstrap CI; then DIR paired against other methods on the same searches (``paired``; a p at its floor for
    ``n_boot`` resamples is shown as an upper bound)."""
    measured = {k: o for k, o in open_set.items() if any(x.startswith("fnir") for x in o)}
    if not measured:
        return ["Open set: not measured (no distractors to search with).", ""]
    any_o = next(iter(measured.values()))
    lines = ["## Open-set identification (rank 1, %)", "",
             "| method | FNIR @ FPIR 1% | DIR @ FPIR 1% | 95% CI | FNIR @ FPIR 10% | DIR @ FPIR 10% | 95% CI |",
             "|---|---|---|---|---|---|---|"]
    for name, o in measured.items():
        lines.append(f"| {name} | {_pct(o.get('fnir@fpir=0.01'))} | {_pct(o.get('dir@fpir=0.01'))} | "
                     f"{_ci(o, 'dir@fpir=0.01')} | {_pct(o.get('fnir@fpir=0.1'))} | {_pct(o.get('dir@fpir=0.1'))} | "
                     f"{_ci(o, 'dir@fpir=0.1')} |")
    lines += ["", f"{any_o['n_mated']} mated searches; {any_o['n_nonmated']} non-mated searches (each distractor "
                  "against the rest of the gallery), each method thresholding its own final score. CI: bootstrap "
                  "over the mated and the non-mated searches, each resample setting its own threshold.", ""]
    few = unmeasurable_fpirs(any_o["n_nonmated"])
    if few:
        lines += [f"**Too few non-mated searches for FPIR {', '.join(f'{100 * f:g}%' for f in few)}** (fewer than 1 / "
                  "FPIR): the threshold there sits above the highest non-mated score (an FPIR of 0 on these "
                  "searches), so those columns are not DIR at that FPIR; a gallery with more distractors measures it.",
                  ""]
    rows = [f"- `{name}` vs `{other}`: DIR @ FPIR 1% {_paired(r, 'dir@fpir=0.01', n_boot)}; @ FPIR 10% "
            f"{_paired(r, 'dir@fpir=0.1', n_boot)}" for name, others in (paired or {}).items()
            for other, r in others.items() if r]
    if rows:
        lines += ["Paired open set, same searches (difference in DIR points, paired bootstrap 95% CI, two-sided "
                  "bootstrap p):", "", *rows, ""]
    return lines


def batch_sentence(metrics: dict) -> list[str]:
    """Markdown lines saying what the batch row (``lookalike-batch`` or ``lookalike-model-batch``) is."""
    for name, st in metrics.get("rerank_stats", {}).items():
        if name.endswith("-batch") and "tuning" in st:
            t = st["tuning"]
            if "skipped" in t:
                return [f"`{name}`: the model has no batch setting ({t['skipped']}); its per-photo lists.", ""]
            how = (f"k-reciprocal re-ranking in the model's disambiguator space with k1={st['batch']['k1']}, "
                   f"k2={st['batch']['k2']}, λ={st['batch']['lam']}" if st.get("reranked_together", st["batch"]) else
                   "none: the model has no batch setting, or fewer test probes than its minimum batch, so these are "
                   "its per-photo lists")
            return [f"`{name}` is the model's batch setting, what `identify --batch` does with many photos: every "
                    f"test probe re-ranked together ({how}). Chosen on validation by the rule \"{t['rule']}\": "
                    f"validation rank-1 {100 * t['per_photo_val_rank1']:.2f} per photo, "
                    f"{100 * t['val_rank1']:.2f} as a batch. It is the same setting as `kreciprocal-transductive` "
                    "(all test probes at once), not what one photo gets; its open-set decision (whether the person "
                    "is enrolled) is the per-photo score's, the batch order only chooses whom.", ""]
    return []


def disambiguator_sentence(metrics: dict) -> list[str]:
    """Markdown lines saying what ``lookalike-disamb-only`` and ``lookalike-global`` are (when they ran)."""
    st = metrics.get("rerank_stats", {}).get("lookalike-global")
    if st is None:
        return []
    if "skipped" in st:
        return [f"`lookalike-global` was not run: {st['skipped']}.", ""]
    return ["`lookalike-disamb-only` is a disambiguator alone (no fusion) re-ordering the top of the matcher's "
            "list (how deep tuned on validation); `lookalike-global` is the saved model's disambiguator "
            f"({st['disambiguator']}) used as the matcher: the whole gallery ranked by its score alone.", ""]


def paired_section(paired: dict[str, dict[str, dict]], n_boot: int | None = None) -> list[str]:
    """Markdown lines: a method's rank-1 against others on the same probes (difference, exact McNemar), and its
    mAP (difference, paired bootstrap CI and p, with ``n_boot`` resamples) where the run has it."""
    lines = []
    for name, rows in paired.items():
        for other, r in rows.items():
            line = (f"- `{name}` vs `{other}`: {100 * r['rank1_diff']:+.2f} rank-1 points, McNemar p "
                    f"{r['mcnemar_p']:.2g} ({r['fixed']} fixed, {r['broken']} broken)")
            if "mAP_diff" in r:
                line += f"; mAP {_paired(r, 'mAP', n_boot)}"
            lines.append(line)
    return ["Paired rank-1 and mAP, same probes:", "", *lines, ""] if lines else []


def fixed_model_section(metrics: dict) -> list[str]:
    """Markdown lines on a model evaluated as it is (``benchmark --model``): what it is and how its own
    calibrated thresholds fare here; none for a run that trains its re-rankers."""
    info = metrics.get("rerank_stats", {}).get("lookalike-model")
    if info is None:
        return []
    data = info["training"].get("data_fingerprint", {})
    trained = f"{data['people']} people, {data['images']} images" if data else "its own data"
    lines = [f"`lookalike-model` is `{info['file']}` ({info['disambiguator']}, {info['selection']}, "
             f"{info['normaliser']} weight {info['weight']}; trained on {trained}), applied as it is: nothing was "
             "trained or tuned on this dataset; no other re-ranker was run.", "",
             "At the model's own thresholds (calibrated on its validation people):", "",
             "| target FPIR (%) | threshold | FPIR here (%) | DIR here (%) |", "|---|---|---|---|"]
    for f, c in metrics["open_set"]["lookalike-model"].get("calibrated", {}).items():
        lines.append(f"| {_pct(float(f))} | {c['threshold']:.4f} | {_pct(c['fpir'])} | {_pct(c['dir'])} |")
    return lines + [""]


def plot_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str, xlabel: str,
                ylabel: str) -> None:
    """Every method's (x, y) curve, in percent, on one plot with a log x axis: the baseline in black, the others in
    ten colours and then dashed, the legend beside the plot (a run can have sixteen methods)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5))
    ax = fig.subplots()
    for i, (name, (x, y)) in enumerate(curves.items()):
        base = name == "baseline"
        ax.plot(x, 100 * y, label=name, lw=2 if base else 1.2, color="black" if base else f"C{i % 10}",
                ls="-" if base or i <= 10 else "--")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def plot_cmc(curves: dict[str, np.ndarray], path: str | Path, title: str = "CMC") -> None:
    """All methods' CMC curves on one plot."""
    plot_curves({n: (np.arange(1, len(c) + 1), c) for n, c in curves.items()}, path, title, "rank",
                "identification rate (%)")


def plot_fnir_fpir(outcomes: dict[str, OpenSetScores], path: str | Path, title: str = "FNIR against FPIR") -> None:
    """Every method's FNIR against FPIR (rank 1, each method thresholding its own scores), FPIR from one non-mated
    search to all of them."""
    fpirs = {n: np.geomspace(1 / len(o.nonmated_top), 1, 60) for n, o in outcomes.items()}
    plot_curves({n: (100 * fpirs[n], o.fnir_curve(fpirs[n])) for n, o in outcomes.items()}, path, title,
                "FPIR (%): non-mated searches whose top score reaches the threshold",
                "FNIR (%): mated searches missed at rank 1")


def plot_examples(rows: list[tuple[str, int]], probe_chips: np.ndarray, gallery_chips: dict[int, np.ndarray],
                  before: np.ndarray, after: np.ndarray, mates: list[set[int]], path: str | Path,
                  n_show: int = 5) -> None:
    """Probes fixed/broken by a method: the probe, then its top-5 before and after (mates framed green).

    ``rows`` are (label, probe index); ``before``/``after`` candidate indices (Q, K); chips are uint8 images.
    """
    from matplotlib.figure import Figure

    if not rows:
        return
    fig = Figure(figsize=(1.1 * (1 + 2 * n_show), 1.25 * len(rows)))
    axes = fig.subplots(len(rows), 1 + 2 * n_show, squeeze=False)
    for r, (label, q) in enumerate(rows):
        cells = [("probe", probe_chips[q], None)]
        cells += [(f"b{i + 1}", gallery_chips[g], g in mates[q]) for i, g in enumerate(before[q, :n_show])]
        cells += [(f"a{i + 1}", gallery_chips[g], g in mates[q]) for i, g in enumerate(after[q, :n_show])]
        for c, (title, chip, is_mate) in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(chip)
            ax.set_xticks([])
            ax.set_yticks([])
            color = "none" if is_mate is None else ("limegreen" if is_mate else "red")
            for s in ax.spines.values():
                s.set_edgecolor(color)
                s.set_linewidth(3)
            ax.set_title(label if c == 0 else title, fontsize=6)
    fig.suptitle("probe | top-5 before (b) | top-5 after (a); green = true mate", fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def write_report(path: str | Path, metrics: dict, images: list[tuple[str, str]]) -> None:
    """report.md: settings, counts, the table of methods, skips, timing, versions, and the figures."""
    p = metrics["protocol"]
    lines = [f"# lookalike benchmark — {p['name']}", ""]
    res = "full" if p["lowres"] is None else f"~{p['lowres']} px faces ({p['lowres_apply']})"
    lines += [f"Data: `{p['data']}`; seed {p['seed']}; matcher `{p['matcher']}`; resolution: {res}.",
              "", f"Probes searched: **{p['n_probes_searched']}** (of {p['n_probes']}); gallery: "
              f"**{p['n_gallery_searched']}** images ({p['n_enrolled']} enrolled, {p['n_distractors']} distractors); "
              f"probes without a mate in the gallery (set aside): {p['probes_without_mate']}.", ""]
    lines += ["## Closed-set identification (%)", "", method_table(metrics["methods"]), ""]
    lines += ["rank-k: a probe hits if a mated gallery image is in its top k (TinyFace's definition); mAP as "
              "TinyFace's official `compute_AP`; 95% CI: bootstrap over probes (rank-1); McNemar: exact test of "
              "rank-1 against the baseline on the same probes; fixed/broken: probes whose rank-1 changed; headroom "
              "fixed: of the probes whose mate the baseline ranks 2nd to 10th, how many the method moves to rank 1."
              + ("" if "lookalike-model" in metrics["methods"] else
                 " Every re-ranker is fitted on train people and tuned on the validation split by rank-1 (ties: MRR); "
                 "`lookalike-best` is the saved model (`model.lkm`), evaluated as saved."), ""]
    st = metrics.get("rerank_stats", {}).get("kreciprocal-transductive")
    if st:
        lines += ["`kreciprocal` re-ranks each probe's own list from that probe and its candidates alone; "
                  "`kreciprocal-transductive` is the authors' transductive setting: one k-reciprocal re-ranking "
                  "over all test probes and the gallery together (an evaluation-only baseline), with the paper's "
                  f"k1={st['k1']}, k2={st['k2']}, λ={st['lam']}, untuned; its score is the negative final distance."
                  + (" `lookalike-transductive` is the same over the saved model's disambiguator space (the faces "
                     "projected by it, no cohort terms): the transductive setting with the lookalike model's metric."
                     if "lookalike-transductive" in metrics["methods"] else ""), ""]
    lines += batch_sentence(metrics)
    plain = metrics.get("rerank_stats", {}).get("baseline-plain")
    if plain:
        lines += [f"`baseline-plain`: {plain['skipped']}." if "skipped" in plain else
                  f"`baseline` is the run's matcher (`{p['matcher']}`); `baseline-plain` is the same test split "
                  f"searched with `{plain['matcher']}`, the matcher without its test-time augmentation: the gap "
                  "between them is what the augmentation adds, the rest of the table what re-ranking adds on top.", ""]
    lines += disambiguator_sentence(metrics)
    lines += paired_section(metrics.get("paired", {}), metrics.get("config", {}).get("n_boot"))
    lines += fixed_model_section(metrics)
    lines += open_set_section(metrics.get("open_set", {}), metrics.get("paired_open_set"),
                              metrics.get("config", {}).get("n_boot"))
    for title, img in images:
        lines += [f"## {title}", "", f"![{title}]({img})", ""]
    e = metrics.get("embedding", {})
    lines += ["## Images", "", "| what | count |", "|---|---|"]
    lines += [f"| images embedded | {e.get('images', 0)} ({e.get('computed', 0)} computed, "
              f"{e.get('cached', 0)} from cache) |"]
    for k, v in sorted(e.get("face", {}).items()):
        lines.append(f"| face {k} | {v} |")
    lines.append(f"| several faces seen (nearest the centre used) | {e.get('several_faces', 0)} |")
    counts = metrics.get("inputs", {}).get("counts", {})  # the loader's and the screening's too, not only embedding's
    for k, v in sorted(counts.get("skipped", e.get("skipped", {})).items()):
        lines.append(f"| skipped: {k} | {v} |")
    if "duplicates" in counts:
        lines.append(f"| duplicate files (same bytes; `duplicates.csv`) | {counts['duplicates']} |")
    if counts.get("probes set aside"):
        lines.append(f"| probes set aside (no usable gallery image; `set_aside.csv`) | {counts['probes set aside']} |")
    lines += ["", "Every image's face/crop record is in `images.csv`; skipped images, with reasons, in "
              "`skipped.csv`.", ""]
    if metrics.get("rerank_stats"):
        details = [f"{k}: {v}" for k, v in metrics["rerank_stats"].items()]
        lines += ["## Re-ranking details", "", "```", *details, "```", ""]
    lines += ["## Timing (s)", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in metrics["timing"].items()]
    lines += ["", "## Settings", "", "```", *[f"{k}: {v}" for k, v in p.items()], "```", ""]
    lines += ["## Versions", "", "```", *[f"{k}: {v}" for k, v in metrics["versions"].items()], "```", ""]
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines))
