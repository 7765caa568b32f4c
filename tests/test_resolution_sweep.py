"""benchmarks/resolution_sweep.py: its rows, table and plot from benchmark metrics (the runs are in README)."""

from __future__ import annotations

import argparse

import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def sweep():
    return load_script("resolution_sweep")


def _metrics(base: float, best: float, plain: float | None = None) -> dict:
    method = {"rank1": best, "mcnemar_p": 0.01, "fixed": 9, "broken": 3, "headroom": 40, "headroom_fixed": 9,
              "headroom_broken": 3}
    methods = {"baseline": {"rank1": base}, "lookalike-best": method}
    paired = {}
    if plain is not None:  # a torch-flip run: the plain matcher's baseline beside it
        methods["baseline-plain"] = {"rank1": plain}
        paired = {"lookalike-best": {"baseline-plain": {"rank1_diff": best - plain, "mcnemar_p": 1e-5}}}
    return {"methods": methods, "paired": paired, "config": {"matcher": "torch-flip" if plain else "torch"},
            "protocol": {"n_probes_searched": 100, "n_gallery_searched": 80}, "timing": {"total_s": 12.34}}


def test_parse_size(sweep):
    assert sweep.parse_size("full") is None and sweep.parse_size("20") == 20
    for bad in ("3", "x", "-5"):
        with pytest.raises(argparse.ArgumentTypeError, match="face width"):
            sweep.parse_size(bad)


def test_rows_table_and_plot(sweep, tmp_path):
    rows = [sweep.sweep_row(12, _metrics(0.30, 0.36, plain=0.25)), sweep.sweep_row(None, _metrics(0.90, 0.91))]
    assert rows[0]["size"] == 12 and rows[1]["size"] == "full"
    assert rows[0]["gain"] == pytest.approx(0.06) and rows[0]["headroom_fixed"] == 9
    assert rows[0]["gain_vs_plain"] == pytest.approx(0.11) and rows[0]["mcnemar_p_vs_plain"] == 1e-5
    assert rows[1]["plain_rank1"] == 0.90 and rows[1]["mcnemar_p_vs_plain"] == 0.01  # no plain run: the baseline
    table = sweep.markdown(rows).splitlines()
    assert len(table) == 4
    assert table[2] == ("| 12 | torch-flip | 100 | 80 | 25.00 | 30.00 | 36.00 | +11.00 (1e-05) | +6.00 (0.01) | 9 / 3 "
                        "| 9 / 40 |")
    assert table[3].startswith("| full | torch | 100 | 80 | 90.00 | 90.00 | 91.00 | +1.00 (0.01) | +1.00 (0.01) |")
    sweep.plot(rows, tmp_path / "s.png", "demo")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_size_is_a_one_line_error(sweep, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(["--data", "x", "--sizes", "2", "--out", "o"])
    assert e.value.code == 2
    assert "face width in pixels" in capsys.readouterr().err.strip().splitlines()[-1]
