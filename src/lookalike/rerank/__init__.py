"""Re-ranking: selection schemes, score fusion, the lookalike methods and the baselines they must beat."""

from __future__ import annotations

from lookalike.disambiguators.base import Disambiguator
from lookalike.rerank.base import Reranker
from lookalike.rerank.baselines import AlphaQE, DisambiguatorOnly, KReciprocal, RerankEverything
from lookalike.rerank.lookalike import DisambiguatorPool, LookalikeReranker
from lookalike.rerank.selection import AmbiguityGate, Everything, LookalikeGroup, ScoreMargin, Selection, TopK

__all__ = ["AlphaQE", "DisambiguatorOnly", "DisambiguatorPool", "KReciprocal", "LookalikeReranker",
           "RerankEverything", "Reranker", "default_methods", "selection_grid"]

NORMS = ("zscore", "minmax", "llr")


def selection_grid() -> dict[str, list[Selection]]:
    """The candidate selection schemes, with the parameter values tuned on val, per scheme name."""
    topk = [TopK(k) for k in (2, 3, 5, 10, 20, 50)]
    return {
        "topk": topk,
        "margin": [ScoreMargin(m) for m in (0.02, 0.05, 0.08, 0.12, 0.2)],
        "group": [LookalikeGroup(t, k) for t in (0.3, 0.4, 0.5, 0.6) for k in (10, 20)],
        "gate": [AmbiguityGate(TopK(k), g) for k in (5, 20) for g in (0.02, 0.05, 0.1)],
    }


def default_disambiguator(seed: int = 0) -> Disambiguator:
    """The shared embedding-level disambiguator: lookalike discriminant analysis (closed form, shrinkage
    chosen on held-out train people), directions weighted by their lookalike/genuine ratio, with
    train-cohort score normalisation (power, cohort size and weight chosen on the LFW val split)."""
    from lookalike.disambiguators import LookalikeLDA

    return LookalikeLDA(power=0.5, cohort_n=50, cohort_beta=1.0, seed=seed)


def default_methods(seed: int = 0, disambiguator: Disambiguator | None = None,
                    refit_with_val: bool = True) -> list[Reranker]:
    """The methods the benchmark runs: baselines, then lookalike variants sharing one disambiguator pool
    (each training set is mined and fitted once); ``lookalike-best`` tunes over every selection scheme."""
    pool = DisambiguatorPool(disambiguator or default_disambiguator(seed), seed=seed)
    kw = {"refit_with_val": refit_with_val, "seed": seed}
    grid = selection_grid()
    methods: list[Reranker] = [KReciprocal(name="kreciprocal"), KReciprocal(tune=True, name="kreciprocal-tuned"),
                               AlphaQE(name="aqe"), DisambiguatorOnly(pool, **kw), RerankEverything(pool, **kw)]
    for scheme, sels in grid.items():
        methods.append(LookalikeReranker(pool, sels, NORMS, name=f"lookalike-{scheme}", **kw))
    methods.append(LookalikeReranker(pool, [Everything(), *(s for sels in grid.values() for s in sels)], NORMS,
                                     name="lookalike-best", **kw))
    return methods
