"""``lookalike benchmark``: protocol -> embeddings -> search -> re-ranking -> metrics and report."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lookalike.data.folders import load_folders
from lookalike.data.images import check_degrade, check_lowres
from lookalike.data.manifest import load_manifest
from lookalike.data.protocol import Protocol, make_protocol, rerank_problem, saved_settings, side_lowres
from lookalike.data.screen import DUPLICATE_HEADER, printable, screen_table
from lookalike.data.table import FaceTable
from lookalike.data.tinyface import load_tinyface
from lookalike.disambiguators.base import Disambiguator
from lookalike.embed import read_chips
from lookalike.experiment import ProtocolFeatures, SearchSplit, build_split, embed_protocol
from lookalike.index import row_positions
from lookalike.io import atomic_write, read_json, save_npz, write_json
from lookalike.matchers import AUGMENTED, DEFAULT_MATCHER
from lookalike.matchers.align import CNN_FALLBACK, FaceAligner
from lookalike.matchers.cache import DEFAULT_CACHE, EmbeddingCache
from lookalike.metrics import (
    OpenSetScores,
    RankedLists,
    average_precisions,
    cmc_curve,
    evaluate,
    first_hits,
    mcnemar,
    open_set_statistics,
    paired_mean,
    unmeasurable_fpirs,
)
from lookalike.model import LookalikeModel
from lookalike.outputs import prepare_output_folder, publish_outputs, published_paths
from lookalike.report import plot_cmc, plot_examples, plot_fnir_fpir, write_report
from lookalike.rerank.lookalike import repr_params, rerank_faces
from lookalike.rerank.transductive import PAPER_SETTINGS, kreciprocal_transductive
from lookalike.rerank.tuning import LabelledLists
from lookalike.versions import versions

TRANSDUCTIVE = "kreciprocal-transductive"
LOOKALIKE_TRANSDUCTIVE = "lookalike-transductive"  # the same, over the saved model's disambiguator space
GLOBAL = "lookalike-global"
BATCH = "lookalike-batch"  # the saved model's batch setting: every test probe re-ranked together
PLAIN = "baseline-plain"  # a test-time-augmented matcher's plain version (torch for torch-flip) on the same split
PAIRED = ("lookalike-disamb-only", GLOBAL, TRANSDUCTIVE, PLAIN)  # what lookalike-best is compared with, per probe

# A method that ranks the whole gallery itself: its top lists, each probe's mate positions, its non-mated searches
FullSearch = tuple[RankedLists, list[np.ndarray], RankedLists | None]


@dataclass
class BenchmarkConfig:
    """Every setting of a benchmark run (recorded in metrics.json)."""

    data: str
    out: str
    seed: int = 0
    lowres: int | None = None
    lowres_apply: str = "both"
    degrade: str = "bicubic"
    matcher: str | None = None  # None: the model's (with ``model``), else :data:`~lookalike.matchers.DEFAULT_MATCHER`
    index: str = "numpy"
    depth: int = 100
    workers: int = 2
    cache: str | None = str(DEFAULT_CACHE)
    rerank: bool = True
    disambiguator: str = "lda"
    test_fraction: float = 0.5
    val_fraction: float = 0.3
    central_fraction: float = 0.45
    cnn_fallback: bool = CNN_FALLBACK
    max_people: int | None = None
    n_boot: int = 1000
    progress: bool = True
    model: str | None = None  # a trained model (.lkm, or "default") to evaluate as it is: no training

    def aligner(self, geometry: FaceAligner | None = None) -> FaceAligner:
        """The run's aligner: its fallbacks for undetected faces (``central_fraction``, ``cnn_fallback``), on the chip
        ``geometry`` of a model's aligner if given (a ``--model`` run's model may have other fallbacks)."""
        return (geometry or FaceAligner()).with_fallback(self.central_fraction, self.cnn_fallback)


def load_dataset(path: str | Path, exclude: list[str | Path] = ()) -> FaceTable:
    """A TinyFace folder, a CSV manifest, or a folder-per-identity dataset, by what ``path`` is.

    ``exclude``: folders a folder-per-identity dataset must not load (e.g. the run's own output folder).
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return load_manifest(path)
    if (path / "Testing_Set").is_dir():
        return load_tinyface(path)
    return load_folders(path, exclude=exclude)


def sample_people(table: FaceTable, n: int, seed: int) -> FaceTable:
    """A seeded subset of ``n`` identities (for quick runs)."""
    people = sorted(set(table.identities.tolist()))
    if n >= len(people):
        return table
    keep = np.random.default_rng(seed).choice(people, n, replace=False)
    return table.select(np.isin(table.identities, keep))


def score_method(name: str, split: SearchSplit, lists: RankedLists, base_hits: np.ndarray | None,
                 n_boot: int, seed: int, ranks: list[np.ndarray] | None = None) -> dict:
    """Rank-k, mAP and CI of ``lists``, and paired statistics against the baseline hits; ``ranks``: mate
    positions in the method's own full ranking, for a method that ranks the whole gallery (see
    :meth:`SearchSplit.positions`)."""
    positions = split.positions(lists, ranks)
    m = evaluate(positions, n_boot=n_boot, seed=seed)
    if base_hits is not None:
        m.update(mcnemar(base_hits, first_hits(positions) < 1))
        m.update(headroom(first_hits(split.positions()), first_hits(positions)))
    return m


def paired_closed_set(test: SearchSplit, rankings: dict[str, RankedLists], ranks: dict[str, list[np.ndarray]],
                      name: str, others: tuple[str, ...], n_boot: int, seed: int) -> dict[str, dict]:
    """Rank-1 and mAP of ``name`` against each of ``others`` it was run with, on the same probes: the rank-1
    difference with the exact McNemar test (fixed: probes ``name`` gets right and the other does not), the mAP
    difference with a paired bootstrap (:func:`~lookalike.metrics.paired_mean` of per-probe average precision)."""
    positions = {n: test.positions(rankings[n], ranks.get(n)) for n in (name, *others) if n in rankings}
    if name not in positions:
        return {}
    hits = {n: first_hits(p) < 1 for n, p in positions.items()}
    ap = {n: average_precisions(p) for n, p in positions.items()}
    out = {}
    for o in others:
        if o in hits:
            m = paired_mean(ap[name], ap[o], n_boot, seed)
            out[o] = {"rank1_diff": float(hits[name].mean() - hits[o].mean()), **mcnemar(hits[o], hits[name]),
                      **{f"mAP_{k}": v for k, v in m.items()}}
    return out


def headroom(base_first: np.ndarray, new_first: np.ndarray, depth: int = 10) -> dict:
    """The top-of-list claim, measured: of the probes whose mate the baseline ranks 2..``depth``, how many a
    method moves to rank 1 (``headroom_fixed``); of those the baseline gets right, how many it breaks."""
    room = (base_first >= 1) & (base_first < depth)
    return {"headroom": int(room.sum()), "headroom_fixed": int((room & (new_first < 1)).sum()),
            "headroom_broken": int(((base_first < 1) & (new_first >= 1)).sum())}


def protocol_warnings(data: str | Path, table: FaceTable, saved: bool) -> list[str]:
    """What makes a run other than it looks, printed and kept in metrics.json: a CSV that assigns roles without the
    protocol.json of a saved protocol (``saved``: whether there is one), and files an official protocol (TinyFace)
    lists that are absent."""
    out = []
    if (table.roles != "").any() and Path(data).suffix.lower() == ".csv" and not saved:
        out.append(f"{Path(data).name} assigns the roles but has no protocol.json beside it: the resolution, "
                   "degradation and seed are this run's options, not a saved protocol's")
    absent = {k: table.notes[k] for k in ("missing_probe_files", "missing_gallery_files") if table.notes.get(k)}
    if absent:
        listed = ", ".join(f"{k} {v}" for k, v in absent.items())
        out.append(f"files the official protocol lists are absent ({listed}): the figures are not comparable with "
                   "published ones on the whole protocol")
    return out


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Run the whole benchmark and write metrics.json, report.md, cmc.png and the ranked lists to cfg.out (into its
    staging folder, moved into place when the run completes: an interrupted run leaves an earlier one's outputs)."""
    final = Path(cfg.out)
    check_lowres(cfg.lowres)
    check_degrade(cfg.degrade)
    model = fixed_model(cfg) if cfg.model else None
    cfg = replace(cfg, matcher=cfg.matcher or (model.matcher if model is not None else DEFAULT_MATCHER))
    train = cfg.rerank and model is None
    if train:
        from lookalike.train import check_degrade_support

        check_degrade_support(cfg.disambiguator, cfg.lowres, cfg.degrade)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    cache = EmbeddingCache(cfg.cache)  # a corrupt or read-only cache fails here, before any work
    table = load_dataset(cfg.data, exclude=[final])
    given_roles = bool((table.roles != "").any())  # a saved protocol, a CSV with a role column, TinyFace
    if cfg.max_people and given_roles:
        raise ValueError(f"--max-people cannot shrink {cfg.data}: its roles are given (a saved protocol, or a "
                         "protocol's own split); leave it out to run the protocol as it is")
    out = prepare_output_folder(final, keep=[cfg.data])
    if cfg.max_people:
        table = sample_people(table, cfg.max_people, cfg.seed)
    screened = screen_table(table, cache.ok_keys(), cfg.progress)
    table = screened.table
    saved = saved_settings(cfg.data) or {}
    warnings = protocol_warnings(cfg.data, table, bool(saved))
    name = saved.get("name") or (f"{Path(cfg.data).name}-closedset"
                                 + (f"-lowres{cfg.lowres}-{cfg.lowres_apply}" if cfg.lowres else "")
                                 + (f"-{cfg.degrade}" if cfg.lowres and cfg.degrade != "bicubic" else ""))
    protocol = make_protocol(table, seed=cfg.seed, test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction,
                             name=name, lowres=cfg.lowres, lowres_apply=cfg.lowres_apply, degrade=cfg.degrade)
    if train:
        check_rerank(protocol.table.identities, protocol.table.roles)
    protocol.save(out / "protocol", read_from=final / "protocol")
    write_duplicates(out / "duplicates.csv", screened.duplicates)
    timing["load_s"] = time.perf_counter() - t0

    aligner = cfg.aligner()
    features = embed_protocol(protocol, cfg.matcher, cache, aligner, cfg.workers, cfg.progress)
    timing["embed_s"] = features.embeddings.seconds
    left_out = [*screened.table.dropped, *screened.skipped]
    write_image_logs(out, features, left_out)
    set_aside = write_set_aside(out / "set_aside.csv", features)
    if train:
        ok = features.embeddings.ok
        check_rerank(protocol.table.identities[ok], protocol.table.roles[ok])

    t1 = time.perf_counter()
    test = build_split(features, "test", cfg.depth, cfg.index)
    timing["search_s"] = time.perf_counter() - t1

    methods: dict[str, dict] = {}
    rankings: dict[str, RankedLists] = {"baseline": test.lists}
    ranks: dict[str, list[np.ndarray]] = {}  # mate positions of methods that rank the whole gallery themselves
    methods["baseline"] = score_method("baseline", test, test.lists, None, cfg.n_boot, cfg.seed)
    base_hits = first_hits(test.positions()) < 1
    open_set = {"baseline": open_set_scores(test, test.lists, test.nonmated)}
    rerank_stats: dict = {}
    if cfg.matcher in AUGMENTED:
        rerank_stats[PLAIN] = run_plain_baseline(cfg, protocol, cache, aligner, test, methods, rankings, ranks,
                                                 open_set, base_hits, timing)
    if model is not None:
        rerank_stats |= run_fixed_model(model, cfg, test, methods, rankings, open_set, base_hits, timing)
    elif cfg.rerank:
        rerank_stats |= run_rerankers(cfg, features, test, methods, rankings, ranks, open_set, base_hits, timing,
                                     out)

    counts = protocol.counts()
    skipped = screened.counts(features.embeddings.summary()["skipped"])
    inputs = {"counts": {"images used": int(features.embeddings.ok.sum()), "skipped": skipped,
                         "duplicates": len(screened.duplicates), "probes set aside": set_aside},
              "files": {"skipped": str(out / "skipped.csv"), "duplicates": str(out / "duplicates.csv"),
                        "probes set aside": str(out / "set_aside.csv")}}
    open_set_stats = open_set_summary(open_set, cfg.n_boot, cfg.seed, None if model is None else model.thresholds_)
    metrics = {
        "protocol": {**protocol.settings(), **counts, "data": str(cfg.data), "matcher": cfg.matcher,
                     "index": cfg.index, "depth": cfg.depth, "aligner": aligner.name,
                     "n_probes_searched": len(test.probes), "n_gallery_searched": len(test.gallery),
                     "probes_without_mate": test.notes["probes_without_mate"],
                     "skipped_probes": test.notes["skipped_probes"], "skipped_gallery": test.notes["skipped_gallery"],
                     "dataset_notes": table.notes, "warnings": warnings},
        "methods": methods,
        "paired": {n: paired_closed_set(test, rankings, ranks, n, others, cfg.n_boot, cfg.seed)
                   for n, others in PAIRINGS if n in rankings},
        "open_set": open_set_stats[0],
        "paired_open_set": open_set_stats[1],
        "timing": {**timing, "total_s": time.perf_counter() - t0},
        "embedding": features.embeddings.summary(),
        "rerank_stats": rerank_stats,
        "inputs": inputs,
        "config": asdict(cfg),
        "versions": versions(),
    }
    metrics = published_paths(metrics, out)
    write_outputs(out, metrics, test, rankings, features, cache, aligner, ranks, open_set)
    publish_outputs(out, keep=[cfg.data])
    cache.close()
    return metrics


FIXED_MODEL = "lookalike-model"
PAIRINGS = (("lookalike-best", PAIRED), (FIXED_MODEL, (PLAIN,)), (LOOKALIKE_TRANSDUCTIVE, (TRANSDUCTIVE,)),
            (BATCH, ("lookalike-best", TRANSDUCTIVE, PLAIN)), (f"{FIXED_MODEL}-batch", (FIXED_MODEL, PLAIN)))
"""Each method paired with those it is compared with on the same probes (``paired`` and ``paired_open_set``)."""


def fixed_model(cfg: BenchmarkConfig) -> LookalikeModel:
    """``cfg.model`` loaded (``default``: the shipped model for the run's faces), or a one-line ValueError, before
    any work, when it was trained for faces prepared otherwise than this run's (the aligner's fallback for
    undetected faces, ``--central-fraction``, is the dataset's and may differ) or re-ranks deeper than ``depth``."""
    from lookalike.embed import preprocess_key
    from lookalike.matchers import matcher_name
    from lookalike.model import DEFAULT, default_model

    if not cfg.rerank:
        raise ValueError("--model re-ranks with a trained model: drop --no-rerank")
    aligner = cfg.aligner()
    if cfg.model == DEFAULT:  # the shipped model for the run's faces, its probes' included
        gallery, probes = (preprocess_key(side_lowres(cfg.lowres, cfg.lowres_apply, side), cfg.degrade)
                           for side in ("gallery", "probes"))
        model = default_model(matcher_name(cfg.matcher or DEFAULT_MATCHER), aligner, gallery,
                              probes=probes)
    else:
        model = LookalikeModel.load(cfg.model)
    model.check_run(matcher_name(cfg.matcher or model.matcher), aligner, cfg.lowres, cfg.lowres_apply, cfg.degrade,
                    what=f"--model {cfg.model}")
    if model.reach > cfg.depth:
        raise ValueError(f"--model {cfg.model} re-ranks the first {model.reach} candidates: use --depth "
                         f"{model.reach} or more")
    return model


def run_plain_baseline(cfg: BenchmarkConfig, protocol: Protocol, cache: EmbeddingCache, aligner: FaceAligner,
                       test: SearchSplit, methods: dict, rankings: dict, ranks: dict, open_set: dict,
                       base_hits: np.ndarray, timing: dict) -> dict:
    """``baseline-plain``: the run's test split searched with the plain matcher that ``cfg.matcher`` augments
    (``torch`` for ``torch-flip``), so a run shows what the augmentation alone adds (adaptation) beside what
    re-ranking adds; lookalike-best is compared with it probe by probe. Skipped with a note when the plain
    matcher keeps other images than the augmented one."""
    plain = AUGMENTED[cfg.matcher]
    t = time.perf_counter()
    features = embed_protocol(protocol, plain, cache, aligner, cfg.workers, cfg.progress)
    split = build_split(features, "test", cfg.depth, cfg.index)
    timing[f"{PLAIN}_s"] = time.perf_counter() - t
    if not (np.array_equal(split.probes.paths, test.probes.paths)
            and np.array_equal(split.gallery.paths, test.gallery.paths)):
        return {"skipped": f"the {plain} matcher kept other probe or gallery images than {cfg.matcher}"}
    rankings[PLAIN], ranks[PLAIN] = split.lists, split.base_ranks
    methods[PLAIN] = score_method(PLAIN, test, split.lists, base_hits, cfg.n_boot, cfg.seed, split.base_ranks)
    open_set[PLAIN] = open_set_scores(split, split.lists, split.nonmated)
    return {"matcher": plain, "setting": f"the test split searched with {plain}: {cfg.matcher} without its "
                                         "test-time augmentation"}


def run_fixed_model(model: LookalikeModel, cfg: BenchmarkConfig, test: SearchSplit, methods: dict, rankings: dict,
                    open_set: dict, base_hits: np.ndarray, timing: dict) -> dict:
    """Re-rank the test lists with a trained model as it is (no fitting, no tuning): the method
    ``lookalike-model``, its open set from its own final scores and at its own calibrated thresholds."""
    t = time.perf_counter()
    lists = rerank_faces(model, test.probes, test.gallery, test.lists)
    nonmated = None if test.nonmated is None else rerank_faces(model, test.nonmated_probes,
                                                               test.gallery, test.nonmated)
    timing[f"{FIXED_MODEL}_s"] = time.perf_counter() - t
    rankings[FIXED_MODEL] = lists
    methods[FIXED_MODEL] = score_method(FIXED_MODEL, test, lists, base_hits, cfg.n_boot, cfg.seed)
    open_set[FIXED_MODEL] = open_set_scores(test, lists, nonmated)
    return {FIXED_MODEL: {"file": str(cfg.model), **model.describe_short(), "training": model.training_,
                          "tuning": model.reranker_.stats},
            **run_batch(cfg, model, test, methods, rankings, open_set, base_hits, timing, nonmated, FIXED_MODEL)}


def calibrated_open_set(outcomes: OpenSetScores, thresholds: dict[float, float]) -> dict[str, dict]:
    """At each threshold a model calibrated (on its own validation people) for an FPIR: the FPIR and DIR it
    reaches on this test split (how well its calibration transfers)."""
    out = {}
    for f, t in thresholds.items():
        fpir = float(np.mean(outcomes.nonmated_top >= t)) if len(outcomes.nonmated_top) else None
        out[f"{f:g}"] = {"threshold": t, "fpir": fpir,
                         "dir": float(np.mean(outcomes.mated_hit & (outcomes.mated_top >= t)))}
    return out


def check_rerank(identities: np.ndarray, roles: np.ndarray) -> None:
    """A one-line error, before the work, when the split is too small for re-ranking (see rerank_problem)."""
    problem = rerank_problem(identities, roles)
    if problem:
        raise ValueError(f"too few people for re-ranking: {problem}; use --no-rerank for the baseline only")


def open_set_scores(test: SearchSplit, lists: RankedLists, nonmated: RankedLists | None,
                    top_scores: np.ndarray | None = None) -> OpenSetScores:
    """A method's open-set outcomes from its final scores: its re-ranked test lists (mated searches) and its
    re-ranked non-mated searches (each distractor against the rest of the gallery; none without distractors).
    ``top_scores``: the mated searches' decision scores when they are not the lists' first scores (batch
    re-ranking decides *whether* by the per-photo score and *who* by its own order)."""
    hits = test.gallery.identities[lists.indices[:, 0]] == test.probes.identities
    top = lists.scores[:, 0] if top_scores is None else top_scores
    return OpenSetScores(np.asarray(top, np.float64), hits,
                         np.zeros(0) if nonmated is None else np.asarray(nonmated.scores[:, 0], np.float64))


def open_set_summary(outcomes: dict[str, OpenSetScores], n_boot: int, seed: int,
                     thresholds: dict[float, float] | None = None) -> tuple[dict[str, dict], dict[str, dict]]:
    """One bootstrap of every method's open set (:func:`~lookalike.metrics.open_set_statistics`), read twice:
    ({method: FNIR and DIR at FPIR 1% and 10%, DIR's 95% CI, the search counts; with a fixed model's
    ``thresholds``, how they fare on this split (``calibrated``)}, {method: {method it is paired with: DIR's paired
    difference}}). Each method of :data:`PAIRINGS` is paired with the run's baseline too (rank-1 has the baseline's
    McNemar test in every method's row, the open set has it here); nothing without non-mated searches."""
    pairs = {n: [o for o in ("baseline", *others) if o in outcomes and o != n and len(outcomes[o].nonmated_top)]
             for n, others in PAIRINGS if n in outcomes}
    cis, diffs = open_set_statistics(outcomes, tuple((n, o) for n, os in pairs.items() for o in os), n_boot=n_boot,
                                     seed=seed)
    summary = {n: {**o.rates(), **cis[n], "n_mated": len(o.mated_top), "n_nonmated": len(o.nonmated_top),
                   **({"unmeasurable_fpirs": unmeasurable_fpirs(len(o.nonmated_top))} if len(o.nonmated_top) else {})}
               for n, o in outcomes.items()}
    if thresholds is not None and FIXED_MODEL in outcomes:
        summary[FIXED_MODEL]["calibrated"] = calibrated_open_set(outcomes[FIXED_MODEL], thresholds)
    return summary, {n: {o: diffs[n, o] for o in os} for n, os in pairs.items()}


def top_lists(scores: np.ndarray, depth: int) -> RankedLists:
    """Each row's ``depth`` best columns by descending score (ties by column, as a stable sort)."""
    order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return RankedLists(order, np.take_along_axis(scores, order, 1))


def full_ranking_search(test: SearchSplit, scores: np.ndarray, depth: int) -> FullSearch:
    """Lists of a method that ranks the whole gallery itself, from its (Q + n_distractors, N) scores: every test
    probe's row, then (when the split has non-mated searches) each distractor's. Returns the probes' top-``depth``
    lists, the full-ranking positions of each probe's mates, and the non-mated searches: each distractor against
    the rest of the gallery, images of its own identity left out, as :func:`nonmated_lists` does."""
    q, distractors = len(test.probes), np.flatnonzero(test.is_distractor)
    mated, other = scores[:q], scores[q:]
    ranks = [row_positions(row, m) for row, m in zip(mated, test.mates(), strict=True)]
    nonmated = None
    if test.nonmated is not None:
        own = test.gallery.identities[distractors][:, None] == test.gallery.identities[None, :]
        other[own] = -np.inf
        nonmated = top_lists(other, min(depth, int((~own).sum(1).min())))
    return top_lists(mated, depth), ranks, nonmated


def transductive_search(test: SearchSplit, depth: int, k1: int = 20, k2: int = 6, lam: float = 0.3,
                        space: Disambiguator | None = None) -> FullSearch:
    """The paper's transductive k-reciprocal re-ranking over every test probe and the whole gallery at once,
    with its defaults (not tuned). Score = -(final distance). ``space``: an embedding-level disambiguator whose
    projection (:meth:`transform`; no cohort terms) the faces are mapped into first (default: the matcher's
    vectors). Lists, mate ranks and non-mated searches as :func:`full_ranking_search` (each distractor is a
    member of the same joint set; when the protocol degrades one side only, the distractors prepared as probes join
    the set as probes and are the non-mated queries)."""
    q, distractors = len(test.probes), np.flatnonzero(test.is_distractor)
    probes, gallery = test.probes.vectors, test.gallery.vectors
    one_sided = test.gallery_as_probes is not None and test.nonmated is not None
    if one_sided:
        probes = np.concatenate([probes, test.nonmated_probes.vectors])
    if space is not None:
        probes, gallery = space.transform(probes), space.transform(gallery)
    queries = np.arange(len(probes)) if one_sided else np.concatenate([np.arange(q), len(probes) + distractors])
    scores = -kreciprocal_transductive(probes, gallery, k1, k2, lam, queries=queries)
    return full_ranking_search(test, scores, depth)


def global_search(test: SearchSplit, disambiguator: Disambiguator, depth: int) -> FullSearch:
    """The disambiguator as the matcher: every test probe (and, for the open set, every distractor) scored
    against the whole gallery by the disambiguator alone (:meth:`Disambiguator.score_matrix`); lists, mate
    ranks and non-mated searches as :func:`full_ranking_search`."""
    queries = test.probes.vectors
    if test.nonmated is not None:
        queries = np.concatenate([queries, test.nonmated_probes.vectors])
    return full_ranking_search(test, disambiguator.score_matrix(queries, test.gallery.vectors), depth)


def run_full_ranking(name: str, search: Callable[[], FullSearch], cfg: BenchmarkConfig, test: SearchSplit,
                     methods: dict, rankings: dict, ranks: dict, open_set: dict, base_hits: np.ndarray,
                     timing: dict) -> dict:
    """Score a method that ranks the whole gallery itself (``search()``: its lists, mate ranks and non-mated
    searches) like every other method; returns how many of its lists differ from the baseline's."""
    t = time.perf_counter()
    lists, ranks[name], nonmated = search()
    timing[f"{name}_s"] = time.perf_counter() - t
    rankings[name] = lists
    methods[name] = score_method(name, test, lists, base_hits, cfg.n_boot, cfg.seed, ranks[name])
    open_set[name] = open_set_scores(test, lists, nonmated)
    return {"lists_changed": int((lists.indices != test.lists.indices).any(axis=1).sum())}


def run_transductive(cfg: BenchmarkConfig, test: SearchSplit, methods: dict, rankings: dict, ranks: dict,
                     open_set: dict, base_hits: np.ndarray, timing: dict, space: Disambiguator | None = None) -> dict:
    """Score :func:`transductive_search` like every other method (``kreciprocal-transductive``; with ``space``,
    the saved model's disambiguator, ``lookalike-transductive``); returns its stats."""
    if space is not None and space.input != "embedding":
        return {"skipped": f"{type(space).__name__} scores images: it has no space over the matcher's embeddings"}
    name = TRANSDUCTIVE if space is None else LOOKALIKE_TRANSDUCTIVE
    changed = run_full_ranking(name, lambda: transductive_search(test, cfg.depth, **PAPER_SETTINGS, space=space),
                               cfg, test, methods, rankings, ranks, open_set, base_hits, timing)
    where = "the matcher's vectors" if space is None else \
        f"the saved model's disambiguator space ({repr_params(space)}: its projection, without cohort terms)"
    return {"setting": "transductive: all test probes and the gallery together (an evaluation baseline)",
            "space": where, **PAPER_SETTINGS, "score": "negative final distance",
            "joint_set": len(test.probes) + len(test.gallery), **changed}


def run_global(cfg: BenchmarkConfig, disambiguator: Disambiguator, test: SearchSplit, methods: dict,
               rankings: dict, ranks: dict, open_set: dict, base_hits: np.ndarray, timing: dict) -> dict:
    """Score :func:`global_search` with the saved model's disambiguator (``lookalike-global``); an image-level
    disambiguator is skipped with a note."""
    what = repr_params(disambiguator)
    if disambiguator.input != "embedding":
        return {"skipped": f"{type(disambiguator).__name__} scores images: no global metric over the matcher's "
                           "embeddings"}
    changed = run_full_ranking(GLOBAL, lambda: global_search(test, disambiguator, cfg.depth), cfg, test, methods,
                               rankings, ranks, open_set, base_hits, timing)
    return {"setting": "the saved model's disambiguator as the matcher: the whole gallery ranked by its score alone",
            "disambiguator": what, "score": "the disambiguator's score (no fusion)", **changed}


def run_batch(cfg: BenchmarkConfig, model: LookalikeModel, test: SearchSplit, methods: dict, rankings: dict,
              open_set: dict, base_hits: np.ndarray, timing: dict, nonmated: RankedLists | None,
              per_photo: str = "lookalike-best") -> dict:
    """Score the model's batch re-ranking (``lookalike-batch``; ``lookalike-model-batch`` for a fixed model): every
    test probe re-ranked together, as ``identify --batch`` does with many photos; the per-photo lists (method
    ``per_photo``) where the model has no batch setting. Open set: whether a probe is enrolled is decided by its
    per-photo score, whom by the batch order (``nonmated``: the model's per-photo non-mated searches)."""
    name = BATCH if per_photo == "lookalike-best" else f"{per_photo}-batch"
    alone = rankings[per_photo]
    t = time.perf_counter()
    together = model.batch_note(len(test.probes)) is None  # as identify --batch decides
    lists = model.rerank_batch(test.probes.vectors, test.lists, test.candidates) if together else alone
    timing[f"{name}_s"] = time.perf_counter() - t
    rankings[name] = lists
    methods[name] = score_method(name, test, lists, base_hits, cfg.n_boot, cfg.seed)
    open_set[name] = open_set_scores(test, lists, nonmated, top_scores=alone.scores[:, 0])
    return {name: {"setting": "batch: every test probe re-ranked together by the model (identify --batch)",
                   "batch": None if model.batch_ is None else model.batch_.setting_.to_dict(),
                   "reranked_together": together, "tuning": model.batch_tuning_, "lists_changed_vs_per_photo":
                       int((lists.indices != alone.indices).any(1).sum())}}


def run_rerankers(cfg: BenchmarkConfig, features: ProtocolFeatures, test: SearchSplit, methods: dict,
                  rankings: dict, ranks: dict, open_set: dict, base_hits: np.ndarray, timing: dict,
                  out: Path) -> dict:
    """Fit every re-ranking method on train faces, tune it on the validation split, apply it to the test
    lists. ``lookalike-best`` is a :class:`LookalikeModel`: it is saved as ``model.lkm`` and evaluated as
    saved. The transductive k-reciprocal baseline, which fits nothing, ranks the whole gallery itself
    (:func:`run_transductive`)."""
    from lookalike.rerank import DisambiguatorPool, default_methods
    from lookalike.train import make_disambiguators

    val = build_split(features, "val", cfg.depth, cfg.index)
    val_lists = LabelledLists.search(val.probes, val.gallery, cfg.depth)
    train = features.faces("train")
    stats: dict = {"val_probes": len(val.probes), "train_images": len(train),
                   "tuning_rule": "every setting chosen by rank-1 (ties: MRR) on the validation split"}
    from lookalike.mining import mining_report

    t = time.perf_counter()
    stats["mining"] = mining_report(train, out / "mining")
    timing["mining_report_s"] = time.perf_counter() - t
    pool = DisambiguatorPool(seed=cfg.seed)
    disambiguators = make_disambiguators(cfg.disambiguator, cfg.seed, cfg.cache, cfg.central_fraction,
                                         cfg.cnn_fallback)
    model = run_model(cfg, features.protocol, disambiguators, pool)
    methods_: list = [m for m in default_methods(cfg.seed, disambiguators, pool) if m.name != "lookalike-best"]
    stats[TRANSDUCTIVE] = run_transductive(cfg, test, methods, rankings, ranks, open_set, base_hits, timing)
    for method in [*methods_, model]:
        name = getattr(method, "name", "lookalike-best")
        t = time.perf_counter()
        if isinstance(method, LookalikeModel):
            method.fit(train, val.probes, val.gallery, val.gallery_as_probes)
            method.save(out / "model.lkm")
        else:
            method.fit(train, val_lists)
        lists = rerank_faces(method, test.probes, test.gallery, test.lists)
        timing[f"{name}_s"] = time.perf_counter() - t
        rankings[name] = lists
        methods[name] = score_method(name, test, lists, base_hits, cfg.n_boot, cfg.seed)
        nonmated = None if test.nonmated is None else rerank_faces(method, test.nonmated_probes,
                                                                   test.gallery, test.nonmated)
        open_set[name] = open_set_scores(test, lists, nonmated)
        stats[name] = method.reranker_.stats if isinstance(method, LookalikeModel) else method.stats
        if isinstance(method, LookalikeModel):
            stats |= run_batch(cfg, method, test, methods, rankings, open_set, base_hits, timing, nonmated)
    stats[GLOBAL] = run_global(cfg, model.disambiguator_, test, methods, rankings, ranks, open_set, base_hits, timing)
    stats[LOOKALIKE_TRANSDUCTIVE] = run_transductive(cfg, test, methods, rankings, ranks, open_set, base_hits, timing,
                                                     model.disambiguator_)
    return stats


def write_image_logs(out: Path, features: ProtocolFeatures, left_out: list[tuple[str, str, str, str]] = ()) -> None:
    """images.csv: how every image was handled (face found, crop); skipped.csv: those that were skipped, and
    the ``left_out`` (path, identity, reason, message) items the loader and the image checks dropped."""
    e, t = features.embeddings, features.protocol.table
    header = ["path", "identity", "role", "status", "face", "n_faces", "message"]
    with atomic_write(out / "images.csv", "w", newline="") as f_all, \
            atomic_write(out / "skipped.csv", "w", newline="") as f_skip:
        w_all, w_skip = csv.writer(f_all), csv.writer(f_skip)
        w_all.writerow(header)
        w_skip.writerow(header)
        for path, identity, reason, message in left_out:
            w_skip.writerow([printable(path), printable(identity), "", reason, "", 0, printable(message)])
        for i in range(len(t)):
            row = [t.paths[i], t.identities[i], t.roles[i], e.status[i], e.method[i], int(e.n_faces[i]),
                   e.messages.get(i, "")]
            w_all.writerow(row)
            if not e.ok[i]:
                w_skip.writerow(row)


def write_duplicates(path: Path, rows: list[tuple[str, str, str, str, str]]) -> None:
    """duplicates.csv: files with the same bytes as another listed file, and what was done with them."""
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(DUPLICATE_HEADER)
        w.writerows(rows)


def write_set_aside(path: Path, features: ProtocolFeatures) -> int:
    """set_aside.csv: usable test probes whose person has no usable gallery image; returns their number."""
    t, ok = features.protocol.table, features.embeddings.ok
    enrolled = set(t.identities[(t.roles == "gallery") & ok].tolist())
    rows = np.flatnonzero((t.roles == "probe") & ok & ~np.isin(t.identities, list(enrolled)))
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "identity", "reason"])
        w.writerows([t.paths[i], t.identities[i], "no usable gallery image of this person"] for i in rows)
    return len(rows)


