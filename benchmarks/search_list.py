"""The search list at scale: ``GET /api/searches?limit=200`` and the search list page (``/``, 200 a page) over a
gallery of ``--searches`` stored searches (default 100,000; 98% with a verdict, 1% ambiguous, 20 candidates each),
through the app in-process (FastAPI's TestClient, no network), SQLite or PostgreSQL (``--db postgresql:///test``: a
fresh schema, dropped afterwards). Prints the median and min of ``--repeat`` requests of each kind, unfiltered,
awaiting review (``reviewed=false``) and ambiguous (``ambiguous=true``)::

    PYTHONPATH=src .venv/bin/python benchmarks/search_list.py [--searches 100000] [--db postgresql:///test]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fastapi.testclient import TestClient  # noqa: E402

from lookalike.gallery import Gallery, is_postgres_url, open_store  # noqa: E402
from lookalike.service.app import create_app  # noqa: E402
from lookalike.service.auth import TokenChecker  # noqa: E402
from lookalike.service.core import Service  # noqa: E402

TOKEN = "bench-token-" + "x" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def result_doc(i: int, ambiguous: bool) -> dict:
    """An identify document of one face with 20 candidates, shaped as a stored search's."""
    cands = [{"rank": r + 1, "base_rank": r + 1, "subject": f"s{(i + r) % 1000}", "image_id": r + 1,
              "score": 0.9 - r / 100, "base_score": 0.9 - r / 100, "lookalike_group": None} for r in range(20)]
    return {"gallery": "g.sqlite", "results": [{"photo": f"probe{i}.jpg", "status": "ok", "faces": [
        {"index": 0, "box": [10, 10, 90, 90], "ambiguous": ambiguous, "decision": {"match": False, "fpir": 0.01},
         "candidates": cands}]}]}


def fill(db: str, n: int) -> None:
    """``n`` searches, every 50th awaiting review (the others with one verdict, every 10th with three) and every
    100th ambiguous, written in one transaction."""
    with open_store(db, create=False) as store, store._transaction(write=True):  # noqa: SLF001
        for i in range(1, n + 1):
            ambiguous = i % 100 == 0
            sid = store._exec("INSERT INTO searches (created, probe_sha1, probe, result, recorded_by, ambiguous) "  # noqa: SLF001
                              "VALUES (?, ?, NULL, ?, '', ?) RETURNING id",
                              ("2026-11-30T00:00:00.000+00:00", f"{i:040x}", json.dumps(result_doc(i, ambiguous)),
                               int(ambiguous))).fetchone()[0]
            for _ in range(0 if i % 50 == 0 else 3 if i % 10 == 0 else 1):
                store._exec("INSERT INTO reviews (search_id, subject, verdict, reviewer, note, created) VALUES "  # noqa: SLF001
                            "(?, 's1', 'non-match', 'bench', '', '2026-11-30T00:00:00.000+00:00')", (sid,))


def timed(client: TestClient, url: str, repeat: int, **kw) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = client.get(url, **kw)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
    return statistics.median(times) * 1000, min(times) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--searches", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--db", default=None, help="a PostgreSQL URL (default: a SQLite file in a temporary folder)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    drop = None
    if args.db and is_postgres_url(args.db):
        import psycopg

        schema = f"bench_list_{uuid.uuid4().hex[:8]}"
        db = f"{args.db}?schema={schema}"

        def drop() -> None:
            with psycopg.connect(args.db, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    else:
        db = str(tmp / "g.sqlite")
    try:
        Gallery.create(db).close()
        t = time.perf_counter()
        fill(db, args.searches)
        print(f"{args.searches:,} searches stored in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        service = Service(db, data_dir=tmp / "images", engines=1)
        try:
            client = TestClient(create_app(service, TokenChecker(TOKEN)), follow_redirects=False)
            page = client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            assert client.post("/login", data={"token": TOKEN, "csrf": csrf, "next": "/"}).status_code == 303
            for what, query in (("unfiltered", ""), ("awaiting review", "&reviewed=false"),
                                ("ambiguous", "&ambiguous=true")):
                api = timed(client, f"/api/searches?limit=200{query}", args.repeat, headers=AUTH)
                html = timed(client, f"/?x=1{query}", args.repeat)
                print(f"{'PostgreSQL' if drop else 'SQLite'} {what}: API {api[0]:.1f} ms (min {api[1]:.1f}), "
                      f"page {html[0]:.1f} ms (min {html[1]:.1f})")
        finally:
            service.close()
    finally:
        if drop:
            drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
