"""Load on the web service (loopback only, bounded in time): N concurrent clients mixing identify and enrol.

Starts ``lookalike serve`` on 127.0.0.1 over a fresh gallery (dlib matcher, ORL faces: 10 people enrolled first),
runs the clients for a fixed time, then checks that every acknowledged enrolment is in the gallery exactly once.
The reference, in the same run: the same identify called in-process on a :class:`Service` (no HTTP, one client).

    PYTHONPATH=src .venv/bin/python benchmarks/service_load.py [--clients 4] [--seconds 30] [--enrol-share 0.25]
        [--db postgresql://...?schema=NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from lookalike.gallery import Gallery, open_store
from lookalike.service.core import Service, Upload
from lookalike.service.launch import free_port, start_server

TOKEN = "load-test-token-" + "x" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SEED_PEOPLE = range(1, 11)  # enrolled before the run (images 1-2)
ENROL_PEOPLE = range(11, 41)  # enrolled during the run (images 1-10, each once)


def orl(root: Path, person: int, image: int) -> bytes:
    return (root / f"s{person}" / f"{image}.pgm").read_bytes()


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orl", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "orl"))
    ap.add_argument("--db", default=None, help="gallery URL (default: a SQLite file in a temporary folder)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--enrol-share", type=float, default=0.25, help="fraction of requests that enrol")
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--reference-calls", type=int, default=20)
    args = ap.parse_args()
    if not 0 < args.seconds <= 120 or not 1 <= args.clients <= 32:
        raise SystemExit("--seconds must be in (0, 120] and --clients in [1, 32] (a bounded loopback run)")
    root = Path(args.orl)
    tmp = Path(tempfile.mkdtemp(prefix="lookalike-load-"))
    db = args.db or str(tmp / "g.sqlite")
    Gallery.create(db, matcher="dlib").close()

    # Seed the gallery and measure the in-process reference (same gallery, no HTTP, one caller).
    service = Service(db, data_dir=tmp / "images", engines=1)
    for p in SEED_PEOPLE:
        service.add_images(f"s{p}", [Upload(f"{i}.pgm", orl(root, p, i)) for i in (1, 2)], create=True)
    for p in ENROL_PEOPLE:
        service.create_subject(f"s{p}")
    ref = []
    for k in range(args.reference_calls):
        t = time.perf_counter()
        service.identify(Upload("p.pgm", orl(root, SEED_PEOPLE[k % len(SEED_PEOPLE)], 3 + k % 8)), top=20)
        ref.append(time.perf_counter() - t)
    service.close()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        proc = start_server(db, tmp / "images", port, "--engines", str(args.engines), token=TOKEN,
                            log=tmp / "server.log", timeout=120)
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    todo = [(p, i) for p in ENROL_PEOPLE for i in range(1, 11)]
    random.Random(0).shuffle(todo)
    lock = threading.Lock()
    lat: dict[str, list[float]] = {"identify": [], "enrol": []}
    errors: list[str] = []
    acked: list[tuple[str, str]] = []
    stop_at = time.time() + args.seconds

    def client(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, headers=AUTH, timeout=120) as c:
            while time.time() < stop_at:
                item = None
                if rng.random() < args.enrol_share:
                    with lock:
                        item = todo.pop() if todo else None
                try:
                    t = time.perf_counter()
                    if item is not None:
                        p, i = item
                        data = orl(root, p, i)
                        r = c.post(f"/api/subjects/s{p}/images", files=[("files", (f"{i}.pgm", data))])
                        kind = "enrol"
                    else:
                        p, i = rng.choice(SEED_PEOPLE), rng.randint(3, 10)
                        r = c.post("/api/identify", files={"file": ("p.pgm", orl(root, p, i))})
                        kind = "identify"
                    dt = time.perf_counter() - t
                except httpx.HTTPError as e:
                    with lock:
                        errors.append(f"{type(e).__name__}: {e}")
                    continue
                with lock:
                    if r.status_code >= 300:
                        errors.append(f"{kind} {r.status_code}: {r.text[:200]}")
                        continue
                    lat[kind].append(dt)
                    if kind == "enrol":
                        acked.append((f"s{p}", hashlib.sha1(data).hexdigest()))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    proc.terminate()
    proc.wait(30)

    with open_store(db, create=False) as store:
        stored = [(i.subject, i.sha1) for i in store.list_images()]
    once = len(stored) == len(set(stored))
    present = set(acked) <= set(stored)
    expected = len(acked) + 2 * len(SEED_PEOPLE)

    n_id, n_en = len(lat["identify"]), len(lat["enrol"])
    print(f"service load: {args.clients} clients, {args.seconds:g} s, enrol share {args.enrol_share:g}, "
          f"{args.engines} engines, gallery {'PostgreSQL' if args.db else 'SQLite'} (dlib matcher, ORL faces)\n")
    print("| requests | count | req/s | p50 ms | p95 ms | p99 ms | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| identify over HTTP ({args.clients} clients) | {n_id} | {n_id / wall:.2f} "
          f"| {pct(lat['identify'], 50):.0f} | {pct(lat['identify'], 95):.0f} | {pct(lat['identify'], 99):.0f} | "
          f"{sum(e.startswith('identify') for e in errors)} |")
    print(f"| enrol over HTTP | {n_en} | {n_en / wall:.2f} | {pct(lat['enrol'], 50):.0f} | {pct(lat['enrol'], 95):.0f} "
          f"| {pct(lat['enrol'], 99):.0f} | {sum(e.startswith('enrol') for e in errors)} |")
    print(f"| all over HTTP | {n_id + n_en} | {(n_id + n_en) / wall:.2f} | | | | {len(errors)} |")
    print(f"| reference: identify in-process (1 caller) | {len(ref)} | {len(ref) / sum(ref):.2f} | {pct(ref, 50):.0f} "
          f"| {pct(ref, 95):.0f} | {pct(ref, 99):.0f} | 0 |")
    print(f"\nafterwards: {len(acked)} acknowledged enrolments; gallery holds {len(stored)} images (expected "
          f"{expected}); each exactly once: {once}; every acknowledged one present: {present}")
    for e in errors[:5]:
        print("error:", e)
    if errors or not once or not present or len(stored) != expected:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
