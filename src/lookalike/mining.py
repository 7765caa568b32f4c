"""Lookalike-pair mining on the train split, in the style of pytorch-metric-learning's miners.

A :class:`Miner` validates its input, calls the one ``_mine`` method each variant implements, checks the
result (lookalikes are always different people, genuine pairs the same person) and records statistics.
Mining sees only the faces it is given: pass the train split, never test people.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lookalike.faces import FaceSet
from lookalike.io import atomic_write

GENUINE, LOOKALIKE = 1, 0
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class Pairs:
    """Row-index pairs into one FaceSet with labels (genuine=1, lookalike=0) and their base scores."""

    left: np.ndarray
    right: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.left = np.asarray(self.left, np.int64)
        self.right = np.asarray(self.right, np.int64)
        self.labels = np.asarray(self.labels, np.int8)
        self.scores = np.asarray(self.scores, np.float32)
        n = len(self.left)
        if not (len(self.right) == len(self.labels) == len(self.scores) == n):
            raise ValueError("Pairs fields must have equal lengths")

    def __len__(self) -> int:
        return len(self.left)

    @classmethod
    def empty(cls) -> Pairs:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))

    def subset(self, mask: np.ndarray) -> Pairs:
        return Pairs(self.left[mask], self.right[mask], self.labels[mask], self.scores[mask])

    def __add__(self, other: Pairs) -> Pairs:
        return Pairs(*(np.concatenate([a, b]) for a, b in zip(self._fields(), other._fields(), strict=True))
                     ).unique()

    def _fields(self) -> tuple[np.ndarray, ...]:
        return self.left, self.right, self.labels, self.scores

    def unique(self) -> Pairs:
        """Drop repeated unordered pairs (the first occurrence wins); left < right afterwards."""
        lo, hi = np.minimum(self.left, self.right), np.maximum(self.left, self.right)
        _, first = np.unique(np.stack([lo, hi], 1), axis=0, return_index=True)
        first = np.sort(first)
        return Pairs(lo[first], hi[first], self.labels[first], self.scores[first])

    @property
    def genuine(self) -> Pairs:
        return self.subset(self.labels == GENUINE)

    @property
    def lookalike(self) -> Pairs:
        return self.subset(self.labels == LOOKALIKE)


def _similarity_blocks(vectors: np.ndarray, block: int = 2048) -> Iterator[tuple[int, np.ndarray]]:
    """(start row, cosine block) over all rows against all rows; the diagonal is set to -inf."""
    for s in range(0, len(vectors), block):
        sim = vectors[s:s + block] @ vectors.T
        rows = np.arange(len(sim))
        sim[rows, s + rows] = -np.inf
        yield s, sim


class Miner(ABC):
    """Mines labelled pairs from one FaceSet; ``stats`` holds counts and score quantiles of the last run."""

    def __init__(self) -> None:
        self.stats: dict = {}

    @abstractmethod
    def _mine(self, faces: FaceSet) -> Pairs:
        """The one method each variant implements."""

    def mine(self, faces: FaceSet) -> Pairs:
        v = np.asarray(faces.vectors)
        if v.ndim != 2 or len(v) != len(faces.identities) or len(v) < 2:
            raise ValueError(f"need (N>=2, D) vectors aligned with identities, got {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("vectors must be finite")
        pairs = self._mine(faces).unique()
        same = faces.identities[pairs.left] == faces.identities[pairs.right]
        if (pairs.left == pairs.right).any():
            raise AssertionError(f"{type(self).__name__}: a pair joins an image with itself")
        if (same != (pairs.labels == GENUINE)).any():
            raise AssertionError(f"{type(self).__name__}: labels disagree with identities")
        self.stats = pair_stats(pairs, faces)
        return pairs


def pair_stats(pairs: Pairs, faces: FaceSet) -> dict:
    out: dict = {"n_pairs": len(pairs), "n_images": len(faces)}
    for name, label in (("genuine", GENUINE), ("lookalike", LOOKALIKE)):
        p = pairs.subset(pairs.labels == label)
        out[f"n_{name}"] = len(p)
        out[f"n_{name}_images"] = int(len(np.unique(np.concatenate([p.left, p.right]))))
        if len(p):
            out[f"{name}_score_q"] = dict(zip(map(str, QUANTILES), np.quantile(p.scores, QUANTILES).round(4)
                                              .tolist(), strict=True))
    return out


def _top_impostors(faces: FaceSet, k: int, mate_margin: float | None = None) -> Pairs:
    """Each image's ``k`` most similar images of other people; with ``mate_margin``, only those scored above
    the image's weakest true mate minus the margin (images without a mate then give none)."""
    ids, left, right, scores = faces.identities, [], [], []
    for s, sim in _similarity_blocks(faces.vectors):
        same = ids[s:s + len(sim)][:, None] == ids[None, :]
        imp = np.where(same, -np.inf, sim)
        k_ = min(k, imp.shape[1] - 1)
        top = np.argpartition(-imp, k_ - 1, axis=1)[:, :k_]
        val = np.take_along_axis(imp, top, 1)
        ok = np.isfinite(val)
        if mate_margin is not None:
            mate = np.where(same & np.isfinite(sim), sim, np.inf).min(1)  # weakest mate (inf: none)
            ok &= np.isfinite(mate)[:, None] & (val > mate[:, None] - mate_margin)
        left.append(np.broadcast_to(np.arange(s, s + len(sim))[:, None], top.shape)[ok])
        right.append(top[ok])
        scores.append(val[ok])
    left, right, scores = np.concatenate(left), np.concatenate(right), np.concatenate(scores)
    return Pairs(left, right, np.full(len(left), LOOKALIKE), scores)


