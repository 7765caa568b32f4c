"""Images to embeddings: load, align, optionally degrade, embed — in parallel, through the cache.

Engines: ``local`` (a pool of local processes) or ``ray`` (a Ray Data pipeline over an actor pool, on a local
Ray instance or an existing cluster). Either way the driver writes each finished batch to the cache.

Every image ends with a status: ``ok`` or the reason it was skipped (``empty``, ``truncated``,
``unreadable``, ``too_large``, ``too_small``, ``missing``, ``no_face``). Skips are counted, never fatal.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lookalike.checks import check_paths
from lookalike.data.images import (
    ImageError,
    check_degrade,
    check_lowres,
    degrade,
    load_image,
    lowres_chip_size,
    seed_from_key,
)
from lookalike.matchers import DEFAULT_MATCHER, TORCH_MATCHERS, get_matcher, matcher_name
from lookalike.matchers.align import Alignment, FaceAligner
from lookalike.matchers.base import Matcher
from lookalike.matchers.cache import EmbeddingCache, content_key


def preprocess_key(lowres: int | None, degrade: str = "bicubic") -> str:
    """Cache key of the chip preprocessing: full resolution, or the low-resolution chip size used and, for
    any degradation but ``bicubic`` (whose keys predate the choice), its name."""
    if lowres is None:
        return "full"
    suffix = "" if check_degrade(degrade) == "bicubic" else f"-{degrade}"
    return f"lowres{lowres}-chip{lowres_chip_size(lowres)}{suffix}"


@dataclass
class Embeddings:
    """Embeddings of a list of images, with what happened to each one."""

    vectors: np.ndarray  # (N, D) float32, zero rows where status != "ok"
    status: np.ndarray  # (N,) "ok" or a skip reason
    method: np.ndarray  # (N,) "detected", "central" or ""
    n_faces: np.ndarray  # (N,) faces the detector saw
    messages: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    computed: int = 0  # embeddings made in this call (the rest came from the cache)
    extra: int = 0  # embeddings beyond one per image (e.g. gallery images prepared as probes too)

    @property
    def ok(self) -> np.ndarray:
        return self.status == "ok"

    def summary(self) -> dict:
        return {
            "images": len(self.status), "ok": int(self.ok.sum()), "extra_embeddings": self.extra,
            "computed": self.computed, "cached": len(self.status) + self.extra - self.computed,
            "seconds": round(self.seconds, 2),
            "skipped": dict(Counter(s for s in self.status.tolist() if s != "ok")),
            "face": dict(Counter(m for m in self.method.tolist() if m)),
            "several_faces": int((self.n_faces > 1).sum()),
        }


# Per-process state of the worker processes (set once by _init_worker).
_WORKER: dict = {}


ENGINES = ("local", "ray")


def _init_worker(matcher: str | Matcher, aligner: FaceAligner, lowres: int | None, threads: int | None,
                 degrade: str = "bicubic") -> None:
    """Set up a worker process; ``threads`` (torch matcher): the process's intra-op threads (None: unchanged).

    Only the pool's own processes get a thread count: the calling process's torch settings are left alone.
    ``matcher``: a name, or a :class:`Matcher` instance used as is.
    """
    if threads is not None and matcher in TORCH_MATCHERS:
        import torch

        torch.set_num_threads(threads)
    settings = (matcher, aligner.name, lowres, degrade) if isinstance(matcher, str) else None
    if settings is not None and _WORKER.get("settings") == settings:
        return  # this process already holds the models (repeated calls, e.g. an enrolment's chunks)
    m = matcher if isinstance(matcher, Matcher) else get_matcher(matcher)
    _WORKER.update(matcher=m, aligner=aligner, lowres=lowres, degrade=degrade, settings=settings)


def _init_pool_worker(parent: int, *args) -> None:
    """A pool process: Ctrl-C is the parent's to handle (it cancels the work; a worker interrupted while loading its
    models printed tracebacks), and the process exits when the parent is gone (killed: nothing would ever send it
    work again); then :func:`_init_worker` with ``args``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # started with SIGINT blocked (_submit_all): ignored from here on
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True, name="parent-watch").start()
    _init_worker(*args)


def _exit_when_orphaned(parent: int, every: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def worker_pool(matcher: str | Matcher, aligner: FaceAligner, lowres: int | None, workers: int,
                degrade: str = "bicubic") -> ProcessPoolExecutor:
    """A pool of ``workers`` embedding processes (each loads the models once) to pass to several
    :func:`embed_paths` calls with the same matcher, aligner, resolution and degradation; use it as a context
    manager. Started processes import the caller's main module (``spawn``): a worker that cannot start fails the
    call with a one-line :class:`WorkerError` instead of being restarted for ever."""
    return ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_pool_worker,
                               initargs=(os.getpid(), matcher, aligner, check_lowres(lowres), 1,
                                         check_degrade(degrade)))


