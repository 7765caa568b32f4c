"""The Ray engine of :func:`lookalike.embed.embed_paths`: detection, alignment and embedding as a Ray Data pipeline.

Images flow through ``map_batches`` over a pool of actors (:class:`RayEmbedder`), each holding one CPU, its models
loaded once and its torch threads set to that CPU count. The driver receives every finished batch as it comes
and writes it to the cache, so an interrupted run resumes. An actor that dies (a crash in native code, a killed
node) is restarted and its batch re-run by Ray, up to ``retries`` times; a batch is delivered whole or not at all.
Needs the optional dependency ``ray[data]`` (``pip install lookalike[ray]``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lookalike.matchers.align import Alignment, FaceAligner
from lookalike.matchers.base import Matcher

NO_ALIGNMENT = ("", -1, b"")


def _to_rows(items: list[tuple[int, str, str, Alignment | None]]) -> list[dict]:
    """Work items as flat rows (Arrow-friendly: no Python objects)."""
    rows = []
    for index, path, key, al in items:
        method, n_faces, geometry = al.to_row() if al is not None else NO_ALIGNMENT
        rows.append({"index": index, "path": path, "key": key, "method": method, "n_faces": n_faces,
                     "geometry": geometry})
    return rows


class RayEmbedder:
    """A Ray Data callable class: an actor that loads the aligner and matcher once and embeds batches of rows."""

    def __init__(self, matcher: str | Matcher, aligner: FaceAligner, lowres: int | None,
                 degrade: str = "bicubic") -> None:
        import ray
        import torch

        from lookalike import embed

        threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        torch.set_num_threads(threads)  # this actor's process only: the CPUs Ray gave it
        embed._init_worker(matcher, aligner, lowres, None, degrade)
        self._process = embed._process

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = []
        for index, path, key, method, n_faces, geometry in zip(
                batch["index"], batch["path"], batch["key"], batch["method"], batch["n_faces"], batch["geometry"],
                strict=True):
            al = Alignment.from_row(str(method), int(n_faces), bytes(geometry)) if method else None
            items.append((int(index), str(path), str(key), al))
        out = self._process(items)
        dim = next((len(r[5]) for r in out if r[5] is not None), 0)
        rows = [(r[4].to_row() if r[4] is not None else NO_ALIGNMENT) for r in out]
        return {
            "index": np.array([r[0] for r in out], np.int64),
            "key": np.array([r[1] for r in out], object),
            "status": np.array([r[2] for r in out], object),
            "message": np.array([r[3] for r in out], object),
            "method": np.array([m for m, _, _ in rows], object),
            "n_faces": np.array([f for _, f, _ in rows], np.int64),
            "geometry": np.array([g for _, _, g in rows], object),
            "has_vector": np.array([r[5] is not None for r in out], bool),
            "vector": np.stack([np.zeros(dim, np.float32) if r[5] is None else np.asarray(r[5], np.float32)
                                for r in out]) if out else np.zeros((0, 0), np.float32),
        }


def _from_batch(batch: dict[str, np.ndarray]) -> list[tuple]:
    """Rows back into ``_process`` results: (index, key, status, message, alignment, embedding)."""
    out = []
    for i in range(len(batch["index"])):
        method = str(batch["method"][i])
        al = Alignment.from_row(method, int(batch["n_faces"][i]), bytes(batch["geometry"][i])) if method else None
        emb = batch["vector"][i].copy() if batch["has_vector"][i] else None
        out.append((int(batch["index"][i]), str(batch["key"][i]), str(batch["status"][i]), str(batch["message"][i]),
                    al, emb))
    return out


def check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A one-line ValueError when ``address`` is a ``host:port`` no connection reaches within ``timeout`` seconds
    (Ray itself retries for minutes); other forms (None, ``auto``, ``ray://...``) are left to Ray."""
    import socket

    if not address or "://" in address or address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--ray-address {address!r}: expected host:port, auto or ray://host:port")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"--ray-address {address}: no Ray cluster reachable there ({e.strerror or e}); start one "
                         "with `ray start --head`, or leave the option out to start Ray on this machine") from None


def run_ray(batches: list[list[tuple]], matcher: str | Matcher, aligner: FaceAligner, lowres: int | None,
            workers: int, ray_address: str | None = None, degrade: str = "bicubic",
            retries: int = 3) -> Iterator[list[tuple]]:
    """Yield ``_process`` results batch by batch as the actor pool finishes them."""
    try:
        import ray
    except ImportError as e:
        raise ValueError("engine 'ray' needs Ray: pip install 'lookalike[ray]' (ray[data])") from e
    started = not ray.is_initialized()
    if started:
        check_reachable(ray_address)
        ray.init(address=ray_address, num_cpus=None if ray_address else max(1, workers), include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        batch_size = max(len(b) for b in batches)
        rows = [row for b in batches for row in _to_rows(b)]
        ds = ray.data.from_items(rows, override_num_blocks=len(batches)).map_batches(
            RayEmbedder, fn_constructor_args=(matcher, aligner, lowres, degrade), batch_size=batch_size,
            concurrency=max(1, workers), num_cpus=1, batch_format="numpy",
            max_restarts=retries, max_task_retries=retries)
        ds.context.enable_progress_bars = False  # this dataset's own settings, not the process-wide context
        ds.context.execution_options.preserve_order = False
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            if len(batch["index"]):
                yield _from_batch(batch)
    finally:
        if started:
            ray.shutdown()