class TopKImpostorMiner(Miner):
    """For every image, its ``k`` most similar images of other people."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.k = k

    def _mine(self, faces: FaceSet) -> Pairs:
        return _top_impostors(faces, self.k)


class HardImpostorMiner(Miner):
    """Impostors scored above one of the query's true mates (minus ``margin``), at most ``max_per_query``.

    These are the pairs that break rank-1: a different person looks more like the query than the same
    person's other photo does.
    """

    def __init__(self, margin: float = 0.0, max_per_query: int = 10) -> None:
        super().__init__()
        self.margin, self.max_per_query = margin, max_per_query

    def _mine(self, faces: FaceSet) -> Pairs:
        return _top_impostors(faces, self.max_per_query, mate_margin=self.margin)


class ThresholdMiner(Miner):
    """Every pair of different people with similarity at least ``threshold`` (at most ``max_pairs``, best)."""

    def __init__(self, threshold: float = 0.6, max_pairs: int = 200_000) -> None:
        super().__init__()
        self.threshold, self.max_pairs = threshold, max_pairs

    def _mine(self, faces: FaceSet) -> Pairs:
        ids, left, right, scores = faces.identities, [], [], []
        for s, sim in _similarity_blocks(faces.vectors):
            sim[ids[s:s + len(sim)][:, None] == ids[None, :]] = -np.inf
            r, c = np.nonzero(sim >= self.threshold)
            keep = r + s < c  # each unordered pair once
            left.append(r[keep] + s)
            right.append(c[keep])
            scores.append(sim[r[keep], c[keep]])
        left, right, scores = np.concatenate(left), np.concatenate(right), np.concatenate(scores)
        best = np.argsort(-scores, kind="stable")[:self.max_pairs]
        return Pairs(left[best], right[best], np.full(len(best), LOOKALIKE), scores[best])


class GenuineMiner(Miner):
    """Same-person pairs: all of them, or at most ``max_per_identity`` per person (seeded sample)."""

    def __init__(self, max_per_identity: int | None = 50, seed: int = 0) -> None:
        super().__init__()
        self.max_per_identity, self.seed = max_per_identity, seed

    def _mine(self, faces: FaceSet) -> Pairs:
        rng = np.random.default_rng(self.seed)
        _, inv = np.unique(faces.identities, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        bounds = np.flatnonzero(np.diff(inv[order])) + 1
        left, right = [], []
        for rows in np.split(order, bounds):
            if len(rows) < 2:
                continue
            a, b = np.triu_indices(len(rows), 1)
            if self.max_per_identity is not None and len(a) > self.max_per_identity:
                pick = rng.choice(len(a), self.max_per_identity, replace=False)
                a, b = a[pick], b[pick]
            left.append(rows[a])
            right.append(rows[b])
        if not left:
            return Pairs.empty()
        left, right = np.concatenate(left), np.concatenate(right)
        scores = np.einsum("ij,ij->i", faces.vectors[left], faces.vectors[right])
        return Pairs(left, right, np.full(len(left), GENUINE), scores)


class UnionMiner(Miner):
    """The union of several miners' pairs (e.g. genuine + top-k impostors); per-miner stats are kept."""

    def __init__(self, miners: list[Miner]) -> None:
        super().__init__()
        self.miners = miners

    def _mine(self, faces: FaceSet) -> Pairs:
        out = Pairs.empty()
        for m in self.miners:
            out = out + m.mine(faces)
        return out

    def mine(self, faces: FaceSet) -> Pairs:
        pairs = super().mine(faces)
        self.stats["miners"] = {type(m).__name__: m.stats for m in self.miners}
        return pairs


