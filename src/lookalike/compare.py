"""Two benchmark runs (or two methods of one run) compared on the same test searches, from what each run saved in
``rankings.npz``: rank-1 with the exact McNemar test, and DIR at FPIR 1% and 10% with a paired bootstrap (each
method thresholding its own final scores). Two models evaluated with ``benchmark --model`` on one protocol
(``--data OUT/protocol/protocol.csv``) are compared this way."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.metrics import OpenSetScores, mcnemar, open_set_statistics, unmeasurable_fpirs
from lookalike.report import format_p

DEFAULT_METHODS = ("lookalike-best", "lookalike-model", "baseline")  # the first a run has, when none is named


@dataclass
class RunMethod:
    """One method's test outcomes in one run: whom it searched, whether each rank-1 candidate is the mate, and its
    open-set scores (None for a run without distractors, or saved before they were)."""

    label: str
    probe_paths: np.ndarray
    probe_ids: np.ndarray
    gallery_paths: np.ndarray
    hits: np.ndarray
    open_set: OpenSetScores | None


def load_method(spec: str) -> RunMethod:
    """``RUN`` or ``RUN:METHOD`` (a ``lookalike benchmark`` output folder and one of its methods; by default the
    first of :data:`DEFAULT_METHODS` it has, else its first); a one-line ValueError for anything else."""
    run, method = Path(spec), None
    if not (run / "rankings.npz").is_file() and ":" in spec:
        head, _, method = spec.rpartition(":")
        run = Path(head)
    path = run / "rankings.npz"
    if not path.is_file():
        raise ValueError(f"{run}: no rankings.npz (not a `lookalike benchmark` output folder)")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: unreadable ({e})") from e
    missing = [k for k in ("probe_paths", "probe_ids", "gallery_paths", "gallery_ids") if k not in data]
    methods = [k[: -len(".indices")] for k in data if k.endswith(".indices")]
    if missing or not methods:
        raise ValueError(f"{path}: not a benchmark's rankings (no {', '.join(missing) or 'ranked lists'})")
    if method is None:
        method = next((m for m in DEFAULT_METHODS if m in methods), methods[0])
    if method not in methods:
        raise ValueError(f"{run}: no method {method!r}; it has {', '.join(methods)}")
    hits = data["gallery_ids"][data[f"{method}.indices"][:, 0]] == data["probe_ids"]
    open_set = None
    if f"{method}.open_mated_top" in data and len(data[f"{method}.open_nonmated_top"]):
        open_set = OpenSetScores(data[f"{method}.open_mated_top"], hits, data[f"{method}.open_nonmated_top"])
    return RunMethod(f"{run}:{method}", data["probe_paths"], data["probe_ids"], data["gallery_paths"], hits, open_set)


def compare(a: RunMethod, b: RunMethod, n_boot: int = 1000, seed: int = 0) -> dict:
    """``a`` against ``b`` on the same test probes (a ValueError when they are not): rank-1 of each, the difference
    and the exact McNemar test (fixed: probes ``a`` gets right and ``b`` does not); with both open sets on the same
    gallery, each one's DIR with its CI and the paired difference (:func:`~lookalike.metrics.open_set_statistics`)."""
    if not (np.array_equal(a.probe_paths, b.probe_paths) and np.array_equal(a.probe_ids, b.probe_ids)):
        raise ValueError(f"{a.label} and {b.label} did not search the same test probes: compare runs of one protocol "
                         "(`lookalike benchmark --data OUT/protocol/protocol.csv` reruns a saved one)")
    out = {"a": a.label, "b": b.label, "n_probes": len(a.hits),
           "rank1": {"a": float(a.hits.mean()), "b": float(b.hits.mean()),
                     "diff": float(a.hits.mean() - b.hits.mean()), **mcnemar(b.hits, a.hits)}}
    out["n_boot"] = n_boot
    if not np.array_equal(a.gallery_paths, b.gallery_paths):  # a paired test still, of method and gallery together
        out["gallery_note"] = (f"the runs searched different galleries ({len(a.gallery_paths)} and "
                               f"{len(b.gallery_paths)} images): the difference is the methods' and the galleries' "
                               "together")
        out["open_set"] = None
        out["open_set_note"] = "not compared: the runs searched other galleries"
    elif a.open_set is None or b.open_set is None:
        out["open_set"] = None
        out["open_set_note"] = ("not compared: a run has no non-mated searches (no distractors, or a run saved before "
                                "rankings.npz kept them)")
    else:
        cis, paired = open_set_statistics({"a": a.open_set, "b": b.open_set}, (("a", "b"),), n_boot=n_boot,
                                          seed=seed)
        out["open_set"] = {"n_nonmated": len(a.open_set.nonmated_top), "a": {**a.open_set.rates(), **cis["a"]},
                           "b": {**b.open_set.rates(), **cis["b"]}, "paired": paired["a", "b"]}
    return out


def format_comparison(r: dict) -> str:
    """Markdown for people: the rank-1 line, then a table of DIR at each FPIR."""
    k = r["rank1"]
    lines = [f"A = {r['a']}", f"B = {r['b']}", "",
             f"rank-1 on the same {r['n_probes']} probes: A {100 * k['a']:.2f}, B {100 * k['b']:.2f}, A - B "
             f"{100 * k['diff']:+.2f} points (exact McNemar p {k['mcnemar_p']:.2g}; {k['fixed']} probes A gets right "
             f"and B not, {k['broken']} the other way)"]
    if r.get("gallery_note"):
        lines.append(f"note: {r['gallery_note']}")
    o = r["open_set"]
    if o is None:
        return "\n".join([*lines, f"open set: {r['open_set_note']}"])
    few = unmeasurable_fpirs(o["n_nonmated"])
    if few:
        lines.append(f"note: {o['n_nonmated']} non-mated searches cannot measure FPIR "
                     f"{', '.join(f'{100 * f:g}%' for f in few)} (fewer than 1 / FPIR): those rows threshold above the "
                     "highest non-mated score")
    lines += ["", f"open set ({r['n_probes']} mated, {o['n_nonmated']} non-mated searches; each thresholding its own "
                  "scores; bootstrap 95% CIs, paired two-sided bootstrap p):", "",
              "| FPIR | DIR A [95% CI] | DIR B [95% CI] | A - B [95% CI] | p |", "|---|---|---|---|---|"]
    for f in ("0.01", "0.1"):
        key, p = f"dir@fpir={f}", o["paired"]
        ci = [f"[{100 * lo:.2f}, {100 * hi:.2f}]" for lo, hi in (o["a"][f"{key}_ci95"], o["b"][f"{key}_ci95"])]
        lo, hi = p[f"{key}_diff_ci95"]
        lines.append(f"| {100 * float(f):g}% | {100 * o['a'][key]:.2f} {ci[0]} | {100 * o['b'][key]:.2f} {ci[1]} | "
                     f"{100 * p[f'{key}_diff']:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | "
                     f"{format_p(p[f'{key}_p'], r['n_boot'])} |")
    return "\n".join(lines)
