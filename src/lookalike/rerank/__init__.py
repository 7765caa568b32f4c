"""Re-ranking: selection schemes, score fusion, the lookalike methods and the baselines they must beat."""

from __future__ import annotations

from lookalike.disambiguators.base import Disambiguator
from lookalike.rerank.base import Reranker
from lookalike.rerank.baselines import AlphaQE, DisambiguatorOnly, KReciprocal, RerankEverything
from lookalike.rerank.lookalike import DisambiguatorPool, LookalikeReranker
from lookalike.rerank.selection import AmbiguityGate, Everything, LookalikeGroup, ScoreMargin, Selection, TopK
from lookalike.rerank.tuning import LabelledLists

__all__ = ["AlphaQE", "DisambiguatorOnly", "DisambiguatorPool", "KReciprocal", "LabelledLists", "LookalikeReranker",
           "RerankEverything", "Reranker", "all_selections", "default_disambiguators", "default_methods",
           "selection_grid"]

NORMS = ("zscore", "llr")
# Train faces in the disambiguator's cohort (a seeded sample; None: all). Chosen by the rule written in
# benchmarks/cohort_size.py, on validation splits only (see README "Cohort size").
COHORT_SIZE: int | None = None


def selection_grid() -> dict[str, list[Selection]]:
    """The candidate selection schemes, with the parameter values tried on val, per scheme name.

    Generic values, not fitted to any dataset: list positions from 2 to 50; score margins and lookalike
    thresholds spread over the cosine range where a face matcher's genuine and impostor scores overlap.
    """
    topk = [TopK(k) for k in (2, 3, 5, 10, 20, 50)]
    return {
        "topk": topk,
        "margin": [ScoreMargin(m) for m in (0.02, 0.05, 0.08, 0.12, 0.2)],
        "group": [LookalikeGroup(t, k) for t in (0.3, 0.4, 0.5, 0.6) for k in (10, 20)],
        "gate": [AmbiguityGate(TopK(k), g) for k in (5, 20) for g in (0.02, 0.05, 0.1)],
    }


def all_selections() -> list[Selection]:
    """Every scheme of :func:`selection_grid` plus re-ranking the whole list."""
    return [Everything(), *(s for sels in selection_grid().values() for s in sels)]


def default_disambiguators(seed: int = 0, cohort_size: int | None = COHORT_SIZE) -> list[Disambiguator]:
    """The embedding-level disambiguators a lookalike re-ranker chooses among on val: lookalike discriminant
    analysis (shrinkage chosen on held-out train people) with directions unweighted or weighted by their
    lookalike/genuine ratio (power 0, 0.5, 1), with and without train-cohort score normalisation (50
    nearest train faces, the usual adaptive-normalisation cohort size, among ``cohort_size`` train faces:
    see :data:`COHORT_SIZE`)."""
    from lookalike.disambiguators import LookalikeLDA

    return [LookalikeLDA(power=p, cohort_n=n, cohort_beta=1.0, cohort_size=cohort_size if n else None, seed=seed)
            for p in (0.0, 0.5, 1.0) for n in (0, 50)]


def default_methods(seed: int = 0, disambiguators: list[Disambiguator] | None = None,
                    pool: DisambiguatorPool | None = None) -> list[Reranker]:
    """The methods the benchmark runs: baselines, then lookalike variants sharing one disambiguator pool
    (each training set is mined and each disambiguator fitted once); ``lookalike-best`` tunes over every
    selection scheme and is what a saved model holds."""
    pool = pool or DisambiguatorPool(seed=seed)
    ds = disambiguators or default_disambiguators(seed)
    kw = {"pool": pool, "seed": seed}
    methods: list[Reranker] = [KReciprocal(name="kreciprocal"), KReciprocal(tune=True, name="kreciprocal-tuned"),
                               AlphaQE(name="aqe"), DisambiguatorOnly(ds, **kw), RerankEverything(ds, **kw)]
    for scheme, sels in selection_grid().items():
        methods.append(LookalikeReranker(ds, sels, NORMS, name=f"lookalike-{scheme}", **kw))
    methods.append(LookalikeReranker(ds, all_selections(), NORMS, name="lookalike-best", **kw))
    return methods
