"""Identification protocols, written to disk so that every run can be reproduced.

The LFW-style closed-set protocol follows TinyFace's shape: people are split by a seeded rule into a train
half and a test half (no person in both). In the test half one image of each person with two or more images
is enrolled in the gallery and that person's other images are probes; every single-image person is a
gallery distractor. Inside the train half a validation split, built the same way, serves for tuning.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lookalike.data.table import FaceTable
from lookalike.io import read_json, write_json

LOWRES_APPLY = ("both", "probes")


@dataclass
class Protocol:
    """A role for every image plus the settings that produced it."""

    table: FaceTable
    name: str = "identification"
    seed: int = 0
    test_fraction: float = 0.5
    val_fraction: float = 0.3
    lowres: int | None = None
    lowres_apply: str = "both"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.lowres is not None and self.lowres < 4:
            raise ValueError(f"lowres must be a face width in pixels >= 4, got {self.lowres}")
        if self.lowres_apply not in LOWRES_APPLY:
            raise ValueError(f"lowres_apply must be one of {LOWRES_APPLY}, got {self.lowres_apply!r}")

    def settings(self) -> dict:
        d = asdict(self)
        d.pop("table")
        return d

    def counts(self) -> dict[str, int]:
        roles = self.table.roles
        return {
            "n_probes": int((roles == "probe").sum()),
            "n_gallery": int(np.isin(roles, ("gallery", "distractor")).sum()),
            "n_distractors": int((roles == "distractor").sum()),
            "n_enrolled": int((roles == "gallery").sum()),
            "n_train": int((roles == "train").sum()),
            "n_val_probes": int((roles == "val_probe").sum()),
            "n_val_gallery": int(np.isin(roles, ("val_gallery", "val_distractor")).sum()),
        }

    def degraded(self, role: str) -> bool:
        """Whether images of this role are degraded to ``lowres`` pixels."""
        if self.lowres is None:
            return False
        return self.lowres_apply == "both" or role in ("probe", "val_probe")

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        # paths relative to the protocol folder, as load_manifest resolves them
        rel = [os.path.relpath(os.path.abspath(p), os.path.abspath(folder)) for p in self.table.paths]
        FaceTable(rel, self.table.identities, self.table.roles).to_csv(folder / "protocol.csv")
        write_json(folder / "protocol.json", {**self.settings(), **self.counts(), "notes": self.table.notes})

    @classmethod
    def load(cls, folder: str | Path) -> Protocol:
        from lookalike.data.manifest import load_manifest

        folder = Path(folder)
        meta = read_json(folder / "protocol.json")
        fields = {k: meta[k] for k in ("name", "seed", "test_fraction", "val_fraction", "lowres", "lowres_apply",
                                       "extra") if k in meta}
        table = load_manifest(folder / "protocol.csv")
        table.notes = {**meta.get("notes", {}), **table.notes}
        return cls(table, **fields)


def _enrol(ids: np.ndarray, people: set, rng: np.random.Generator, prefix: str) -> np.ndarray:
    """Roles for the images of ``people``: one gallery image per multi-image person, the rest probes."""
    roles = np.full(len(ids), "", dtype=object)
    for person in sorted(people):
        rows = np.flatnonzero(ids == person)
        if len(rows) == 1:
            roles[rows] = f"{prefix}distractor"
        else:
            roles[rows] = f"{prefix}probe"
            roles[rng.choice(rows)] = f"{prefix}gallery"
    return roles


def split_people(people: list[str], fraction: float, rng: np.random.Generator) -> tuple[set, set]:
    """Seeded split of sorted ``people`` into (first, second) with ``fraction`` of them in the second."""
    order = rng.permutation(sorted(people))
    n_second = int(round(len(order) * fraction))
    return set(order[n_second:].tolist()), set(order[:n_second].tolist())


def make_protocol(table: FaceTable, seed: int = 0, test_fraction: float = 0.5, val_fraction: float = 0.3,
                  name: str = "identification", lowres: int | None = None, lowres_apply: str = "both",
                  require_test: bool = True) -> Protocol:
    """Assign roles. A table that already has test roles (TinyFace) keeps them; only its train is split.

    ``require_test=False`` (training a model on every person: ``test_fraction=0``) allows a protocol
    without test probes.
    """
    rng = np.random.default_rng(seed)
    ids = table.identities
    roles = table.roles.copy()
    if (roles == "").all():
        train_people, test_people = split_people(sorted(set(ids.tolist())), test_fraction, rng)
        test_rows = np.isin(ids, list(test_people))
        roles[test_rows] = _enrol(ids, test_people, rng, "")[test_rows]
        roles[~test_rows] = "train"
    elif (roles == "").any():
        raise ValueError("the table assigns roles to some images but not others")
    train_rows = roles == "train"
    train_people = sorted(set(ids[train_rows].tolist()))
    if val_fraction > 0 and train_people:
        _, val_people = split_people(train_people, val_fraction, rng)
        val_rows = train_rows & np.isin(ids, list(val_people))
        roles[val_rows] = _enrol(ids, val_people, rng, "val_")[val_rows]
    protocol = Protocol(FaceTable(table.paths, ids, roles, dict(table.notes)), name=name, seed=seed,
                        test_fraction=test_fraction, val_fraction=val_fraction, lowres=lowres,
                        lowres_apply=lowres_apply)
    if require_test and protocol.counts()["n_probes"] == 0:
        raise ValueError("the protocol has no probes: the test people need two or more images each")
    return protocol
