"""`lookalike compare`: two runs (or two methods of one run) paired on the same test probes, from rankings.npz."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.cli import main
from lookalike.compare import compare, load_method
from lookalike.io import save_npz
from lookalike.metrics import OpenSetScores, mcnemar, paired_dir


def _run(folder: Path, hits: dict[str, np.ndarray], open_top: dict[str, tuple] | None = None,
         probes: int = 200, gallery: int = 50) -> Path:
    """A rankings.npz whose methods put the mate first exactly where ``hits`` says (gallery face i is person i)."""
    folder.mkdir(parents=True)
    probe_ids = np.arange(probes) % gallery
    arrays = {"probe_paths": np.array([f"p{i}.jpg" for i in range(probes)]), "probe_ids": probe_ids.astype(str),
              "gallery_paths": np.array([f"g{i}.jpg" for i in range(gallery)]),
              "gallery_ids": np.arange(gallery).astype(str)}
    for name, h in hits.items():
        first = np.where(h, probe_ids, (probe_ids + 1) % gallery)
        arrays[f"{name}.indices"] = np.stack([first, (first + 2) % gallery], 1)
        arrays[f"{name}.scores"] = np.tile([0.9, 0.8], (probes, 1)).astype(np.float32)
    for name, (mated, nonmated) in (open_top or {}).items():
        arrays[f"{name}.open_mated_top"], arrays[f"{name}.open_nonmated_top"] = mated, nonmated
    save_npz(folder / "rankings.npz", **arrays)
    return folder


def test_rank1_and_open_set_are_paired(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a_hits, b_hits = rng.random(200) < 0.8, rng.random(200) < 0.6
    tops = {m: (rng.normal(2, 1, 200), rng.normal(0, 1, 300)) for m in ("lookalike-best", "baseline")}
    run = _run(tmp_path / "one", {"baseline": b_hits, "lookalike-best": a_hits}, tops)
    other = _run(tmp_path / "two", {"lookalike-model": b_hits}, {"lookalike-model": tops["baseline"]})
    r = compare(load_method(str(run)), load_method(str(other)), n_boot=200)  # defaults: lookalike-best, -model
    assert r["a"] == f"{run}:lookalike-best" and r["b"] == f"{other}:lookalike-model"
    assert r["rank1"] == {"a": a_hits.mean(), "b": b_hits.mean(), "diff": pytest.approx(a_hits.mean() - b_hits.mean()),
                          **mcnemar(b_hits, a_hits)}
    want = paired_dir(OpenSetScores(tops["lookalike-best"][0], a_hits, tops["lookalike-best"][1]),
                      OpenSetScores(tops["baseline"][0], b_hits, tops["baseline"][1]), n_boot=200)
    assert r["open_set"]["paired"] == want and r["open_set"]["n_nonmated"] == 300
    same = compare(load_method(f"{run}:baseline"), load_method(str(other)), n_boot=200)  # the same outcomes
    assert same["rank1"]["diff"] == 0 and same["rank1"]["mcnemar_p"] == 1 and same["open_set"]["paired"][
        "dir@fpir=0.1_p"] == 1


def test_cli_prints_a_table_or_json_and_refuses_what_cannot_be_paired(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    run = _run(tmp_path / "one", {"baseline": rng.random(200) < 0.5, "lookalike-best": rng.random(200) < 0.7})
    assert main(["compare", str(run), f"{run}:baseline"]) == 0
    out = capsys.readouterr().out
    assert "rank-1 on the same 200 probes" in out and "open set: not compared" in out  # no non-mated searches saved
    assert main(["compare", str(run), f"{run}:baseline", "--format", "json", "--n-boot", "50"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rank1"]["b"] == pytest.approx(load_method(f"{run}:baseline").hits.mean())
    fewer = _run(tmp_path / "fewer", {"baseline": rng.random(100) < 0.5}, probes=100)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "rankings.npz").write_bytes(b"PK\x03\x04 cut short")
    save_npz(tmp_path / "other.npz", x=np.zeros(3))
    (tmp_path / "other").mkdir()
    (tmp_path / "other.npz").rename(tmp_path / "other" / "rankings.npz")
    for args, message in (([str(run), str(fewer)], "did not search the same test probes"),
                          ([f"{run}:aqe", str(run)], "no method 'aqe'; it has baseline, lookalike-best"),
                          ([str(tmp_path / "nothing"), str(run)], "no rankings.npz"),
                          ([str(tmp_path / "broken"), str(run)], "rankings.npz: unreadable"),
                          ([str(run), str(tmp_path / "other")], "not a benchmark's rankings (no probe_paths")):
        assert main(["compare", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lookalike: error:") and message in err and err.count("\n") == 1


def test_runs_of_other_galleries_are_compared_with_a_note(tmp_path: Path, capsys) -> None:
    """The same probes against a gallery with fewer distractors: the paired rank-1 test is made, and it says that
    the galleries differ (the difference is the methods' and the galleries' together); no open set is paired."""
    rng = np.random.default_rng(2)
    a = _run(tmp_path / "a", {"baseline": rng.random(200) < 0.5})
    b = _run(tmp_path / "b", {"baseline": rng.random(200) < 0.5})
    with np.load(b / "rankings.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["gallery_paths"] = np.array([f"other{i}.jpg" for i in range(50)])
    save_npz(b / "rankings.npz", **arrays)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "note: the runs searched different galleries (50 and 50 images)" in out
    assert "open set: not compared: the runs searched other galleries" in out


def test_an_fpir_too_few_non_mated_searches_cannot_measure_is_said(tmp_path: Path, capsys) -> None:
    """Six non-mated searches cannot measure FPIR 1% or 10% (their threshold sits above every non-mated score): the
    report, compare and metrics say so instead of showing the figures as DIR at those FPIRs."""
    from lookalike.benchmark import open_set_summary
    from lookalike.metrics import unmeasurable_fpirs
    from lookalike.report import open_set_section

    rng = np.random.default_rng(3)
    o = OpenSetScores(rng.random(40), rng.random(40) < 0.7, rng.random(6))
    summary, _ = open_set_summary({"baseline": o}, n_boot=20, seed=0)
    assert summary["baseline"]["unmeasurable_fpirs"] == [0.01, 0.1] == unmeasurable_fpirs(6)
    assert unmeasurable_fpirs(99) == [0.01] and unmeasurable_fpirs(100) == []
    text = "\n".join(open_set_section(summary))
    assert "Too few non-mated searches for FPIR 1%, 10%" in text
    ok, _ = open_set_summary({"baseline": OpenSetScores(rng.random(40), rng.random(40) < 0.7, rng.random(500))},
                             n_boot=20, seed=0)
    assert "Too few" not in "\n".join(open_set_section(ok))
