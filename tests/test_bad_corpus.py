"""The generated bad-input corpus (tests/badinput.py) through ``embed`` and ``benchmark``: every bad file is a
counted, listed skip, every bad dataset shape a one-line error, and the output folder stays consistent."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from badinput import build_corpus, shaped_dataset
from conftest import FAST_MATCHER

from lookalike.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("cache") / "c.sqlite")


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _fast(cache: str) -> list[str]:
    return ["--matcher", FAST_MATCHER, "--cache", cache, "--workers", "1", "--no-progress"]


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_corpus_benchmark_folder(corpus, cache, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _run(["benchmark", "--data", str(corpus.folder), "--out", str(out), "--no-rerank",
                              *_fast(cache)], capsys)
    assert code == 0, err
    assert "Traceback" not in err
    skipped = {r["path"]: r["status"] for r in _rows(out / "skipped.csv")}
    for path, reason in corpus.bad.items():
        assert skipped.get(path) == reason, (path, reason, skipped.get(path))
    # the console summary counts every reason and names the files that list them
    for reason in set(corpus.bad.values()):
        assert reason in err
    assert str(out / "skipped.csv") in err and str(out / "duplicates.csv") in err
    dups = _rows(out / "duplicates.csv")
    assert {Path(r["path"]).name for r in dups} == {"dup.png", "conflict.png", "0.png"}
    # consistency: the protocol lists only usable files, images.csv one row per protocol row, nothing set aside
    protocol = _rows(out / "protocol" / "protocol.csv")
    assert not {str((out / "protocol" / r["path"]).resolve()) for r in protocol} & set(corpus.bad)
    assert len(_rows(out / "images.csv")) == len(protocol) == sum(corpus.people.values())
    m = json.loads((out / "metrics.json").read_text())
    assert m["protocol"]["probes_without_mate"] == 0 and m["inputs"]["counts"]["probes set aside"] == 0
    assert m["inputs"]["counts"]["duplicates"] == 3
    # report.md counts what the console does: every reason, the loader's and the screening's too
    report = (out / "report.md").read_text()
    for reason, n in m["inputs"]["counts"]["skipped"].items():
        assert f"| skipped: {reason} | {n} |" in report
    assert "| duplicate files (same bytes; `duplicates.csv`) | 3 |" in report


def test_corpus_benchmark_manifest(corpus, cache, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _run(["benchmark", "--data", str(corpus.manifest), "--out", str(out), "--no-rerank",
                         *_fast(cache)], capsys)
    assert code == 0, err
    reasons = [r["status"] for r in _rows(out / "skipped.csv")]
    assert reasons.count("missing_files") == 1
    if corpus.fifo:
        assert reasons.count("not_a_regular_file") == 1
    assert {"empty", "truncated", "too_small", "too_large", "unsupported_format", "duplicate"} <= set(reasons)
    # "person01 " (trailing space) is person01
    ids = {r["identity"] for r in _rows(out / "protocol" / "protocol.csv")}
    assert ids == {i for i, n in corpus.people.items() if n}


def test_corpus_embed(corpus, cache, tmp_path, capsys):
    out = tmp_path / "e" / "emb.npz"
    code, stdout, err = _run(["embed", "--data", str(corpus.folder), "--out", str(out), *_fast(cache)], capsys)
    assert code == 0, err
    z = np.load(out)
    status = dict(zip(z["paths"].tolist(), z["status"].tolist(), strict=True))
    for path, reason in corpus.bad.items():
        assert status[path] == reason, path
    assert (z["status"] == "ok").sum() == sum(corpus.people.values())
    summary = json.loads(stdout)
    assert summary["duplicates"] == 3 and summary["skipped"]["non_utf8_name"] == 1
    assert "emb.skipped.csv" in err


@pytest.mark.parametrize("shape, rerank, expect", [
    ("one_person", False, "no probes"),
    ("singletons", False, "no probes"),
    ("three_people", True, "--no-rerank"),
    ("six_people", True, "--no-rerank"),
    ("six_people", False, None),
])
def test_dataset_shapes(shape, rerank, expect, cache, tmp_path, capsys):
    counts = {"one_person": [4], "singletons": [1] * 8, "three_people": [3] * 3, "six_people": [3] * 6}[shape]
    data = shaped_dataset(tmp_path / "d", counts)
    args = ["benchmark", "--data", str(data), "--out", str(tmp_path / "o"), *_fast(cache)]
    code, _, err = _run(args + ([] if rerank else ["--no-rerank"]), capsys)
    if expect is None:
        assert code == 0, err
        assert (tmp_path / "o" / "report.md").exists()
    else:
        assert code == 2
        assert err.count("\n") == 1 and err.startswith("lookalike: error:") and expect in err


def test_corpus_subprocess_has_no_traceback(corpus, cache, tmp_path):
    """The real console: one line on stderr for a bad shape, a summary block for the corpus."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    small = shaped_dataset(tmp_path / "small", [3] * 6)
    r = subprocess.run([sys.executable, "-m", "lookalike.cli", "benchmark", "--data", str(small), "--out",
                        str(tmp_path / "o"), *_fast(cache)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "lookalike.cli", "embed", "--data", str(corpus.folder), "--out",
                        str(tmp_path / "e.npz"), *_fast(cache)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "summary:" in r.stderr


@pytest.mark.parametrize("source", ["folder", "manifest"])
def test_corpus_enroll_and_identify(source, corpus, cache, tmp_path, capsys):
    """enroll and identify (on main since this corpus was written) take the corpus without a traceback."""
    db = tmp_path / "g.sqlite"
    data = corpus.folder if source == "folder" else corpus.manifest
    code, _, err = _run(["enroll", "--gallery", str(data), "--db", str(db), "--matcher", FAST_MATCHER,
                         "--cache", cache, "--workers", "1", "--no-progress"], capsys)
    assert code in (0, 2) and "Traceback" not in err, err
    if code == 2:
        assert err.startswith("lookalike: error:") and err.count("\n") == 1
        return
    probes = [p for p in corpus.bad if Path(p).exists() and Path(p).suffix != ".txt"]
    code, out, err = _run(["identify", *probes[:4], str(corpus.folder / "person03" / "1.png"), "--db", str(db),
                           "--format", "json"], capsys)
    assert code in (0, 2) and "Traceback" not in err, err
