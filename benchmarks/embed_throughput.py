"""Face-descriptor throughput: dlib-bin (two processes, one net each) vs the PyTorch port (2 threads).

Aligns ``--n`` LFW faces with dlib (HOG + 5-point model, 150x150 chips, padding 0.25), then times only
the descriptor computation of each method on the same chips (nets are loaded and warmed up first).
Prints a table, the network's GMAC per chip, the achieved GFLOP/s against an FP32 peak estimate, and
as its last line ``speedup <torch chips/s / dlib chips/s>``.

    .venv/bin/python benchmarks/embed_throughput.py --n 256
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lookalike.matchers.dlib_resnet import model_path  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data"


def make_chips(data: Path, n: int) -> np.ndarray:
    """``n`` aligned 150x150 RGB chips from LFW images spread across the dataset."""
    import dlib
    from PIL import Image

    files = sorted((data / "lfw").glob("*/*.jpg"))
    if not files:
        raise SystemExit(f"no LFW images under {data / 'lfw'}")
    detector = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(str(model_path("shape_predictor_5_face_landmarks.dat")))
    step = max(1, len(files) // (2 * n))
    chips = []
    for f in files[::step] + files:
        img = np.asarray(Image.open(f).convert("RGB"))
        dets = detector(img, 0) or detector(img, 1)
        if dets:
            chips.append(dlib.get_face_chip(img, shapes(img, dets[0]), size=150, padding=0.25))
        if len(chips) == n:
            break
    return np.stack(chips)


# ---------------------------------------------------------------------------------------------------
# dlib-bin, two processes


def _dlib_worker(chips: np.ndarray, ready: mp.Queue, start: mp.Event, results: mp.Queue, idx: int) -> None:
    from lookalike.matchers.dlib_resnet import DlibResNetMatcher

    matcher = DlibResNetMatcher()
    matcher.descriptors(chips[:1])  # warm-up
    ready.put(idx)
    start.wait()
    out = matcher.descriptors(chips)
    results.put((idx, out))


def run_dlib(chips: np.ndarray, procs: int = 2) -> tuple[float, np.ndarray]:
    ctx = mp.get_context("spawn")
    ready, results, start = ctx.Queue(), ctx.Queue(), ctx.Event()
    parts = np.array_split(chips, procs)
    workers = [ctx.Process(target=_dlib_worker, args=(p, ready, start, results, i)) for i, p in enumerate(parts)]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get()
    t0 = time.perf_counter()
    start.set()
    got = dict(results.get() for _ in workers)
    seconds = time.perf_counter() - t0
    for w in workers:
        w.join()
    return seconds, np.concatenate([got[i] for i in range(procs)])


# ---------------------------------------------------------------------------------------------------
# torch


def run_torch(chips: np.ndarray, threads: int, batch_size: int) -> tuple[float, np.ndarray, float]:
    import torch

    from lookalike.matchers.torch_resnet import TorchResNetMatcher, build_dlib_resnet, count_macs

    torch.set_num_threads(threads)  # this script's process (the library leaves torch's threads alone)
    matcher = TorchResNetMatcher(batch_size=batch_size)
    matcher.descriptors(chips[:batch_size])  # warm-up (oneDNN primitive creation)
    t0 = time.perf_counter()
    out = matcher.descriptors(chips)
    seconds = time.perf_counter() - t0
    return seconds, out, count_macs(build_dlib_resnet()) / 1e9


# ---------------------------------------------------------------------------------------------------
# peak estimate


def estimate_peak_gflops(cores: int) -> tuple[float, str]:
    """FP32 peak = cores x GHz x FLOP/cycle, from /proc/cpuinfo flags and clock (a rough estimate)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.search(r"^flags\s*:\s*(.*)$", info, re.M).group(1).split()) if "flags" in info else set()
    vendor = re.search(r"^vendor_id\s*:\s*(\S+)", info, re.M)
    family = re.search(r"^cpu family\s*:\s*(\d+)", info, re.M)
    mhz = None
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        m = re.search(r"CPU max MHz:\s*([\d.]+)", lscpu)
        mhz = float(m.group(1)) if m else None
    except (OSError, subprocess.SubprocessError):
        pass
    clock_src = "lscpu max MHz"
    if mhz is None:
        m = re.search(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)
        mhz, clock_src = (float(m.group(1)), "/proc/cpuinfo cpu MHz") if m else (2000.0, "assumed 2 GHz")
    amd = vendor is not None and vendor.group(1) == "AuthenticAMD"
    zen_before_5 = amd and family is not None and int(family.group(1)) < 26
    if "avx512f" in flags and not zen_before_5:  # Intel server cores / Zen 5: 2 x 512-bit FMA units
        flops_per_cycle, isa = 64, "AVX-512: 2 FMA units x 16 lanes x 2"
    elif "avx2" in flags and "fma" in flags:  # Haswell+, Zen 2-4 (Zen 4 splits AVX-512 into 256-bit)
        flops_per_cycle, isa = 32, "AVX2+FMA: 2 FMA units x 8 lanes x 2"
    elif "avx" in flags:
        flops_per_cycle, isa = 16, "AVX: 8-lane add + 8-lane mul"
    else:
        flops_per_cycle, isa = 8, "SSE: 4-lane add + 4-lane mul"
    peak = cores * mhz / 1000 * flops_per_cycle
    how = f"{cores} cores x {mhz / 1000:.2f} GHz ({clock_src}) x {flops_per_cycle} FLOP/cycle ({isa})"
    return peak, how


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256, help="number of chips")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--procs", type=int, default=2, help="dlib processes")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    chips = make_chips(args.data, args.n)
    print(f"aligned {len(chips)} LFW chips in {time.perf_counter() - t0:.1f}s; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")

    dlib_s, dlib_out = run_dlib(chips, args.procs)
    torch_s, torch_out, gmac = run_torch(chips, args.threads, args.batch_size)
    n = len(chips)
    rows = [
        (f"dlib-bin x{args.procs} procs", n, dlib_s),
        (f"torch {args.threads} threads, bs {args.batch_size}", n, torch_s),
    ]
    print(f"\n{'method':32s} {'chips':>6s} {'seconds':>8s} {'chips/s':>8s} {'GFLOP/s':>8s}")
    for name, k, s in rows:
        print(f"{name:32s} {k:6d} {s:8.2f} {k / s:8.1f} {2 * gmac * k / s:8.1f}")
    peak, how = estimate_peak_gflops(os.cpu_count() or 1)
    print(f"\nnetwork: {gmac:.3f} GMAC ({2 * gmac:.3f} GFLOP) per chip")
    print(f"FP32 peak estimate: {peak:.0f} GFLOP/s = {how}")
    print(f"torch achieves {2 * gmac * n / torch_s:.1f} GFLOP/s = {100 * 2 * gmac * n / torch_s / peak:.0f}% of peak; "
          f"dlib {2 * gmac * n / dlib_s:.1f} GFLOP/s = {100 * 2 * gmac * n / dlib_s / peak:.0f}%")
    print(f"max abs diff torch vs dlib descriptors: {np.abs(torch_out - dlib_out).max():.3g}")
    print(f"load average now {os.getloadavg()[0]:.2f} (other processes share these cores: timings are noisy)")
    print(f"speedup {dlib_s / torch_s:.2f}")


if __name__ == "__main__":
    main()
