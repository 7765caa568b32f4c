"""benchmarks/runs_summary.py: one table of several runs from their metrics.json (the real table is in README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_scripts import BENCHMARKS, load_script

SCRIPT = BENCHMARKS / "runs_summary.py"


@pytest.fixture(scope="module")
def summary():
    return load_script("runs_summary")


def _run(folder: Path, lowres: int | None, base: float, best: float, plain: float | None = None, seed: int = 1) -> Path:
    best_m = {"rank1": best, "rank1_ci95": [best - 0.01, best + 0.01], "mcnemar_p": 0.02, "fixed": 7, "broken": 2}
    methods = {"baseline": {"rank1": base}, "lookalike-best": best_m}
    paired = {"lookalike-best": {"lookalike-global": {"rank1_diff": 0.001, "mcnemar_p": 1.0, "fixed": 1, "broken": 0}}}
    if plain is not None:
        methods["baseline-plain"] = {"rank1": plain}
        paired["lookalike-best"]["baseline-plain"] = {"rank1_diff": best - plain, "mcnemar_p": 1e-5, "fixed": 30,
                                                      "broken": 4}
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({
        "methods": methods, "paired": paired, "protocol": {"n_probes": 120, "n_probes_searched": 100},
        "config": {"data": "../shared/data/lfw", "seed": seed, "lowres": lowres, "degrade": "bicubic"}}))
    return folder


def test_rows_compare_the_saved_model_with_the_plain_baseline(summary, tmp_path):
    full = summary.run_row(_run(tmp_path / "full", None, 0.90, 0.92))
    low = summary.run_row(_run(tmp_path / "low", 20, 0.52, 0.56, plain=0.48))
    # full resolution: the run's own baseline is the plain matcher, and the saved model's test against it is used
    assert full["plain"] == 0.90 and full["paired"]["baseline-plain"]["fixed"] == 7
    assert full["paired"]["baseline-plain"]["rank1_diff"] == pytest.approx(0.02)
    assert low["plain"] == 0.48 and low["baseline"] == 0.52 and low["paired"]["baseline-plain"]["fixed"] == 30
    assert low["probes"] == 100 and "kreciprocal-transductive" not in low["paired"]
    table = summary.markdown([full, low]).splitlines()
    assert len(table) == 4
    assert "| lfw | 1 | ~20 px | 100 | 48.00 | 52.00 | 56.00 [55.00, 57.00] | +8.00 (1e-05; 30 / 4) |" in table[3]
    assert table[3].endswith("| – | +0.10 (1; 1 / 0) | – |")


def test_settings_summarise_the_gain_over_seeds(summary, tmp_path):
    rows = [summary.run_row(_run(tmp_path / f"low{seed}", 20, 0.52, best, plain=0.48, seed=seed))
            for seed, best in ((2, 0.50), (0, 0.56))] + [summary.run_row(_run(tmp_path / "full", None, 0.90, 0.92))]
    low, full = summary.by_setting(rows)
    assert low["seeds"] == [0, 2] and low["gains"] == pytest.approx([0.08, 0.02]) and low["mean"] == pytest.approx(0.05)
    assert low["significant"] == 2 and full["seeds"] == [1] and full["significant"] == 0  # full: p 0.02
    table = summary.markdown_by_setting([low, full]).splitlines()
    assert table[2] == "| lfw | ~20 px | 0, 2 | +8.00, +2.00 | +5.00 | +2.00 to +8.00 | 2 of 2 |"
    assert table[3] == "| lfw | full | 1 | +2.00 | +2.00 | +2.00 to +2.00 | 0 of 1 |"


def test_a_folder_without_metrics_is_a_one_line_error(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip() == f"runs_summary: error: no metrics.json in {tmp_path}"


def test_runs_it_cannot_summarise_are_one_line_errors(summary, tmp_path):
    """A corrupt metrics.json, a run without a saved model (--no-rerank, --model), and two runs of one setting and
    seed (they would count as two seeds) are refused in one line; a rerun of a saved protocol.csv is named after the
    protocol's dataset, not "protocol.csv"."""
    import os

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCHMARKS.parent / "src"), str(BENCHMARKS)])}

    def refused(*runs: Path) -> str:
        r = subprocess.run([sys.executable, str(SCRIPT), *map(str, runs)], capture_output=True, text=True, env=env)
        assert r.returncode == 1 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        return r.stderr

    good = _run(tmp_path / "good", 20, 0.52, 0.56, plain=0.48)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "metrics.json").write_text((good / "metrics.json").read_text()[:50])
    assert "not valid JSON" in refused(corrupt)
    plain_only = tmp_path / "plain"
    plain_only.mkdir()
    (plain_only / "metrics.json").write_text(json.dumps({"methods": {"baseline": {"rank1": 0.5}}, "config": {}}))
    assert "no lookalike-best" in refused(plain_only)
    again = _run(tmp_path / "again", 20, 0.52, 0.56, plain=0.48)
    assert "both lfw, ~20 px, seed 1" in refused(good, again)
    m = json.loads((again / "metrics.json").read_text())
    m["config"]["data"] = "runs/orl/protocol/protocol.csv"
    m["protocol"]["name"] = "orl-closedset-lowres20-both"
    (again / "metrics.json").write_text(json.dumps(m))
    assert summary.run_row(again)["data"] == "orl"


