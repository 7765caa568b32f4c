"""``lookalike identify`` output for people (a table) and spreadsheets (CSV), from the JSON result."""

from __future__ import annotations

import csv
import io

CSV_FIELDS = ("photo", "photo_status", "face", "box", "detection", "rank", "subject", "image", "base_score",
              "base_rank", "final_score", "lookalike_group", "ambiguous", "decision_subject", "enrolled")


def format_table(result: dict) -> str:
    lines = []
    model = result.get("model")
    how = (f"model: {model['disambiguator']} ({model['selection']}, weight {model['weight']})" if model
           else "no model: base matcher")
    lines.append(f"gallery {result['gallery']}; {how}; decisions at FPIR {result['fpir']:g}")
    for r in result["results"]:
        if r["status"] != "ok":
            lines += ["", f"{r['photo']}: {r['status']}" + (f" — {r['message']}" if r.get("message") else "")]
            continue
        for f in r["faces"]:
            d = f["decision"]
            verdict = f"top subject {d['subject']}" if d["enrolled"] else "not enrolled (no candidate above threshold)"
            lines += ["", f"{r['photo']} face {f['index']} box {tuple(f['box'])} ({f['detection']}): {verdict}"
                      + ("; AMBIGUOUS: the top candidates are lookalikes of each other" if f["ambiguous"] else "")]
            lines.append(f"{'rank':>4}  {'subject':<28} {'final':>8} {'base':>8}  {'base→final':>10}  "
                         f"{'group':>5}  image")
            for c in f["candidates"]:
                g = c["lookalike_group"] or ""
                lines.append(f"{c['rank']:>4}  {c['subject'][:28]:<28} {c['final_score']:>8.4f} {c['base_score']:>8.4f}"
                             f"  {c['base_rank']:>4} → {c['rank']:<3}  {g!s:>5}  {c['image']}")
    return "\n".join(lines) + "\n"


def format_csv(result: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for r in result["results"]:
        if r["status"] != "ok":
            w.writerow({"photo": r["photo"], "photo_status": r["status"]})
            continue
        for f in r["faces"]:
            for c in f["candidates"]:
                w.writerow({"photo": r["photo"], "photo_status": r["status"], "face": f["index"],
                            "box": " ".join(map(str, f["box"])), "detection": f["detection"], "rank": c["rank"],
                            "subject": c["subject"], "image": c["image"], "base_score": c["base_score"],
                            "base_rank": c["base_rank"], "final_score": c["final_score"],
                            "lookalike_group": c["lookalike_group"] or "", "ambiguous": f["ambiguous"],
                            "decision_subject": f["decision"]["subject"] or "", "enrolled": f["decision"]["enrolled"]})
    return buf.getvalue()
