"""Disambiguators: pair scorers trained on mined genuine vs lookalike pairs, used to re-rank the top."""

from lookalike.disambiguators.base import Disambiguator, EmbeddingDisambiguator
from lookalike.disambiguators.finetuned import FineTunedNet
from lookalike.disambiguators.lda import LookalikeLDA

__all__ = [
    "Disambiguator",
    "EmbeddingDisambiguator",
    "FineTunedNet",
    "LookalikeLDA",
]
