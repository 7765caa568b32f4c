"""Synthetic face-embedding data with lookalike structure, for tests and demos.

People come in lookalike groups: members of a group share a centre and differ only in a small
"identity" subspace, while every photo adds strong nuisance variation in the other dimensions. The base
cosine therefore confuses lookalikes, and whitening genuine (within-person) variation separates them.
"""

from __future__ import annotations

import numpy as np

from lookalike.experiment import SearchSplit
from lookalike.faces import FaceSet
from lookalike.index import full_ranks, make_index
from lookalike.metrics import RankedLists


def synthetic_faces(n_people: int = 120, per_person: int = 4, group_size: int = 4, dim: int = 32,
                    id_dims: int = 8, id_spread: float = 0.35, nuisance: float = 0.8, photo_noise: float = 0.05,
                    prefix: str = "p", seed: int = 0, world_seed: int = 0) -> FaceSet:
    """``n_people`` people with ``per_person`` photos each (the last tenth of people have one photo).

    ``world_seed`` fixes the identity/nuisance subspaces shared by all sets; ``seed`` draws the people.
    """
    basis = np.linalg.qr(np.random.default_rng(world_seed).normal(size=(dim, dim)))[0]
    rng = np.random.default_rng(seed)
    n_groups = int(np.ceil(n_people / group_size))
    centres = rng.normal(size=(n_groups, dim))
    id_basis, nuis_basis = basis[:, :id_dims], basis[:, id_dims:]
    vecs, ids = [], []
    for p in range(n_people):
        centre = centres[p // group_size] / np.sqrt(dim) * 1.0
        person = centre + id_spread / np.sqrt(id_dims) * rng.normal(size=id_dims) @ id_basis.T
        n = 1 if p >= int(0.9 * n_people) else per_person
        for _ in range(n):
            x = person + nuisance / np.sqrt(dim - id_dims) * rng.normal(size=dim - id_dims) @ nuis_basis.T
            vecs.append(x + photo_noise / np.sqrt(dim) * rng.normal(size=dim))
            ids.append(f"{prefix}{p:04d}")
    v = np.asarray(vecs, np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return FaceSet(np.asarray([f"/synthetic/{i}/{k}.png" for k, i in enumerate(ids)], object),
                   np.asarray(ids, object), v)


def synthetic_split(faces: FaceSet, name: str = "test", depth: int = 20, seed: int = 0) -> SearchSplit:
    """A closed-set split: one gallery photo per multi-photo person (the rest probes), singletons distract."""
    rng = np.random.default_rng(seed)
    probe_rows, gallery_rows = [], []
    for pid in sorted(set(faces.identities.tolist())):
        rows = np.flatnonzero(faces.identities == pid)
        g = int(rng.choice(rows))
        gallery_rows.append(g)
        probe_rows.extend(r for r in rows.tolist() if r != g)
    pr, gr = np.asarray(probe_rows), np.asarray(gallery_rows)
    probes = FaceSet(faces.paths[pr], faces.identities[pr], faces.vectors[pr])
    gallery = FaceSet(faces.paths[gr], faces.identities[gr], faces.vectors[gr])
    is_distractor = ~np.isin(gallery.identities, probes.identities)
    idx = make_index("numpy", faces.vectors.shape[1])
    idx.add(gallery.vectors)
    scores, ids = idx.search(probes.vectors, depth)
    row = {pid: i for i, pid in enumerate(gallery.identities.tolist())}
    mates = [np.asarray([row[p]], np.int64) for p in probes.identities]
    return SearchSplit(name, probes, gallery, is_distractor, RankedLists(ids, scores),
                       full_ranks(probes.vectors, gallery.vectors, mates))
