"""Disambiguators: pair scorers trained on mined genuine vs lookalike pairs, used to re-rank the top."""

from lookalike.disambiguators.base import Disambiguator, EmbeddingDisambiguator
from lookalike.disambiguators.finetuned import FineTunedNet
from lookalike.disambiguators.joint_bayesian import JointBayesian
from lookalike.disambiguators.lda import LookalikeLDA
from lookalike.disambiguators.projection import LookalikeProjection

__all__ = [
    "Disambiguator",
    "EmbeddingDisambiguator",
    "FineTunedNet",
    "JointBayesian",
    "LookalikeLDA",
    "LookalikeProjection",
]
