"""benchmarks/resolution_sweep.py: its rows, table and plot from benchmark metrics (the runs are in README)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "resolution_sweep.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("resolution_sweep", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _metrics(base: float, best: float) -> dict:
    method = {"rank1": best, "mcnemar_p": 0.01, "fixed": 9, "broken": 3, "headroom": 40, "headroom_fixed": 9,
              "headroom_broken": 3}
    return {"methods": {"baseline": {"rank1": base}, "lookalike-best": method},
            "protocol": {"n_probes_searched": 100, "n_gallery_searched": 80}, "timing": {"total_s": 12.34}}


def test_parse_size(sweep):
    assert sweep.parse_size("full") is None and sweep.parse_size("20") == 20
    for bad in ("3", "x", "-5"):
        with pytest.raises(argparse.ArgumentTypeError, match="face width"):
            sweep.parse_size(bad)


def test_rows_table_and_plot(sweep, tmp_path):
    rows = [sweep.sweep_row(12, _metrics(0.30, 0.36)), sweep.sweep_row(None, _metrics(0.90, 0.91))]
    assert rows[0]["size"] == 12 and rows[1]["size"] == "full"
    assert rows[0]["gain"] == pytest.approx(0.06) and rows[0]["headroom_fixed"] == 9
    table = sweep.markdown(rows).splitlines()
    assert len(table) == 4 and table[2].startswith("| 12 | 100 | 80 | 30.00 | 36.00 | +6.00 | 0.01 | 9 / 3 | 9 / 40 |")
    sweep.plot(rows, tmp_path / "s.png", "demo")
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_size_is_a_one_line_error(sweep, capsys):
    with pytest.raises(SystemExit) as e:
        sweep.main(["--data", "x", "--sizes", "2", "--out", "o"])
    assert e.value.code == 2
    assert "face width in pixels" in capsys.readouterr().err.strip().splitlines()[-1]
