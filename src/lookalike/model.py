"""A trained lookalike model: the tuned re-ranker plus everything needed to use it on new photos.

:class:`LookalikeModel` holds the fitted disambiguator, the selection scheme, the fused-score normaliser and
weight chosen on validation, open-set thresholds on the final (fused) score calibrated from non-mated
validation searches, and the matcher and face preprocessing it was trained for. It is saved as one file
without pickle (``.lkm``: a NumPy ``.npz`` holding a JSON description and the learned arrays).
"""

from __future__ import annotations

import json
import re
import time
import zipfile
import zlib
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from lookalike.checks import check_fpir, check_int, check_range
from lookalike.data.images import DEGRADE_KINDS, check_degrade, check_lowres
from lookalike.data.protocol import side_lowres
from lookalike.disambiguators.base import Disambiguator
from lookalike.faces import FaceSet
from lookalike.io import atomic_write
from lookalike.matchers import DEFAULT_MATCHER, flipped_name
from lookalike.matchers.align import FaceAligner
from lookalike.metrics import RankedLists, calibrated_threshold, threshold_at_fpir
from lookalike.rerank import NORMS, all_selections, default_disambiguators
from lookalike.rerank.batch import BATCH_SIZES, BatchReranker, BatchSetting
from lookalike.rerank.fusion import WeightedFusion, make_normaliser
from lookalike.rerank.lookalike import DEFAULT_WEIGHTS, DisambiguatorPool, LookalikeReranker, rerank_faces
from lookalike.rerank.selection import Selection, selection_from_dict
from lookalike.rerank.tuning import LabelledLists, nonmated_lists

FORMAT, FORMAT_VERSION = "lookalike-model", 1
FPIRS = (0.001, 0.01, 0.1)
BATCH_RULE = ("batch re-ranking kept only if its validation rank-1 (all val probes re-ranked together) is above the "
              f"per-photo model's; its minimum batch is the smallest of {', '.join(map(str, BATCH_SIZES))} val probes "
              "whose random batches still beat it (else all val probes)")


def preprocessing(matcher: str, aligner: FaceAligner, lowres: int | None, lowres_apply: str = "both",
                  degrade: str = "bicubic") -> dict[str, str]:
    """What must match between a model and the faces it re-ranks: the matcher (cache name), the aligner's chip
    geometry (:attr:`FaceAligner.geometry`) and the probes' and gallery's preprocessing keys."""
    from lookalike.embed import preprocess_key

    return {"matcher": matcher, "aligner": aligner.geometry,
            "probes": preprocess_key(side_lowres(lowres, lowres_apply, "probes"), degrade),
            "gallery": preprocess_key(side_lowres(lowres, lowres_apply, "gallery"), degrade)}


def _differences(theirs: dict[str, str], mine: dict[str, str]) -> str:
    """``key theirs (model: mine)`` for every key of ``theirs`` that differs (:func:`as_option`); empty when none
    does."""
    return ", ".join(f"{k} {as_option(k, theirs[k])} (model: {as_option(k, mine[k])})" for k in theirs
                     if theirs[k] != mine[k])


def as_option(key: str, value: str) -> str:
    """A setting of :func:`preprocessing` as the command line gives it: a matcher's cache name as ``--matcher NAME``,
    a preprocessing key as ``--lowres PX`` (with ``--degrade KIND``) or ``full resolution``; the aligner's chip
    geometry, which no option sets, as it is."""
    from lookalike.matchers import MATCHERS, matcher_name

    if key == "matcher":
        short = [m for m in MATCHERS if matcher_name(m) == value]  # dlib and its torch port share their vectors
        return f"--matcher {' or '.join(short)}" if short else repr(value)
    if key in ("preprocessing", "probes", "gallery"):
        if value == "full":
            return "full resolution"
        lowres = re.fullmatch(r"lowres(\d+)-chip\d+(?:-(\w+))?", value)
        if lowres:
            return f"--lowres {lowres[1]}" + (f" --degrade {lowres[2]}" if lowres[2] else "")
    return repr(value)


