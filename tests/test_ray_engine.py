"""The Ray engine of embed_paths: same embeddings as the local engine, through the same cache, despite a dying actor."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_MATCHER, need_data

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from lookalike.embed import embed_paths  # noqa: E402
from lookalike.matchers import get_matcher  # noqa: E402
from lookalike.matchers.align import FaceAligner  # noqa: E402
from lookalike.matchers.base import Matcher  # noqa: E402
from lookalike.matchers.cache import EmbeddingCache, content_key  # noqa: E402


class DiesOnce(Matcher):
    """The fast matcher, except that the first process to embed a batch exits on the spot (a native crash)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker
        inner = get_matcher(FAST_MATCHER)
        self.name, self.dim = inner.name, inner.dim
        self._inner = None  # loaded in the actor (a dlib net does not pickle)

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL)  # only one process ever wins this
        except FileExistsError:
            self._inner = self._inner or get_matcher(FAST_MATCHER)
            return self._inner.descriptors(chips)
        os.close(fd)
        os._exit(1)


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship DiesOnce to the actors
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def orl_paths() -> list[str]:
    orl = need_data("orl")
    return [str(orl / p / f"{i}.pgm") for p in ("s1", "s2", "s3") for i in (1, 2, 3, 4)]


def test_ray_equals_local_and_survives_a_dying_actor(ray_local, orl_paths, tmp_path):
    local = embed_paths(orl_paths, FAST_MATCHER, cache=EmbeddingCache(None), workers=1, batch_size=4,
                        progress=False)
    marker = tmp_path / "died"
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    got = embed_paths(orl_paths, DiesOnce(marker), cache=cache, workers=2, batch_size=4, progress=False,
                      engine="ray")
    assert marker.exists()  # an actor did die mid-batch; Ray restarted it and re-ran the batch
    np.testing.assert_array_equal(got.status, local.status)
    assert got.ok.all() and got.computed == len(orl_paths)
    np.testing.assert_allclose(got.vectors, local.vectors, atol=1e-6)
    np.testing.assert_array_equal(got.method, local.method)
    # every embedding is in the cache exactly once, and a second run computes nothing
    keys = [content_key(p) for p in orl_paths]
    assert sorted(cache.get_embeddings(keys, FaceAligner().name, local_name(), "full")) == sorted(set(keys))
    (n_rows,) = cache._db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
    assert n_rows == len(set(keys))
    again = embed_paths(orl_paths, FAST_MATCHER, cache=cache, engine="ray", progress=False)
    assert again.computed == 0
    np.testing.assert_array_equal(again.vectors, got.vectors)


def local_name() -> str:
    return get_matcher(FAST_MATCHER).name


def test_ray_resumes_from_the_cache(ray_local, orl_paths, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    first = embed_paths(orl_paths[:5], FAST_MATCHER, cache=cache, batch_size=2, progress=False, engine="ray")
    assert first.computed == 5
    rest = embed_paths(orl_paths, FAST_MATCHER, cache=cache, batch_size=2, progress=False, engine="ray")
    assert rest.computed == len(orl_paths) - 5 and rest.ok.all()
    np.testing.assert_array_equal(rest.vectors[:5], first.vectors)


def test_unknown_engine():
    with pytest.raises(ValueError, match="unknown engine"):
        embed_paths([], engine="spark")


def test_cli_embed_with_the_ray_engine(ray_local, orl_folders, tmp_path):
    from lookalike.cli import main

    out = tmp_path / "orl.npz"
    assert main(["embed", "--data", str(orl_folders), "--out", str(out), "--matcher", FAST_MATCHER, "--engine", "ray",
                 "--cache", "none", "--no-progress"]) == 0
    z = np.load(out)
    assert len(z["status"]) == 12 and (z["status"] == "ok").all()
    np.testing.assert_allclose(np.linalg.norm(z["vectors"], axis=1), 1, atol=1e-5)


def test_enroll_on_ray_equals_local(ray_local, orl_folders, tmp_path):
    """`lookalike enroll --engine ray` fills the gallery with the local engine's embeddings."""
    from lookalike.cli import main
    from lookalike.gallery import Gallery

    common = ["--gallery", str(orl_folders), "--matcher", FAST_MATCHER, "--cache", "none", "--no-progress"]
    assert main(["enroll", *common, "--db", str(tmp_path / "local.sqlite"), "--workers", "1"]) == 0
    assert main(["enroll", *common, "--db", str(tmp_path / "ray.sqlite"), "--engine", "ray"]) == 0
    with Gallery.open(tmp_path / "local.sqlite") as a, Gallery.open(tmp_path / "ray.sqlite") as b:
        order_a, order_b = np.argsort(a.paths_), np.argsort(b.paths_)
        np.testing.assert_array_equal(a.paths_[order_a], b.paths_[order_b])
        np.testing.assert_allclose(np.asarray(a.vectors_)[order_a], np.asarray(b.vectors_)[order_b], atol=1e-6)


def test_an_unreachable_ray_address_is_one_line_at_once():
    """Ray retries an unreachable address for minutes; a host:port nothing listens on is refused at once."""
    import socket

    from lookalike.embed_ray import check_reachable

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ValueError, match="no Ray cluster reachable"):
        check_reachable(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(ValueError, match="expected host:port"):
        check_reachable("localhost")
    check_reachable(None)
    check_reachable("auto")