def test_batch_table_compares_the_batch_setting_with_both_settings(summary, tmp_path):
    """Runs with a ``lookalike-batch`` row get the batch table: against the plain baseline (at full resolution the
    run's own baseline and the row's McNemar test), the transductive k-reciprocal and the per-photo model."""
    rows = []
    for name, lowres, plain in (("low", 20, 0.48), ("full", None, None)):
        folder = _run(tmp_path / name, lowres, 0.52, 0.56, plain=plain)
        m = json.loads((folder / "metrics.json").read_text())
        m["methods"]["lookalike-batch"] = {"rank1": 0.61, "mcnemar_p": 1e-4, "fixed": 20, "broken": 3}
        m["methods"]["kreciprocal-transductive"] = {"rank1": 0.58}
        vs = {"rank1_diff": 0.03, "mcnemar_p": 0.002, "fixed": 9, "broken": 4}
        m["paired"]["lookalike-batch"] = {"kreciprocal-transductive": vs, "lookalike-best": vs}
        if plain is not None:
            m["paired"]["lookalike-batch"]["baseline-plain"] = {"rank1_diff": 0.13, "mcnemar_p": 1e-9, "fixed": 40,
                                                                "broken": 2}
        m["rerank_stats"] = {"lookalike-batch": {"batch": {"k1": 30, "k2": 3, "lam": 0.7}, "tuning": {
            "kept": True, "val_rank1": 0.7, "per_photo_val_rank1": 0.65}}}
        (folder / "metrics.json").write_text(json.dumps(m))
        rows.append(summary.run_row(folder))
    rows.append(summary.run_row(_run(tmp_path / "old", 20, 0.52, 0.56, plain=0.48)))  # no batch row: left out
    table = summary.markdown_batch(rows).splitlines()
    assert len(table) == 4
    assert table[2] == ("| lfw | 1 | ~20 px | 48.00 | 56.00 | 58.00 | 61.00 | +13.00 (1e-09; 40 / 2) | "
                        "+3.00 (0.002; 9 / 4) | +3.00 (0.002; 9 / 4) | 65.00 → 70.00 (yes) |")
    assert table[3].startswith("| lfw | 1 | full | 52.00 | 56.00 | 58.00 | 61.00 | +9.00 (0.0001; 20 / 3) |")


def test_open_set_table_pairs_the_saved_model_with_the_plain_baseline(summary, tmp_path):
    """Runs whose metrics.json has the open-set statistics get one row per FPIR: at full resolution the plain
    baseline is the run's own (``baseline``), at ~20 px ``baseline-plain``; older runs are left out."""
    rows = []
    for name, lowres, plain in (("low", 20, 0.48), ("full", None, None)):
        folder = _run(tmp_path / name, lowres, 0.52, 0.56, plain=plain)
        m = json.loads((folder / "metrics.json").read_text())
        base = "baseline" if plain is None else "baseline-plain"
        m["open_set"] = {n: {**{f"dir@fpir={f}": d + (0.2 if f == "0.1" else 0) for f in ("0.01", "0.1")},
                             **{f"dir@fpir={f}_ci95": [d - 0.02, d + 0.02] for f in ("0.01", "0.1")}}
                         for n, d in ((base, 0.10), ("lookalike-best", 0.20))}
        vs = {f"dir@fpir={f}_{k}": v for f in ("0.01", "0.1") for k, v in
              (("diff", 0.10), ("diff_ci95", [0.05, 0.15]), ("p", 2 / 1001))}
        m["config"]["n_boot"] = 1000
        m["paired_open_set"] = {"lookalike-best": {base: vs, "lookalike-global": vs}}
        (folder / "metrics.json").write_text(json.dumps(m))
        rows.append(summary.run_row(folder))
    rows.append(summary.run_row(_run(tmp_path / "old", 20, 0.52, 0.56, plain=0.48)))  # no statistics: left out
    assert rows[1]["open_set"]["0.01"]["paired"]["baseline-plain"]["diff"] == 0.10 and rows[2]["open_set"] is None
    table = summary.markdown_open_set(rows).splitlines()
    assert len(table) == 6
    assert table[2] == ("| lfw | 1 | ~20 px | 1.00% | 10.00 [8.00, 12.00] | 20.00 [18.00, 22.00] | "
                        "+10.00 [+5.00, +15.00] (≤ 0.002) | – | +10.00 [+5.00, +15.00] (≤ 0.002) |")
    assert table[3].startswith("| lfw | 1 | ~20 px | 10.00% | 30.00 [8.00, 12.00] | 40.00 ")
    assert table[4].startswith("| lfw | 1 | full | 1.00% | 10.00 ")


def test_one_side_degraded_is_its_own_setting(summary):
    """Runs degrading only the probes or only the gallery are labelled so and grouped apart from both sides."""
    both = {"lowres": 20, "degrade": "bicubic"}
    assert summary.face(both) == "~20 px"
    assert summary.face({**both, "lowres_apply": "gallery"}) == "~20 px, gallery only"
    assert summary.face({**both, "degrade": "realistic", "lowres_apply": "probes"}) == "~20 px realistic, probes only"
    assert summary.face({"lowres": None, "degrade": "bicubic", "lowres_apply": "gallery"}) == "full"
