"""The identification system end to end on real faces (ORL): a benchmark's saved model reproduces the run's
numbers exactly; train -> enrol -> identify from the command line and the Python API; bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER, write_synthetic
from PIL import Image

import lookalike
from lookalike.benchmark import replay_saved_model
from lookalike.cli import main
from lookalike.gallery import Gallery
from lookalike.identify import Identifier, TemplateFace, identify, resolution_note, result_faces
from lookalike.matchers.cache import EmbeddingCache
from lookalike.model import LookalikeModel


@pytest.fixture(scope="module")
def cache_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "c.sqlite"


def test_saved_model_reproduces_the_benchmark_exactly(orl_dir, cache_path, tmp_path):
    """``model.lkm`` re-ranks the run's test lists into exactly the run's ``lookalike-best`` lists (~16 px)."""
    lowres = 16
    data = tmp_path / "data.csv"  # 16 ORL people with 6 images, 8 with one (distractors: open-set searches)
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows([str(orl_dir / f"s{k}" / f"{n}.pgm"), f"s{k}"] for k in range(1, 25)
                    for n in (range(1, 7) if k <= 16 else (1,)))
    out = tmp_path / "run"
    args = ["benchmark", "--data", str(data), "--out", str(out), "--cache", str(cache_path), "--lowres", str(lowres),
            "--matcher", FAST_MATCHER, "--workers", "1", "--no-progress"]
    assert main(args) == 0
    replay = replay_saved_model(out, str(cache_path), workers=1)
    assert replay["identical_indices"] and replay["identical_scores"]
    r = np.load(out / "rankings.npz")
    model = LookalikeModel.load(out / "model.lkm")
    assert model.lowres == lowres and model.matcher == FAST_MATCHER
    m = json.loads((out / "metrics.json").read_text())
    assert replay["replayed_rank1"] == pytest.approx(m["methods"]["lookalike-best"]["rank1"])
    assert r["lookalike-best.indices"].shape[0] == replay["n_probes"]
    assert set(m["open_set"]) == set(m["methods"])  # open set for every method, from its own final scores
    assert m["protocol"]["n_distractors"] > 0
    assert all("fnir@fpir=0.01" in o and o["n_nonmated"] == m["protocol"]["n_distractors"]
               for o in m["open_set"].values())
    for o in m["open_set"].values():  # DIR with its bootstrap interval
        lo, hi = o["dir@fpir=0.1_ci95"]
        assert lo <= o["dir@fpir=0.1"] <= hi
    for other, r in m["paired"]["lookalike-best"].items():  # mAP paired on the same probes, as the methods' rows
        want = m["methods"]["lookalike-best"]["mAP"] - m["methods"][other]["mAP"]
        assert r["mAP_diff"] == pytest.approx(want) and 0 < r["mAP_p"] <= 1 and len(r["mAP_diff_ci95"]) == 2
    paired = m["paired_open_set"]["lookalike-best"]  # DIR against each compared method on the same searches
    assert set(paired) == {"baseline", *m["paired"]["lookalike-best"]}
    for other, r in paired.items():
        want = m["open_set"]["lookalike-best"]["dir@fpir=0.01"] - m["open_set"][other]["dir@fpir=0.01"]
        assert r["dir@fpir=0.01_diff"] == pytest.approx(want) and 0 < r["dir@fpir=0.01_p"] <= 1
    report = (out / "report.md").read_text()
    assert "Paired open set, same searches" in report and "![Open set: FNIR against FPIR](fnir_fpir.png)" in report
    assert (out / "fnir_fpir.png").stat().st_size > 0
    from lookalike.compare import compare, load_method  # the saved outcomes pair as the run paired them

    r = compare(load_method(f"{out}:lookalike-best"), load_method(f"{out}:baseline"), seed=m["config"]["seed"])
    assert r["rank1"]["mcnemar_p"] == pytest.approx(m["methods"]["lookalike-best"]["mcnemar_p"])
    assert r["open_set"]["paired"] == m["paired_open_set"]["lookalike-best"]["baseline"]


def test_a_saved_run_is_replayed_with_its_own_fallback_for_undetected_faces(synthetic_model, tmp_path):
    """A ``--model`` run may crop undetected faces with another ``--central-fraction`` than the model's (PubFig's
    0.9 against the shipped models' 0.45): replaying it embeds them as the run did, not as the model's aligner would."""
    from lookalike.benchmark import load_saved_run
    from lookalike.embed import embed_paths
    from lookalike.matchers.align import FaceAligner

    model, _ = synthetic_model
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.lkm")
    assert model.aligner.central_fraction == 0.45
    paths = np.array([str(write_synthetic(tmp_path / f"{i}.png", i, (90, 110))) for i in range(3)])  # no face found
    ids = np.array(["a", "b", "c"])
    np.savez(run / "rankings.npz", probe_paths=paths[:1], probe_ids=ids[:1], gallery_paths=paths, gallery_ids=ids,
             **{"baseline.indices": np.array([[0, 1, 2]]), "baseline.scores": np.zeros((1, 3), np.float32)})
    (run / "metrics.json").write_text(json.dumps({"config": {"data": "d", "out": str(run), "central_fraction": 0.9}}))
    saved = load_saved_run(run, cache=None, workers=1)
    want = {f: embed_paths(paths, model.matcher, FaceAligner(f), workers=1, progress=False).vectors
            for f in (0.9, 0.45)}
    np.testing.assert_allclose(saved.gallery, want[0.9], atol=1e-6)
    assert not np.allclose(saved.gallery, want[0.45], atol=1e-3)


@pytest.fixture(scope="module")
def system(orl_dir, cache_path, tmp_path_factory):
    """A model trained on ORL people s21..s40 and a gallery of s1..s20 (images 1-3 enrolled)."""
    root = tmp_path_factory.mktemp("sys")
    train = root / "train.csv"
    with open(train, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows([str(orl_dir / f"s{k}" / f"{n}.pgm"), f"s{k}"] for k in range(21, 41) for n in range(1, 7))
    gal = root / "gallery.csv"
    with open(gal, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows([str(orl_dir / f"s{k}" / f"{n}.pgm"), f"s{k}"] for k in range(1, 21) for n in (1, 2, 3))
    model, db = root / "m.lkm", root / "g.sqlite"
    common = ["--matcher", FAST_MATCHER, "--cache", str(cache_path), "--workers", "1", "--no-progress"]
    assert main(["train", "--data", str(train), "--model", str(model), "--depth", "20", *common]) == 0
    assert main(["enroll", "--gallery", str(gal), "--db", str(db), *common]) == 0
    return model, db, root


def test_identify_cli_json(system, orl_dir, capsys):
    model, db, _ = system
    probes = [str(orl_dir / "s1" / "8.pgm"), str(orl_dir / "s2" / "9.pgm"), str(orl_dir / "s35" / "1.pgm")]
    capsys.readouterr()
    assert main(["identify", *probes, "--db", str(db), "--model", str(model), "--format", "json", "--top", "5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["model"]["matcher"] == "dlib-resnet-v1"
    assert doc["lookalike_version"] == lookalike.__version__  # what produced the result, recorded with it
    faces = [r["faces"][0] for r in doc["results"]]
    for f in faces:
        assert f["candidate_list_length"] == 5 == len(f["candidates"])
        finals = [c["final_score"] for c in f["candidates"]]
        assert finals == sorted(finals, reverse=True)
        assert {c["base_rank"] for c in f["candidates"]} <= set(range(1, 21))
        assert f["detection"] in ("detected", "pre-cropped") and len(f["box"]) == 4
        assert f["face_px"] == f["box"][2] - f["box"][0] >= 48 and f["resolution_note"] is None  # ORL: ~70 px
    assert faces[0]["candidates"][0]["subject"] == "s1" and faces[1]["candidates"][0]["subject"] == "s2"
    with Gallery.open(db) as g:  # the stricter of the model's and the gallery sample's (60 faces: too few for 1%)
        assert faces[0]["decision"]["threshold"] == Identifier(g, LookalikeModel.load(model)).threshold(0.01)[0]
    assert faces[0]["decision"]["calibrated_on"] in ("model", "gallery-sample")


def test_identify_batch_reranks_the_photos_together(system, orl_dir, capsys):
    """``--batch``: with a batch setting every face's list is re-ordered together (batch distances ascending), each
    candidate keeping its per-photo final score and each decision its per-photo threshold test; a model without
    one searches face by face, says so, and gives the per-photo result."""
    from lookalike.rerank.batch import BatchReranker, BatchSetting

    model_path, db, _ = system
    photos = [orl_dir / f"s{k}" / f"{n}.pgm" for k in (1, 2, 3, 4) for n in (5, 6, 7, 8)]
    model = LookalikeModel.load(model_path)
    model.batch_ = None
    with Gallery.open(db) as gallery:
        alone = identify(photos, gallery, model, top=20)
        fallback = identify(photos, gallery, model, top=20, batch=True)
        model.batch_ = BatchReranker(model.disambiguator_)
        model.batch_.setting_ = BatchSetting(10, 3, 0.3)
        together = identify(photos, gallery, model, top=20, batch=True)
        model.batch_.min_batch_ = 17
        too_few = identify(photos, gallery, model, top=20, batch=True)
    assert "fewer than the model's minimum batch of 17" in too_few["batch"]["note"]
    assert too_few["results"] == alone["results"]
    assert "batch" not in alone and fallback["batch"]["reranked_together"] is False
    assert "no batch setting" in fallback["batch"]["note"] and fallback["results"] == alone["results"]
    assert together["batch"] == {"reranked_together": True, "note": None, "setting": {"k1": 10, "k2": 3, "lam": 0.3},
                                 "faces": 16}
    changed = 0
    for a, b in zip(alone["results"], together["results"], strict=True):
        fa, fb = a["faces"][0], b["faces"][0]
        dist = [c["batch_distance"] for c in fb["candidates"]]
        assert dist == sorted(dist) and len(dist) == 20  # the 20 enrolled subjects, in batch order
        per_photo = {c["image_id"]: c["final_score"] for c in fa["candidates"]}
        together_scores = {c["image_id"]: c["final_score"] for c in fb["candidates"]}
        assert together_scores == pytest.approx(per_photo, abs=1e-4)  # searched in one block: last bits differ
        assert fb["decision"]["enrolled"] == fa["decision"]["enrolled"]
        changed += [c["image_id"] for c in fa["candidates"]] != [c["image_id"] for c in fb["candidates"]]
    assert changed > 0
    from lookalike.identify_format import format_csv, format_table

    table = format_table(together)
    assert "batch: 16 faces re-ranked together (k1=10, k2=3, λ=0.3)" in table and "   batch  group" in table
    rows = list(csv.DictReader(io.StringIO(format_csv(together))))
    assert len(rows) == 16 * 20 and all(float(r["batch_distance"]) >= 0 for r in rows)
    assert "batch: " in format_table(fallback) and "batch" not in format_table(alone).splitlines()[0]
    assert {r["batch_distance"] for r in csv.DictReader(io.StringIO(format_csv(alone)))} == {""}
    capsys.readouterr()
    assert main(["identify", *map(str, photos[:2]), "--db", str(db), "--model", str(model_path), "--batch",
                 "--format", "json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["batch"]["reranked_together"] is False and "--batch: " in out.err


def test_identify_runs_blas_on_the_threads_asked_for(system, orl_dir, monkeypatch):
    """identify's NumPy BLAS runs on one thread by default (more only spin against the face network's threads)."""
    from threadpoolctl import threadpool_info

    import lookalike.identify as ident_mod

    model, db, _ = system
    seen: list[int] = []
    search_face = ident_mod.Identifier.search_face

    def spy(self, *a, **k):
        seen.append(max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"))
        return search_face(self, *a, **k)

    monkeypatch.setattr(ident_mod.Identifier, "search_face", spy)
    most = max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
    probe = str(orl_dir / "s1" / "8.pgm")
    assert main(["identify", probe, "--db", str(db), "--model", str(model), "--format", "json"]) == 0
    assert main(["identify", probe, "--db", str(db), "--format", "json", "--blas-threads", "2"]) == 0
    assert seen == [1, 2]
    assert max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas") == most  # restored after


def test_identify_cli_table_and_csv(system, orl_dir, capsys, tmp_path):
    model, db, _ = system
    assert main(["identify", str(orl_dir / "s3" / "7.pgm"), "--db", str(db), "--format", "table", "--top", "3"]) == 0
    out = capsys.readouterr()
    assert "s3" in out.out and "base→final" in out.out and "no model" in out.out
    dest = tmp_path / "o.csv"
    assert main(["identify", str(orl_dir / "s3"), "--db", str(db), "--model", str(model), "--format", "csv",
                 "--top", "3", "--out", str(dest)]) == 0
    rows = list(csv.DictReader(io.StringIO(dest.read_text())))
    assert len(rows) == 10 * 3 and {r["rank"] for r in rows} == {"1", "2", "3"}


def test_csv_cells_that_a_spreadsheet_would_run_are_text():
    from lookalike.identify_format import format_csv

    cand = {"rank": 1, "subject": '=HYPERLINK("http://x","y")', "image": "@img.png", "base_score": 0.9,
            "base_rank": 1, "final_score": 0.9, "lookalike_group": None}
    face = {"index": 0, "box": [1, 2, 3, 4], "detection": "detected", "ambiguous": False, "candidates": [cand],
            "decision": {"subject": cand["subject"], "enrolled": True}}
    rows = list(csv.DictReader(io.StringIO(format_csv({"results": [
        {"photo": "+p.jpg", "status": "ok", "faces": [face]}, {"photo": "-q.jpg", "status": "no_face"}]}))))
    assert [rows[0][k] for k in ("photo", "subject", "image", "decision_subject")] == [
        "'+p.jpg", "'" + cand["subject"], "'@img.png", "'" + cand["subject"]]
    assert rows[1]["photo"] == "'-q.jpg" and rows[1]["photo_status"] == "no_face"


def test_resolution_note_says_when_the_face_does_not_fit_the_model():
    assert resolution_note(72, None) is None and resolution_note(48, None) is None
    assert resolution_note(19, None).startswith("19 px face searched as a full-resolution one")
    assert "--lowres 19 --lowres-apply probes" in resolution_note(19, None)
    assert resolution_note(20, 20) is None and resolution_note(39, 20) is None and resolution_note(15, 20) is None
    assert resolution_note(40, 20).startswith("40 px face degraded to 20 px")
    assert "--lowres-apply gallery" in resolution_note(40, 20)
    assert resolution_note(14, 20) == "14 px face, smaller than the 20 px faces the model was trained on"


def test_identify_reports_a_small_face_in_every_format(system, orl_dir, capsys, tmp_path):
    """A face far smaller than the model's probes (ORL shrunk to 23x28 against a full-resolution model): its size and
    a note in the JSON, the table, the CSV and the HTML page; the search itself goes on."""
    model, db, _ = system
    small = tmp_path / "small.png"
    Image.open(orl_dir / "s3" / "7.pgm").resize((23, 28), Image.BICUBIC).save(small)
    capsys.readouterr()
    assert main(["identify", str(small), "--db", str(db), "--model", str(model), "--format", "json", "--top", "3"]) == 0
    face = json.loads(capsys.readouterr().out)["results"][0]["faces"][0]
    assert face["face_px"] == face["box"][2] - face["box"][0] < 48 and face["candidate_list_length"] == 3
    assert face["resolution_note"] == resolution_note(face["face_px"], None)
    assert main(["identify", str(small), "--db", str(db), "--model", str(model), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"{face['face_px']} px across)" in out and f"note: {face['resolution_note']}" in out
    dest = tmp_path / "o.csv"
    assert main(["identify", str(small), "--db", str(db), "--format", "csv", "--top", "3", "--out", str(dest)]) == 0
    assert {r["face_px"] for r in csv.DictReader(io.StringIO(dest.read_text()))} == {str(face["face_px"])}
    page = tmp_path / "o.html"
    assert main(["identify", str(small), "--db", str(db), "--model", str(model), "--format", "html", "--top", "3",
                 "--out", str(page)]) == 0
    assert f"Note: {face['resolution_note']}" in page.read_text()


@pytest.fixture(scope="module")
def small_face_model(system, cache_path):
    """A model for 16 px probes against the full-resolution gallery of ``system`` (same train people, same matcher)."""
    from lookalike import train_model

    _, _, root = system
    model, _ = train_model(root / "train.csv", matcher=FAST_MATCHER, lowres=16, lowres_apply="probes",
                           cache=str(cache_path), depth=20, workers=1, progress=False)
    path = root / "small.lkm"
    model.save(path)
    return path


def test_small_faces_go_to_the_small_face_model(system, small_face_model, orl_dir, tmp_path, capsys):
    """With a small-face model (16 px probes), a face at most 16 px across is degraded to that model's probes,
    embedded, re-ranked and decided by it (``probe_lowres`` 16); a larger face by the main model (``probe_lowres``
    null), 23 px ones too (degrading them would lose detail); batches and templates use the main model alone; a
    model that is not for small probes is refused with one line."""
    from lookalike.embed import embed_paths

    model_path, db, _ = system
    model, small = LookalikeModel.load(model_path), LookalikeModel.load(small_face_model)
    shrunk, middle = tmp_path / "small.png", tmp_path / "middle.png"
    Image.open(orl_dir / "s3" / "7.pgm").resize((15, 18), Image.BICUBIC).save(shrunk)
    Image.open(orl_dir / "s3" / "7.pgm").resize((28, 34), Image.BICUBIC).save(middle)
    sharp = orl_dir / "s3" / "7.pgm"
    with Gallery.open(db) as g:
        ident = Identifier(g, model, small)
        low, mid, big = (ident.faces(np.asarray(Image.open(p).convert("RGB")))[0] for p in (shrunk, middle, sharp))
        assert low.face_px <= 16 < mid.face_px < 48 <= big.face_px
        assert (low.route, mid.route, big.route) == ("small", "", "")
        expected = embed_paths([str(shrunk)], small.matcher, g.aligner, 16, workers=1, progress=False).vectors[0]
        np.testing.assert_allclose(low.vector, expected, atol=1e-5)
        doc = identify([shrunk, sharp], g, model, top=3, small_faces=small)
        assert [r["faces"][0]["probe_lowres"] for r in doc["results"]] == [16, None]
        assert doc["small_face_model"]["lowres"] == 16 and doc["small_face_model"]["max_face_px"] == 16
        small_face = doc["results"][0]["faces"][0]  # noted as the small-face model's probe, not a full-resolution one
        assert small_face["resolution_note"] == resolution_note(small_face["face_px"], 16)
        assert doc["results"][0]["faces"][0]["decision"]["threshold"] == Identifier(g, small).threshold(0.01)[0]
        assert all(t > 0 for t in doc["timing"].values())
        # each model's calibration on the gallery is kept in a slot of its own (not replaced by the other's)
        assert g.store.get_derived("model-calibration")
        assert g.store.get_derived("model-calibration-probes-lowres16-chip17")
        batch = identify([shrunk, sharp], g, model, top=3, batch=True, small_faces=small)
        assert [r["faces"][0]["probe_lowres"] for r in batch["results"]] == [None, None]
        with pytest.raises(ValueError, match="trained for low-resolution probes against a sharp gallery"):
            Identifier(g, model, model)
    capsys.readouterr()
    assert main(["identify", str(shrunk), "--db", str(db), "--model", str(model_path), "--small-face-model",
                 str(small_face_model), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["faces"][0]["probe_lowres"] == 16
    assert main(["identify", str(shrunk), "--db", str(db), "--model", str(model_path), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)  # an own model: no small-face model unless asked for
    assert doc["small_face_model"] is None and doc["results"][0]["faces"][0]["probe_lowres"] is None
    assert main(["identify", str(shrunk), "--db", str(db), "--small-face-model", str(model_path)]) == 2
    assert "trained for low-resolution probes" in capsys.readouterr().err


def test_every_scale_finds_a_small_face_beside_a_large_one(system, small_face_model, orl_dir, tmp_path):
    """Detection stops at the first upsampling that finds a face, so a small face beside a large one (a group photo)
    is missed; ``every_scale`` (``identify --every-scale``) finds it too, the small-face model searches it, and the
    HTML page cuts each face at its own box."""
    model_path, db, _ = system
    big = Image.open(orl_dir / "s3" / "7.pgm").convert("RGB")
    canvas = Image.new("RGB", (200, 120), (128, 128, 128))
    canvas.paste(big, (0, 4))
    canvas.paste(big.resize((18, 22), Image.BICUBIC), (150, 50))
    photo = tmp_path / "two.png"
    canvas.save(photo)
    model, small = LookalikeModel.load(model_path), LookalikeModel.load(small_face_model)
    with Gallery.open(db) as g:
        assert len(identify([photo], g, model, top=3)["results"][0]["faces"]) == 1
        doc = identify([photo], g, model, top=3, small_faces=small, every_scale=True)
        faces = doc["results"][0]["faces"]
        assert len(faces) == 2 and faces[0]["face_px"] >= 48 > faces[1]["face_px"]
        assert faces[1]["probe_lowres"] == (16 if faces[1]["face_px"] <= 16 else None)
        pictures = result_faces(doc, g)
        probe_faces = [pictures["probe", str(photo), i] for i in (0, 1)]
        assert all(probe_faces) and probe_faces[0] != probe_faces[1]


def test_identify_cli_html_shows_the_faces_to_compare(system, orl_dir, tmp_path, cache_path):
    """--format html: one self-contained page, the probe's aligned face and every candidate's enrolled face inline;
    a photo that is not an image is listed with its status; a candidate whose file is gone shows an empty frame."""
    model, db, root = system
    dest = tmp_path / "o.html"
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image <script>")
    assert main(["identify", str(orl_dir / "s3" / "7.pgm"), str(bad), "--db", str(db), "--model", str(model),
                 "--format", "html", "--top", "3", "--out", str(dest)]) == 0
    page = dest.read_text()
    assert page.startswith("<!doctype html>") and "investigative leads, not identifications" in page
    assert page.count("data:image/png;base64,") == 1 + 3 and "<script>" not in page
    assert "#1 <b>s3</b>" in page and "notes.jpg: unreadable" in page
    for k in (1, 2):  # a gallery of copies, one of which then disappears
        (tmp_path / "g" / f"s{k}").mkdir(parents=True)
        (tmp_path / "g" / f"s{k}" / "1.pgm").write_bytes((orl_dir / f"s{k}" / "1.pgm").read_bytes())
    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER) as g:
        g.enroll([str(tmp_path / "g" / f"s{k}" / "1.pgm") for k in (1, 2)], ["s1", "s2"],
                 cache=EmbeddingCache(cache_path), workers=1, progress=False)
        (tmp_path / "g" / "s2" / "1.pgm").unlink()
        probe = str(orl_dir / "s1" / "2.pgm")
        one = {"results": [{"photo": probe, "status": "ok", "faces": [{"index": 0, "box": [0, 0, 1, 1], "candidates": [
            {"image_id": int(i)} for i in g.image_ids_]}]}]}
        faces = result_faces(one, g)
    assert faces[("probe", probe, 0)] is not None  # no face at that box: the first face found
    assert [faces[("image", int(i))] is None for i in g.image_ids_] == [False, True]


def twin_gallery(orl_dir: Path, cache_path: Path, db: Path, twin_first: bool) -> Path:
    """ORL s1..s4 (images 1 and 2) with s1's first photo enrolled again as ``a-twin``: the same face under two names,
    the twin enrolled before or after s1 (so the gallery's order differs from the names' order either way)."""
    people = [(str(orl_dir / f"s{k}" / f"{n}.pgm"), f"s{k}") for k in (1, 2, 3, 4) for n in (1, 2)]
    twin = [(str(orl_dir / "s1" / "1.pgm"), "a-twin")]
    rows = twin + people if twin_first else people + twin
    with Gallery.create(db, matcher=FAST_MATCHER) as g:
        g.enroll([p for p, _ in rows], [s for _, s in rows], cache=EmbeddingCache(cache_path), workers=1,
                 progress=False)
    return db


def test_a_face_enrolled_under_two_names_is_marked_tied_in_every_output(system, orl_dir, cache_path, tmp_path,
                                                                         capsys):
    """The same photo enrolled as s1 and as a-twin: probed with that photo or another of s1, the two tie (in the
    matcher's order, a model's, a batch's and a template's); they are listed by name whichever was enrolled first,
    each with the rank it ties with, and every output marks them; a tie with the candidate past ``--top`` is said."""
    from lookalike.rerank.batch import BatchReranker, BatchSetting

    probes = [str(orl_dir / "s1" / "1.pgm"), str(orl_dir / "s1" / "8.pgm")]
    dbs = [twin_gallery(orl_dir, cache_path, tmp_path / f"g{i}.sqlite", twin_first) for i, twin_first in
           enumerate((False, True))]

    def lists(doc: dict) -> list[list[tuple[str, list[int]]]]:
        return [[(c["subject"], c["tied_with"]) for c in f["candidates"]] for r in doc["results"] for f in r["faces"]]

    docs = []
    for db in dbs:
        capsys.readouterr()
        assert main(["identify", *probes, "--db", str(db), "--format", "json", "--top", "3"]) == 0
        docs.append(json.loads(capsys.readouterr().out))
    assert lists(docs[0]) == lists(docs[1])  # the gallery's order does not decide a tie
    for face in lists(docs[0]):
        assert face[:2] == [("a-twin", [2]), ("s1", [1])] and face[2][1] == []
    assert [f["decision"]["subject"] for r in docs[0]["results"] for f in r["faces"]] == ["a-twin", None]

    capsys.readouterr()
    assert main(["identify", probes[0], "--db", str(dbs[0]), "--format", "table", "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "TIED: #1 a-twin is tied with #2 s1: which of them is first is arbitrary" in table
    assert "tie: #1 a-twin tied with #2 s1: the order between them is arbitrary" in table
    assert "group  tied     image" in table and "tied: the scores the list is ranked by are equal" in table
    assert main(["identify", probes[0], "--db", str(dbs[0]), "--format", "table", "--top", "1"]) == 0
    assert "tied with #2 (below the list's end)" in capsys.readouterr().out
    dest = tmp_path / "o.csv"
    assert main(["identify", probes[0], "--db", str(dbs[0]), "--format", "csv", "--top", "3", "--out", str(dest)]) == 0
    assert [r["tied_with"] for r in csv.DictReader(io.StringIO(dest.read_text()))] == ["2", "1", ""]
    dest = tmp_path / "o.html"
    assert main(["identify", probes[0], "--db", str(dbs[0]), "--format", "html", "--top", "3", "--out", str(dest)]) == 0
    page = dest.read_text()
    assert "<p class='tie'>Tied: #1 a-twin is tied with #2 s1: which of them is first is arbitrary.</p>" in page
    assert "<span class='tie'>tied with #2 s1: the order between them is arbitrary</span>" in page
    assert "<span class='tie'>tied with #1 a-twin: the order between them is arbitrary</span>" in page

    model_path, _, _ = system  # the model's fused scores, a batch's distances, a template's scores
    model = LookalikeModel.load(model_path)
    model.batch_ = BatchReranker(model.disambiguator_)
    model.batch_.setting_, model.batch_.min_batch_ = BatchSetting(10, 3, 0.3), 1
    photos = [*probes, str(orl_dir / "s2" / "5.pgm"), str(orl_dir / "s3" / "5.pgm")]
    with Gallery.open(dbs[1]) as g:
        per_photo = identify(probes, g, model, top=5)
        batch = identify(photos, g, model, top=5, batch=True)
        template = identify(probes, g, model, top=5, same_person=True)
    assert batch["batch"]["reranked_together"] is True
    for doc, faces in ((per_photo, 2), (batch, 2), (template, 1)):
        assert [f[:2] for f in lists(doc)[:faces]] == [[("a-twin", [2]), ("s1", [1])]] * faces


def two_faces(orl_dir: Path, path: Path) -> None:
    """A photo of two ORL people (s4 and s5) side by side."""
    a, b = Image.open(orl_dir / "s4" / "8.pgm"), Image.open(orl_dir / "s5" / "8.pgm")
    pair = Image.new("L", (a.width + b.width + 40, a.height + 40), 255)
    pair.paste(a, (10, 20))
    pair.paste(b, (a.width + 30, 20))
    pair.save(path)


def test_identify_every_face_and_bad_input(system, orl_dir, tmp_path):
    model_path, db, _ = system
    two_faces(orl_dir, tmp_path / "two.png")
    write_synthetic(tmp_path / "noise.png", 3, size=(40, 40))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    with Gallery.open(db) as gallery:
        doc = identify([tmp_path / n for n in ("two.png", "noise.png", "empty.jpg", "text.jpg")], gallery,
                       LookalikeModel.load(model_path), top=3)
    two, noise, empty, text = doc["results"]
    assert len(two["faces"]) == 2 and two["faces"][0]["box"] != two["faces"][1]["box"]
    # numbered left to right: s4 is pasted on the left
    assert [f["candidates"][0]["subject"] for f in two["faces"]] == ["s4", "s5"]
    assert two["faces"][0]["box"][0] < two["faces"][1]["box"][0]
    assert noise["faces"][0]["detection"] == "pre-cropped"
    assert empty["status"] == "empty" and text["status"] == "unreadable" and not empty["faces"]
    with Gallery.open(db) as gallery:  # the HTML page's faces: each photo searched for faces once, not once a face
        calls, real = [], gallery.aligner.align_all
        gallery.aligner.align_all = lambda image: (calls.append(1), real(image))[1]
        faces = result_faces(doc, gallery)
    assert calls == [1, 1] and all(faces["probe", two["photo"], f["index"]] is not None for f in two["faces"])


def test_identify_same_person_searches_one_template(system, orl_dir, tmp_path, capsys):
    """``--same-person``: the faces of photos with one face become one template (their embeddings' normalised mean),
    searched like a face and reported last; a photo with several faces or none is left out with its status."""
    from lookalike.identify import TemplateFace
    from lookalike.matchers.base import l2_normalize

    model_path, db, _ = system
    two_faces(orl_dir, tmp_path / "two.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    photos = [orl_dir / "s6" / f"{n}.pgm" for n in (5, 6, 7, 8)] + [tmp_path / "two.png", tmp_path / "empty.jpg"]
    model = LookalikeModel.load(model_path)
    with Gallery.open(db) as gallery:
        doc = identify(photos, gallery, model, top=5, same_person=True)
        ident = Identifier(gallery, model)
        vectors = [ident.faces(np.asarray(Image.open(p).convert("RGB")))[0].vector for p in photos[:4]]
        by_hand = ident.search_face(TemplateFace(l2_normalize(np.mean(vectors, 0)[None])[0], []), top=5)
        with pytest.raises(ValueError, match="no photo with exactly one usable face"):
            identify(photos[4:], gallery, model, same_person=True)
        with pytest.raises(ValueError, match="choose one"):
            identify(photos, gallery, model, batch=True, same_person=True)
    *each, template = doc["results"]
    assert [r.get("in_template", False) for r in each] == [True, True, True, True, False, False]
    assert [r["status"] for r in each[4:]] == ["many_faces", "empty"] and all(not r["faces"] for r in each)
    (face,) = template["faces"]
    assert template["photo"] == "template of 4 photos" and face["detection"] == "template"
    assert face["template_of"] == [str(p) for p in photos[:4]] and face["candidates"][0]["subject"] == "s6"
    assert [c["image_id"] for c in face["candidates"]] == [c["image_id"] for c in by_hand["candidates"]]
    assert [c["final_score"] for c in face["candidates"]] == pytest.approx([c["final_score"] for c in
                                                                           by_hand["candidates"]], abs=1e-5)
    assert face["decision"]["enrolled"] is None and face["decision"]["subject"] is None  # thresholds: single photos
    assert "calibrated on single photos" in face["decision"]["note"]
    capsys.readouterr()
    assert main(["identify", *map(str, photos[:4]), "--db", str(db), "--model", str(model_path), "--same-person",
                 "--top", "3"]) == 0
    out = capsys.readouterr()
    assert "template of 4 photos (template): no decision (not decided for a template" in out.out
    assert "one template of 4 faces searched" in out.err
    assert main(["identify", *map(str, photos[:4]), "--db", str(db), "--model", str(model_path), "--same-person",
                 "--top", "3", "--format", "html"]) == 0
    page = capsys.readouterr().out  # the faces the template averages are shown, each named, for comparison
    assert all(f"in the template: {p}" in page for p in photos[:4])
    assert page.count("alt='face in ") == 4 and "title='face unavailable'" not in page.split("<div class='row'>")[1]


def test_model_for_other_preprocessing_is_refused(system, tmp_path):
    model_path, _, _ = system
    g = Gallery.create(tmp_path / "low.sqlite", matcher=FAST_MATCHER, lowres=16)
    with pytest.raises(ValueError, match="preprocessing"):
        Identifier(g, LookalikeModel.load(model_path))
    g.close()


def test_empty_gallery_is_a_clear_error(system, orl_dir, tmp_path, capsys):
    model_path, _, _ = system
    Gallery.create(tmp_path / "empty.sqlite", matcher=FAST_MATCHER).close()
    code = main(["identify", str(orl_dir / "s1" / "1.pgm"), "--db", str(tmp_path / "empty.sqlite")])
    assert code == 2
    err = capsys.readouterr().err
    assert "no enrolled images" in err and "Traceback" not in err


def test_out_that_is_an_input_is_refused_before_any_work(system, orl_dir, tmp_path, capsys):
    _, db, _ = system
    before = Path(db).read_bytes()
    probe = tmp_path / "p.pgm"
    probe.write_bytes((orl_dir / "s1" / "1.pgm").read_bytes())
    for out, what in ((db, "gallery database"), (probe, "probe photo")):
        assert main(["identify", str(probe), "--db", str(db), "--format", "json", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"is the {what}" in err and err.count("\n") == 1
    assert Path(db).read_bytes() == before and probe.read_bytes() == (orl_dir / "s1" / "1.pgm").read_bytes()


def test_bad_model_file_is_a_clear_error(system, orl_dir, tmp_path, capsys):
    _, db, _ = system
    (tmp_path / "bad.lkm").write_bytes(b"junk")
    code = main(["identify", str(orl_dir / "s1" / "1.pgm"), "--db", str(db), "--model", str(tmp_path / "bad.lkm")])
    assert code == 2 and "not a lookalike model" in capsys.readouterr().err


def test_enroll_with_model_takes_its_settings(system, orl_dir, cache_path, tmp_path, capsys):
    model_path, _, _ = system
    db = tmp_path / "m.sqlite"
    common = ["--cache", str(cache_path), "--workers", "1", "--no-progress"]
    assert main(["enroll", "--gallery", str(orl_dir), "--db", str(db), "--model", str(model_path), *common]) == 0
    with Gallery.open(db) as g:
        Identifier(g, LookalikeModel.load(model_path))  # compatible by construction
        assert g.matcher == FAST_MATCHER
    code = main(["enroll", "--gallery", str(orl_dir), "--db", str(db), "--model", str(model_path), "--lowres", "8",
                 *common])
    assert code == 2 and "--model sets" in capsys.readouterr().err


def test_image_level_model_trains_saves_and_identifies(system, orl_dir, cache_path, tmp_path, monkeypatch):
    """A model holding the fine-tuned network (an image-level disambiguator) round-trips through its file and
    re-ranks identify's candidates from their images."""
    import lookalike.train as train
    from lookalike.disambiguators.finetuned import FineTunedNet

    _, db, root = system
    monkeypatch.setattr(train, "make_disambiguators", lambda kind, seed=0, cache=None, *fallbacks: [
        FineTunedNet(trainable="fc", epochs=1, seed=seed, cache_path=cache)])
    model, _ = train.train_model(root / "train.csv", matcher=FAST_MATCHER, cache=str(cache_path), depth=20,
                                 workers=1, progress=False)
    model.save(tmp_path / "ft.lkm")
    back = LookalikeModel.load(tmp_path / "ft.lkm")
    assert back.disambiguator_.input == "image"
    with Gallery.open(db) as gallery:
        doc = identify([orl_dir / "s6" / "9.pgm"], gallery, back, top=5)
    face = doc["results"][0]["faces"][0]
    assert face["candidates"][0]["subject"] == "s6"
    finals = [c["final_score"] for c in face["candidates"]]
    assert finals == sorted(finals, reverse=True) and all(np.isfinite(finals))


def test_readme_python_path_at_low_resolution_uses_the_flip_matcher(system, orl_dir, cache_path, tmp_path):
    """The README's ten lines with no matcher named: a 16 px model gets torch-flip, the gallery made from it too,
    and identify re-ranks (ORL people s21..s40 train, s1..s20 enrolled)."""
    from lookalike import train_model

    _, _, root = system
    model, _ = train_model(root / "train.csv", lowres=16, cache=str(cache_path), depth=20, workers=1,
                           progress=False)
    model.save(tmp_path / "m.lkm")
    assert model.matcher == "torch-flip"
    with Gallery.create(tmp_path / "g.sqlite", matcher=model.matcher, lowres=model.gallery_lowres) as gallery:
        gallery.enroll([str(orl_dir / f"s{k}" / "1.pgm") for k in range(1, 21)], [f"s{k}" for k in range(1, 21)],
                       cache=EmbeddingCache(str(cache_path)), workers=1, progress=False)
        assert gallery.matcher_name == model.matcher_name_
        doc = identify([orl_dir / "s4" / "8.pgm"], gallery, LookalikeModel.load(tmp_path / "m.lkm"), top=5)
    face = doc["results"][0]["faces"][0]
    assert doc["model"]["matcher"] == "dlib-resnet-v1+flip" and face["candidates"][0]["subject"] == "s4"


def test_a_gallery_only_model_degrades_the_gallery_not_the_probe(system, orl_dir, cache_path, tmp_path):
    """``--lowres-apply gallery`` (a sharp probe against a low-resolution gallery): the gallery made from the model
    is degraded, the probe photo is embedded at full resolution, and identify re-ranks (ORL as above). The model's
    calibration on the gallery searches the sampled gallery faces prepared as probes are (cut again from their files,
    at full resolution); a face whose file has gone is left out of it."""
    import shutil

    from lookalike import calibration, train_model
    from lookalike.embed import embed_paths
    from lookalike.metrics import RankedLists

    _, _, root = system
    model, _ = train_model(root / "train.csv", lowres=16, lowres_apply="gallery", cache=str(cache_path), depth=20,
                           workers=1, progress=False)
    assert (model.probe_lowres, model.gallery_lowres) == (None, 16)
    probe = orl_dir / "s4" / "8.pgm"
    photos = []
    for k in range(1, 21):  # copies, so that one can go
        photos.append(tmp_path / f"s{k}.pgm")
        shutil.copy(orl_dir / f"s{k}" / "1.pgm", photos[-1])
    with Gallery.create(tmp_path / "g.sqlite", matcher=model.matcher, lowres=model.gallery_lowres) as gallery:
        gallery.enroll([str(p) for p in photos], [f"s{k}" for k in range(1, 21)], cache=EmbeddingCache(str(cache_path)),
                       workers=1, progress=False)
        assert gallery.preprocess == "lowres16-chip17"
        ident = Identifier(gallery, model)
        face = ident.faces(np.asarray(Image.open(probe).convert("RGB")))[0]
        full, low = (embed_paths([str(probe)], model.matcher, gallery.aligner, px, workers=1, progress=False)
                     for px in (None, 16))
        np.testing.assert_allclose(face.vector, full.vectors[0], atol=1e-5)
        assert not np.allclose(face.vector, low.vectors[0], atol=1e-3)
        doc = identify([probe], gallery, model, top=5)
        # the calibration: each sampled face, sharp, against the other subjects' degraded faces, re-ranked
        cal = ident.calibration()["model"]
        sample = ident._sample
        sharp = embed_paths([str(p) for p in gallery.paths_[sample.positions]], model.matcher, gallery.aligner, None,
                            workers=1, progress=False).vectors
        v = np.asarray(gallery.vectors_)
        sims = sharp @ v.T
        sims[gallery.subject_codes_[sample.positions][:, None] == gallery.subject_codes_[None, :]] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")[:, :model.reach]
        lists = RankedLists(order, np.take_along_axis(sims, order, 1).astype(np.float32))
        expected = model.rerank(sharp, lists, v[order]).scores[:, 0]
        np.testing.assert_allclose(ident._model_top.top, expected, atol=1e-4)
        assert cal["n_nonmated"] == 20
        photos[int(sample.positions[0])].unlink()
        gone = calibration.model_top(sample, gallery, model, lambda: ident._sample_as_probes(sample))
        assert np.isneginf(gone[0]) and np.allclose(gone[1:], expected[1:], atol=1e-4)
    face = doc["results"][0]["faces"][0]
    assert doc["model"]["lowres_apply"] == "gallery" and face["candidates"][0]["subject"] == "s4"
    assert face["decision"]["calibrated_on"] in ("gallery-sample", "model")  # 20 faces: the stricter of the two


def test_train_reports_the_images_it_skipped(system, small_face_model, orl_dir, cache_path, tmp_path, capsys):
    """An unusable training image, the same photo under two people's names (either label may be wrong: both left
    out, as ``benchmark`` does) and a file outside the person folders are counted on standard error and in the model
    file, and listed in a CSV beside it; a one-sided model's second embedding of the validation gallery (as probes)
    is counted as extra embeddings, so the cache count adds up."""
    import shutil

    data = tmp_path / "people"
    for k in range(21, 41):
        shutil.copytree(orl_dir / f"s{k}", data / f"s{k}", ignore=shutil.ignore_patterns("7.pgm", "8.pgm",
                                                                                          "9.pgm", "10.pgm"))
    (data / "s21" / "empty.jpg").write_bytes(b"")
    shutil.copy(data / "s21" / "1.pgm", data / "s22" / "copy.pgm")
    shutil.copy(data / "s21" / "2.pgm", data / "top.pgm")
    (data / "s23" / "more").mkdir()  # a folder of photos: counted as one entry, not as images
    for n in (1, 2):
        shutil.copy(data / "s23" / f"{n}.pgm", data / "s23" / "more" / f"{n}.pgm")
    model = tmp_path / "m.lkm"
    capsys.readouterr()
    assert main(["train", "--data", str(data), "--model", str(model), "--depth", "20", "--lowres", "16",
                 "--lowres-apply", "probes", "--matcher", FAST_MATCHER, "--cache", str(cache_path), "--workers", "1",
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "skipped 5 entries (empty 1, label_conflict 2, nested_folder 1, outside_identity_folder 1)" in err
    with open(tmp_path / "m.skipped.csv", newline="") as f:
        listed = {(Path(r["path"]).relative_to(data).as_posix(), r["reason"]) for r in csv.DictReader(f)}
    assert listed == {("s21/empty.jpg", "empty"), ("s21/1.pgm", "label_conflict"), ("s22/copy.pgm", "label_conflict"),
                      ("top.pgm", "outside_identity_folder"), ("s23/more", "nested_folder")}
    n = LookalikeModel.load(model).training_["n_nonmated_searches"]  # 20 people: a few dozen searches
    assert n < 100 and f"the thresholds come from {n} non-mated validation searches; at FPIR 0.001, 0.01, 0.1" in err
    embedding = LookalikeModel.load(model).training_["embedding"]
    assert embedding["skipped"] == {"empty": 1, "label_conflict": 2, "nested_folder": 1, "outside_identity_folder": 1}
    assert embedding["duplicates"] == 2 and embedding["cached"] >= 0 and embedding["extra_embeddings"] > 0
    assert embedding["computed"] + embedding["cached"] == embedding["images"] + embedding["extra_embeddings"]
    for extra in (data / "s21" / "empty.jpg", data / "s22" / "copy.pgm", data / "top.pgm"):  # clean data, same --model
        extra.unlink()
    shutil.rmtree(data / "s23" / "more")
    assert main(["train", "--data", str(data), "--model", str(model), "--depth", "20", "--matcher", FAST_MATCHER,
                 "--cache", str(cache_path), "--workers", "1", "--no-progress"]) == 0
    assert "skipped" not in capsys.readouterr().err
    assert (tmp_path / "m.skipped.csv").read_text().splitlines() == ["path,identity,reason,message"]  # not stale


def test_train_warns_that_a_small_validation_split_cannot_judge_the_model(system, capsys):
    """20 ORL people: 6 validation people, a few dozen probes. The warning is printed by train, kept in the model and
    shown by identify with the model."""
    model_path, db, root = system
    model = LookalikeModel.load(model_path)
    warning = model.training_["validation_warning"]
    assert "6 people" in warning and "cannot tell a gain from chance" in warning
    assert model.describe_short()["validation_warning"] == warning
    capsys.readouterr()
    assert main(["identify", str(root.parent / "none.jpg"), "--db", str(db), "--model", str(model_path)]) == 1
    assert f"model warning: {warning}" in capsys.readouterr().out.splitlines()[:3]


def test_validation_warning_thresholds():
    """Fewer than 10 people, fewer than 100 probes, or one person holding more than half the probes (the audit's
    skew: 199 of 201 probes one person's, a 3-face gallery); none for a split above all three."""
    from lookalike.faces import FaceSet
    from lookalike.train import validation_warning

    def faces(ids: list[str]) -> FaceSet:
        return FaceSet(np.array([f"{i}.jpg" for i in range(len(ids))]), np.array(ids), np.zeros((len(ids), 4)))

    skew = validation_warning(faces(["a"] * 199 + ["b", "c"]), faces(["a", "b", "c"]))
    assert "3 people" in skew and "199 of its 201 probes one person's" in skew and "probes;" not in skew
    people = [f"p{k}" for k in range(12)]
    assert validation_warning(faces(people * 10), faces(people)) is None
    assert validation_warning(faces(people[:9] * 12), faces(people[:9])).startswith(
        "the validation split is too small to judge the model (9 people; wanted")
    assert "(96 probes; wanted" in validation_warning(faces(people * 8), faces(people))


def test_train_refuses_a_model_path_that_would_overwrite_a_file(orl_dir, tmp_path, capsys):
    """--model naming a photo (inside the data or not), a path inside the data folder, or an existing file that is not
    a model (by content: a text, an .npz of other arrays named .lkm) is refused in one line before any work; the
    file is left as it was."""
    import shutil

    data = tmp_path / "people"
    for k in range(1, 6):
        shutil.copytree(orl_dir / f"s{k}", data / f"s{k}")
    (tmp_path / "notes.txt").write_text("case notes")
    with open(tmp_path / "arrays.lkm", "wb") as f:
        np.savez(f, x=np.zeros(3))
    photo = (data / "s1" / "1.pgm").read_bytes()
    for model, message in ((data / "s1" / "1.pgm", "names an image file"), (tmp_path / "evidence.jpg",
                                                                            "names an image file"),
                           (data / "s1" / "m.lkm", "inside the training data folder"),
                           (data / "m.lkm", "inside the training data folder"),
                           (tmp_path / "notes.txt", "exists and is not a lookalike model file"),
                           (tmp_path / "arrays.lkm", "exists and is not a lookalike model file")):
        code = main(["train", "--data", str(data), "--model", str(model), "--cache", "none", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert (data / "s1" / "1.pgm").read_bytes() == photo and (tmp_path / "notes.txt").read_text() == "case notes"
    assert not (tmp_path / "evidence.jpg").exists() and not (data / "m.lkm").exists()
    assert np.load(tmp_path / "arrays.lkm").files == ["x"]


def test_train_refuses_too_few_people_before_any_work(orl_dir, tmp_path, capsys):
    code = main(["train", "--data", str(orl_dir), "--model", str(tmp_path / "m.lkm"), "--max-people", "3",
                 "--cache", "none", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "too few people to train a model" in err and "Traceback" not in err
    assert "train needs at least 5 people with 2+ usable photos each (3 to train on, 2 to validate" in err
    assert not (tmp_path / "m.lkm").exists()
    code = main(["train", "--data", str(orl_dir), "--model", str(tmp_path), "--cache", "none"])
    assert code == 2 and "is a folder" in capsys.readouterr().err


def test_benchmark_evaluates_a_fixed_model(system, orl_dir, cache_path, tmp_path, capsys):
    """``benchmark --model``: the run's own protocol, its test lists re-ranked by a trained model as it is (nothing
    trained), beside the same baseline as a run without it."""
    model_path, _, _ = system
    data = tmp_path / "data.csv"  # s1..s20 (people the model never saw); s21..s40 with one image (distractors)
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity"])
        w.writerows([str(orl_dir / f"s{k}" / f"{n}.pgm"), f"s{k}"] for k in range(1, 41)
                    for n in (range(1, 6) if k <= 20 else (1,)))
    common = ["--data", str(data), "--cache", str(cache_path), "--matcher", FAST_MATCHER, "--workers", "1",
              "--depth", "20", "--no-progress"]
    out = tmp_path / "fixed"
    assert main(["benchmark", *common, "--out", str(out), "--model", str(model_path)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["methods"]) == ["baseline", "lookalike-model", "lookalike-model-batch"]
    assert not (out / "model.lkm").exists()
    batch = m["rerank_stats"]["lookalike-model-batch"]  # the model's batch setting, or its per-photo lists
    assert batch["tuning"] == LookalikeModel.load(model_path).batch_tuning_ and "rule" in batch["tuning"]
    if batch["batch"] is None:
        assert m["methods"]["lookalike-model-batch"]["rank1"] == m["methods"]["lookalike-model"]["rank1"]
    fixed = m["methods"]["lookalike-model"]
    assert {"rank1_ci95", "mcnemar_p", "fixed", "broken"} <= set(fixed)
    assert set(m["open_set"]["lookalike-model"]["calibrated"]) == {"0.001", "0.01", "0.1"}
    assert m["protocol"]["n_distractors"] > 0 and "dir@fpir=0.01" in m["open_set"]["lookalike-model"]
    assert all(c["fpir"] is not None for c in m["open_set"]["lookalike-model"]["calibrated"].values())
    assert m["rerank_stats"]["lookalike-model"]["file"] == str(model_path)
    assert "`lookalike-model` is" in (out / "report.md").read_text()
    r = np.load(out / "rankings.npz")  # a re-ranking: the same candidates per probe, reordered
    np.testing.assert_array_equal(np.sort(r["lookalike-model.indices"], 1), np.sort(r["baseline.indices"], 1))
    assert main(["benchmark", *common, "--out", str(tmp_path / "base"), "--no-rerank"]) == 0
    base = json.loads((tmp_path / "base" / "metrics.json").read_text())
    assert base["methods"]["baseline"] == m["methods"]["baseline"]  # the same people split, gallery and probes


def test_train_says_how_many_photos_were_usable(tmp_path, capsys):
    """Photos where no face is found, with --central-fraction 0: the error says how many were usable, and why not."""
    data = tmp_path / "people"
    for k in range(5):
        (data / f"p{k}").mkdir(parents=True)
        for n in range(2):
            write_synthetic(data / f"p{k}" / f"{n}.png", 10 * k + n, (60, 60))
    code = main(["train", "--data", str(data), "--model", str(tmp_path / "m.lkm"), "--central-fraction", "0",
                 "--matcher", FAST_MATCHER, "--cache", "none", "--workers", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "0 of 10 photos had a usable face (no_face 10); --central-fraction 0 skips every photo" in err


def test_smallest_trainable_dataset_follows_the_split_rule():
    from lookalike.train import smallest_trainable

    assert smallest_trainable(0.3) == 5 and smallest_trainable(0.5) == 5 and smallest_trainable(0.1) == 15


def test_enroll_and_serve_refuse_a_model_for_another_gallery_as_identify_does(system, orl_dir, tmp_path, capsys):
    """A gallery of 16 px faces and a full-resolution model: enroll --model (which had enrolled into it) and the
    service refuse it with identify's message and remedy, the settings named as the options that set them."""
    from lookalike.service.core import Service

    model_path, _, _ = system
    db = tmp_path / "g16.sqlite"
    photos = [str(orl_dir / "s1" / "1.pgm")]
    common = ["--matcher", FAST_MATCHER, "--cache", "none", "--workers", "1", "--no-progress"]
    gallery = tmp_path / "g.csv"
    gallery.write_text(f"path,identity\n{photos[0]},s1\n")
    assert main(["enroll", "--gallery", str(gallery), "--db", str(db), "--lowres", "16", *common]) == 0
    capsys.readouterr()
    want = (f"the gallery {db} was built with another preprocessing --lowres 16 (model: full resolution): re-enrol it "
            "with the model's settings or train a model for it")
    assert main(["enroll", "--gallery", str(gallery), "--db", str(db), "--model", str(model_path),
                 "--cache", "none", "--workers", "1", "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == f"lookalike: error: {want}"
    assert main(["identify", *photos, "--db", str(db), "--model", str(model_path)]) == 2
    assert capsys.readouterr().err.strip() == f"lookalike: error: {want}"
    with pytest.raises(ValueError) as e:
        Service(str(db), LookalikeModel.load(model_path))
    assert str(e.value) == want


@pytest.mark.parametrize("extra, message", [(["--lowres", "16"], "probes --lowres 16 (model: full resolution)"),
                                            (["--no-rerank"], "drop --no-rerank"),
                                            (["--depth", "1"], "--depth")])
def test_benchmark_refuses_a_model_for_other_faces(system, orl_dir, tmp_path, capsys, extra, message):
    model_path, _, _ = system
    out = tmp_path / "run"
    code = main(["benchmark", "--data", str(orl_dir), "--out", str(out), "--model", str(model_path), "--cache", "none",
                 "--matcher", FAST_MATCHER, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()  # refused before any work


def test_the_gallery_calibration_needs_two_searchable_subjects(tmp_path):
    """Without a model the thresholds come from the gallery's own non-mated searches: none while every searchable
    face is one subject's (an empty subject does not count), then one per sampled face; a removal recounts."""
    rng = np.random.default_rng(0)

    def add(g: Gallery, subject: str, n: int) -> None:
        v = rng.standard_normal((n, 16)).astype(np.float32)
        g.add_embeddings([subject] * n, v / np.linalg.norm(v, axis=1, keepdims=True))

    with Gallery.create(tmp_path / "g.sqlite", matcher=FAST_MATCHER) as g:
        add(g, "ann", 3)
        g.store.add_subject("bob")  # enrolled, no face yet
        ident = Identifier(g)
        assert ident.calibration() == {"thresholds": {}, "n_nonmated": 0, "n_duplicates": 0, "lookalike": np.inf,
                                       "model": None}
        assert ident.threshold(0.01) == (None, None)  # no decision, not -inf (every probe "enrolled")
        add(g, "cat", 2)
        cal = ident.calibration()
        assert cal["n_nonmated"] == 5 and set(cal["thresholds"]) == {0.001, 0.01, 0.1}
        assert ident.threshold(0.1)[1] == "gallery-sample"  # 5 searches, not the 10 / FPIR = 100 that hold 10%
        g.remove("ann")  # cat's faces alone: no non-mated search
        assert ident.calibration()["n_nonmated"] == 0
        probe = rng.standard_normal(16).astype(np.float32)
        face = TemplateFace(probe / np.linalg.norm(probe), ["p.jpg"])
        for top, fpir in ((0, 0.01), (-1, 0.01), (2.5, 0.01), (3, 0), (3, 1.5)):  # the Python API checks as the CLI
            with pytest.raises(ValueError, match="top must be|FPIR must be"):
                ident.search_face(face, top=top, fpir=fpir)
        result = ident.search_face(face, top=3)
        decision = result["decision"]
        assert decision["enrolled"] is None and decision["threshold"] is None and "no threshold" in decision["note"]
        assert "Infinity" not in json.dumps(result)


def test_the_readmes_python_example_runs_as_written_and_again(orl_dir, tmp_path):
    """The README's Python block, copied into a script as a user would (its file names made real from ORL): it runs,
    finds the probe's person, and runs again (a rerun opens the gallery it made)."""
    import os
    import re
    import subprocess
    import sys

    from PIL import Image

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"The same in Python:\n\n```python\n(.*?)```", readme, re.S).group(1)
    for p in range(21, 29):  # train people
        (tmp_path / "people" / f"s{p}").mkdir(parents=True)
        for i in range(1, 6):
            Image.open(orl_dir / f"s{p}" / f"{i}.pgm").convert("RGB").save(tmp_path / "people" / f"s{p}" / f"{i}.jpg")
    (tmp_path / "g").mkdir()
    for name, p in (("ann", 1), ("bob", 2)):
        Image.open(orl_dir / f"s{p}" / "1.pgm").convert("RGB").save(tmp_path / "g" / f"{name}_1.jpg")
    Image.open(orl_dir / "s2" / "6.pgm").convert("RGB").save(tmp_path / "probe.jpg")
    (tmp_path / "example.py").write_text(code)
    env = {**os.environ, "HOME": str(tmp_path)}  # the default embedding cache under ~/.cache
    for _ in range(2):
        out = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        assert "['bob', 'ann']" in out.stdout, out.stdout


def test_identify_reports_every_input_and_its_decision(system, orl_dir, tmp_path, capsys):
    """Nothing silently dropped: files in a folder that are not photos are counted and listed, a missing path is a
    'missing' row like any unusable photo (not the end of the run); the decision shows its threshold and where it was
    set in every format; nothing searched at all is exit status 1."""
    import shutil

    model, db, _ = system
    folder = tmp_path / "case"
    folder.mkdir()
    shutil.copy(orl_dir / "s3" / "7.pgm", folder / "a.pgm")
    (folder / "notes.txt").write_text("seen at the station")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    missing = tmp_path / "missing.jpg"
    capsys.readouterr()
    args = ["--db", str(db), "--model", str(model), "--top", "3"]
    assert main(["identify", str(folder), str(missing), *args, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [(r["photo"], r["status"]) for r in doc["results"]] == [(str(folder / "a.pgm"), "ok"), (str(missing),
                                                                                                  "missing")]
    assert sorted(x["reason"] for x in doc["left_out"]) == ["broken_link", "not an image file (by its extension)"]
    assert "2 photos, 1 face searched; 1 photo without a usable face (missing); 2 entries left out" in err
    decision = doc["results"][0]["faces"][0]["decision"]

    assert main(["identify", str(folder), *args]) == 0  # the table
    table = capsys.readouterr().out
    assert f"threshold {decision['threshold']:.4f}, set on" in table and "lead: s3 is above the threshold" in table

    assert main(["identify", str(folder), *args, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert float(rows[0]["threshold"]) == pytest.approx(decision["threshold"]) and rows[0]["fpir"] == "0.01"
    assert rows[0]["calibrated_on"] == decision["calibrated_on"]

    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (128, 128, 128)).save(blank)
    assert main(["identify", str(blank), str(missing), *args, "--format", "csv"]) == 1  # nothing searched
    out, err = capsys.readouterr()
    rows = {r["photo"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows[str(blank)]["photo_status"] == "no_face" and "no face found" in rows[str(blank)]["message"]
    assert "2 photos, 0 faces searched; 2 photos without a usable face (missing, no_face)" in err


def test_identify_walks_linked_folders_once_and_lists_what_it_leaves_out(system, orl_dir, tmp_path, capsys):
    """A linked folder is searched (once, however many links reach it: a link loop ends), a named pipe with a
    photo's name is a row with its status, hidden files and folders are left out; the table, the CSV and the HTML
    page list what was left out, as the JSON does; --out naming an image file (an enrolled photo, say) is refused."""
    import os
    import shutil

    model, db, _ = system
    case, elsewhere = tmp_path / "case", tmp_path / "elsewhere"
    (case / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    shutil.copy(orl_dir / "s3" / "7.pgm", case / "a.pgm")
    shutil.copy(orl_dir / "s4" / "7.pgm", elsewhere / "b.pgm")
    (case / "linked").symlink_to(elsewhere)
    (case / "sub" / "loop").symlink_to(case)
    (case / ".hidden.pgm").write_bytes((case / "a.pgm").read_bytes())
    os.mkfifo(case / "pipe.pgm")
    capsys.readouterr()
    args = ["--db", str(db), "--model", str(model), "--top", "3"]
    assert main(["identify", str(case), *args, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [(Path(r["photo"]).relative_to(case).as_posix(), r["status"]) for r in doc["results"]] == [
        ("a.pgm", "ok"), ("linked/b.pgm", "ok"), ("pipe.pgm", "not_a_regular_file")]
    left = {Path(x["path"]).relative_to(case).as_posix(): x["reason"] for x in doc["left_out"]}
    assert set(left) == {".hidden.pgm", "sub/loop"} and "already searched" in left["sub/loop"]
    assert "2 entries left out (1 a folder already searched" in err
    for fmt in ("table", "csv", "html"):
        assert main(["identify", str(case), *args, "--format", fmt]) == 0
        text = capsys.readouterr().out
        assert str(case / ".hidden.pgm") in text and str(case / "sub" / "loop") in text, fmt
    rows = [r for r in csv.DictReader(io.StringIO(main(["identify", str(case), *args, "--format", "csv"]) == 0
                                                  and capsys.readouterr().out)) if r["photo_status"] == "left_out"]
    assert len(rows) == 2 and {r["message"] for r in rows} == set(left.values())
    enrolled = tmp_path / "photo.jpg"
    enrolled.write_bytes(b"not to be overwritten")
    assert main(["identify", str(case / "a.pgm"), *args, "--format", "csv", "--out", str(enrolled)]) == 2
    assert "names an image file" in capsys.readouterr().err and enrolled.read_bytes() == b"not to be overwritten"


def test_each_photo_file_is_searched_once_however_often_it_is_given(tmp_path):
    """A folder and a file in it, a file named twice (two spellings), a link to a file also given, a CSV row naming
    it again: searched once, each repeat left out with its reason; two files with the same bytes are both searched."""
    from lookalike import cli

    case = tmp_path / "case"
    case.mkdir()
    a, b = write_synthetic(case / "a.png", 1), case / "b.png"
    b.write_bytes(a.read_bytes())  # another file, the same bytes: a second piece of evidence
    (case / "link.png").symlink_to(a)
    (tmp_path / "alias.png").symlink_to(a)
    (tmp_path / "list.csv").write_text("path\ncase/a.png\n")
    given = [case, a, case / ".." / "case" / "a.png", tmp_path / "alias.png", tmp_path / "list.csv"]
    paths, left_out = cli.probe_paths([str(x) for x in given])
    assert paths == [str(a), str(b)]
    repeats = ("case/link.png", "case/a.png", "case/../case/a.png", "alias.png", "case/a.png")
    assert [(Path(p).relative_to(tmp_path).as_posix(), why) for p, why in left_out] == [
        (x, cli.PHOTO_REPEATED) for x in repeats]


def test_identify_lists_a_photo_given_twice_as_left_out_in_every_format(orl_folders, orl_dir, tmp_path, capsys):
    """identify given one photo twice (a folder and a file in it, a link to it) searches it once and lists each repeat
    as left out: JSON, table, CSV (``photo_status`` left_out), HTML and the summary's count."""
    import shutil

    from lookalike import cli

    db = str(tmp_path / "g.sqlite")
    assert main(["enroll", "--gallery", str(orl_folders), "--db", db, "--matcher", FAST_MATCHER, "--cache",
                 str(tmp_path / "c.sqlite"), "--workers", "1", "--no-progress"]) == 0
    case = tmp_path / "case"
    case.mkdir()
    shutil.copy(orl_dir / "s1" / "5.pgm", case / "a.pgm")
    shutil.copy(orl_dir / "s1" / "5.pgm", case / "b.pgm")  # the same bytes in another file: searched too
    (tmp_path / "alias.pgm").symlink_to(case / "a.pgm")
    given = [str(case), str(case / "a.pgm"), str(tmp_path / "alias.pgm"), "--db", db, "--top", "3"]
    capsys.readouterr()
    assert main(["identify", *given, "--format", "json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert [r["photo"] for r in doc["results"]] == [str(case / "a.pgm"), str(case / "b.pgm")]
    repeated = cli.PHOTO_REPEATED
    assert doc["left_out"] == [{"path": str(case / "a.pgm"), "reason": repeated},
                               {"path": str(tmp_path / "alias.pgm"), "reason": repeated}]
    assert f"2 photos, 2 faces searched; 0 photos without a usable face; 2 entries left out (2 {repeated})" in err
    assert main(["identify", *given, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["photo"], r["message"]) for r in rows if r["photo_status"] == "left_out"] == [
        (str(case / "a.pgm"), repeated), (str(tmp_path / "alias.pgm"), repeated)]
    assert len({r["photo"] for r in rows if r["photo_status"] == "ok"}) == 2
    for fmt in ("table", "html"):
        assert main(["identify", *given, "--format", fmt]) == 0
        text = capsys.readouterr().out
        assert text.count(f"{tmp_path / 'alias.pgm'}: {repeated}") == 1, fmt


def test_train_help_states_the_smallest_dataset_and_the_validation_warning(capsys):
    """``train --help`` gives the smallest dataset (computed by the split rule) and the warning's thresholds."""
    from lookalike.train import MIN_VAL_PEOPLE, MIN_VAL_PROBES, smallest_trainable

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(--val-fraction 0.3): {smallest_trainable(0.3)} people with 2+ usable photos each" in text
    assert f"fewer than {MIN_VAL_PEOPLE} people or {MIN_VAL_PROBES} probes" in text and "MODEL.skipped.csv" in text
