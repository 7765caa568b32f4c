"""Face matchers: detection and alignment (``align``), embedding models, and the embedding cache."""

from __future__ import annotations

from lookalike.matchers.base import Matcher

MATCHERS = ("dlib", "torch")


def get_matcher(name: str, threads: int | None = None) -> Matcher:
    """A matcher by short name: ``dlib`` (dlib-bin's own network) or ``torch`` (its PyTorch port)."""
    if name == "dlib":
        from lookalike.matchers.dlib_resnet import DlibResNetMatcher

        return DlibResNetMatcher()
    if name == "torch":
        from lookalike.matchers.torch_resnet import TorchResNetMatcher

        return TorchResNetMatcher(threads=threads)
    raise ValueError(f"unknown matcher {name!r}; choose one of {MATCHERS}")
