"""lookalike: 1:N face identification that gets the top of the ranked candidate list right.

The user's path in Python::

    from lookalike import Gallery, LookalikeModel, identify, train_model

    model, _ = train_model("people/", lowres=None)          # labelled photos, a folder per person
    model.save("model.lkm")
    gallery = Gallery.open_or_create("gallery.sqlite")
    gallery.enroll(["ann/1.jpg", "bob/1.jpg"], ["ann", "bob"])
    result = identify(["probe.jpg"], gallery, LookalikeModel.load("model.lkm"), top=20, fpir=0.01)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

_EXPORTS = {"Gallery": "lookalike.gallery", "LookalikeModel": "lookalike.model", "load_model": "lookalike.model",
            "identify": "lookalike.identify", "Identifier": "lookalike.identify", "train_model": "lookalike.train"}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:  # lazy: the command line stays quick to start
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lookalike' has no attribute {name!r}")
