"""Face matchers: detection and alignment (``align``), embedding models, and the embedding cache."""

from __future__ import annotations

from lookalike.matchers.base import Matcher

MATCHERS = ("dlib", "torch", "torch-flip")
TORCH_MATCHERS = ("torch", "torch-flip")  # the ones that run on torch (and use its intra-op threads)
AUGMENTED = {"torch-flip": "torch"}  # a test-time-augmented matcher -> the plain one it averages


# The matcher used where none is named, at every resolution: ``torch-flip`` (each chip averaged with its mirror).
# The rule, written before measuring (``benchmarks/flip_tta.py``): flip averaging is adopted at a resolution when the
# whole method (lookalike re-ranking tuned on validation) on flip-averaged vectors beats it on plain vectors in
# *validation* rank-1 on every split measured there. ~20 px: LFW seeds 0 and 1 and PubFig all win (65.17 -> 68.16,
# 64.32 -> 67.75, 68.80 -> 74.49); at 12 and 32 px (LFW seed 0) too (22.38 -> 26.48, 89.52 -> 91.65). At full
# resolution LFW seed 0 alone lost (95.67 -> 95.27), so ``torch`` stayed until ``benchmarks/full_res_flip.py`` (rule
# committed before its run) pooled the validation splits of LFW seeds 0-2 and PubFig seeds 0-4: 96.30 -> 96.80
# (7,181 probes, exact McNemar p 0.001; not below on either dataset).
DEFAULT_MATCHER = "torch-flip"


def flipped_name(name: str) -> str:
    """The cache name of a matcher's flip-averaged version, from the matcher's own cache name."""
    return f"{name}+flip"


def get_matcher(name: str) -> Matcher:
    """A matcher by short name: ``dlib`` (dlib-bin's own network), ``torch`` (its PyTorch port) or ``torch-flip``
    (the port with flip test-time augmentation: each chip and its mirror, embeddings averaged)."""
    if name == "torch-flip":
        from lookalike.matchers.flip import FlipAveraged

        return FlipAveraged(get_matcher("torch"))
    if name == "dlib":
        from lookalike.matchers.dlib_resnet import DlibResNetMatcher

        return DlibResNetMatcher()
    if name == "torch":
        from lookalike.matchers.torch_resnet import TorchResNetMatcher

        return TorchResNetMatcher()
    raise ValueError(f"unknown matcher {name!r}; choose one of {MATCHERS}")


def matcher_name(name: str) -> str:
    """The cache name of a matcher (its model and weights), without loading it."""
    if name == "torch-flip":
        return flipped_name(matcher_name("torch"))
    if name == "dlib":
        from lookalike.matchers.dlib_resnet import DlibResNetMatcher

        return DlibResNetMatcher.name
    if name == "torch":
        from lookalike.matchers.torch_resnet import default_weights, weights_name

        return weights_name(default_weights())
    raise ValueError(f"unknown matcher {name!r}; choose one of {MATCHERS}")