def write_outputs(out: Path, metrics: dict, test: SearchSplit, rankings: dict[str, RankedLists],
                  features: ProtocolFeatures, cache: EmbeddingCache, aligner: FaceAligner,
                  ranks: dict[str, list[np.ndarray]] | None = None,
                  open_set: dict[str, OpenSetScores] | None = None) -> None:
    """metrics.json, rankings.npz, ranked_baseline.csv, cmc.png, fnir_fpir.png, examples and report.md (``ranks``:
    mate positions of methods that rank the whole gallery themselves; ``open_set``: each method's open-set
    outcomes)."""
    write_json(out / "metrics.json", metrics)
    arrays = {"probe_paths": test.probes.paths.astype(str), "probe_ids": test.probes.identities.astype(str),
              "gallery_paths": test.gallery.paths.astype(str), "gallery_ids": test.gallery.identities.astype(str)}
    for name, lists in rankings.items():
        arrays[f"{name}.indices"] = lists.indices
        arrays[f"{name}.scores"] = lists.scores
    for name, o in (open_set or {}).items():  # what `lookalike compare` pairs across runs
        arrays[f"{name}.open_mated_top"] = o.mated_top
        arrays[f"{name}.open_nonmated_top"] = o.nonmated_top
    save_npz(out / "rankings.npz", **arrays)
    base = rankings["baseline"]
    with atomic_write(out / "ranked_baseline.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["probe", "probe_identity", "rank", "gallery", "gallery_identity", "score", "mate"])
        for q in range(len(test.probes)):
            for r in range(min(20, base.depth)):
                g = base.indices[q, r]
                w.writerow([test.probes.paths[q], test.probes.identities[q], r + 1, test.gallery.paths[g],
                            test.gallery.identities[g], f"{base.scores[q, r]:.5f}",
                            int(test.gallery.identities[g] == test.probes.identities[q])])
    curves = {name: cmc_curve(test.positions(lists, (ranks or {}).get(name))) for name, lists in rankings.items()}
    title = f"CMC — {metrics['protocol']['name']}"
    plot_cmc(curves, out / "cmc.png", title)
    images = [("CMC", "cmc.png")]
    measured = {n: o for n, o in (open_set or {}).items() if len(o.nonmated_top) and len(o.mated_top)}
    if measured:
        plot_fnir_fpir(measured, out / "fnir_fpir.png", f"FNIR against FPIR — {metrics['protocol']['name']}")
        images.append(("Open set: FNIR against FPIR", "fnir_fpir.png"))
    mining = out / "mining"
    for png, caption in (("score_distributions.png", "Score distributions (train)"),
                         ("lookalike_montage.png", "Strongest lookalike pairs (train)")):
        if (mining / png).exists():
            images.append((caption, f"mining/{png}"))
    best = best_method(metrics["methods"])
    if best:
        write_examples(out / "examples.png", test, base, rankings[best], features, cache, aligner)
        if (out / "examples.png").exists():
            images.append((f"Probes fixed and broken by {best}", "examples.png"))
    write_report(out / "report.md", metrics, images)


def best_method(methods: dict[str, dict]) -> str | None:
    candidates = {k: v for k, v in methods.items() if k not in ("baseline", PLAIN)}
    return max(candidates, key=lambda k: candidates[k]["rank1"]) if candidates else None


def write_examples(path: Path, test: SearchSplit, before: RankedLists, after: RankedLists,
                   features: ProtocolFeatures, cache: EmbeddingCache, aligner: FaceAligner, n: int = 4) -> None:
    """Up to ``n`` fixed and ``n`` broken probes with their top-5 before and after."""
    hit_b = before.indices[:, 0]
    hit_a = after.indices[:, 0]
    ok_b = test.gallery.identities[hit_b] == test.probes.identities
    ok_a = test.gallery.identities[hit_a] == test.probes.identities
    rows = [("fixed", int(q)) for q in np.flatnonzero(~ok_b & ok_a)[:n]]
    rows += [("broken", int(q)) for q in np.flatnonzero(ok_b & ~ok_a)[:n]]
    if not rows:
        return
    protocol = features.protocol
    probe_lowres = protocol.lowres if protocol.degraded("probe") else None
    gallery_lowres = protocol.lowres if protocol.degraded("gallery") else None
    qs = [q for _, q in rows]
    probe_chips = np.zeros((len(test.probes), aligner.chip_size, aligner.chip_size, 3), np.uint8)
    probe_chips[qs] = read_chips(list(test.probes.paths[qs]), cache, aligner, probe_lowres,
                                  degrade=protocol.degrade)[0]
    gs = sorted({int(g) for q in qs for g in (*before.indices[q, :5], *after.indices[q, :5])})
    chips = read_chips(list(test.gallery.paths[gs]), cache, aligner, gallery_lowres, degrade=protocol.degrade)[0]
    gallery_chips = dict(zip(gs, chips, strict=True))
    enrolled = ~test.is_distractor
    mates = [set(np.flatnonzero(enrolled & (test.gallery.identities == test.probes.identities[q])).tolist())
             if q in qs else set() for q in range(len(test.probes))]
    plot_examples(rows, probe_chips, gallery_chips, before.indices, after.indices, mates, path)


def run_model(cfg: BenchmarkConfig, protocol: Protocol, disambiguators: list[Disambiguator] | None = None,
              pool=None) -> LookalikeModel:
    """The unfitted model a run of ``cfg`` fits on ``protocol`` (its matcher, resolution, degradation, aligner,
    list depth and seed), choosing among ``disambiguators`` (default: the LDA grid)."""
    return LookalikeModel(cfg.matcher, protocol.lowres, cfg.aligner(), disambiguators,
                          lowres_apply=protocol.lowres_apply, degrade=protocol.degrade, depth=cfg.depth, seed=cfg.seed,
                          pool=pool)


def run_config(out: str | Path) -> BenchmarkConfig:
    """A finished benchmark run's settings, from its ``metrics.json`` (settings added since it ran: their defaults)."""
    saved = read_json(Path(out) / "metrics.json")["config"]
    return BenchmarkConfig(**{k: v for k, v in saved.items() if k in BenchmarkConfig.__dataclass_fields__})


def run_features(out: str | Path, cache: str | None = str(DEFAULT_CACHE), workers: int = 2,
                 matcher: str | None = None) -> tuple[BenchmarkConfig, ProtocolFeatures]:
    """A benchmark run's saved protocol embedded again (through the cache) with the run's matcher (or ``matcher``)
    and aligner: (the run's config from ``metrics.json``, with that matcher; the features), for experiments on the
    run's own splits."""
    out = Path(out)
    cfg = run_config(out)
    cfg = replace(cfg, matcher=matcher or cfg.matcher)
    store = EmbeddingCache(cache)
    try:
        return cfg, embed_protocol(Protocol.load(out / "protocol"), cfg.matcher, store,
                                   cfg.aligner(), workers, progress=False)
    finally:
        store.close()


class SavedRun(NamedTuple):
    """A finished benchmark run, as the scripts that replay its saved model need it: the model (``model.lkm``), its
    ``rankings.npz`` arrays, the test probes' and gallery's vectors embedded again (``rankings.npz`` order), the
    baseline lists and the (Q, N) mask of each probe's mates."""

    model: LookalikeModel
    rankings: dict[str, np.ndarray]
    probes: np.ndarray
    gallery: np.ndarray
    base: RankedLists
    mated: np.ndarray


def load_saved_run(out: str | Path, cache: str | None = str(DEFAULT_CACHE), workers: int = 2) -> SavedRun:
    """A run's :class:`SavedRun`; its faces embedded again through the cache as its ``model.lkm`` prepares them
    (matcher, resolution, degradation, chip geometry) with the run's own fallbacks for undetected faces (a ``--model``
    run may set another ``--central-fraction`` than the model's, and its lists were made with it)."""
    from lookalike.embed import embed_paths

    out = Path(out)
    model = LookalikeModel.load(out / "model.lkm")
    aligner = run_config(out).aligner(model.aligner)
    with np.load(out / "rankings.npz", allow_pickle=False) as z:
        r = dict(z)
    store = EmbeddingCache(cache)
    try:
        probes = embed_paths(r["probe_paths"], model.matcher, aligner, model.probe_lowres, store, workers,
                             progress=False, degrade=model.degrade)
        gallery = embed_paths(r["gallery_paths"], model.matcher, aligner, model.gallery_lowres, store, workers,
                              progress=False, degrade=model.degrade)
    finally:
        store.close()
    return SavedRun(model, r, probes.vectors, gallery.vectors, RankedLists(r["baseline.indices"], r["baseline.scores"]),
                    r["gallery_ids"][None, :] == r["probe_ids"][:, None])


def replay_saved_model(out: str | Path, cache: str | None = str(DEFAULT_CACHE), workers: int = 2) -> dict:
    """Load a run's ``model.lkm``, re-embed its test probes and gallery (through the cache) and re-rank its
    baseline lists: the result must equal the run's ``lookalike-best`` lists exactly."""
    model, r, probes, gallery, base, _ = load_saved_run(out, cache, workers)
    again = model.rerank(probes, base, gallery[base.indices])
    run_rank1 = float(np.mean(r["gallery_ids"][r["lookalike-best.indices"][:, 0]] == r["probe_ids"]))
    return {"identical_indices": bool(np.array_equal(again.indices, r["lookalike-best.indices"])),
            "identical_scores": bool(np.array_equal(again.scores, r["lookalike-best.scores"])),
            "run_rank1": run_rank1,
            "replayed_rank1": float(np.mean(r["gallery_ids"][again.indices[:, 0]] == r["probe_ids"])),
            "n_probes": int(len(again.indices))}
