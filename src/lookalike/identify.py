"""``identify``: every face of a new photo searched against a gallery, re-ranked by a lookalike model.

For each face (each with its box; a photo where no face is detected is taken as a pre-cropped face and
flagged so) the result is a candidate list per subject — subject, matched image, base score, final (fused)
score, base rank -> final rank, lookalike groups among the top candidates, the ranks it ties with
(:mod:`lookalike.ties`) — and a decision at a chosen FPIR:
the top subject, or "not enrolled". The JSON form (:data:`SCHEMA_VERSION`) is documented in the README.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike import __version__
from lookalike.calibration import (
    MAX_NONMATED,
    MIN_SEARCHES,
    ModelTop,
    NonMatedSample,
    current,
    model_current,
    model_summary,
    summary,
)
from lookalike.checks import check_fpir, check_int, check_paths
from lookalike.data.images import ImageError, degrade, encode_png, load_image
from lookalike.embed import face_chip, preprocess_key
from lookalike.gallery import Gallery
from lookalike.matchers import get_matcher
from lookalike.matchers.align import Alignment
from lookalike.matchers.base import l2_normalize
from lookalike.metrics import RankedLists, calibrated_threshold
from lookalike.model import LookalikeModel, fits_face_size, load_model
from lookalike.ties import settle_ties

SCHEMA_VERSION = 1
TEMPLATE_NOTE = ("not decided for a template: the thresholds are calibrated on single photos, and templates of many "
                 "photos pass them far more often than the FPIR asked for; compare the candidates' faces")
UNCALIBRATED_NOTE = ("no threshold: no gallery face has another subject to be compared with, so none can be set at "
                     "this FPIR; enrol more subjects, or search with a model (--model), whose thresholds come from its "
                     "validation people")
NO_FACE = ("no face found: none detected, and the centre of the photo is blank (or the gallery aligns no undetected "
           "faces: --central-fraction 0); a face under about 20 px across in a large photo: try --every-scale")
MEMO_SIZE = 2_000_000  # gallery faces whose disambiguator projection and cohort term identify keeps (~620 B each)
# The smallest face (px across) searched as a full-resolution one without a note: in the resolution sweep (README) 48 px
# is the smallest size within 1.2 rank-1 points of full resolution on LFW and PubFig (32 px: 6.7 and 8.7 below).
SMALL_FACE_PX = 48


def resolution_note(face_px: int, lowres: int | None) -> str | None:
    """Why a probe face of ``face_px`` pixels across may be searched less well than it could be, given the ``lowres``
    its chip is degraded to (None: searched at full resolution, as the model's or the gallery's probes are)."""
    if lowres is None:
        if face_px >= SMALL_FACE_PX:
            return None
        return (f"{face_px} px face searched as a full-resolution one: below {SMALL_FACE_PX} px rank-1 falls "
                "(resolution sweep, LFW and PubFig: 85-88% at 32 px, 51-59% at 20 px); a model trained with --lowres "
                f"{max(face_px, 4)} --lowres-apply probes fits such faces")
    if face_px >= 2 * lowres:
        return (f"{face_px} px face degraded to {lowres} px, as the model's probes are; a model trained with --lowres "
                f"{lowres} --lowres-apply gallery keeps sharp probes sharp (+6 to +16 rank-1 on LFW and PubFig)")
    if 4 * face_px < 3 * lowres:
        return f"{face_px} px face, smaller than the {lowres} px faces the model was trained on"
    return None


def check_small_face_model(model: LookalikeModel | None, small_faces: LookalikeModel) -> None:
    """A one-line ValueError unless ``small_faces`` is trained for low-resolution probes against full-resolution
    gallery faces (``--lowres PX --lowres-apply probes``) and ``model`` (if any) searches probes at full
    resolution with the same matcher."""
    if not fits_face_size(small_faces, "small"):
        raise ValueError("a small-face model is trained for low-resolution probes against a sharp gallery (lookalike "
                         "train --lowres PX --lowres-apply probes); this one is not")
    if model is not None and (model.probe_lowres is not None or model.matcher_name_ != small_faces.matcher_name_):
        raise ValueError("a small-face model takes the small faces of a model that searches probes at full resolution "
                         "with the same matcher; this model does not")


def check_sharp_face_model(model: LookalikeModel | None, sharp_faces: LookalikeModel) -> None:
    """A one-line ValueError unless ``sharp_faces`` is trained for full-resolution probes against low-resolution
    gallery faces (``--lowres PX --lowres-apply gallery``) and ``model`` (if any) degrades probes as its gallery is,
    with the same matcher."""
    if not fits_face_size(sharp_faces, "sharp"):
        raise ValueError("a sharp-face model is trained for sharp probes against a low-resolution gallery (lookalike "
                         "train --lowres PX --lowres-apply gallery); this one is not")
    if model is not None and (model.probe_lowres != model.gallery_lowres
                              or model.matcher_name_ != sharp_faces.matcher_name_):
        raise ValueError("a sharp-face model takes the sharp faces of a model that degrades probes as its gallery "
                         "faces, with the same matcher; this model does not")


def face_width(alignment: Alignment) -> int:
    """A face's width in the photo's pixels: its box's (the detector's, or the pre-cropped face's central square),
    the measure ``--lowres PX`` degrades faces to."""
    left, _, right, _ = alignment.box
    return int(right - left)


@dataclass
class ProbeFace:
    """One face of a probe photo: where it is, how it was found, and its embedding."""

    index: int
    alignment: Alignment
    vector: np.ndarray
    chip: np.ndarray
    route: str = ""  # "small" or "sharp": prepared and searched by the identifier's small- or sharp-face model

    @property
    def face_px(self) -> int:
        return face_width(self.alignment)

    def describe(self) -> dict:
        detection = {"central": "pre-cropped", "cnn": "detected (cnn)"}.get(self.alignment.method, "detected")
        return {"index": self.index, "box": list(self.alignment.box), "face_px": self.face_px,
                "detection": detection, "faces_in_photo": self.alignment.n_faces}


@dataclass
class TemplateFace:
    """The faces of several photos known to show one person, searched as one: their embeddings' normalised mean."""

    vector: np.ndarray
    photos: list[str]

    def describe(self) -> dict:
        return {"index": 0, "box": [], "detection": "template", "faces_in_photo": len(self.photos),
                "template_of": self.photos}


