"""Shared fixtures: the read-only face data under ../shared/data (skipped cleanly when absent) and small
generated folder-per-identity datasets in tmp_path."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# ../shared/data beside the repository; LOOKALIKE_SHARED_DATA overrides it (e.g. to check the skips).
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHARED_DATA = Path(os.environ.get("LOOKALIKE_SHARED_DATA") or DEFAULT_SHARED_DATA)

# Unit-level embedding tests name dlib's own network explicitly: it starts in ~0.2 s, where the torch port
# (the project default) imports torch and converts the weights on every embed_paths call.
FAST_MATCHER = "dlib"

# Fixtures that read ../shared/data; a test using any of them gets the ``realdata`` marker automatically.
REALDATA_FIXTURES = {"shared_data", "orl_dir", "lfw_dir", "tinyface_protocol_dir", "orl_folders", "orl_runs",
                     "orl_features"}


def need_data(sub: str = "") -> Path:
    """``SHARED_DATA/sub``, or skip the calling test when it is absent or empty."""
    path = SHARED_DATA / sub if sub else SHARED_DATA
    if not path.exists() or (path.is_dir() and not any(path.iterdir())):
        pytest.skip(f"shared face data not available: {path}")
    return path


def pytest_collection_modifyitems(config, items):
    for item in items:
        if REALDATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realdata)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return need_data()


@pytest.fixture(scope="session")
def orl_dir() -> Path:
    return need_data("orl")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return need_data("lfw")


@pytest.fixture(scope="session")
def tinyface_protocol_dir() -> Path:
    path = need_data("tinyface-protocol")
    for name in ("probe_img_ID_pairs.mat", "gallery_match_img_ID_pairs.mat"):
        if not (path / name).exists():
            pytest.skip(f"{name} not in {path}")
    return path


def write_synthetic(path: Path, seed: int, size: tuple[int, int] = (24, 28)) -> Path:
    """A small random greyscale PNG (distinct content per seed)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8), "L").save(path)
    return path


# images per person in the generated dataset: single-image people (distractors) and multi-image people
PERSON_COUNTS = {"p00": 1, "p01": 1, "p02": 1, "p03": 2, "p04": 2, "p05": 3, "p06": 3, "p07": 4, "p08": 4,
                 "p09": 5, "p10": 2, "p11": 3, "p12": 1, "p13": 2}


@pytest.fixture
def face_folders(tmp_path: Path) -> Path:
    """``root/<person>/<n>.png``: synthetic images, PERSON_COUNTS per person (needs no shared data)."""
    root = tmp_path / "faces"
    seed = 0
    for person, n in PERSON_COUNTS.items():
        (root / person).mkdir(parents=True)
        for i in range(n):
            write_synthetic(root / person / f"{i}.png", seed)
            seed += 1
    return root


@pytest.fixture
def orl_folders(tmp_path: Path, orl_dir: Path) -> Path:
    """A copy of a few real ORL people (s1..s4, 3 images each) laid out as ``root/<person>/<image>``."""
    root = tmp_path / "orl"
    for person in ("s1", "s2", "s3", "s4"):
        (root / person).mkdir(parents=True)
        for i in (1, 2, 3):
            shutil.copy(orl_dir / person / f"{i}.pgm", root / person / f"{i}.pgm")
    return root


# PostgreSQL for the store and service tests: LOOKALIKE_TEST_PG, else the machine's server (socket, then TCP).
PG_URLS = ("postgresql:///test", "postgresql://postgres@127.0.0.1:5432/test")


def pg_base() -> str:
    """A reachable PostgreSQL URL, or skip (only when psycopg or the server is unavailable)."""
    psycopg = pytest.importorskip("psycopg")
    urls = [os.environ["LOOKALIKE_TEST_PG"]] if os.environ.get("LOOKALIKE_TEST_PG") else PG_URLS
    errors = []
    for url in urls:
        try:
            psycopg.connect(url, connect_timeout=3).close()
            return url
        except psycopg.OperationalError as e:
            errors.append(f"{url}: {str(e).strip().splitlines()[0] if str(e).strip() else e}")
    pytest.skip("no PostgreSQL server: " + "; ".join(errors))


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL schema for one test (dropped afterwards): ``...?schema=lookalike_test_<random>``."""
    import psycopg

    base = pg_base()
    schema = f"lookalike_test_{uuid.uuid4().hex[:12]}"
    yield f"{base}?schema={schema}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path: Path) -> str:
    """A gallery location for each backend."""
    if request.param == "sqlite":
        return str(tmp_path / "g.sqlite")
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def synthetic_model():
    """A model fitted on synthetic faces (32-d), and more people of the same world to enrol."""
    from lookalike.model import LookalikeModel
    from lookalike.rerank.synthetic import synthetic_faces, synthetic_split

    train = synthetic_faces(120, seed=1, prefix="tr")
    val = synthetic_split(synthetic_faces(60, seed=2, prefix="va"), "val")
    return LookalikeModel(depth=20).fit(train, val.probes, val.gallery), synthetic_faces(150, seed=4, prefix="ga")