def triplets(pairs: Pairs, rng: np.random.Generator) -> np.ndarray:
    """(T, 3) rows (anchor, positive, negative): every lookalike pair in both directions whose anchor has a
    genuine mate, with one mate drawn at random per row."""
    g, look = pairs.genuine, pairs.lookalike
    a_g = np.concatenate([g.left, g.right])
    m_g = np.concatenate([g.right, g.left])
    order = np.argsort(a_g, kind="stable")
    a_g, m_g = a_g[order], m_g[order]
    anchors = np.concatenate([look.left, look.right])
    negatives = np.concatenate([look.right, look.left])
    start, stop = np.searchsorted(a_g, anchors, "left"), np.searchsorted(a_g, anchors, "right")
    ok = stop > start
    pick = start[ok] + (rng.random(ok.sum()) * (stop[ok] - start[ok])).astype(np.int64)
    return np.stack([anchors[ok], m_g[pick], negatives[ok]], 1).astype(np.int64)


def default_miner(k: int = 10, seed: int = 0) -> Miner:
    """Genuine pairs plus each image's ``k`` nearest impostors and every impostor above a true mate."""
    return UnionMiner([GenuineMiner(seed=seed), TopKImpostorMiner(k), HardImpostorMiner(0.0, 2 * k)])


def random_impostor_scores(faces: FaceSet, n: int = 20_000, seed: int = 0) -> np.ndarray:
    """Scores of random different-person pairs (for reference plots only; never for training)."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(faces), n), rng.integers(0, len(faces), n)
    keep = faces.identities[a] != faces.identities[b]
    return np.einsum("ij,ij->i", faces.vectors[a[keep]], faces.vectors[b[keep]])


def plot_score_distributions(pairs: Pairs, random_scores: np.ndarray, path: str | Path,
                             title: str = "") -> None:
    """Histograms of genuine, mined lookalike and random impostor scores, written as a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    groups = ((pairs.genuine.scores, "genuine"), (pairs.lookalike.scores, "mined lookalikes"),
              (random_scores, "random impostors"))
    every = np.concatenate([np.asarray(g, np.float64) for g, _ in groups])
    lo, hi = np.quantile(every, [0.001, 0.999]) if len(every) else (-1.0, 1.0)
    bins = np.linspace(lo, hi, 81)
    for scores, label in groups:
        if len(scores):
            ax.hist(scores, bins=bins, density=True, alpha=0.5, label=f"{label} (n={len(scores):,})")
    ax.set_xlabel("base cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title or "score distributions")
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def _thumbnail(path: str, size: int, crop: int) -> np.ndarray:
    from PIL import Image

    from lookalike.data.images import load_image

    img = load_image(path)
    h, w = img.shape[:2]
    c = min(crop, h, w)
    top, left = (h - c) // 2, (w - c) // 2
    chip = Image.fromarray(img[top:top + c, left:left + c]).resize((size, size), Image.BILINEAR)
    return np.asarray(chip)


def lookalike_montage(pairs: Pairs, faces: FaceSet, path: str | Path, n: int = 12, size: int = 96,
                      crop: int = 120) -> int:
    """The ``n`` highest-scoring lookalike pairs side by side (centre crops), as a PNG; returns pairs shown."""
    from matplotlib.figure import Figure

    look = pairs.lookalike
    order = np.argsort(-look.scores, kind="stable")[:n]
    cols = 2
    rows = max(1, int(np.ceil(len(order) / cols)))
    fig = Figure(figsize=(cols * 3.2, rows * 1.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), order, strict=False):
        a, b = int(look.left[i]), int(look.right[i])
        try:
            pair = np.concatenate([_thumbnail(str(faces.paths[a]), size, crop),
                                   _thumbnail(str(faces.paths[b]), size, crop)], axis=1)
        except Exception:  # noqa: BLE001 - a missing file must not kill the report
            pair = np.zeros((size, 2 * size, 3), np.uint8)
        ax.imshow(pair)
        ax.set_title(f"{faces.identities[a]} | {faces.identities[b]}\n{look.scores[i]:.3f}", fontsize=7)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    return len(order)


def mining_report(train: FaceSet, out_dir: str | Path, miner: Miner | None = None, n_montage: int = 12,
                  seed: int = 0) -> dict:
    """Mine ``train``, write ``score_distributions.png`` and ``lookalike_montage.png``; return the stats."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    miner = miner or default_miner(seed=seed)
    pairs = miner.mine(train)
    rand = random_impostor_scores(train, seed=seed)
    plot_score_distributions(pairs, rand, out_dir / "score_distributions.png", "train split: mined pairs")
    shown = lookalike_montage(pairs, train, out_dir / "lookalike_montage.png", n=n_montage)
    stats = dict(miner.stats)
    stats["random_impostor_score_q"] = dict(zip(map(str, QUANTILES), np.quantile(rand, QUANTILES).round(4)
                                                .tolist(), strict=True)) if len(rand) else {}
    stats["montage_pairs"] = shown
    stats["files"] = [str(out_dir / "score_distributions.png"), str(out_dir / "lookalike_montage.png")]
    return stats
