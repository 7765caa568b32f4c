"""From a protocol to search problems: embed every image in its protocol view, then search each split.

A :class:`SearchSplit` (probes, gallery, baseline ranked lists and full-ranking mate positions) is what
re-rankers and evaluation work on; the test split and the validation split share that shape.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from lookalike.data.protocol import GALLERY_ROLES, Protocol, side_lowres
from lookalike.embed import Embeddings, embed_paths
from lookalike.faces import FaceSet
from lookalike.index import full_ranks, make_index
from lookalike.matchers import DEFAULT_MATCHER
from lookalike.matchers.align import FaceAligner
from lookalike.matchers.cache import EmbeddingCache
from lookalike.metrics import RankedLists, mate_positions
from lookalike.rerank.tuning import nonmated_lists


@dataclass
class SearchSplit:
    """One closed-set search problem: probes against a gallery (enrolled images plus distractors)."""

    name: str
    probes: FaceSet
    gallery: FaceSet
    is_distractor: np.ndarray  # (G,) bool
    lists: RankedLists  # baseline candidate lists
    base_ranks: list[np.ndarray]  # sorted full-ranking positions of each probe's mates (baseline)
    notes: dict = field(default_factory=dict)
    nonmated: RankedLists | None = None  # each distractor searched against the rest of the gallery (open set)
    gallery_as_probes: FaceSet | None = None  # the gallery's images prepared as probes are; None: as the gallery

    @property
    def nonmated_probes(self) -> FaceSet:
        """The distractors prepared as probes are: the queries of the non-mated searches (``nonmated``); the gallery's
        own distractor images unless the protocol degrades one side only."""
        return (self.gallery if self.gallery_as_probes is None else self.gallery_as_probes).take(self.is_distractor)

    @property
    def candidates(self) -> np.ndarray:
        """(Q, K, D) gallery vectors of the baseline candidates."""
        return self.gallery.vectors[self.lists.indices]

    def positions(self, lists: RankedLists | None = None, ranks: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """Mate positions for ``lists`` (default: the baseline lists); mates beyond a list keep their positions
        in ``ranks``, the full ranking that produced it (default: the baseline's, as re-rankers only permute
        the top of the list)."""
        lists = self.lists if lists is None else lists
        return mate_positions(lists, self.probes.identities, self.gallery.identities,
                              self.base_ranks if ranks is None else ranks)

    def mates(self) -> list[np.ndarray]:
        """Each probe's enrolled gallery images (see :func:`enrolled_mates`)."""
        return enrolled_mates(self.probes.identities, self.gallery.identities, self.is_distractor)


def enrolled_mates(probe_ids: np.ndarray, gallery_ids: np.ndarray, is_distractor: np.ndarray) -> list[np.ndarray]:
    """Each probe's mates: the gallery rows of its identity that are enrolled images, not distractors."""
    by_identity: dict[str, list[int]] = {}
    for g in np.flatnonzero(~is_distractor):
        by_identity.setdefault(gallery_ids[g], []).append(int(g))
    return [np.asarray(by_identity.get(pid, []), np.int64) for pid in probe_ids]


@dataclass
class ProtocolFeatures:
    """One embedding per protocol row (degraded where the protocol says), with each row's status; when the
    protocol degrades one side only, ``probe_view`` also holds the gallery roles' rows embedded as probes are (for
    non-mated searches, whose queries must be prepared like probes; zero vectors elsewhere)."""

    protocol: Protocol
    embeddings: Embeddings
    probe_view: np.ndarray | None = None

    def _rows(self, roles: tuple[str, ...]) -> np.ndarray:
        """The usable rows of these roles (a boolean mask over the protocol's table)."""
        return np.isin(self.protocol.table.roles, roles) & self.embeddings.ok

    def faces(self, *roles: str) -> FaceSet:
        """Usable images of these roles, each with the resolution the protocol gives it."""
        t, rows = self.protocol.table, self._rows(roles)
        lowres = np.asarray([self.protocol.lowres if self.protocol.degraded(r) else 0 for r in t.roles[rows]],
                            np.int32)
        return FaceSet(t.paths[rows], t.identities[rows], self.embeddings.vectors[rows], lowres)

    def faces_as_probes(self, *roles: str) -> FaceSet:
        """:meth:`faces` of these (gallery) roles, prepared as the protocol prepares probes."""
        if self.probe_view is None:
            return self.faces(*roles)
        t, rows = self.protocol.table, self._rows(roles)
        probe_lowres = side_lowres(self.protocol.lowres, self.protocol.lowres_apply, "probes") or 0
        return FaceSet(t.paths[rows], t.identities[rows], self.probe_view[rows],
                       np.full(int(rows.sum()), probe_lowres, np.int32))

    def skipped(self, *roles: str) -> dict[str, int]:
        rows = np.isin(self.protocol.table.roles, roles) & ~self.embeddings.ok
        return dict(Counter(self.embeddings.status[rows].tolist()))