def spawnable() -> bool:
    """Whether worker processes started by ``spawn`` can import this program's main module: not when it is a script
    read from standard input (``python - < script.py``), which then embeds in its own process."""
    main = sys.modules.get("__main__")
    if getattr(main, "__spec__", None) is not None:  # python -m ...
        return True
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


class WorkerError(ValueError):
    """The embedding processes could not start or died (a ValueError: the command line's one-line error)."""


def _pooled(pool: ProcessPoolExecutor, batches: list) -> Iterator[list[tuple]]:
    """Each batch's :func:`_process` results from ``pool``, in the order they finish; batches not started are
    cancelled when the caller stops early (an error, Ctrl-C), so leaving the pool does not wait for them."""
    futures = _submit_all(pool, batches)
    try:
        for done in as_completed(futures):
            yield done.result()
    except BrokenProcessPool as e:
        raise WorkerError(
            "the embedding worker processes stopped or could not start (a script without `if __name__ == "
            "\"__main__\":` cannot start them; so can too little memory): pass workers=1 to embed in this "
            "process") from e
    finally:
        for f in futures:
            f.cancel()


def _submit_all(pool: ProcessPoolExecutor, batches: list) -> list:
    """Submit every batch, the pool's processes starting (in this thread) with SIGINT blocked, so a Ctrl-C while one
    starts up does not interrupt it before :func:`_init_pool_worker` ignores it; this thread gets that Ctrl-C when the
    submissions are done (the mask is the thread's own: nothing process-wide changes)."""
    if not hasattr(signal, "pthread_sigmask"):
        return [pool.submit(_process, b) for b in batches]
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return [pool.submit(_process, b) for b in batches]
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _process(items: list[tuple[int, str, str, Alignment | None]]) -> list[tuple]:
    """Embed one batch: (index, path, key, cached alignment) -> (index, key, status, message, alignment, emb)."""
    aligner: FaceAligner = _WORKER["aligner"]
    out, chips, chip_rows = [], [], []
    for index, path, key, al in items:
        try:
            chip, al = face_chip(path, aligner, al, _WORKER["lowres"], _WORKER.get("degrade", "bicubic"), key)
        except ImageError as e:
            out.append((index, key, e.reason, str(e), None, None))
            continue
        except Exception as e:  # a failure in a third-party library must not end a long run
            out.append((index, key, "error", f"{path}: {type(e).__name__}: {e}", None, None))
            continue
        chip_rows.append(len(out))
        out.append((index, key, "ok", "", al, None))
        chips.append(chip)
    if chips:
        vectors = _WORKER["matcher"].embed(np.stack(chips))
        for row, v in zip(chip_rows, vectors, strict=True):
            out[row] = (*out[row][:5], v)
    return out


