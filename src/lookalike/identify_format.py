"""``lookalike identify`` output for people (a table, or an HTML page with the faces) and spreadsheets (CSV), from
the JSON result."""

from __future__ import annotations

import base64
import csv
import html
import io
from collections import Counter

from lookalike.summary import counted, one_line
from lookalike.ties import TIE_EXPLANATION, lead_tie, tie_note

CSV_FIELDS = ("photo", "photo_status", "face", "box", "face_px", "detection", "rank", "subject", "image", "base_score",
              "base_rank", "final_score", "lookalike_group", "ambiguous", "decision_subject", "enrolled",
              "batch_distance", "fpir", "threshold", "calibrated_on", "message", "tied_with")


def batch_line(result: dict) -> str:
    """How a ``--batch`` result was ordered (empty for a photo-by-photo result)."""
    b = result.get("batch")
    if not b:
        return ""
    if not b["reranked_together"]:
        return f"batch: {b['note']}"
    s = b["setting"]
    return (f"batch: {b['faces']} faces re-ranked together (k1={s['k1']}, k2={s['k2']}, λ={s['lam']}); candidates in "
            "batch order (ascending batch distance), each with its per-photo final score; decisions from the "
            "per-photo score")


CALIBRATED_ON = {"gallery": "this gallery", "gallery-sample": "this gallery's small sample (too few searches to hold "
                 "the FPIR: it moves as subjects are enrolled)", "model": "the model's validation people"}


def verdict(decision: dict, with_model: bool = False) -> str:
    """The decision in words, with the threshold and where it was set (a template's is not made: its thresholds
    are not calibrated); ``with_model``: a model searched (a gallery threshold it uses is stricter than its own)."""
    if decision["enrolled"] is None:
        return f"no decision ({decision.get('note', 'not calibrated')})"
    where = CALIBRATED_ON.get(decision.get("calibrated_on"), "")
    if where and with_model and decision.get("calibrated_on") == "gallery-sample":
        where += ", stricter than the model's"
    threshold = f"threshold {decision['threshold']:.4f}" + (f", set on {where}" if where else "")
    if decision.get("duplicates_left_out"):
        threshold += (f"; {decision['duplicates_left_out']} of its sampled faces left out: the same photo is enrolled "
                      "under another subject's name too")
    return (f"lead: {decision['subject']} is above the threshold ({threshold})" if decision["enrolled"] else
            f"no candidate above the threshold ({threshold}): the person may not be enrolled")


def photo_message(r: dict) -> str:
    """Why a photo gave no face to search, without the photo's path repeated ("" when it says nothing)."""
    message = r.get("message", "")
    return message[len(r["photo"]) + 2:] if message.startswith(f"{r['photo']}: ") else message


def unusable(r: dict) -> str:
    """A photo's status and :func:`photo_message`."""
    message = photo_message(r)
    return f"{r['status']}" + (f" — {message}" if message else "")


def summary(result: dict) -> str:
    """``N photos, M faces searched; K photos without a usable face (reasons)``; a same-person search: ``one template
    of M faces searched``."""
    template = [r for r in result["results"] if any(f.get("detection") == "template" for f in r["faces"])]
    rows = [r for r in result["results"] if not template or r is not template[0]]
    bad = [r for r in rows if r["status"] != "ok"]
    searched = (f"one template of {counted(sum(bool(r.get('in_template')) for r in rows), 'face')}" if template
                else counted(sum(len(r["faces"]) for r in rows), "face"))
    left_out = Counter(x["reason"] for x in result.get("left_out", []))
    return (f"{counted(len(rows), 'photo')}, {searched} searched; {counted(len(bad), 'photo')} without a usable face"
            + (f" ({', '.join(sorted({r['status'] for r in bad}))})" if bad else "")
            + (f"; {counted(left_out.total(), 'entry', 'entries')} left out ("
               + ", ".join(f"{n} {why}" for why, n in sorted(left_out.items())) + ")" if left_out else ""))


def left_out_lines(result: dict) -> list[str]:
    """``path: reason`` for each entry given, or held by the folders given, that was not searched (``left_out``)."""
    return [f"{x['path']}: {x['reason']}" for x in result.get("left_out", [])]


def where(photo: str, face: dict, sep: str = " ") -> str:
    """``photo face 1 box (l, t, r, b) (detected)`` (faces counted from 1 for people; the JSON's ``index`` from 0);
    a template is its own name."""
    if face["detection"] == "template":
        return f"{photo} (template)"
    size = f", {face['face_px']} px across" if "face_px" in face else ""
    searched = f", searched at {face['probe_lowres']} px" if face.get("probe_lowres") is not None else ""
    return f"{photo}{sep}face {face['index'] + 1}{sep}box {tuple(face['box'])} ({face['detection']}{size}{searched})"