def embed_protocol(protocol: Protocol, matcher: str | None = None, cache: EmbeddingCache | None = None,
                   aligner: FaceAligner | None = None, workers: int = 2, progress: bool = True) -> ProtocolFeatures:
    """Embed every row of the protocol in its view: full resolution, or degraded (``protocol.degrade``) to
    ``protocol.lowres``. One matcher for both views (None: :data:`~lookalike.matchers.DEFAULT_MATCHER`)."""
    matcher = matcher or DEFAULT_MATCHER
    t = protocol.table
    degraded = np.asarray([protocol.degraded(r) for r in t.roles], bool)
    n = len(t)
    parts = {}
    for flag in (False, True):
        rows = np.flatnonzero(degraded == flag)
        if len(rows):
            lowres = protocol.lowres if flag else None
            parts[flag] = (rows, embed_paths(t.paths[rows], matcher, aligner, lowres, cache, workers,
                                             progress=progress, desc=f"embed ({'lowres' if flag else 'full'})",
                                             degrade=protocol.degrade))
    dim = max(p[1].vectors.shape[1] for p in parts.values())
    emb = Embeddings(np.zeros((n, dim), np.float32), np.full(n, "", object), np.full(n, "", object),
                     np.zeros(n, np.int32))
    for rows, e in parts.values():
        if e.vectors.shape[1]:
            emb.vectors[rows] = e.vectors
        emb.status[rows], emb.method[rows], emb.n_faces[rows] = e.status, e.method, e.n_faces
        emb.messages.update({int(rows[i]): m for i, m in e.messages.items()})
        emb.seconds += e.seconds
        emb.computed += e.computed
    return ProtocolFeatures(protocol, emb, _probe_view(protocol, emb, matcher, cache, aligner, workers, progress))


def _probe_view(protocol: Protocol, emb: Embeddings, matcher: str, cache: EmbeddingCache | None,
                aligner: FaceAligner | None, workers: int, progress: bool) -> np.ndarray | None:
    """The gallery roles' usable rows embedded as the protocol prepares probes, when it degrades one side only
    (None otherwise). The same images, so the same faces: a row usable in one view and not the other is an error."""
    if protocol.lowres is None or protocol.lowres_apply == "both":
        return None
    t = protocol.table
    rows = np.flatnonzero(np.isin(t.roles, GALLERY_ROLES) & emb.ok)
    view = np.zeros_like(emb.vectors)
    if len(rows):
        e = embed_paths(t.paths[rows], matcher, aligner, side_lowres(protocol.lowres, protocol.lowres_apply, "probes"),
                        cache, workers, progress=progress, desc="embed gallery as probes", degrade=protocol.degrade)
        if not e.ok.all():
            raise ValueError(f"{int((~e.ok).sum())} gallery images usable at one resolution are not at the other")
        view[rows] = e.vectors
        emb.seconds += e.seconds
        emb.computed += e.computed
        emb.extra += len(rows)
    return view


def build_split(features: ProtocolFeatures, name: str = "test", depth: int = 100,
                index: str = "numpy") -> SearchSplit:
    """Search the split's probes against its gallery and distractors (``name`` is "test" or "val")."""
    prefix = "" if name == "test" else "val_"
    probes = features.faces(f"{prefix}probe")
    gallery_roles = (f"{prefix}gallery", f"{prefix}distractor")
    t = features.protocol.table
    gallery = features.faces(*gallery_roles)
    as_probes = features.faces_as_probes(*gallery_roles) if features.probe_view is not None else None
    is_distractor = t.roles[np.isin(t.roles, gallery_roles) & features.embeddings.ok] == f"{prefix}distractor"
    if len(probes) == 0 or len(gallery) == 0:
        raise ValueError(f"{name} split: {len(probes)} usable probes, {len(gallery)} usable gallery images")
    # Closed-set: probes whose identity has no usable gallery image are counted and set aside.
    enrolled = set(gallery.identities[~is_distractor].tolist())
    has_mate = np.asarray([i in enrolled for i in probes.identities], bool)
    notes = {"probes_without_mate": int((~has_mate).sum()),
             "skipped_probes": features.skipped(f"{prefix}probe"),
             "skipped_gallery": features.skipped(*gallery_roles)}
    probes = probes.take(has_mate)
    return search(name, probes, gallery, is_distractor, depth, index, notes, as_probes)


def search(name: str, probes: FaceSet, gallery: FaceSet, is_distractor: np.ndarray, depth: int = 100,
           index: str = "numpy", notes: dict | None = None, gallery_as_probes: FaceSet | None = None) -> SearchSplit:
    """Search ``probes`` (all of which have a mate) against ``gallery`` with their vectors; each distractor, prepared
    as probes are (``gallery_as_probes``, when that differs from the gallery), against the rest of the gallery.

    Also serves to re-search a split with other embeddings (e.g. an adapted matcher as the base matcher):
    ``search(split.name, split.probes with new vectors, split.gallery with new vectors, split.is_distractor)``.
    """
    notes = dict(notes or {})
    t0 = time.perf_counter()
    idx = make_index(index, gallery.vectors.shape[1])
    idx.add(gallery.vectors)
    scores, ids = idx.search(probes.vectors, depth)
    notes["search_s"] = time.perf_counter() - t0
    mates = enrolled_mates(probes.identities, gallery.identities, is_distractor)
    base_ranks = full_ranks(probes.vectors, gallery.vectors, mates)
    split = SearchSplit(name, probes, gallery, is_distractor, RankedLists(ids, scores), base_ranks, notes,
                        gallery_as_probes=gallery_as_probes)
    if is_distractor.any():
        split.nonmated = nonmated_lists(split.nonmated_probes, gallery, depth)
    return split
