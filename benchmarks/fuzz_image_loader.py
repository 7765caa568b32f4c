"""Fuzz the image loader: any bytes given to ``load_image`` must give an image or an ImageError, never another
exception. Uses atheris (coverage-guided) when installed, else hypothesis's binary strategies; runs for a
bounded time and prints the executions and every other exception found. Not part of CI.

    python benchmarks/fuzz_image_loader.py --seconds 60
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.data.images import ImageError, load_image


def seeds() -> list[bytes]:
    """Small valid images in several formats, for the fuzzer to mutate."""
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("PNG", "L"), ("GIF", "P"), ("BMP", "RGB"),
                      ("TIFF", "RGB"), ("WEBP", "RGB"), ("PPM", "RGB")):
        img = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).convert(mode)
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append(buf.getvalue())
    return out


class Target:
    """Writes each input to one temporary file and loads it; records non-ImageError exceptions."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "input.img"
        self.runs = 0
        self.image_errors = 0
        self.found: dict[str, str] = {}  # exception type + message head -> traceback

    def __call__(self, data: bytes) -> None:
        self.runs += 1
        self.path.write_bytes(data)
        try:
            load_image(self.path)
        except ImageError:
            self.image_errors += 1
        except Exception as e:  # noqa: BLE001 - what the fuzzer looks for
            key = f"{type(e).__name__}: {str(e)[:80]}"
            if key not in self.found:
                self.found[key] = traceback.format_exc()


def run_atheris(target: Target, seconds: float, report) -> None:
    """libFuzzer never returns: at the deadline the report is printed and the process exits from here."""
    import atheris

    corpus = seeds()
    state = {"deadline": None}

    def one(data: bytes) -> None:
        if state["deadline"] is None:
            state["deadline"] = time.monotonic() + seconds
        elif time.monotonic() > state["deadline"]:
            sys.stdout.flush()
            os._exit(report(target, seconds))
        fdp = atheris.FuzzedDataProvider(data)
        if fdp.ConsumeBool():  # half the time: mutate a valid image, to get past the magic numbers
            seed = bytearray(corpus[fdp.ConsumeIntInRange(0, len(corpus) - 1)])
            for _ in range(fdp.ConsumeIntInRange(1, 8)):
                if seed:
                    seed[fdp.ConsumeIntInRange(0, len(seed) - 1)] = fdp.ConsumeInt(1) & 0xFF
            cut = fdp.ConsumeIntInRange(0, len(seed))
            target(bytes(seed[:cut] if fdp.ConsumeBool() else seed))
        else:
            target(fdp.ConsumeBytes(fdp.remaining_bytes()))

    atheris.Setup([sys.argv[0], "-max_len=4096", "-print_final_stats=0"], one)
    atheris.Fuzz()


def run_hypothesis(target: Target, seconds: float, report) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    corpus = seeds()
    mutated = st.tuples(st.sampled_from(corpus), st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)),
                                                          max_size=8), st.integers(0, 4096)).map(
        lambda t: bytes(_mutate(*t)))
    deadline = time.monotonic() + seconds

    @settings(max_examples=10**9, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=4096), mutated))
    def fuzz(data: bytes) -> None:
        if time.monotonic() > deadline:
            raise TimeoutError
        target(data)

    try:
        fuzz()
    except TimeoutError:
        pass
    sys.exit(report(target, seconds))


def _mutate(seed: bytes, edits: list[tuple[int, int]], cut: int) -> bytearray:
    b = bytearray(seed)
    for i, v in edits:
        if b:
            b[i % len(b)] = v
    return b[:cut] if cut < len(b) else b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60, help="how long to fuzz (default: 60)")
    ap.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto",
                    help="fuzzing engine (auto: atheris if installed)")
    args = ap.parse_args()
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401

            engine = "atheris"
        except ImportError:
            engine = "hypothesis"
    if engine == "atheris":
        import atheris

        with atheris.instrument_imports(include=["PIL", "lookalike"]):
            import PIL.Image  # noqa: F401  (re-imported modules are not instrumented: import fresh here)
    folder = Path(tempfile.mkdtemp(prefix="lookalike-fuzz-"))
    target = Target(folder)

    def report(target: Target, seconds: float) -> int:
        print(f"engine: {engine}; {seconds:.0f} s; {target.runs} executions ({target.runs / seconds:.0f}/s); "
              f"{target.image_errors} ImageError; {len(target.found)} other exception kinds", flush=True)
        for key, tb in target.found.items():
            print(f"\n== {key}\n{tb}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
        return 1 if target.found else 0

    (run_atheris if engine == "atheris" else run_hypothesis)(target, args.seconds, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