def _positions(ids: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Where each of ``wanted`` stands in the list ``ids`` (one list's distinct image ids)."""
    order = np.argsort(ids, kind="stable")
    return order[np.searchsorted(ids, wanted, sorter=order)]


class Identifier:
    """Searches photos against ``gallery`` and re-ranks with ``model`` (None: the base matcher alone, with
    thresholds from the gallery itself). Holds the matcher and the gallery's calibration between calls.

    Faces of a size the model does not fit can go to a model of their own, searched one photo at a time (batches and
    templates are searched by ``model`` alone), each re-ranked and decided by it with its own calibration on the
    gallery: ``small_faces``, trained for low-resolution probes against this full-resolution gallery (``--lowres PX
    --lowres-apply probes``, same matcher), takes a face at most PX pixels across (degrading it to PX loses
    nothing) from a ``model`` that searches probes at full resolution; ``sharp_faces``, trained for sharp probes
    against this low-resolution gallery (``--lowres PX --lowres-apply gallery``), takes a face at least
    :data:`SMALL_FACE_PX` across (as good as full resolution) from a ``model`` that would degrade it to PX."""

    def __init__(self, gallery: Gallery, model: LookalikeModel | None = None,
                 small_faces: LookalikeModel | None = None, sharp_faces: LookalikeModel | None = None) -> None:
        for name, m in (("model", model), ("small_faces", small_faces), ("sharp_faces", sharp_faces)):
            if m is not None and not isinstance(m, LookalikeModel):
                raise TypeError(f"{name} must be a LookalikeModel or None, got {type(m).__name__} {m!r:.80} "
                                "(lookalike.load_model reads a model file)")
        if model is not None:
            model.check_compatible(gallery.matcher_name, gallery.aligner, gallery.preprocess,
                                   what=f"the gallery {gallery.store.url}")
        self.small: Identifier | None = None
        self.sharp: Identifier | None = None
        if small_faces is not None:
            check_small_face_model(model, small_faces)
            self.small = Identifier(gallery, small_faces)
        if sharp_faces is not None:
            check_sharp_face_model(model, sharp_faces)
            self.sharp = Identifier(gallery, sharp_faces)
        self.gallery, self.model = gallery, model
        if model is not None and hasattr(model.disambiguator_, "memo_size"):
            model.disambiguator_.memo_size = MEMO_SIZE  # gallery faces are prepared once, not once per probe
        self.lowres = model.probe_lowres if model is not None else gallery.lowres  # what probes are degraded to
        self.degrade = model.degrade if model is not None else "bicubic"
        self.aligner = gallery.aligner  # the model's geometry (checked) with the gallery's fallback for crops
        self._matcher = None
        self._calibration: tuple[int, dict] | None = None
        self._sample: NonMatedSample | None = None  # the gallery's calibration sample
        self._model_top: ModelTop | None = None  # the model's final scores on it
        self._fingerprint: str | None = None  # the model's (hashing its arrays costs milliseconds: once)
        self.timing: dict[str, float] = {}
        self.every_scale = False  # look for faces at every upsampling (FaceAligner.align_all): small ones beside large
        self._timing_owner: Identifier = self
        for other in self.routes().values():
            other._timing_owner = self  # one account of the stages, whichever model searched
            other.aligner = self.aligner

    def routes(self) -> dict[str, Identifier]:
        """The identifiers of faces of other sizes: ``small`` and ``sharp`` (see the class)."""
        return {k: v for k, v in (("small", self.small), ("sharp", self.sharp)) if v is not None}

    def route(self, face_px: int) -> str:
        """Which identifier searches a face ``face_px`` pixels across: ``small``, ``sharp`` or "" (this one)."""
        if self.small is not None and face_px <= self.small.lowres:
            return "small"
        if self.sharp is not None and face_px >= SMALL_FACE_PX:
            return "sharp"
        return ""

    # --- faces -----------------------------------------------------------------------------------------
    @property
    def matcher(self):
        if self._matcher is None:
            self._matcher = get_matcher(self.model.matcher if self.model is not None else self.gallery.matcher)
        return self._matcher

    def faces(self, image: np.ndarray, by_size: bool = True) -> list[ProbeFace]:
        """The faces of an (H, W, 3) uint8 image (a ValueError for any other array) in reading order (by the left edge
        of the box, then its top): those :meth:`~lookalike.matchers.align.FaceAligner.align_all` finds (at the first
        upsampling that finds any, at every one with :attr:`every_scale`; where none is detected, the CNN fallback's
        or the centred square's face when the gallery's aligner has that fallback; none otherwise), each aligned,
        degraded as the model's probes are (without a model, as the gallery's faces were) and embedded; with
        ``by_size``, a face another identifier takes (:meth:`route`) is degraded and embedded as that one's probes
        are."""
        t = time.perf_counter()
        # in reading order, left to right (then top down): face 1 of a group photo is its leftmost
        alignments = sorted(self.aligner.align_all(image, self.every_scale), key=lambda a: (a.box[0], a.box[1]))
        routes = [self.route(face_width(a)) if by_size else "" for a in alignments]
        owners = {"": self, **self.routes()}
        chips = [owners[r]._as_probe(self.aligner.chip(image, a)) for a, r in zip(alignments, routes, strict=True)]
        self._tick("detect_align_s", t)
        if not chips:
            return []
        t = time.perf_counter()
        vectors: list[np.ndarray] = [np.empty(0)] * len(chips)
        for name, owner in owners.items():
            rows = [i for i, r in enumerate(routes) if r == name]
            if rows:
                for i, v in zip(rows, owner.matcher.embed(np.stack([chips[i] for i in rows])), strict=True):
                    vectors[i] = v
        self._tick("embed_s", t)
        return [ProbeFace(i, a, v, c, r) for i, (a, v, c, r) in enumerate(zip(alignments, vectors, chips, routes,
                                                                                  strict=True))]

    def _tick(self, key: str, t0: float) -> None:
        timing = self._timing_owner.timing
        timing[key] = timing.get(key, 0.0) + time.perf_counter() - t0

    def prepare_gallery(self, block: int = 4096) -> int:
        """Compute the model's per-face disambiguator features for every gallery face now (a one-off cost, so
        that each probe's re-ranking only looks them up), the other face sizes' models' too; returns the faces
        prepared for the model (0 without one)."""
        for other in self.routes().values():
            other.prepare_gallery(block)
        return prepare_gallery(self.model, self.gallery.vectors_, block)

    # --- calibration from the gallery itself -------------------------------------------------------------
    def calibration(self) -> dict:
        """The gallery's own thresholds (:mod:`lookalike.calibration`: a seeded sample of its faces searched against
        the other subjects, kept up to date as faces are added): on the base score (``thresholds``; the lookalike
        threshold is the 1%-FPIR one) and, with an embedding-level model, on the model's final score (``model``:
        :func:`~lookalike.calibration.model_summary`; :meth:`threshold` decides which to use). Both are kept in the
        gallery's database (:meth:`Gallery.save_derived`), so a later process (each ``identify`` from the command
        line, a service on another machine) reads them instead of searching again."""
        self.gallery.refresh()
        gen = self.gallery.generation_
        if self._calibration is None or self._calibration[0] != gen:
            g = self.gallery
            key = {"matcher": g.matcher_name, "preprocess": g.preprocess, "sample": MAX_NONMATED}
            if self._sample is None:
                self._sample = NonMatedSample.from_dict(g.derived("calibration", key))
            shared = self._calibrates_model() and not self._one_sided()  # one search serves both calibrations
            sample = current(self._sample, g, self.model.reach + 1 if shared else 2)
            if sample is not self._sample:
                g.save_derived("calibration", key, sample.as_dict())
            self._sample = sample
            self._calibration = (gen, {**summary(sample), "model": self._model_calibration(sample, key)})
            sample.lists = None  # the draw's search has served the model's calibration, or was not needed: dropped
        return self._calibration[1]

    def _calibrates_model(self) -> bool:
        """Whether the model's final score is calibrated on this gallery (:meth:`_model_calibration`)."""
        return self.model is not None and self.model.disambiguator_.input == "embedding"

    def _one_sided(self) -> bool:
        """Whether the model prepares probes otherwise than gallery faces (``--lowres-apply probes|gallery``)."""
        return self.model is not None and self.model.probe_lowres != self.model.gallery_lowres

    def _model_calibration(self, sample: NonMatedSample, key: dict) -> dict | None:
        """The model's thresholds on this gallery's sample (None without an embedding-level model). A model that
        prepares probes otherwise than the gallery searches the sampled faces prepared as its probes are
        (:meth:`_sample_as_probes`)."""
        if not self._calibrates_model():
            return None
        g = self.gallery
        self._fingerprint = self._fingerprint or self.model.fingerprint()
        # a model preparing probes otherwise keeps its own slot: a small-face model beside the main one (the same
        # gallery, two models) would otherwise replace the other's calibration at every use
        name = "model-calibration" + (f"-probes-{preprocess_key(self.model.probe_lowres, self.model.degrade)}"
                                      if self._one_sided() else "")
        saved = self._model_top or ModelTop.from_dict(g.derived(name, key))
        as_probes = (lambda: self._sample_as_probes(sample)) if self._one_sided() else None
        top = model_current(saved, sample, g, self.model, self._fingerprint, as_probes)
        if top is not saved:
            g.save_derived(name, key, top.as_dict())
        self._model_top = top
        return model_summary(top, sample)

    def _as_probe(self, chip: np.ndarray) -> np.ndarray:
        """An aligned face chip degraded as the model's probes are (realistic: seeded by the chip)."""
        return chip if self.lowres is None else degrade(chip, self.lowres, self.degrade)

    def _sample_as_probes(self, sample: NonMatedSample, batch: int = 64) -> np.ndarray:
        """The sampled gallery faces prepared as the model's probes are: each cut again from its file with the
        landmarks stored at enrolment, degraded as probes are, embedded; a NaN row for a face whose file cannot be
        read now (it is left out of the calibration). About 8-10 s a thousand faces on 2 cores: paid once per
        calibration."""
        g = self.gallery
        out = np.full((len(sample.ids), g.dim), np.nan, np.float32)
        rows, chips = [], []

        def embed() -> None:
            out[rows] = self.matcher.embed(np.stack(chips))
            rows.clear()
            chips.clear()

        for i, image_id in enumerate(sample.ids):
            rec = g.store.get_image(int(image_id))
            try:
                chip = g.enrolled_chip(rec) if rec is not None else None
            except (ImageError, ValueError):
                chip = None
            if chip is not None:
                rows.append(i)
                chips.append(self._as_probe(chip))
            if len(chips) == batch:
                embed()
        if chips:
            embed()
        return out

    def threshold(self, fpir: float, calibration: dict | None = None) -> tuple[float | None, str | None]:
        """(the decision threshold at ``fpir``, where it was calibrated). With a model: on this gallery when its
        sample holds enough non-mated searches for ``fpir`` (``"gallery"``); else the stricter of the model's
        threshold (calibrated on its validation people: ``"model"``) and the sample's (``"gallery-sample"``), as
        neither can be trusted to hold the FPIR on this gallery. Without one: the gallery's own base-score
        threshold, ``"gallery"`` when its sample holds enough searches for ``fpir``, else ``"gallery-sample"`` (too
        few to hold the FPIR); (None, None) while no face has another subject to match (no decision can be made).
        ``calibration``: this gallery's :meth:`calibration`, when the caller already has it."""
        fpir = check_fpir(fpir)
        calibration = calibration or self.calibration()
        if self.model is None:
            th = calibration["thresholds"]
            if not th:
                return None, None
            enough = calibration["n_nonmated"] >= MIN_SEARCHES / fpir
            return calibrated_threshold(th, fpir), "gallery" if enough else "gallery-sample"
        own = calibration.get("model") or {"thresholds": {}, "enough": {}}
        mine = self.model.threshold(fpir)
        if not own["thresholds"]:
            return mine, "model"
        theirs = calibrated_threshold(own["thresholds"], fpir)
        if any(np.isclose(f, fpir) and ok for f, ok in own["enough"].items()):
            return theirs, "gallery"
        return (theirs, "gallery-sample") if theirs > mine else (mine, "model")

    # --- search ------------------------------------------------------------------------------------------
    def search_face(self, face: ProbeFace | TemplateFace, top: int = 20, fpir: float = 0.01) -> dict:
        """The candidate list and decision for one face (the JSON schema's ``faces[]`` item); a face of another
        size by its own identifier (:meth:`route`)."""
        check_search(top, fpir)
        other = self.routes().get(face.route) if isinstance(face, ProbeFace) else None
        if other is not None:
            return other.search_face(face, top, fpir)
        calibration = self.calibration()
        t = time.perf_counter()
        lists = self.gallery.search(face.vector[None], k=list_depth(self.model, top))
        self._tick("search_s", t)
        k = lists.scores.shape[1]
        base = RankedLists(np.arange(k)[None], lists.scores)
        t = time.perf_counter()
        if self.model is not None:
            features = None
            if self.model.disambiguator_.input == "image":
                features = self._features(face, lists)
            final = self.model.rerank(face.vector[None], base, lists.vectors, features)
        else:
            final = base
        self._tick("rerank_s", t)
        order = final.indices[0]
        settled, tied = settle_ties(final.scores[0], lists.scores[0, order], lists.subjects[0, order])
        return self._face_result(face, lists, 0, order[settled][:top], final.scores[0, settled][:top], tied[:top],
                                 final.scores[0, 0], calibration, fpir)

    def batch_note(self, n_faces: int) -> str | None:
        """Why :meth:`search_batch` would search ``n_faces`` faces one by one (None when it re-ranks them together)."""
        if self.model is None:
            return "no lookalike model: every face is searched alone"
        return self.model.batch_note(n_faces)

    def search_batch(self, faces: list[ProbeFace], top: int = 20, fpir: float = 0.01) -> list[dict]:
        """Every face searched, then all their lists re-ranked together by the model's batch setting
        (:mod:`lookalike.rerank.batch`): for many photos of the same few people. Whether a face's person is enrolled
        is decided by its own (per-photo) final score, whom by the batch order; each candidate also has its
        ``batch_distance``. Face by face (:meth:`search_face`) when :meth:`batch_note` says so."""
        check_search(top, fpir)
        if self.batch_note(len(faces)) is not None:
            return [self.search_face(f, top, fpir) for f in faces]
        if not faces:
            return []
        calibration = self.calibration()
        vectors = np.stack([f.vector for f in faces])
        t = time.perf_counter()
        lists = self.gallery.search(vectors, k=max(top, self.model.depth))
        self._tick("search_s", t)
        q = len(lists.scores)
        t = time.perf_counter()
        base = RankedLists(lists.image_ids, lists.scores)  # by image id: a face in many lists is prepared once
        per_photo = self.model.rerank(vectors, base, lists.vectors)
        fused = np.empty_like(per_photo.scores)  # each base position's per-photo final score
        for i in range(q):
            fused[i, _positions(lists.image_ids[i], per_photo.indices[i])] = per_photo.scores[i]
        batch = self.model.rerank_batch(vectors, base, lists.vectors)
        self._tick("rerank_s", t)
        out = []
        for i, face in enumerate(faces):
            order = _positions(lists.image_ids[i], batch.indices[i])
            settled, tied = settle_ties(batch.scores[i], lists.scores[i, order], lists.subjects[i, order])
            order = order[settled][:top]
            out.append(self._face_result(face, lists, i, order, fused[i, order], tied[:top], per_photo.scores[i, 0],
                                         calibration, fpir, -batch.scores[i, settled][:top]))
        return out

    def search_template(self, faces: list[ProbeFace], photos: list[str], top: int = 20, fpir: float = 0.01,
                        option: str = "--same-person") -> dict:
        """``faces`` (one a photo, in ``photos``) known to show one person, searched as one template: the L2-normalised
        mean of their embeddings, re-ranked by the per-photo model. No enrolled / not-enrolled decision is made: the
        thresholds are calibrated on single photos, and templates cross them far more often than 1 in 100 non-mated
        searches (``benchmarks/same_person.py``); the result says so. ``option``: what the caller's user asked for a
        same-person search with, as its errors name it (the API's ``mode=same-person``)."""
        if not faces:
            raise ValueError(f"{option}: no photo with exactly one usable face to build a template from")
        if not searches_templates(self.model):
            raise ValueError(f"{option} needs a model whose disambiguator reads embeddings (this one reads images)")
        result = self.search_face(TemplateFace(template_vector(np.stack([f.vector for f in faces])), photos), top, fpir)
        result["decision"] = {"fpir": fpir, "threshold": None, "calibrated_on": None, "enrolled": None,
                              "subject": None, "note": TEMPLATE_NOTE}
        return result

    def _face_result(self, face: ProbeFace | TemplateFace, lists, row: int, order: np.ndarray, scores: np.ndarray,
                     tied: list[list[int]], top_score: float, calibration: dict, fpir: float,
                     batch_distances: np.ndarray | None = None) -> dict:
        """One face's ``faces[]`` item: candidates ``order`` (positions in row ``row`` of ``lists``) with their final
        ``scores`` and the ranks each ties with (``tied``: :func:`~lookalike.ties.settle_ties`), the decision from
        ``top_score``; with ``batch_distances``, each candidate's batch distance."""
        groups = self._lookalike_groups(lists.vectors[row, order], calibration["lookalike"])
        cands = [{"rank": r + 1, "subject": str(lists.subjects[row, j]), "image_id": int(lists.image_ids[row, j]),
                  "image": str(lists.paths[row, j]), "base_score": round(float(lists.scores[row, j]), 6),
                  "base_rank": int(j) + 1, "final_score": round(float(scores[r]), 6),
                  "lookalike_group": groups[r], "tied_with": tied[r]} for r, j in enumerate(order)]
        if batch_distances is not None:
            for c, d in zip(cands, batch_distances, strict=True):
                c["batch_distance"] = round(float(d), 6)
        threshold, where = self.threshold(fpir, calibration)
        decision = {"fpir": fpir, "threshold": threshold, "calibrated_on": where, "enrolled": None, "subject": None}
        if where in ("gallery", "gallery-sample") and calibration.get("n_duplicates"):
            decision["duplicates_left_out"] = calibration["n_duplicates"]
        if threshold is None:
            decision["note"] = UNCALIBRATED_NOTE
        else:
            decision["enrolled"] = bool(len(cands)) and float(top_score) >= threshold
            decision["subject"] = cands[0]["subject"] if decision["enrolled"] else None
        described = face.describe()
        if isinstance(face, ProbeFace):
            described["probe_lowres"] = self.lowres  # what the face was degraded to (by another size's model: its)
            described["resolution_note"] = resolution_note(face.face_px, self.lowres)
        return {**described, "status": "searched", "candidate_list_length": len(cands), "candidates": cands,
                "ambiguous": bool(len(cands)) and groups[0] is not None,
                "decision": decision}

    @staticmethod
    def _lookalike_groups(vectors: np.ndarray, t: float) -> list[int | None]:
        """Group ids linking candidates whose matched images match each other at ``t`` or above (connected
        components); None for a candidate that looks like no other top candidate."""
        n = len(vectors)
        sim = vectors @ vectors.T
        parent = list(range(n))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, j in zip(*np.nonzero(np.triu(sim >= t, 1)), strict=True):
            parent[root(int(i))] = root(int(j))
        roots = [root(i) for i in range(n)]
        sizes = {r: roots.count(r) for r in set(roots)}
        ids: dict[int, int] = {}
        return [ids.setdefault(r, len(ids) + 1) if sizes[r] > 1 else None for r in roots]

    def _features(self, face: ProbeFace, lists) -> tuple[np.ndarray, np.ndarray]:
        """An image-level disambiguator's embeddings of the probe face and the candidates' images."""
        d = self.model.disambiguator_
        chips = []
        for path in lists.paths[0]:
            try:
                chip, _ = face_chip(path, self.aligner, lowres=self.model.gallery_lowres, degrade_kind=self.degrade)
            except ImageError as e:
                if e.reason != "no_face":
                    raise
                chip = np.zeros_like(face.chip)
            chips.append(chip)
        return d.embed_chips(face.chip[None]), d.embed_chips(np.stack(chips))[None]

    # --- photos ------------------------------------------------------------------------------------------
    def identify_image(self, image: np.ndarray, name: str = "", top: int = 20, fpir: float = 0.01) -> dict:
        """Every face of one decoded photo."""
        result, faces = self._image_faces(image, name)
        return {**result, "faces": [self.search_face(f, top, fpir) for f in faces]}

    def identify_path(self, path: str | Path, top: int = 20, fpir: float = 0.01) -> dict:
        """One photo file; an unusable file gives ``status`` with the reason instead of faces."""
        result, faces = self._photo_faces(path)
        return {**result, "faces": [self.search_face(f, top, fpir) for f in faces]}

    def identify_same_person(self, paths: list[str | Path], top: int = 20, fpir: float = 0.01) -> list[dict]:
        """Photo files known to show one person: :meth:`same_person_results` of their faces."""
        return self.same_person_results([self._photo_faces(p, by_size=False) for p in paths], top, fpir)

    def same_person_results(self, photos: list[tuple[dict, list[ProbeFace]]], top: int = 20,
                            fpir: float = 0.01, option: str = "--same-person") -> list[dict]:
        """Photos known to show one person, each (its result header, its faces): each photo with exactly one face adds
        it to one template (:meth:`search_template`, which names ``option`` in its errors), whose result comes last,
        as a result of its own; a photo with several faces is left out (status ``many_faces``: which face would be
        the person is not known)."""
        results, faces = [], []
        for result, found in photos:
            if len(found) > 1:
                result = {**result, "status": "many_faces",
                          "message": f"{len(found)} faces: a same-person search uses photos of one face (crop it)"}
            elif found:
                faces.append(found[0])
                result = {**result, "in_template": True}
            results.append({**result, "faces": []})
        names = [r["photo"] for r in results if r.get("in_template")]
        template = self.search_template(faces, names, top, fpir, option)
        return [*results, {"photo": f"template of {len(names)} photos", "status": "ok", "faces": [template]}]

    def identify_batch(self, paths: list[str | Path], top: int = 20, fpir: float = 0.01) -> list[dict]:
        """Photo files re-ranked together: :meth:`batch_results` of their faces."""
        return self.batch_results([self._photo_faces(p, by_size=False) for p in paths], top, fpir)

    def batch_results(self, photos: list[tuple[dict, list[ProbeFace]]], top: int = 20,
                      fpir: float = 0.01) -> list[dict]:
        """Every face of every photo (each: its result header, its faces) re-ranked together
        (:meth:`search_batch`); one result per photo."""
        searched = iter(self.search_batch([f for _, faces in photos for f in faces], top, fpir))
        return [{**result, "faces": [next(searched) for _ in faces]} for result, faces in photos]

    def _photo_faces(self, path: str | Path, by_size: bool = True) -> tuple[dict, list[ProbeFace]]:
        """A photo's result header (``photo``, ``status``, ``message`` when unusable) and its faces (``by_size``:
        see :meth:`faces`)."""
        try:
            image = load_image(path)
        except ImageError as e:
            return {"photo": str(path), "status": e.reason, "message": str(e)}, []
        return self._image_faces(image, str(path), by_size)

    def _image_faces(self, image: np.ndarray, name: str, by_size: bool = True) -> tuple[dict, list[ProbeFace]]:
        faces = self.faces(image, by_size)
        if not faces:
            return {"photo": name, "status": "no_face", "message": NO_FACE}, faces
        return {"photo": name, "status": "ok"}, faces


def searches_templates(model: LookalikeModel | None) -> bool:
    """Whether ``model`` (None: the matcher alone) can re-rank a same-person template: an embedding, which a
    disambiguator reading images cannot score."""
    return model is None or model.disambiguator_.input != "image"


def template_vector(vectors: np.ndarray) -> np.ndarray:
    """One person's faces (N, D) as one template: the L2-normalised mean of their embeddings (float32)."""
    return l2_normalize(np.mean(vectors, axis=0, dtype=np.float64)[None].astype(np.float32))[0]


def list_depth(model: LookalikeModel | None, top: int) -> int:
    """How many candidates to fetch for a list of ``top``: the model moves only its first ``reach`` candidates and
    fuses scores candidate by candidate, so a list cut to max(top, reach) gives the same first ``top`` candidates
    as the full depth, for less work; one more than ``top`` shows whether the last one listed ties with the next."""
    return top + 1 if model is None else max(top + 1, model.reach)


def prepare_gallery(model: LookalikeModel | None, vectors: np.ndarray, block: int = 4096,
                    stop: threading.Event | None = None) -> int:
    """The disambiguator cohort terms of every gallery face (``vectors``), remembered by ``model`` for identify
    (a one-off cost: the costly part of re-ranking a candidate); returns the faces prepared (0 without a model,
    with an image-level disambiguator, or when there are more faces than the memo keeps). ``stop``: checked
    between blocks (a service closing)."""
    d = model.disambiguator_ if model is not None else None
    if d is None or not hasattr(d, "_prepare_gallery") or len(vectors) > MEMO_SIZE:
        return 0
    d.memo_size = MEMO_SIZE
    done = 0
    for s in range(0, len(vectors), block):
        if stop is not None and stop.is_set():
            break
        done += len(d._prepare_gallery(np.asarray(vectors[s:s + block]))[1])
    return done


def check_search(top: object, fpir: object) -> None:
    """A one-line ValueError unless ``top`` (candidates listed) is a positive integer and ``fpir`` a number strictly
    between 0 and 1 (:mod:`lookalike.checks`)."""
    check_int(top, "top")
    check_fpir(fpir)


def identify(photos: list[str | Path], gallery: Gallery, model: LookalikeModel | str | Path | None = None,
             top: int = 20, fpir: float = 0.01, batch: bool = False, same_person: bool = False,
             small_faces: LookalikeModel | None = None, sharp_faces: LookalikeModel | None = None,
             every_scale: bool = False) -> dict:
    """Identify every face of every photo (``batch``: all of them re-ranked together, see
    :meth:`Identifier.search_batch`; ``same_person``: the photos show one person, searched as one template, see
    :meth:`Identifier.identify_same_person`; ``small_faces``, ``sharp_faces``: models for faces of other sizes,
    see :class:`Identifier`; ``every_scale``: look for small faces beside large ones, see
    :meth:`~lookalike.matchers.align.FaceAligner.align_all`); ``photos``: a list of paths (one path string is
    refused); ``model``: a model, a model file's path or ``default`` (:func:`~lookalike.model.load_model` for
    ``gallery``), or None;
    the whole result as the documented JSON document."""
    if batch and same_person:
        raise ValueError("--batch and --same-person are two ways to search many photos: choose one")
    check_search(top, fpir)
    photos = check_paths(photos, "photos")  # one path string had been searched a character at a time
    if isinstance(model, str | os.PathLike):  # a model file, or "default", as --model takes it
        model = load_model(model, gallery)
    ident = Identifier(gallery, model, small_faces, sharp_faces)
    ident.every_scale = every_scale
    if model is not None and len(photos) * max(top, model.reach) >= len(gallery.vectors_):
        ident.prepare_gallery()  # cheaper than preparing the candidates photo by photo
    results = (ident.identify_batch(photos, top, fpir) if batch else ident.identify_same_person(photos, top, fpir)
               if same_person else [ident.identify_path(p, top, fpir) for p in photos])
    return result_document(ident, results, top, fpir, batch)


def result_document(ident: Identifier, results: list[dict], top: int, fpir: float, batch: bool = False) -> dict:
    """The identify JSON document (``schema_version`` 1) around per-photo ``results``: the gallery, the model, the
    settings, the lookalike version that produced it and the identifier's stage timings; with ``batch``, how the
    batch was re-ranked."""
    model = ident.model
    doc = {"schema_version": SCHEMA_VERSION, "lookalike_version": __version__, "gallery": str(ident.gallery.store.url),
           "model": None if model is None else model.describe_short(),
           "small_face_model": None if ident.small is None else {**ident.small.model.describe_short(),
                                                                 "max_face_px": ident.small.lowres},
           "sharp_face_model": None if ident.sharp is None else {**ident.sharp.model.describe_short(),
                                                                 "min_face_px": SMALL_FACE_PX},
           "fpir": fpir, "top": top,
           "results": results, "timing": {k: round(v, 4) for k, v in ident.timing.items()}}
    if batch:
        n_faces = sum(len(r["faces"]) for r in results)
        note = ident.batch_note(n_faces)
        doc["batch"] = {"reranked_together": note is None, "note": note,
                        "setting": None if note else model.batch_.setting_.to_dict(), "faces": n_faces}
    return doc


def result_faces(result: dict, gallery: Gallery) -> dict:
    """PNG bytes of what :func:`lookalike.identify_format.format_html` shows: each searched face of each photo (under
    ``("probe", photo, face index)``: each photo aligned again once, the face at the reported box), each photo of a
    same-person template (``("member", photo)``) and each candidate's enrolled face (under ``("image", image id)``);
    None where a face cannot be cut now (e.g. its file moved)."""
    out: dict = {}
    for r in result["results"]:
        if r.get("in_template"):  # a same-person search's photo: its one face, shown with the template's list
            out["member", r["photo"]] = _member_face(gallery, r["photo"])
        if r["status"] != "ok" or not r["faces"]:
            continue
        try:
            image = load_image(r["photo"])
        except ImageError:
            image = None
        chips = [None] * len(r["faces"]) if image is None else gallery.aligner.chips_at(
            image, [f["box"] for f in r["faces"]])
        for f, chip in zip(r["faces"], chips, strict=True):
            out["probe", r["photo"], f["index"]] = None if chip is None else encode_png(chip)
            for c in f["candidates"]:
                key = ("image", c["image_id"])
                if key not in out:
                    out[key] = _enrolled_face(gallery, c["image_id"])
    return out


def _member_face(gallery: Gallery, photo: str) -> bytes | None:
    """The aligned face of a photo in a same-person template (its one face, found again), or None."""
    try:
        image = load_image(photo)
    except ImageError:
        return None
    alignment = gallery.aligner.align(image)
    return None if alignment is None else encode_png(gallery.aligner.chip(image, alignment))


def _enrolled_face(gallery: Gallery, image_id: int) -> bytes | None:
    record = gallery.store.get_image(image_id)
    try:
        return None if record is None else encode_png(gallery.enrolled_chip(record))
    except (ImageError, ValueError):
        return None


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`identify`. ``from lookalike import identify`` is meant to give the function,
    but once this module is loaded Python binds the package's attribute of the same name to the module; calling the
    module does what the function does, so that import works whichever it gets."""

    def __call__(self, *args, **kwargs) -> dict:
        return identify(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
