"""Shared parts of the service tests: PostgreSQL schemas, ORL uploads, a served gallery, and DB state checks."""

from __future__ import annotations

import io
import subprocess
import uuid
from pathlib import Path

import numpy as np
from conftest import pg_base
from PIL import Image

from lookalike.service import launch
from lookalike.service.launch import free_port, stop_server  # noqa: F401  (the tests' helpers)

TOKEN = "test-token-" + "x" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SRC = Path(__file__).resolve().parents[1] / "src"


def new_pg_schema() -> tuple[str, callable]:
    """(URL of a fresh schema, a function dropping it)."""
    import psycopg

    base = pg_base()
    schema = f"lookalike_svc_{uuid.uuid4().hex[:12]}"

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return f"{base}?schema={schema}", drop


def orl_bytes(orl_dir: Path, person: int, image: int) -> bytes:
    return (orl_dir / f"s{person}" / f"{image}.pgm").read_bytes()


def png_copy(orl_dir: Path, person: int, image: int) -> bytes:
    """An ORL photo's pixels as a PNG: other bytes than the file (the service refuses a file enrolled already), the
    same face (a duplicate photo filed under a second name)."""
    return png_bytes(np.asarray(Image.open(orl_dir / f"s{person}" / f"{image}.pgm")))


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def no_face_png() -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8))


def blank_png() -> bytes:
    """A uniform grey photo: no face, not even a pre-cropped one."""
    return png_bytes(np.full((120, 100, 3), 128, np.uint8))


def many_faces_png(orl_dir: Path) -> bytes:
    """Three ORL faces side by side on white (the detector finds all three)."""
    ims = [np.asarray(Image.open(orl_dir / f"s{s}" / "1.pgm").convert("RGB")) for s in (1, 2, 3)]
    return png_bytes(np.concatenate([np.pad(i, ((20, 20), (20, 20), (0, 0)), constant_values=255) for i in ims],
                                    axis=1))


def bomb_png(side: int = 9000) -> bytes:
    """A small file declaring ``side`` x ``side`` pixels (9000: over the loader's 64-megapixel limit)."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    return buf.getvalue()


def state(db: str, data_dir: Path) -> dict:
    """Everything a request could have written: row counts per table, the generation and the stored files."""
    from lookalike.gallery import open_store

    with open_store(db, create=False) as store:
        counts = {t: store._exec(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: SLF001
                  for t in ("subjects", "images", "embeddings", "searches", "reviews", "tokens")}
        counts["generation"] = store.generation()
    counts["files"] = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file()) \
        if data_dir.exists() else []
    return counts


def start_server(db: str, data_dir: Path, port: int, *extra: str, log: Path | None = None) -> subprocess.Popen:
    """``lookalike serve`` on 127.0.0.1:port with the tests' token, waited for until /api/health answers."""
    return launch.start_server(db, data_dir, port, *extra, token=TOKEN, log=log, env={"PYTHONPATH": str(SRC)})