def face_size_lines(result: dict) -> list[str]:
    """The models for faces of other sizes (small, sharp), when the identifier had them."""
    lines = []
    for key, which, how in (("small_face_model", "at most {max_face_px} px across", "small-face"),
                            ("sharp_face_model", "at least {min_face_px} px across", "sharp-face")):
        m = result.get(key)
        if m:
            probes = "sharp probes" if m["lowres_apply"] == "gallery" else f"{m['lowres']} px probes"
            lines.append(f"faces {which.format(**m)}: {how} model {m['disambiguator']} ({m['selection']}, weight "
                         f"{m['weight']}), searched as {probes}")
    return lines


def tied_ranks(c: dict) -> str:
    """A candidate's ``tied_with`` ranks as ``#2,#3`` (empty when it ties with none, or a result from before ties were
    marked)."""
    return ",".join(f"#{r}" for r in c.get("tied_with") or ())


def tie_lines(candidates: list[dict]) -> list[str]:
    """``tie: #1 s1 tied with #2 twin: the order between them is arbitrary`` for each tie (on its first candidate),
    then what a tie is; none when no candidate ties."""
    lines = [one_line(f"tie: #{c['rank']} {c['subject']} {tie_note(c, candidates)}") for c in candidates
             if c.get("tied_with") and c["rank"] < min(c["tied_with"])]
    return [*lines, TIE_EXPLANATION] if lines else []


