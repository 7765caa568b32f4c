"""The command line end to end on a small real dataset (ORL), and its error handling."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike.cli import main
from lookalike.model import LookalikeModel


@pytest.mark.parametrize("command", ["embed", "benchmark"])
def test_help(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "--data" in capsys.readouterr().out


def test_missing_dataset_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["benchmark", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--cache", "none"])
    assert code == 2
    assert "dataset folder not found" in capsys.readouterr().err


def test_global_metric_open_set_on_orl(tmp_path: Path, orl_dir: Path) -> None:
    """ORL with 8 one-image people (distractors) and short lists: ``lookalike-global`` ranks the whole gallery
    (mates beyond its 3-long lists keep their full-ranking positions) and searches each distractor."""
    import shutil

    data = tmp_path / "orl"
    for k in range(1, 25):
        (data / f"s{k}").mkdir(parents=True)
        for i in range(1, 11 if k <= 16 else 2):
            shutil.copy(orl_dir / f"s{k}" / f"{i}.pgm", data / f"s{k}" / f"{i}.pgm")
    out = tmp_path / "run"
    assert main(["benchmark", "--data", str(data), "--out", str(out), "--cache", str(tmp_path / "c.sqlite"),
                 "--no-progress", "--lowres", "16", "--depth", "3"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rankings = np.load(out / "rankings.npz")
    assert rankings["lookalike-global.indices"].shape == (m["protocol"]["n_probes_searched"], 3)
    g, o = m["methods"]["lookalike-global"], m["open_set"]["lookalike-global"]
    assert g["rank1"] <= g["rank5"] <= g["rank50"] == 1.0  # the whole gallery is ranked: every mate within 50
    assert o["n_nonmated"] == m["open_set"]["baseline"]["n_nonmated"] == m["protocol"]["n_distractors"] > 0
    assert {"fnir@fpir=0.01", "dir@fpir=0.01", "fnir@fpir=0.1"} <= set(o)


def test_benchmark_on_orl(tmp_path: Path, orl_dir: Path) -> None:
    out = tmp_path / "run"
    args = ["benchmark", "--data", str(orl_dir), "--out", str(out), "--cache", str(tmp_path / "c.sqlite"),
            "--max-people", "16", "--no-progress", "--lowres", "16"]
    assert main(args) == 0
    for name in ("metrics.json", "report.md", "cmc.png", "rankings.npz", "ranked_baseline.csv", "images.csv",
                 "skipped.csv", "protocol/protocol.csv", "protocol/protocol.json"):
        assert (out / name).exists(), name
    m = json.loads((out / "metrics.json").read_text())
    p = m["protocol"]
    assert p["lowres"] == 16 and p["seed"] == 0
    assert p["n_probes"] == 72 and p["n_gallery"] == 8  # 8 test people x (1 enrolled + 9 probes)
    base = m["methods"]["baseline"]
    assert set(base) >= {"rank1", "rank5", "rank10", "rank20", "rank50", "mAP", "rank1_ci95"}
    assert 0.5 < base["rank1"] <= base["rank5"] <= base["rank10"] <= 1.0
    lo, hi = base["rank1_ci95"]
    assert lo <= base["rank1"] <= hi
    for name, method in m["methods"].items():
        if name != "baseline":
            assert {"mcnemar_p", "fixed", "broken"} <= set(method)
    assert {"embed_s", "search_s"} <= set(m["timing"])
    assert "numpy" in m["versions"] and "dlib-bin" in m["versions"]
    rankings = np.load(out / "rankings.npz")
    assert rankings["baseline.indices"].shape[0] == p["n_probes_searched"]
    # the transductive k-reciprocal baseline is scored like the others, from its own lists, and labelled
    assert rankings["kreciprocal-transductive.indices"].shape == rankings["baseline.indices"].shape
    assert "transductive" in m["rerank_stats"]["kreciprocal-transductive"]["setting"]
    assert {"kreciprocal", "kreciprocal-transductive", "lookalike-best"} <= set(m["methods"]) == set(m["open_set"])
    # the saved model's disambiguator as a global metric: its own lists, full-ranking mates and open set
    assert rankings["lookalike-global.indices"].shape == rankings["baseline.indices"].shape
    assert (np.diff(rankings["lookalike-global.scores"], axis=1) <= 0).all()
    stats = m["rerank_stats"]
    assert stats["lookalike-global"]["disambiguator"] == stats["lookalike-best"]["disambiguator"]
    g = m["methods"]["lookalike-global"]
    assert g["rank1"] <= g["rank5"] <= g["rank50"] <= 1.0 and "mcnemar_p" in g and 0 <= g["mAP"] <= 1
    assert m["open_set"]["lookalike-global"] == {"n_mated": 72, "n_nonmated": 0}  # ORL: no distractors
    assert m["config"]["matcher"] == "torch-flip"  # the default at low resolution, with the plain one beside it
    assert m["rerank_stats"]["baseline-plain"]["matcher"] == "torch" and "baseline-plain" in m["methods"]
    assert set(m["paired"]["lookalike-best"]) == {"lookalike-disamb-only", "lookalike-global",
                                                  "kreciprocal-transductive", "baseline-plain"}
    # the transductive setting over the saved model's disambiguator space, labelled and paired with the plain one
    assert rankings["lookalike-transductive.indices"].shape == rankings["baseline.indices"].shape
    assert "disambiguator space" in stats["lookalike-transductive"]["space"]
    assert stats["kreciprocal-transductive"]["space"] == "the matcher's vectors"
    assert set(m["paired"]["lookalike-transductive"]) == {"kreciprocal-transductive"}
    # the saved model's batch setting over every test probe together (or its per-photo lists), paired with both
    assert rankings["lookalike-batch.indices"].shape == rankings["baseline.indices"].shape
    assert stats["lookalike-batch"]["tuning"] == LookalikeModel.load(out / "model.lkm").batch_tuning_
    assert set(m["paired"]["lookalike-batch"]) == {"lookalike-best", "kreciprocal-transductive", "baseline-plain"}
    report = (out / "report.md").read_text()
    assert "`lookalike-transductive` is the same over the saved model's disambiguator space" in report
    assert "`baseline-plain` is the same test split searched with `torch`" in report
    assert "`lookalike-batch` is the model's batch setting" in report
    assert "`lookalike-global` is the saved model's disambiguator" in report and "`lookalike-best` vs" in report
    # a rerun reuses the cache: nothing is embedded again and the numbers are the same
    assert main(args) == 0
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["embedding"]["computed"] == 0
    assert m2["methods"]["baseline"] == base


def test_train_warns_about_subject_names_that_look_alike(tmp_path: Path, orl_dir: Path, capsys) -> None:
    """A CSV of 20 ORL people, two labelled "Ann" and "Аnn" (Cyrillic А) and one "Ｃａｒｌ" (fullwidth): trained on as
    given, the names warned about in one counted, listed block."""
    import csv

    from conftest import FAST_MATCHER

    cyrillic, fullwidth = "\u0410nn", "\uff23\uff41\uff52\uff4c"
    names = {21: "Ann", 22: cyrillic, 23: fullwidth}
    with open(tmp_path / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows([str(orl_dir / f"s{k}" / f"{n}.pgm"), names.get(k, f"s{k}")] for k in range(21, 41)
                    for n in range(1, 4))
    assert main(["train", "--data", str(tmp_path / "train.csv"), "--model", str(tmp_path / "m.lkm"), "--depth", "20",
                 "--matcher", FAST_MATCHER, "--cache", str(tmp_path / "c.sqlite"), "--workers", "1",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    listed = [line for line in err.splitlines() if line.startswith("name: ")]
    assert len(listed) == 3 and "names: 3 warnings (" in err
    assert listed[0].startswith(f"name: {cyrillic!r} (U+0410 CYRILLIC CAPITAL LETTER A) mixes cyrillic and latin")
    assert listed[1].startswith(f"name: {fullwidth!r} (U+FF23 FULLWIDTH LATIN CAPITAL LETTER C,")
    assert listed[2].startswith(f"name: 'Ann', {cyrillic!r} (U+0410") and "Carl" not in listed[2]
    assert (tmp_path / "m.lkm").exists()
