"""``lookalike train``: a labelled dataset -> a saved :class:`~lookalike.model.LookalikeModel`.

Every person of the dataset is a training person; a seeded validation split of them (``val_fraction`` of
the people, enrolled like a test split: one gallery image per person, the rest probes, single-image people as
distractors) tunes the re-ranker and calibrates its open-set thresholds.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike.data.names import name_warnings
from lookalike.data.protocol import make_protocol, rerank_problem
from lookalike.data.table import FaceTable
from lookalike.experiment import embed_protocol
from lookalike.faces import FaceSet
from lookalike.matchers import DEFAULT_MATCHER
from lookalike.matchers.align import CNN_FALLBACK, FaceAligner
from lookalike.matchers.cache import EmbeddingCache
from lookalike.model import LookalikeModel, read_model_file
from lookalike.outputs import check_not_an_image_name

# A validation split below these sizes gives rank-1 figures that cannot tell a gain from chance: train warns, and
# records the warning in the model (training.validation_warning). README, "The user's path".
MIN_VAL_PEOPLE = 10
MIN_VAL_PROBES = 100
MAX_PROBE_SHARE = 0.5  # of the validation probes, held by one person


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


def check_model_path(model: str | Path, data: str | Path) -> None:
    """Refuse, before any work, a ``--model`` path whose writing would destroy or pollute something: an image file's
    name, a path inside the ``--data`` folder, or an existing file that is not a lookalike model (by its content, the
    model loader's format check; an existing model may be overwritten)."""
    example = "model.lkm"
    check_not_an_image_name(model, "--model", "train writes its model", example)
    model, data = Path(model), Path(data)
    if data.is_dir() and Path(os.path.realpath(model)).is_relative_to(os.path.realpath(data)):
        raise ValueError(f"--model {model}: is inside the training data folder {data} (the next load would take the "
                         f"model for data); give a path outside it, such as {example}")
    if model.is_file():
        try:
            read_model_file(model, arrays=False)
        except ValueError:
            raise ValueError(f"--model {model}: exists and is not a lookalike model file; train overwrites only a "
                             f"model: give another name, such as {example}") from None


def smallest_trainable(val_fraction: float, limit: int = 1000) -> int | None:
    """The fewest people, each with 2+ usable photos, whose seeded split ``rerank_problem`` accepts at ``val_fraction``
    (the split and the rule themselves, applied to made-up names); None above ``limit``."""
    for n in range(2, limit + 1):
        names = [f"p{i}" for i in range(n) for _ in range(2)]
        protocol = make_protocol(FaceTable(names, names), test_fraction=0.0, val_fraction=val_fraction, name="min",
                                 require_test=False)
        if rerank_problem(protocol.table.identities, protocol.table.roles) is None:
            return n
    return None


def check_trainable(identities, roles, val_fraction: float = 0.3, usable: str = "") -> None:
    """A one-line error when the people are too few to train and tune a model (see ``rerank_problem``), saying the
    smallest dataset that trains; ``usable``: how many photos were usable, and why the others were not."""
    problem = rerank_problem(identities, roles)
    if problem:
        n = smallest_trainable(val_fraction)
        val = round(n * val_fraction) if n else 0
        need = (f"train needs at least {n} people with 2+ usable photos each ({n - val} to train on, {val} to "
                f"validate at --val-fraction {val_fraction:g})" if n else "")
        raise ValueError("; ".join(x for x in (f"too few people to train a model: {problem}", usable, need) if x))


def usable_photos(status: np.ndarray) -> str:
    """``K of N photos had a usable face (reason count, ...)``: what embedding kept."""
    bad = Counter(s for s in np.asarray(status).astype(str).tolist() if s != "ok")
    reasons = f" ({', '.join(f'{k} {v}' for k, v in sorted(bad.items()))})" if bad else ""
    return f"{len(status) - sum(bad.values())} of {len(status)} photos had a usable face{reasons}"


def validation_warning(val_probes: FaceSet, val_gallery: FaceSet) -> str | None:
    """Why the validation split is too small for its rank-1 figures to mean anything (:data:`MIN_VAL_PEOPLE`,
    :data:`MIN_VAL_PROBES`, :data:`MAX_PROBE_SHARE`), or None."""
    probes = Counter(val_probes.identities.tolist())  # FaceSet holds its identities as an array
    people = len(probes.keys() | set(val_gallery.identities.tolist()))
    n = len(val_probes)
    top = max(probes.values(), default=0)
    small = [f"{people} people" if people < MIN_VAL_PEOPLE else "", f"{n} probes" if n < MIN_VAL_PROBES else "",
             f"{top} of its {n} probes one person's" if n and top > MAX_PROBE_SHARE * n else ""]
    small = [x for x in small if x]
    if not small:
        return None
    return (f"the validation split is too small to judge the model ({', '.join(small)}; wanted: {MIN_VAL_PEOPLE}+ "
            f"people, {MIN_VAL_PROBES}+ probes, none holding more than {MAX_PROBE_SHARE:.0%} of them): its rank-1 "
            "figures cannot tell a gain from chance, and the re-ranking was chosen on them, so the model may do worse "
            "than no model on new people; train on more people")


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
                degrade: str = "bicubic", cnn_fallback: bool = CNN_FALLBACK,
                on_names: Callable[[list[str]], None] | None = None) -> tuple[LookalikeModel, dict]:
    """Embed the dataset, fit and tune a model on it; returns (model, a summary of the data and the run: the
    model's ``training_``; ``left_out``, the (path, identity, reason, message) of every image not trained on; ``names``,
    the :func:`~lookalike.data.names.name_warnings` of the people's names). ``on_names``: called with those warnings
    as soon as the data is read, before any training (which may then fail: too few usable photos).

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
    names = name_warnings(table.identities.tolist())
    if on_names is not None:
        on_names(names)
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
        check_trainable(protocol.table.identities, protocol.table.roles, val_fraction)
        features = embed_protocol(protocol, matcher, store, aligner, workers, progress)
    finally:
        store.close()
    ok = features.embeddings.ok
    status = features.embeddings.status
    skips = ("; --central-fraction 0 skips every photo where no face is detected" if central_fraction == 0
             and "no_face" in status.tolist() else "")
    check_trainable(protocol.table.identities[ok], protocol.table.roles[ok], val_fraction,
                    usable_photos(status) + skips)
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
                            "total_s": round(time.perf_counter() - t0, 1),
                            "validation_warning": validation_warning(val_probes, val_gallery)})
    t, e = protocol.table, features.embeddings
    left_out = screened.left_out() + [(str(t.paths[i]), str(t.identities[i]), str(e.status[i]),
                                       e.messages.get(i, "")) for i in np.flatnonzero(~e.ok)]
    return model, {**model.training_, "left_out": left_out, "names": names}