class LookalikeModel:
    """Lookalike re-ranking for one matcher and face preprocessing, tuned and calibrated on validation.

    Parameters: ``matcher`` (short name, ``torch`` or ``dlib``), ``lowres`` (face width in pixels the faces
    are degraded to, None for full resolution) and ``lowres_apply`` (``both``: probes and gallery, as
    TinyFace; ``probes`` or ``gallery``: that side only), ``degrade`` (how: ``bicubic`` or ``realistic``, see
    :func:`lookalike.data.images.degrade`), ``aligner``; the grid (``disambiguators``, ``selections``,
    ``normalisers``, ``weights``), list ``depth``, the ``fpirs`` to calibrate thresholds at, and ``seed``.
    Learned state (set by :meth:`fit` or :meth:`load`): ``reranker_``, ``thresholds_``, ``training_``, and
    ``batch_``: the re-ranker for many photos searched together (:mod:`lookalike.rerank.batch`), kept only when it
    beats the per-photo lists on validation (None otherwise).
    """

    def __init__(self, matcher: str | None = None, lowres: int | None = None, aligner: FaceAligner | None = None,
                 disambiguators: Sequence[Disambiguator] | None = None, selections: Sequence[Selection] | None = None,
                 normalisers: Sequence[str] = NORMS, weights: Sequence[float] = DEFAULT_WEIGHTS, depth: int = 100,
                 fpirs: Sequence[float] = FPIRS, seed: int = 0, pool: DisambiguatorPool | None = None,
                 lowres_apply: str = "both", degrade: str = "bicubic") -> None:
        side_lowres(lowres, lowres_apply, "probes")  # checks lowres_apply
        self.matcher, self.lowres, self.aligner = matcher or DEFAULT_MATCHER, lowres, aligner or FaceAligner()
        self.lowres_apply, self.degrade = lowres_apply, check_degrade(degrade)
        self.disambiguators = list(disambiguators) if disambiguators else default_disambiguators(seed)
        self.selections = list(selections) if selections else all_selections()
        self.normalisers, self.weights, self.depth = list(normalisers), list(weights), depth
        self.fpirs, self.seed, self.pool = tuple(fpirs), seed, pool
        self.reranker_: LookalikeReranker | None = None
        self.thresholds_: dict[float, float] = {}
        self.training_: dict = {}
        self.batch_: BatchReranker | None = None
        self.batch_tuning_: dict = {}
        self.matcher_name_ = ""

    # ------------------------------------------------------------------------------------------------
    # training

    def fit(self, train: FaceSet, val_probes: FaceSet, val_gallery: FaceSet,
            val_gallery_as_probes: FaceSet | None = None) -> LookalikeModel:
        """Fit on ``train`` faces; tune on val probes searched against the val gallery (distractors included);
        calibrate thresholds on non-mated val searches (every val probe and gallery image searched against
        the val gallery without its own identity; the gallery images prepared as probes are,
        ``val_gallery_as_probes``, when only one side is degraded)."""
        from lookalike.matchers import matcher_name

        self._check_params()
        t0 = time.perf_counter()
        val = LabelledLists.search(val_probes, val_gallery, self.depth)
        self.reranker_ = LookalikeReranker(self.disambiguators, self.selections, self.normalisers, self.weights,
                                           pool=self.pool, name="lookalike-best", seed=self.seed).fit(train, val)
        self._fit_batch(train, val)
        queries = val_gallery if val_gallery_as_probes is None else val_gallery_as_probes
        top = self._nonmated_top(FaceSet.concat(val_probes, queries), val_gallery)
        self.thresholds_ = {f: threshold_at_fpir(top, f) for f in self.fpirs}
        self.matcher_name_ = matcher_name(self.matcher)
        self.training_ = {"n_train_images": len(train), "n_train_people": int(len(np.unique(train.identities))),
                          "n_val_probes": len(val.probes), "n_val_gallery": len(val_gallery),
                          "n_nonmated_searches": len(top), "val_base_rank1": self.reranker_.stats["val_base_rank1"],
                          "val_rank1": self.reranker_.stats["val_rank1"], "seed": self.seed,
                          "fit_s": round(time.perf_counter() - t0, 2)}
        return self

    def _check_params(self) -> None:
        """Every parameter, before any work (an unknown matcher had been refused at the end of fit, after seconds of
        it; ``lowres=-5`` or a weight of 2.0 had fitted without complaint): a one-line ValueError naming it."""
        from lookalike.matchers import MATCHERS

        if self.matcher not in MATCHERS:
            raise ValueError(f"unknown matcher {self.matcher!r}; choose one of {MATCHERS}")
        check_lowres(self.lowres)
        if not isinstance(self.aligner, FaceAligner):
            raise TypeError(f"aligner must be a FaceAligner, got {type(self.aligner).__name__}")
        if not self.fpirs:
            raise ValueError("fpirs must hold at least one FPIR to calibrate a threshold at")
        for f in self.fpirs:
            check_fpir(f)
        check_int(self.depth, "depth")
        check_int(self.seed, "seed", least=0)
        for name, values in (("weights", self.weights), ("normalisers", self.normalisers)):
            if not values:
                raise ValueError(f"{name} must hold at least one value")
        for w in self.weights:
            check_range(w, "weights", 0, 1)
        for n in self.normalisers:
            make_normaliser(n)

    def _fit_batch(self, train: FaceSet, val: LabelledLists) -> None:
        """Tune batch re-ranking on every val probe at once; keep it only if its val rank-1 is above the per-photo
        model's (the rule, recorded in ``batch_tuning_``)."""
        self.batch_, self.batch_tuning_ = None, {"rule": BATCH_RULE}
        if self.disambiguator_.input != "embedding":
            self.batch_tuning_["skipped"] = "an image-level disambiguator has no projection to re-rank a batch in"
            return
        batch = BatchReranker(self.disambiguator_).fit(train, val)
        kept = batch.stats["val_rank1"] > self.reranker_.stats["val_rank1"]
        if kept:
            batch.choose_min_batch(val, self.reranker_.stats["val_rank1"], seed=self.seed)
        self.batch_ = batch if kept else None
        self.batch_tuning_.update({**batch.stats, "per_photo_val_rank1": self.reranker_.stats["val_rank1"],
                                   "kept": kept})

    def _nonmated_top(self, probes: FaceSet, gallery: FaceSet) -> np.ndarray:
        lists = nonmated_lists(probes, gallery, self.depth)
        if lists.depth == 0:
            raise ValueError("no non-mated validation searches: the validation split needs two or more people")
        return rerank_faces(self.reranker_, probes, gallery, lists).scores[:, 0]

    # ------------------------------------------------------------------------------------------------
    # use

    @property
    def disambiguator_(self) -> Disambiguator:
        if self.reranker_ is None or self.reranker_.disambiguator_ is None:
            raise RuntimeError("the model is not trained: fit or load it first")
        return self.reranker_.disambiguator_

    def rerank(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray,
               features: tuple[np.ndarray, np.ndarray] | None = None) -> RankedLists:
        """Re-ranked lists whose scores are the final (fused) scores; see :class:`~lookalike.rerank.Reranker`."""
        if self.reranker_ is None:
            raise RuntimeError("the model is not trained: fit or load it first")
        return self.reranker_.rerank(probes, lists, candidates, features)

    def batch_note(self, n_faces: int) -> str | None:
        """Why ``n_faces`` faces would not be re-ranked together (None when they would be): the model has no batch
        setting, or they are fewer than its minimum batch."""
        if self.batch_ is None:
            return ("the model has no batch setting (on its validation split re-ranking the probes together did not "
                    "beat searching them one by one): every face is searched alone")
        if n_faces < self.batch_.min_batch_:
            return (f"{n_faces} faces are fewer than the model's minimum batch of {self.batch_.min_batch_} (on its "
                    "validation split smaller batches did not beat searching face by face): every face is searched "
                    "alone")
        return None

    def rerank_batch(self, probes: np.ndarray, lists: RankedLists, candidates: np.ndarray) -> RankedLists:
        """Every probe's list re-ordered together (:class:`~lookalike.rerank.batch.BatchReranker`; scores: negative
        final distances); a ValueError when the model has no batch setting."""
        if self.batch_ is None:
            raise ValueError("this model has no batch setting: on its validation split re-ranking the probes together "
                             "did not beat searching them one by one")
        return self.batch_.rerank(probes, lists, candidates)

    @property
    def reach(self) -> int:
        """How many of the first candidates the model can move (see :meth:`Selection.reach`)."""
        if self.reranker_ is None or self.reranker_.selection_ is None:
            raise RuntimeError("the model is not trained: fit or load it first")
        return self.reranker_.selection_.reach(self.depth)

    def threshold(self, fpir: float) -> float:
        """The final-score threshold calibrated at ``fpir`` (one of the calibrated FPIRs)."""
        return calibrated_threshold(self.thresholds_, check_fpir(fpir))

    @property
    def gallery_lowres(self) -> int | None:
        """The face width gallery faces are degraded to (None: full resolution)."""
        return side_lowres(self.lowres, self.lowres_apply, "gallery")

    @property
    def probe_lowres(self) -> int | None:
        """The face width probe faces are degraded to (None: full resolution)."""
        return side_lowres(self.lowres, self.lowres_apply, "probes")

    @property
    def gallery_preprocess(self) -> str:
        """The gallery's preprocessing key (see :func:`preprocessing`)."""
        return self.preprocessing["gallery"]

    @property
    def preprocessing(self) -> dict[str, str]:
        """How the model's faces are prepared (see :func:`preprocessing`)."""
        return preprocessing(self.matcher_name_, self.aligner, self.lowres, self.lowres_apply, self.degrade)

    def check_compatible(self, matcher: str, aligner: FaceAligner, preprocess: str, what: str = "the gallery") -> None:
        """Raise a clear ValueError when a gallery embedded with another matcher, aligner geometry or preprocessing
        is used (``matcher``: its cache name; ``preprocess``: its :func:`~lookalike.embed.preprocess_key`). The
        aligner's fallback for undetected faces (``central_fraction``) is the gallery's own choice."""
        m = self.preprocessing
        mine = {"matcher": m["matcher"], "aligner": m["aligner"], "preprocessing": m["gallery"]}
        diff = _differences({"matcher": matcher, "aligner": aligner.geometry, "preprocessing": preprocess}, mine)
        if diff:
            raise ValueError(f"{what} was built with another {diff}: re-enrol it with the model's settings or train "
                             "a model for it")

    def check_run(self, matcher: str, aligner: FaceAligner, lowres: int | None, lowres_apply: str, degrade: str,
                  what: str = "the model") -> None:
        """Raise a clear ValueError when a run prepares probes or gallery faces otherwise than the model was
        trained for (the aligner's ``central_fraction`` is the dataset's: it may differ)."""
        diff = _differences(preprocessing(matcher, aligner, lowres, lowres_apply, degrade), self.preprocessing)
        if diff:
            raise ValueError(f"{what} was trained for other faces than this run's: {diff}; run with the model's "
                             "settings or train a model for these")

    # ------------------------------------------------------------------------------------------------
    # persistence

    def describe(self) -> dict:
        r = self.reranker_
        if r is None:
            raise RuntimeError("the model is not trained: fit or load it first")
        from lookalike.versions import versions

        d_meta, _ = r.disambiguator_.to_state()
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                          time.gmtime()),
                "matcher": {"kind": self.matcher, "name": self.matcher_name_},
                "aligner": {"name": self.aligner.name, **self.aligner.settings()},
                "preprocess": {"lowres": self.lowres, "lowres_apply": self.lowres_apply, "degrade": self.degrade,
                               "gallery_key": self.gallery_preprocess},
                "depth": self.depth, "disambiguator": d_meta, "selection": r.selection_.to_dict(),
                "fusion": r.fusion_.to_dict(),
                "batch": None if self.batch_ is None else {**self.batch_.setting_.to_dict(),
                                                           "min_batch": self.batch_.min_batch_},
                "batch_tuning": self.batch_tuning_, "thresholds": {f"{f:g}": t for f, t in self.thresholds_.items()},
                "training": self.training_, "tuning": {k: v for k, v in r.stats.items()
                                                       if k not in ("disambiguator_stats",)},
                "versions": versions()}

    def fingerprint(self) -> str:
        """A short hash of what the model's final scores depend on: its disambiguator (class, parameters, train set,
        learned arrays), selection, fusion, depth and preprocessing (e.g. to key a calibration computed with it)."""
        import hashlib

        r = self.reranker_
        if r is None:
            raise RuntimeError("the model is not trained: fit or load it first")
        d_meta, state = r.disambiguator_.to_state()
        h = hashlib.sha1(json.dumps([d_meta["class"], d_meta["params"], d_meta["fitted_on"], r.selection_.to_dict(),
                                     r.fusion_.to_dict(), self.depth, self.preprocessing], default=str,
                                    sort_keys=True).encode())
        for k in sorted(state):
            h.update(np.ascontiguousarray(state[k]).tobytes())
        return h.hexdigest()[:16]

    def describe_short(self) -> dict:
        """What a result records about the model that produced it."""
        r = self.reranker_
        return {"matcher": self.matcher_name_, "lowres": self.lowres, "lowres_apply": self.lowres_apply,
                "degrade": self.degrade,
                "disambiguator": type(self.disambiguator_).__name__, "selection": repr(r.selection_),
                "normaliser": r.fusion_.normaliser, "weight": r.fusion_.weight,
                "validation_warning": self.training_.get("validation_warning")}

    def save(self, path: str | Path) -> None:
        """Write the model as one ``.lkm`` file (atomically; no pickle)."""
        meta = self.describe()
        _, state = self.disambiguator_.to_state()
        arrays = {f"disambiguator.{k}": np.asarray(v) for k, v in state.items()}
        with atomic_write(path, "wb") as f:
            np.savez(f, __model__=np.asarray(json.dumps(meta, default=float)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> LookalikeModel:
        """Read a ``.lkm`` file; a clear ValueError for anything that is not a model this version can use."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        meta, arrays = read_model_file(path)
        try:
            return cls._from_file_contents(path, meta, arrays)
        except (KeyError, TypeError, AttributeError, IndexError, ValueError) as e:
            if isinstance(e, ValueError) and str(e).startswith(str(path)):
                raise
            raise ValueError(f"{path}: a damaged or edited lookalike model file ({type(e).__name__}: {e}); use the "
                             "file `lookalike train` wrote, or train the model again") from e

    @classmethod
    def _from_file_contents(cls, path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> LookalikeModel:
        """The model a file's JSON description and disambiguator arrays hold (:meth:`load`)."""
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{path}: model format {meta['format_version']} is newer than this lookalike reads "
                             f"({FORMAT_VERSION}); upgrade lookalike")
        al = meta["aligner"]
        pre = meta["preprocess"]
        degrade = pre.get("degrade", "bicubic")  # files written before the choice existed
        if degrade not in DEGRADE_KINDS:
            raise ValueError(f"{path}: unknown degradation {degrade!r} (this lookalike knows "
                             f"{', '.join(DEGRADE_KINDS)}); upgrade lookalike")
        model = cls(matcher=meta["matcher"]["kind"], lowres=pre["lowres"], lowres_apply=pre["lowres_apply"],
                    degrade=degrade, depth=meta["depth"],
                    aligner=FaceAligner.from_settings(al))
        model.matcher_name_ = meta["matcher"]["name"]
        disambiguator = Disambiguator.from_state(meta["disambiguator"], arrays)
        selection, fusion = selection_from_dict(meta["selection"]), WeightedFusion.from_dict(meta["fusion"])
        r = LookalikeReranker(disambiguator, [selection], [fusion.normaliser], [fusion.weight], name="lookalike-best")
        r.disambiguator_, r.selection_, r.fusion_ = disambiguator, selection, fusion
        r.stats = dict(meta.get("tuning", {}))
        model.reranker_ = r
        model.thresholds_ = _thresholds(meta["thresholds"])
        model.fpirs = tuple(model.thresholds_)
        model.training_ = meta.get("training", {})
        model.batch_tuning_ = meta.get("batch_tuning", {})
        if meta.get("batch"):  # files written before batch re-ranking existed have none
            model.batch_ = BatchReranker(disambiguator)
            model.batch_.setting_ = BatchSetting.from_dict(meta["batch"])
            model.batch_.min_batch_ = int(meta["batch"].get("min_batch", 1))  # files without a guard: none
        model.meta_ = meta
        return model


def read_model_file(path: str | Path, arrays: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """A ``.lkm`` file's JSON description and (with ``arrays``) its disambiguator arrays, after the format check: a
    one-line ValueError for a file that is not a lookalike model (any other file: a photo, a text) or a damaged one."""
    path = Path(path)
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a plain .npy array
            raise ValueError(f"{path}: not a lookalike model file")
        with z:
            if "__model__" not in z.files:
                raise ValueError(f"{path}: not a lookalike model file")
            meta = json.loads(str(z["__model__"]))
            loaded = {k.split(".", 1)[1]: z[k] for k in z.files if arrays and k.startswith("disambiguator.")}
    except (OSError, EOFError, ValueError, json.JSONDecodeError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, ValueError) and str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a lookalike model file, or a damaged one ({type(e).__name__})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a lookalike model file")
    return meta, loaded


def _thresholds(saved: object) -> dict[float, float]:
    """A model file's calibrated thresholds ({FPIR: final-score threshold}), checked: at least one, each FPIR strictly
    between 0 and 1 and each threshold finite (a NaN threshold had decided nothing; none, every identify failed)."""
    if not isinstance(saved, dict) or not saved:
        raise ValueError("the model has no calibrated thresholds")
    out = {check_fpir(float(f)): float(t) for f, t in saved.items()}
    if not np.isfinite(list(out.values())).all():
        raise ValueError(f"the model's thresholds must be finite numbers, got {saved}")
    return out


# ----------------------------------------------------------------------------------------------------
# the default models shipped with the package

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT = "default"
NONE = "none"
TRAIN_HINT = "train one for it with `lookalike train --data DATA [--lowres PX] --model M.lkm` and pass --model M.lkm"


def default_model_paths() -> list[Path]:
    """The default models shipped with lookalike (``lookalike/models/default-*.lkm``)."""
    return sorted(MODELS_DIR.glob("default-*.lkm"))


def describe_default(model: LookalikeModel, path: Path) -> str:
    """``default-lowres20.lkm (dlib-resnet-v1, 20 px bicubic faces, probes and gallery)``."""
    if model.lowres is None:
        return f"{path.name} ({model.matcher_name_}, full-resolution faces)"
    where = {"both": "probes and gallery", "probes": "probes only", "gallery": "gallery only"}[model.lowres_apply]
    return f"{path.name} ({model.matcher_name_}, {model.lowres} px {model.degrade} faces, {where})"


def default_model(matcher: str | None = None, aligner: FaceAligner | None = None,
                  preprocess: str | None = None, *, probes: str | None = None,
                  lowres: int | None = None) -> LookalikeModel:
    """The shipped default model for a gallery of this matcher (cache name), aligner and preprocessing key
    (:func:`~lookalike.embed.preprocess_key`), and for probes of the preprocessing key ``probes`` if given (else the
    one that prepares probes as the gallery, where several fit); with no gallery (``matcher`` None), the one for a
    new gallery of ``lowres`` px faces, probes alike (None: full resolution). A clear one-line ValueError naming
    the shipped models otherwise."""
    models = [(p, LookalikeModel.load(p)) for p in default_model_paths()]
    shipped = "; ".join(describe_default(m, p) for p, m in models) or "none installed"
    if matcher is None:
        for _, m in models:
            if m.gallery_lowres == lowres and m.probe_lowres == lowres:
                return m
        faces = "full-resolution faces" if lowres is None else f"{lowres} px faces"
        raise ValueError(f"no default model for a new gallery of {faces} (default models: {shipped}); {TRAIN_HINT}")
    want = {"matcher": matcher, "aligner": (aligner or FaceAligner()).geometry, "gallery": preprocess}
    if probes is not None:
        want["probes"] = probes
    fits = [m for _, m in models if not _differences(want, m.preprocessing)]
    if fits:  # the one that prepares probes as the gallery, where several fit
        return min(fits, key=lambda m: m.probe_lowres != m.gallery_lowres)
    flipped = any(not _differences({**want, "matcher": flipped_name(matcher)}, m.preprocessing) for _, m in models)
    hint = ("; the gallery's faces were embedded without flip averaging (an earlier default): enrol its photos into "
            "a new gallery with --model default, or " if flipped else "; ") + TRAIN_HINT
    probe_faces = "" if probes is None else f", probes {probes!r}"
    raise ValueError(f"no default model for a gallery of {preprocess!r} faces ({matcher}, aligner {want['aligner']}"
                     f"{probe_faces}); default models: {shipped}{hint}")


FACE_SIZES = ("small", "sharp")  # the identifier's models for faces of other sizes than its model's


def fits_face_size(model: LookalikeModel, kind: str) -> bool:
    """Whether ``model`` is one for faces of this ``kind``: ``small`` (low-resolution probes against full-resolution
    gallery faces, ``--lowres-apply probes``) or ``sharp`` (sharp probes against low-resolution ones, ``gallery``)."""
    if kind == "small":
        return model.probe_lowres is not None and model.gallery_lowres is None
    return model.probe_lowres is None and model.gallery_lowres is not None


def default_face_size_model(kind: str, matcher: str, aligner: FaceAligner, preprocess: str) -> LookalikeModel | None:
    """The shipped model for ``kind`` (:data:`FACE_SIZES`) probe faces against a gallery of this matcher, aligner
    and preprocessing key, the companion of the default model for that gallery
    (:class:`~lookalike.identify.Identifier`); None when none fits."""
    want = {"matcher": matcher, "aligner": aligner.geometry, "gallery": preprocess}
    for p in default_model_paths():
        m = LookalikeModel.load(p)
        if fits_face_size(m, kind) and not _differences(want, m.preprocessing):
            return m
    return None


def load_face_size_model(kind: str, spec: str | Path | None, gallery, model_spec: str | Path | None
                         ) -> LookalikeModel | None:
    """The ``kind`` face model ``spec`` names for ``gallery``: a model file, ``default`` (the shipped one that fits
    the gallery, or None), ``none``; unset (None): ``default`` when the model is ``default``, else none."""
    spec = str(spec) if spec is not None else (DEFAULT if str(model_spec) == DEFAULT else NONE)
    if spec == NONE:
        return None
    if spec == DEFAULT:
        return default_face_size_model(kind, gallery.matcher_name, gallery.aligner, gallery.preprocess)
    return LookalikeModel.load(spec)


def load_face_size_model_for_db(kind: str, spec: str | Path | None, db: str, model_spec: str | Path | None,
                                model: LookalikeModel | None) -> LookalikeModel | None:
    """:func:`load_face_size_model` for the gallery database ``db``; a new gallery is described by ``model`` (the
    gallery a service creates for it), or has no such model without one."""
    from types import SimpleNamespace

    from lookalike.embed import preprocess_key

    with _existing_gallery(db) as gallery:
        if gallery is not None:
            return load_face_size_model(kind, spec, gallery, model_spec)
    if model is None:
        return load_face_size_model(kind, spec, None, model_spec) if spec not in (None, DEFAULT) else None
    new = SimpleNamespace(matcher_name=model.matcher_name_, aligner=model.aligner,
                          preprocess=preprocess_key(model.gallery_lowres, model.degrade))
    return load_face_size_model(kind, spec, new, model_spec)


@contextmanager
def _existing_gallery(db: str):
    """The gallery database ``db`` opened (closed after), or None when it holds no gallery yet."""
    from lookalike.gallery import Gallery, NoGalleryError

    try:
        gallery = Gallery.open(db)
    except NoGalleryError:
        yield None
        return
    with gallery:
        yield gallery


def load_model(spec: str | Path, gallery=None, lowres: int | None = None) -> LookalikeModel:
    """A model file, or ``default``: the shipped default model that fits ``gallery`` (a
    :class:`~lookalike.gallery.Gallery`; without one, the default for a new gallery of ``lowres`` px faces,
    None: full resolution)."""
    if str(spec) != DEFAULT:
        return LookalikeModel.load(spec)
    if gallery is None:
        return default_model(lowres=lowres)
    return default_model(gallery.matcher_name, gallery.aligner, gallery.preprocess)


def check_model_fits_db(model: LookalikeModel, db: str) -> None:
    """identify's refusal (:meth:`LookalikeModel.check_compatible`, with its remedy) of a model for the existing
    gallery ``db`` when the gallery's faces are not the model's; nothing for a new gallery. For the commands that open
    a gallery with a model (enroll, serve)."""
    with _existing_gallery(db) as gallery:
        if gallery is not None:
            model.check_compatible(gallery.matcher_name, gallery.aligner, gallery.preprocess,
                                   what=f"the gallery {gallery.store.url}")


def load_model_for_db(spec: str | Path, db: str, lowres: int | None = None) -> LookalikeModel:
    """:func:`load_model` for the gallery database ``db`` (a new gallery: the default for ``lowres`` px faces)."""
    if str(spec) != DEFAULT:
        return LookalikeModel.load(spec)
    with _existing_gallery(db) as gallery:
        return load_model(spec, gallery, lowres)
