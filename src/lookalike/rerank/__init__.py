"""Re-ranking: selection schemes, score fusion, the lookalike methods and the baselines they must beat."""

from lookalike.rerank.base import Reranker

__all__ = ["Reranker"]
