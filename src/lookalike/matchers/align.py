"""Face detection (dlib HOG) and 5-point alignment to the matcher's chip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.checks import check_range
from lookalike.data.images import check_rgb8
from lookalike.matchers.base import CHIP_SIZE
from lookalike.matchers.dlib_resnet import model_path

SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
CNN_MODEL = "mmod_human_face_detector.dat"
CNN_FALLBACK = False  # the default: new galleries, embed, train and benchmark (README, "CNN fallback")
HINT_SHARE = 0.01  # undetected faces above this share of a run's photos get a hint (LFW 0.24%, PubFig's crops 4.2%)
CNN_MAX_SIDE = 320  # the CNN detector runs on the photo scaled down to this long side (its cost grows with the area)
CNN_MIN_SIDE = 80  # and scaled up to this short side (its window); a photo that cannot have both is not searched
FLAT_STD = 2.0  # a centred square whose grey levels vary less than this (0-255) is blank (a black video frame): no face


@dataclass
class Alignment:
    """Where the face is: how it was found, how many faces the detector saw, and the 5 landmarks."""

    method: str  # "detected" (HOG), "cnn" (the CNN detector, where HOG found none) or "central"
    n_faces: int
    box: tuple[int, int, int, int]  # left, top, right, bottom
    landmarks: np.ndarray  # (5, 2) float32, x/y

    def to_row(self) -> tuple[str, int, bytes]:
        return self.method, self.n_faces, np.asarray([*self.box, *self.landmarks.ravel()], np.float32).tobytes()

    @classmethod
    def from_row(cls, method: str, n_faces: int, blob: bytes) -> Alignment:
        v = np.frombuffer(blob, np.float32)
        return cls(method, int(n_faces), tuple(int(x) for x in v[:4]), v[4:].reshape(5, 2).copy())


def _is_flat(region: np.ndarray) -> bool:
    """Whether an (H, W, 3) uint8 region is blank: its grey levels' standard deviation is below :data:`FLAT_STD`."""
    return region.size == 0 or float(region.mean(axis=2).std()) < FLAT_STD


def _same_face(a, b) -> bool:
    """Whether two detector rectangles (dlib's) hold the same face: they overlap by more than half of the smaller."""
    inter = max(0, min(a.right(), b.right()) - max(a.left(), b.left())) * max(
        0, min(a.bottom(), b.bottom()) - max(a.top(), b.top()))
    return inter > 0.5 * min(a.width() * a.height(), b.width() * b.height())