def embed_paths(paths: list[str] | np.ndarray, matcher: str | Matcher | None = None, aligner: FaceAligner | None = None,
                lowres: int | None = None, cache: EmbeddingCache | None = None, workers: int = 2,
                batch_size: int = 16, progress: bool = True, desc: str = "embed", engine: str = "local",
                ray_address: str | None = None, pool=None, degrade: str = "bicubic") -> Embeddings:
    """Embed every image of ``paths``; finished batches are written to ``cache`` as they complete.

    ``matcher``: a name (see :data:`lookalike.matchers.MATCHERS`; None: :data:`~lookalike.matchers.DEFAULT_MATCHER`)
    or a :class:`Matcher` (picklable).
    ``engine="local"``: ``workers`` local processes. ``engine="ray"``: a Ray Data pipeline of ``workers``
    actors with one CPU each, each loading the models once; ``ray_address`` connects to an existing cluster
    (e.g. ``"auto"``), else a local Ray instance with ``workers`` CPUs is started (and shut down after).
    ``pool``: a :func:`worker_pool` with the same settings to use instead of starting one (local engine).
    ``degrade``: how faces are brought to ``lowres`` (see :func:`lookalike.data.images.degrade`).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {list(ENGINES)}")
    t0 = time.perf_counter()
    lowres = check_lowres(lowres)
    check_degrade(degrade)
    matcher = matcher or DEFAULT_MATCHER
    aligner = aligner or FaceAligner()
    cache = cache or EmbeddingCache(None)
    paths = check_paths(paths)  # one path string had been embedded a character at a time
    keys = [content_key(p) for p in tqdm(paths, desc=f"{desc}: hash", disable=not progress, leave=False)]
    prep = preprocess_key(lowres, degrade)
    name = matcher.name if isinstance(matcher, Matcher) else matcher_name(matcher)
    aligned = cache.get_alignments(keys, aligner.name)
    embedded = cache.get_embeddings(keys, aligner.name, name, prep)
    n = len(paths)
    status = np.full(n, "", dtype=object)
    method = np.full(n, "", dtype=object)
    n_faces = np.zeros(n, np.int32)
    vectors: list[np.ndarray | None] = [None] * n
    messages: dict[int, str] = {}
    todo = []
    for i, (p, k) in enumerate(zip(paths, keys, strict=True)):
        st, msg, al = aligned.get(k, ("", "", None))
        if st and st != "ok":
            status[i], messages[i] = st, f"{p}: {st} (cached result for this file content)"
        elif al is not None and k in embedded:
            status[i], method[i], n_faces[i], vectors[i] = "ok", al.method, al.n_faces, embedded[k]
        else:
            todo.append((i, p, k, al))

    pending = np.zeros(n, bool)
    pending[[t[0] for t in todo]] = True

    def record(results: list[tuple]) -> None:
        results = [r for r in results if pending[r[0]]]  # each image once, whatever an engine re-delivers
        pending[[r[0] for r in results]] = False
        for index, _key, st, msg, al, emb in results:
            status[index] = st
            if msg:
                messages[index] = msg
            if al is not None:
                method[index], n_faces[index] = al.method, al.n_faces
            vectors[index] = emb
        cache.put(aligner.name, name, prep, [r[1:] for r in results])

    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    bar = tqdm(total=len(todo), desc=desc, disable=not progress or not todo, unit="img")
    try:  # closed on Ctrl-C too, so that the interrupted message starts on a line of its own
        if not batches:
            pass  # everything came from the cache: load no model
        elif engine == "ray":
            from lookalike.embed_ray import run_ray

            for results in run_ray(batches, matcher, aligner, lowres, workers, ray_address, degrade):
                record(results)
                bar.update(len(results))
        elif pool is not None:
            for results in _pooled(pool, batches):
                record(results)
                bar.update(len(results))
        elif workers <= 1 or len(batches) <= 1 or not spawnable():
            _init_worker(matcher, aligner, lowres, threads=None, degrade=degrade)
            for b in batches:
                record(_process(b))
                bar.update(len(b))
        else:
            with worker_pool(matcher, aligner, lowres, workers, degrade) as own:
                for results in _pooled(own, batches):
                    record(results)
                    bar.update(len(results))
    finally:
        bar.close()
    dim = next((len(v) for v in vectors if v is not None), 0)
    out = np.zeros((n, dim), np.float32)
    for i, v in enumerate(vectors):
        if v is not None:
            out[i] = v
    return Embeddings(out, status, method, n_faces, messages, time.perf_counter() - t0, len(todo))


def face_chip(path: str | Path, aligner: FaceAligner, alignment: Alignment | None = None,
              lowres: int | None = None, degrade_kind: str = "bicubic",
              key: str | None = None) -> tuple[np.ndarray, Alignment]:
    """One image's aligned chip, degraded (``degrade_kind``) to ``lowres`` face pixels (None: full resolution),
    and its alignment (``alignment`` when given, e.g. from the cache, else found here). ``key``: the file's
    content key (computed here when needed and not given); it seeds a random degradation. Raises
    :class:`ImageError` (reason ``no_face`` when the aligner finds no face)."""
    image = load_image(path)
    al = alignment or aligner.align(image)
    if al is None:
        raise ImageError("no_face", f"{path}: no face found")
    chip = aligner.chip(image, al)
    if lowres is None:
        return chip, al
    seed = None
    if degrade_kind != "bicubic":
        seed = seed_from_key(key if key is not None else content_key(path))
    return degrade(chip, lowres, degrade_kind, seed), al


def read_chips(paths: list[str], cache: EmbeddingCache, aligner: FaceAligner | None = None,
               lowres: int | None = None, align_missing: bool = False,
               degrade: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """Aligned chips from the cached alignments: (chips (N, S, S, 3) uint8, ok mask).

    Images without a cached alignment are skipped, or aligned here when ``align_missing``; images the cache
    records as failed and images that fail now (:class:`ImageError`) are skipped (``ok`` False, zero chip).
    """
    aligner = aligner or FaceAligner()
    keys = [content_key(p) for p in paths]
    aligned = cache.get_alignments(keys, aligner.name)
    chips = np.zeros((len(paths), aligner.chip_size, aligner.chip_size, 3), np.uint8)
    ok = np.zeros(len(paths), bool)
    for i, (p, k) in enumerate(zip(paths, keys, strict=True)):
        status, _, al = aligned.get(k, ("", "", None))
        if al is None and (status or not align_missing):
            continue
        try:
            chips[i] = face_chip(p, aligner, al, lowres, degrade, k)[0]
        except ImageError:
            continue
        ok[i] = True
    return chips, ok
