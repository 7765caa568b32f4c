"""``lookalike train``: a labelled dataset -> a saved :class:`~lookalike.model.LookalikeModel`.

Every person of the dataset is a training person; a seeded validation split of them (``val_fraction`` of
the people, enrolled like a test split: one gallery image per person, the rest probes, single-image people as
distractors) tunes the re-ranker and calibrates its open-set thresholds.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np

from lookalike.data.protocol import make_protocol
from lookalike.experiment import embed_protocol
from lookalike.matchers import DEFAULT_MATCHER
from lookalike.matchers.align import CNN_FALLBACK, FaceAligner
from lookalike.matchers.cache import EmbeddingCache
from lookalike.model import LookalikeModel


def check_degrade_support(disambiguator: str, lowres: int | None, degrade: str) -> None:
    """A clear error for a combination not supported yet: the image-level disambiguator reads its chips
    with the bicubic degradation only."""
    if disambiguator == "finetuned" and lowres is not None and degrade != "bicubic":
        raise ValueError(f"--disambiguator finetuned supports --degrade bicubic only, got {degrade!r}")


def make_disambiguators(kind: str, seed: int = 0, cache: str | None = None, central_fraction: float = 0.45,
                        cnn_fallback: bool = CNN_FALLBACK) -> list:
    """The disambiguators a model chooses among: ``lda`` (embedding level; see
    :func:`lookalike.rerank.default_disambiguators`) or ``finetuned`` (image level: the face network's top
    fine-tuned on mined lookalike pairs, at the protocol's resolution, its chips aligned as the data's were:
    ``central_fraction``, ``cnn_fallback``)."""
    if kind == "lda":
        from lookalike.rerank import default_disambiguators

        return default_disambiguators(seed)
    if kind == "finetuned":
        from lookalike.disambiguators.finetuned import FineTunedNet

        return [FineTunedNet(seed=seed, cache_path=cache, central_fraction=central_fraction, cnn_fallback=cnn_fallback)]
    raise ValueError(f"unknown disambiguator {kind!r}; choose lda or finetuned")


def check_trainable(identities, roles) -> None:
    """A one-line error when the people are too few to train and tune a model (see ``rerank_problem``)."""
    from lookalike.data.protocol import rerank_problem

    problem = rerank_problem(identities, roles)
    if problem:
        raise ValueError(f"too few people to train a model: {problem}")


def data_fingerprint(data: str | Path, identities: np.ndarray) -> dict:
    """What the model was trained on, checkably: the people and images listed and a SHA-1 of the sorted
    identity names (independent of where the images lie), plus a SHA-1 of the file for a CSV manifest."""
    people = sorted(set(np.asarray(identities).astype(str).tolist()))
    out = {"people": len(people), "images": len(identities),
           "identities_sha1": hashlib.sha1("\n".join(people).encode()).hexdigest()}
    path = Path(data)
    if path.is_file():
        out["file"], out["file_sha1"] = path.name, hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def train_model(data: str | Path, matcher: str | None = None, lowres: int | None = None, lowres_apply: str = "both",
                disambiguator: str = "lda", seed: int = 0, val_fraction: float = 0.3, depth: int = 100,
                cache: str | None = None, central_fraction: float = 0.45, workers: int = 2,
                max_people: int | None = None, progress: bool = True,
                degrade: str = "bicubic", cnn_fallback: bool = CNN_FALLBACK) -> tuple[LookalikeModel, dict]:
    """Embed the dataset, fit and tune a model on it; returns (model, a summary of the data and the run: the
    model's ``training_`` and ``left_out``, the (path, identity, reason, message) of every image not trained on).

    Images are screened as ``benchmark`` screens them (:func:`~lookalike.data.screen.screen_table`): a file that
    does not decode is left out, and the same photo under two people's names (either label may be wrong) is left
    out entirely; what the loader leaves out (files outside person folders, non-image files) is listed too."""
    from lookalike.benchmark import load_dataset, sample_people
    from lookalike.data.screen import screen_table

    if not 0 < val_fraction < 1:
        raise ValueError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    check_degrade_support(disambiguator, lowres, degrade)
    t0 = time.perf_counter()
    table = load_dataset(data)
    if max_people:
        table = sample_people(table, max_people, seed)
    store = EmbeddingCache(cache)
    try:
        screened = screen_table(table, store.ok_keys(), progress)
    except BaseException:
        store.close()
        raise
    protocol = make_protocol(screened.table, seed=seed, test_fraction=0.0, val_fraction=val_fraction, name="train",
                             lowres=lowres, lowres_apply=lowres_apply, require_test=False, degrade=degrade)
    counts = protocol.counts()
    aligner = FaceAligner(central_fraction, cnn_fallback=cnn_fallback)
    matcher = matcher or DEFAULT_MATCHER
    try:
        check_trainable(protocol.table.identities, protocol.table.roles)
        features = embed_protocol(protocol, matcher, store, aligner, workers, progress)
    finally:
        store.close()
    ok = features.embeddings.ok
    check_trainable(protocol.table.identities[ok], protocol.table.roles[ok])
    train = features.faces("train")
    val_probes, val_gallery = features.faces("val_probe"), features.faces("val_gallery", "val_distractor")
    val_as_probes = features.faces_as_probes("val_gallery", "val_distractor")
    disambiguators = make_disambiguators(disambiguator, seed, cache, central_fraction, cnn_fallback)
    model = LookalikeModel(matcher, lowres, aligner, disambiguators,
                           lowres_apply=lowres_apply, degrade=degrade, depth=depth, seed=seed)
    model.fit(train, val_probes, val_gallery, val_as_probes)
    embedding = features.embeddings.summary()
    skipped = screened.counts(embedding["skipped"])
    model.training_.update({"data": str(data), "data_fingerprint": data_fingerprint(data, table.identities),
                            "counts": counts, "embedding": {**embedding, "skipped": skipped,
                                                            "duplicates": len(screened.duplicates)},
                            "total_s": round(time.perf_counter() - t0, 1)})
    t, e = protocol.table, features.embeddings
    left_out = screened.left_out() + [(str(t.paths[i]), str(t.identities[i]), str(e.status[i]),
                                       e.messages.get(i, "")) for i in np.flatnonzero(~e.ok)]
    return model, {**model.training_, "left_out": left_out}
