"""Identification protocols, written to disk so that every run can be reproduced.

The LFW-style closed-set protocol follows TinyFace's shape: people are split by a seeded rule into a train
half and a test half (no person in both). In the test half one image of each person with two or more images
is enrolled in the gallery and that person's other images are probes; every single-image person is a
gallery distractor. Inside the train half a validation split, built the same way, serves for tuning.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lookalike.data.images import check_degrade, check_lowres
from lookalike.data.table import FaceTable
from lookalike.io import read_json, write_json

LOWRES_APPLY = ("both", "probes", "gallery")
GALLERY_ROLES = ("gallery", "distractor", "val_gallery", "val_distractor")


def side_lowres(lowres: int | None, lowres_apply: str, side: str) -> int | None:
    """The face width ``side`` (``probes`` or ``gallery``) is degraded to under ``lowres_apply`` (``both``,
    ``probes`` or ``gallery``): ``lowres`` where it applies, else None (full resolution)."""
    if lowres_apply not in LOWRES_APPLY:
        raise ValueError(f"lowres_apply must be one of {LOWRES_APPLY}, got {lowres_apply!r}")
    return lowres if lowres_apply in ("both", side) else None


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
    degrade: str = "bicubic"
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_lowres(self.lowres)
        check_degrade(self.degrade)
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
        """Whether images of this role are degraded (the ``degrade`` way) to ``lowres`` pixels."""
        if self.lowres is None:
            return False
        if self.lowres_apply == "both":
            return True  # the train images too
        if role == "train":
            return False  # one side degraded: the disambiguator learns from full-resolution faces
        return side_lowres(self.lowres, self.lowres_apply, "gallery" if role in GALLERY_ROLES else "probes") is not None

    def save(self, folder: str | Path, read_from: str | Path | None = None) -> None:
        """Write protocol.csv and protocol.json into ``folder``; ``read_from``: the folder it will be read from once
        moved there (a run's staging folder is published), default ``folder``."""
        folder = Path(folder)
        # paths relative to the protocol folder, as load_manifest resolves them
        base = os.path.abspath(read_from if read_from is not None else folder)
        rel = [os.path.relpath(os.path.abspath(p), base) for p in self.table.paths]
        FaceTable(rel, self.table.identities, self.table.roles).to_csv(folder / "protocol.csv")
        write_json(folder / "protocol.json", {**self.settings(), **self.counts(), "notes": self.table.notes})

    @classmethod
    def load(cls, folder: str | Path) -> Protocol:
        from lookalike.data.manifest import load_manifest

        folder = Path(folder)
        meta = read_json(folder / "protocol.json")
        fields = {k: meta[k] for k in ("name", "seed", "test_fraction", "val_fraction", "lowres", "lowres_apply",
                                       "degrade", "extra") if k in meta}
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
                  require_test: bool = True, degrade: str = "bicubic") -> Protocol:
    """Assign roles. A table that already has test roles (TinyFace) keeps them and only its train is split;
    a table that also has validation roles (a saved protocol.csv) keeps every role, so it reruns exactly.

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
    has_val = np.char.startswith(roles.astype(str), "val_").any()
    if val_fraction > 0 and train_people and not has_val:
        _, val_people = split_people(train_people, val_fraction, rng)
        val_rows = train_rows & np.isin(ids, list(val_people))
        roles[val_rows] = _enrol(ids, val_people, rng, "val_")[val_rows]
    check_people_apart(ids, roles)
    protocol = Protocol(FaceTable(table.paths, ids, roles, dict(table.notes)), name=name, seed=seed,
                        test_fraction=test_fraction, val_fraction=val_fraction, lowres=lowres,
                        lowres_apply=lowres_apply, degrade=degrade)
    if require_test and protocol.counts()["n_probes"] == 0:
        raise ValueError("the protocol has no probes: the test people need two or more images each")
    return protocol


TEST_ROLES = ("probe", "gallery", "distractor")


def check_people_apart(identities: np.ndarray, roles: np.ndarray) -> None:
    """A one-line ValueError when a person is both a test person and a train or validation person, or both a
    validation and a train person (roles given by a CSV or an edited protocol.csv): what a model learns or is tuned
    on must not be whom it is tested on."""
    ids, roles = np.asarray(identities, dtype=object), np.asarray(roles).astype(str)
    test = set(ids[np.isin(roles, TEST_ROLES)].tolist())
    val = set(ids[np.char.startswith(roles, "val_")].tolist())
    train = set(ids[roles == "train"].tolist())
    for both, what in ((test & (train | val), "test people and train or validation people"),
                       (val & train, "validation people and train people")):
        if both:
            named = ", ".join(sorted(map(str, both))[:5]) + (", ..." if len(both) > 5 else "")
            raise ValueError(f"{len(both)} people are both {what} ({named}): a protocol keeps them apart; "
                             "fix their roles")


SAVED_SETTINGS = ("seed", "lowres", "lowres_apply", "degrade", "test_fraction", "val_fraction")


def saved_settings(data: str | Path) -> dict | None:
    """The settings in ``protocol.json`` beside a saved ``protocol.csv`` (None if ``data`` is not one)."""
    data = Path(data)
    meta = data.with_name("protocol.json")
    if data.suffix.lower() != ".csv" or not meta.is_file():
        return None
    try:
        saved = read_json(meta)
    except (OSError, ValueError) as e:
        raise ValueError(f"{meta}: unreadable protocol settings ({e})") from e
    return {k: saved[k] for k in (*SAVED_SETTINGS, "name") if k in saved}


def resolve_settings(data: str | Path, given: dict, defaults: dict) -> dict:
    """Settings for a run: ``given`` (None = not given), else a saved protocol's, else ``defaults``.

    A given value that differs from the saved protocol's is an error: the rerun would not be exact.
    """
    saved = saved_settings(data) or {}
    out = {}
    for k in SAVED_SETTINGS:
        value = given.get(k)
        if value is not None and k in saved and saved[k] != value:
            raise ValueError(f"--{k.replace('_', '-')} {value} differs from {saved[k]} in the saved protocol "
                             f"{Path(data).with_name('protocol.json')}; leave it out to rerun exactly")
        out[k] = value if value is not None else saved.get(k, defaults.get(k))
    return out


# LookalikeLDA's default hold-out share of train people for choosing its shrinkage
RERANK_HOLDOUT = 0.25


def rerank_problem(identities: np.ndarray, roles: np.ndarray) -> str | None:
    """Why re-ranking cannot run on this split (None when it can).

    Re-ranking fits a disambiguator on the ``train`` people, tunes on the validation probes and calibrates
    open-set thresholds on non-mated validation searches. It needs (1) a validation person with 2+ images
    (validation probes) and a second validation person (non-mated searches) and (2) among the train people,
    at least ``max(3, round(0.25 * P) + 2)`` people with 2+ images, where P counts every train person (the
    same for train + validation people together, kept for a refit). The disambiguator holds out
    ``round(0.25 * P)`` train people to choose its shrinkage and needs genuine and lookalike pairs among the
    rest.
    """
    identities, roles = np.asarray(identities, object), np.asarray(roles, object)

    def people(mask: np.ndarray) -> tuple[int, int]:
        counts = Counter(identities[mask].tolist())
        return len(counts), sum(1 for c in counts.values() if c >= 2)

    val_all, val_multi = people(np.isin(roles, ("val_gallery", "val_probe", "val_distractor")))
    train_all, train_multi = people(roles == "train")
    both_all, both_multi = people(np.char.startswith(roles.astype(str), "val_") | (roles == "train"))
    need = max(3, round(RERANK_HOLDOUT * train_all) + 2)
    need_both = max(3, round(RERANK_HOLDOUT * both_all) + 2)
    if val_multi < 1:
        return "no validation person has 2+ usable images (no validation probes to tune re-ranking on)"
    if val_all < 2:
        return "one validation person only (no non-mated searches to calibrate thresholds on)"
    if train_multi < need or both_multi < need_both:
        return (f"{train_multi} of {train_all} train people have 2+ usable images; re-ranking needs at least "
                f"{need}")
    return None