def format_table(result: dict) -> str:
    lines = []
    model = result.get("model")
    how = (f"model: {model['disambiguator']} ({model['selection']}, weight {model['weight']})" if model
           else "no model: base matcher")
    lines.append(f"gallery {result['gallery']}; {how}; decisions at FPIR {result['fpir']:g}")
    if model and model.get("validation_warning"):
        lines.append(f"model warning: {model['validation_warning']}")
    lines += face_size_lines(result)
    if batch_line(result):
        lines.append(batch_line(result))
    for r in result["results"]:
        if r["status"] != "ok":
            lines += ["", one_line(f"{r['photo']}: {unusable(r)}")]
            continue
        for f in r["faces"]:
            lead = lead_tie(f["candidates"])
            lines += ["", f"{where(one_line(r['photo']), f)}: {verdict(f['decision'], bool(model))}"
                      + ("; AMBIGUOUS: the top candidates are lookalikes of each other" if f["ambiguous"] else "")
                      + (f"; TIED: {one_line(lead)}" if lead else "")]
            if f.get("resolution_note"):
                lines.append(f"note: {f['resolution_note']}")
            batch = any("batch_distance" in c for c in f["candidates"])
            tied = any(c.get("tied_with") for c in f["candidates"])
            lines.append(f"{'rank':>4}  {'subject':<28} {'final':>8} {'base':>8}  {'base→final':>10}  "
                         + (f"{'batch':>7}  " if batch else "") + f"{'group':>5}  " + (f"{'tied':<7}  " if tied else "")
                         + "image")
            for c in f["candidates"]:
                g = c["lookalike_group"] or ""
                dist = f"{c['batch_distance']:>7.4f}  " if batch else ""
                ties = f"{tied_ranks(c):<7}  " if tied else ""
                lines.append(f"{c['rank']:>4}  {one_line(c['subject'])[:28]:<28} {c['final_score']:>8.4f} "
                             f"{c['base_score']:>8.4f}  {c['base_rank']:>4} → {c['rank']:<3}  {dist}{g!s:>5}  {ties}"
                             f"{one_line(c['image'])}")
            lines += tie_lines(f["candidates"])
    if left_out_lines(result):
        lines += ["", "left out (not searched):", *map(one_line, left_out_lines(result))]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A text cell a spreadsheet shows as text: one starting with = + - @ (a formula to Excel or LibreOffice, e.g. a
    subject named ``=HYPERLINK(...)``) gets a leading apostrophe, as OWASP advises for CSV files."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def format_csv(result: dict) -> str:
    """One row per candidate (a photo without a face: one row); text cells guarded against formulas (:func:`_cell`)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for r in result["results"]:
        if r["status"] != "ok":
            w.writerow({"photo": _cell(r["photo"]), "photo_status": r["status"],
                        "message": _cell(photo_message(r))})
            continue
        for f in r["faces"]:
            d = f["decision"]
            enrolled = d["enrolled"]
            decision = {"fpir": d.get("fpir", ""), "threshold": "" if d.get("threshold") is None else d["threshold"],
                        "calibrated_on": d.get("calibrated_on") or "",
                        "message": _cell(d.get("note") or f.get("resolution_note") or "")}
            for c in f["candidates"]:
                w.writerow({**decision, "photo": _cell(r["photo"]), "photo_status": r["status"], "face": f["index"],
                            "box": _cell(" ".join(map(str, f["box"]))), "face_px": f.get("face_px", ""),
                            "detection": f["detection"], "rank": c["rank"],
                            "subject": _cell(c["subject"]), "image": _cell(c["image"]), "base_score": c["base_score"],
                            "base_rank": c["base_rank"], "final_score": c["final_score"],
                            "lookalike_group": c["lookalike_group"] or "", "ambiguous": f["ambiguous"],
                            "decision_subject": _cell(f["decision"]["subject"] or ""),
                            "enrolled": "" if enrolled is None else enrolled,
                            "batch_distance": c.get("batch_distance", ""),
                            "tied_with": " ".join(map(str, c.get("tied_with") or ()))})
    for x in result.get("left_out", []):
        w.writerow({"photo": _cell(x["path"]), "photo_status": "left_out", "message": _cell(x["reason"])})
    return buf.getvalue()


HTML_STYLE = """body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#111}h2{font-size:1.05em;margin:1.6em 0 .4em}
.leads{border:2px solid #a60;background:#fff4e5;padding:.4em .8em}.ambiguous{color:#b00;font-weight:bold}
.row{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-start}.card{border:1px solid #bbb;padding:.4em;width:150px}
.probe{border:2px solid #333}.card img{width:150px;height:150px;image-rendering:pixelated;display:block}
.g{outline:3px solid #d80}.muted{color:#666;font-size:.9em}.gone{width:150px;height:150px;background:#eee}
@media (max-width:600px){body{margin:.5em}.card{width:calc(50% - .3em);box-sizing:border-box}
.card img,.gone{width:100%;height:auto}}.tie{color:#a40;font-weight:bold}"""


def format_html(result: dict, faces: dict) -> str:
    """One self-contained page (faces inline as PNG) for people to compare: per face, the probe's aligned face, the
    decision and each candidate's enrolled face with its rank, subject, scores and lookalike group. ``faces``: PNG
    bytes (or None) under ``("probe", photo, face index)`` and ``("image", image id)`` (see
    :func:`lookalike.identify.result_faces`)."""
    e = html.escape
    model = result.get("model")
    how = (f"re-ranked by {model['disambiguator']} ({model['selection']}, weight {model['weight']})" if model
           else "no model: the base matcher's order")
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>lookalike identify</title>"
           "<meta name='viewport' content='width=device-width, initial-scale=1'>"
           f"<style>{HTML_STYLE}</style></head><body><h1>lookalike identify</h1>",
           f"<p>{e(summary(result))}</p>",
           "<p class='leads'>Results are <strong>investigative leads, not identifications</strong>: a person must "
           "compare the faces, and a candidate list never establishes who someone is.</p>",
           f"<p class='muted'>gallery {e(str(result['gallery']))}; {e(how)}; decisions at FPIR {result['fpir']:g}; "
           f"lookalike {e(str(result.get('lookalike_version', '')))}</p>"]
    for line in (*face_size_lines(result), batch_line(result)):
        if line:
            out.append(f"<p class='muted'>{e(line)}</p>")
    for r in result["results"]:
        if r["status"] != "ok":
            out.append(f"<h2>{e(r['photo'])}: {e(unusable(r))}</h2>")
            continue
        for f in r["faces"]:
            out.append(f"<h2>{e(where(r['photo'], f, ' · '))}: {e(verdict(f['decision'], bool(model)))}</h2>")
            if f["ambiguous"]:
                out.append("<p class='ambiguous'>Ambiguous: the top candidates are lookalikes of each other.</p>")
            if lead_tie(f["candidates"]):
                out.append(f"<p class='tie'>Tied: {e(lead_tie(f['candidates']))}.</p>")
            if any(c.get("tied_with") for c in f["candidates"]):
                out.append(f"<p class='muted'>{e(TIE_EXPLANATION[0].upper() + TIE_EXPLANATION[1:])}.</p>")
            if f.get("resolution_note"):
                out.append(f"<p class='muted'>Note: {e(f['resolution_note'])}</p>")
            if f["detection"] == "template":  # the faces the template averages, each with its photo's name
                cards = [_card(faces.get(("member", p)), f"face in {p}", f"in the template: {e(p)}", "card probe")
                         for p in f.get("template_of", [])]
            else:
                cards = [_card(faces.get(("probe", r["photo"], f["index"])), "probe face", "probe", "card probe")]
            for c in f["candidates"]:
                group = f"lookalike group {c['lookalike_group']}" if c["lookalike_group"] else ""
                batch = f"<br>batch distance {c['batch_distance']:.4f}" if "batch_distance" in c else ""
                tie = tie_note(c, f["candidates"])
                tie = f"<br><span class='tie'>{e(tie)}</span>" if tie else ""
                text = (f"#{c['rank']} <b>{e(c['subject'])}</b><br>final {c['final_score']:.4f} · base "
                        f"{c['base_score']:.4f}<br>base rank {c['base_rank']} → {c['rank']}{batch}<br>{group}{tie}")
                cards.append(_card(faces.get(("image", c["image_id"])), f"face of {c['subject']}", text,
                                   "card g" if group else "card"))
            out.append("<div class='row'>" + "".join(cards) + "</div>")
    if left_out_lines(result):
        out.append("<h2>Left out (not searched)</h2><ul>"
                   + "".join(f"<li>{e(line)}</li>" for line in left_out_lines(result)) + "</ul>")
    return "\n".join(out) + "\n</body></html>\n"


def _card(png: bytes | None, alt: str, text: str, cls: str) -> str:
    pic = (f"<img src='data:image/png;base64,{base64.b64encode(png).decode()}' alt='{html.escape(alt)}'>" if png
           else "<div class='gone' title='face unavailable'></div>")
    return f"<div class='{cls}'>{pic}{text}</div>"