class FaceAligner:
    """Detects the face (HOG, upsampling small images) and aligns it with dlib's 5-point model.

    When HOG finds no face, ``cnn_fallback`` runs dlib's CNN face detector (MMOD), which finds most of the tightly
    cropped faces HOG misses (the face fills the photo), and the 5-point model aligns what it finds. When still no
    face is found, ``central_fraction`` > 0 falls back to a centred square of that fraction of the shorter side (for
    pre-cropped datasets), placing the landmarks inside it, unless that square is blank (:data:`FLAT_STD`); 0 disables
    the fallback. Images left without a face are reported as ``no_face``. With several faces, the one nearest the
    centre is used.
    """

    def __init__(self, central_fraction: float = 0.45, max_upsample: int = 3, chip_size: int = CHIP_SIZE,
                 padding: float = 0.25, cnn_fallback: bool = CNN_FALLBACK) -> None:
        # in [0, 1] as --central-fraction takes it (0: off); 2.0 or -1.0 had cut a square outside the photo
        check_range(central_fraction, "central_fraction", 0, 1)
        self.central_fraction = central_fraction
        self.max_upsample = max_upsample
        self.chip_size = chip_size
        self.padding = padding
        self.cnn_fallback = bool(cnn_fallback)
        self._detector = None
        self._shape = None
        self._cnn = None

    @property
    def name(self) -> str:
        """Identifies every setting that changes the chips (part of the cache key)."""
        cnn = "-cnn" if self.cnn_fallback else ""
        return f"hog5pt{cnn}-c{self.central_fraction:g}-u{self.max_upsample}-s{self.chip_size}-p{self.padding:g}"

    def settings(self) -> dict:
        """The constructor's arguments (:meth:`from_settings` rebuilds the aligner from them)."""
        out = {"central_fraction": self.central_fraction, "max_upsample": self.max_upsample,
               "chip_size": self.chip_size, "padding": self.padding}
        return {**out, "cnn_fallback": True} if self.cnn_fallback else out

    @classmethod
    def from_settings(cls, settings: dict) -> FaceAligner:
        """The aligner :meth:`settings` describes (other keys, e.g. a recorded ``name``, are ignored; settings
        written before ``cnn_fallback`` existed leave it off)."""
        keys = ("central_fraction", "max_upsample", "chip_size", "padding")
        return cls(**{k: settings[k] for k in keys if k in settings}, cnn_fallback=settings.get("cnn_fallback", False))

    def with_fallback(self, central_fraction: float | None = None, cnn_fallback: bool | None = None) -> FaceAligner:
        """A new aligner with this one's chip geometry and the given fallbacks for undetected faces (None: this
        one's); each has its own detectors (dlib's are not shared between threads)."""
        return FaceAligner(self.central_fraction if central_fraction is None else central_fraction,
                           self.max_upsample, self.chip_size, self.padding,
                           self.cnn_fallback if cnn_fallback is None else cnn_fallback)

    @property
    def geometry(self) -> str:
        """The settings that shape the chip of a detected face: every one but the fallbacks for photos where HOG
        finds no face (``central_fraction``, ``cnn_fallback``), which describe a dataset (how tightly it is cropped)."""
        return f"hog5pt-u{self.max_upsample}-s{self.chip_size}-p{self.padding:g}"

    def _models(self):
        if self._detector is None:
            import dlib

            self._detector = dlib.get_frontal_face_detector()
            self._shape = dlib.shape_predictor(str(model_path(SHAPE_MODEL)))
        return self._detector, self._shape

    def _cnn_faces(self, image: np.ndarray) -> list:
        """The CNN detector's faces (dlib rectangles in the photo's pixels), on the photo scaled so that its long
        side is at most :data:`CNN_MAX_SIDE` and its short side at least :data:`CNN_MIN_SIDE` (none when both
        cannot hold: dlib's network fails on thinner inputs), most confident first."""
        import dlib
        from PIL import Image

        if self._cnn is None:
            self._cnn = dlib.cnn_face_detection_model_v1(str(model_path(CNN_MODEL)))
        h, w = image.shape[:2]
        scale = min(CNN_MAX_SIDE / max(h, w), max(1.0, CNN_MIN_SIDE / min(h, w)))
        if min(h, w) * scale < CNN_MIN_SIDE:  # too elongated to be a face crop (and too thin for the network)
            return []
        small = image if scale == 1 else np.asarray(
            Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR))
        found = sorted(self._cnn(np.ascontiguousarray(small), 0), key=lambda d: -d.confidence)
        return [dlib.rectangle(int(round(d.rect.left() / scale)), int(round(d.rect.top() / scale)),
                               int(round(d.rect.right() / scale)), int(round(d.rect.bottom() / scale)))
                for d in found]

    def align(self, image: np.ndarray) -> Alignment | None:
        """The face nearest the image centre in an (H, W, 3) uint8 image (or the central fallback); None when
        there is none and no fallback."""
        faces = self.align_all(image)
        if not faces:
            return None
        h, w = image.shape[:2]

        def dist(a: Alignment) -> float:
            left, top, right, bottom = a.box
            return ((left + right) / 2 - w / 2) ** 2 + ((top + bottom) / 2 - h / 2) ** 2

        return min(faces, key=dist)

    def align_all(self, image: np.ndarray, every_scale: bool = False) -> list[Alignment]:
        """Every detected face, in detector order; with none, the central fallback alone (``method`` "central",
        for pre-cropped faces) or an empty list when the fallback is off. Detection stops at the first upsampling
        that finds a face; ``every_scale`` goes on to the last one (faces too small for HOG's 80 px window at the
        first one, e.g. distant faces in a group photo; slower), adding each face not already found."""
        import dlib

        image = check_rgb8(image)
        detector, shape = self._models()
        h, w = image.shape[:2]
        # HOG's window is 80x80: start at the upsampling that makes the image's short side at least 80 px.
        first = 0
        while min(h, w) * 2**first < 80 and first < self.max_upsample:
            first += 1
        rects = []
        for up in range(first, self.max_upsample + 1):
            if up > first and max(h, w) * 2**up > 4000:
                break
            rects += [r for r in detector(image, up) if not any(_same_face(r, seen) for seen in rects)]
            if rects and not every_scale:
                break
        method = "detected"
        if not rects and self.cnn_fallback:
            rects, method = self._cnn_faces(image), "cnn"
        if rects:
            n = len(rects)
        elif self.central_fraction > 0:
            side = self.central_fraction * min(h, w)
            rect = dlib.rectangle(int(round((w - side) / 2)), int(round((h - side) / 2)),
                                  int(round((w + side) / 2)), int(round((h + side) / 2)))
            if _is_flat(image[rect.top():rect.bottom(), rect.left():rect.right()]):
                return []  # a blank square holds no face: the photo is one without a face, not a pre-cropped one
            rects, method, n = [rect], "central", 0
        else:
            return []
        out = []
        for rect in rects:
            landmarks = np.asarray([[p.x, p.y] for p in shape(image, rect).parts()], np.float32)
            out.append(Alignment(method, n, (rect.left(), rect.top(), rect.right(), rect.bottom()), landmarks))
        return out

    def chips_at(self, image: np.ndarray, boxes: list) -> list[np.ndarray | None]:
        """For each box (as a search reports a face's), the aligned chip of the face found there in ``image``, else
        of the first face found; None when none is. The image is searched for faces once, at every scale when a box
        is not found at the first (a search made with ``every_scale``)."""
        faces = self.align_all(image)
        if any(tuple(box) not in {tuple(a.box) for a in faces} for box in boxes):
            faces = self.align_all(image, every_scale=True)
        out = []
        for box in boxes:
            match = [a for a in faces if tuple(a.box) == tuple(box)] or faces
            out.append(self.chip(image, match[0]) if match else None)
        return out

    def chip(self, image: np.ndarray, alignment: Alignment) -> np.ndarray:
        """The aligned (chip_size, chip_size, 3) uint8 chip of an (H, W, 3) uint8 image."""
        import dlib

        image = check_rgb8(image)

        rect = dlib.rectangle(*alignment.box)
        points = dlib.points()
        for x, y in alignment.landmarks:
            points.append(dlib.point(int(round(float(x))), int(round(float(y)))))
        shape = dlib.full_object_detection(rect, points)
        return np.asarray(dlib.get_face_chip(np.ascontiguousarray(image), shape, size=self.chip_size,
                                             padding=self.padding), dtype=np.uint8)


def fallback_hint(faces: dict[str, int], aligner: FaceAligner, where: str = "") -> str | None:
    """A line for people when many photos had no face HOG could find (``faces``: how many images each detection
    ``method`` aligned, as embedding summaries count them) and the aligner can still find more of them; None
    otherwise; ``where`` says where the options apply. On PubFig's tight crops the plain matcher's rank-1 is
    88.25 with neither option, 93.72 with either (README, "The CNN fallback")."""
    central, total = faces.get("central", 0), sum(faces.values())
    if not total or central / total <= HINT_SHARE:
        return None
    options = [o for o, off in (("--cnn-fallback", not aligner.cnn_fallback),
                                ("--central-fraction 0.9", aligner.central_fraction < 0.9)) if off]
    if not options:
        return None
    return (f"note: {central} of {total} photos had no face the detector found and were aligned in a centred square "
            f"of {aligner.central_fraction:g} of the photo; if they are tightly cropped faces, "
            f"{' or '.join(options)} aligns them better{where} (README, 'Faces and bad input')")
