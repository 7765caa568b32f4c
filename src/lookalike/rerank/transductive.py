"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) in the authors' transductive setting.

Every test probe and every gallery image (enrolled images and distractors) form one set, as the authors'
``re_ranking(q_g_dist, q_q_dist, g_g_dist)`` takes them: neighbourhoods, k-reciprocal encodings and Jaccard
distances are computed within that set, so each probe's distances depend on all the other test probes. It
is an evaluation baseline: ``identify`` cannot run it on one new photo. The per-probe variant (each probe
with its own top-K list only) is :class:`lookalike.rerank.baselines.KReciprocal`.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from lookalike.matchers.base import l2_normalize

PAPER_SETTINGS = {"k1": 20, "k2": 6, "lam": 0.3}  # the paper's defaults, used as given (no tuning on test)
PAIRS_PER_CHUNK = 1 << 20  # (query, gallery, shared entry) triples held at once by the Jaccard step


def joint_distances(x: np.ndarray) -> np.ndarray:
    """(M, M) float32 squared Euclidean distances 2 - 2 cos between the L2-normalised rows of ``x`` (self 0),
    each row scaled by its max, as the paper's code does."""
    x = l2_normalize(x)
    d = x @ x.T
    d *= -2
    d += 2
    np.maximum(d, 0, out=d)
    np.fill_diagonal(d, 0)
    d /= np.maximum(d.max(1, keepdims=True), 1e-12)
    return d


def nearest(d: np.ndarray, n: int, block: int = 256) -> np.ndarray:
    """(M, min(n, M)) indices of each row's nearest items, self included, by a stable sort of the row."""
    n = min(n, d.shape[1])
    out = np.empty((len(d), n), np.int64)
    for s in range(0, len(d), block):
        out[s:s + block] = np.argsort(d[s:s + block], axis=1, kind="stable")[:, :n]
    return out


def pattern(rows: np.ndarray, cols: np.ndarray, m: int, values: np.ndarray | float = 1.0) -> sparse.csr_matrix:
    """(m, m) CSR matrix with ``values`` at (rows, cols)."""
    values = np.broadcast_to(np.asarray(values, np.float64), rows.shape)
    return sparse.csr_matrix((values, (rows, cols)), shape=(m, m))


def reciprocal(top: np.ndarray) -> sparse.csr_matrix:
    """0/1 matrix of k-reciprocal neighbours: j in R(i) when each is in the other's row of ``top`` (M, k+1)."""
    m, k = top.shape
    t = pattern(np.repeat(np.arange(m), k), top.ravel(), m)
    return t.multiply(t.T).tocsr()


def kreciprocal_encoding(d: np.ndarray, k1: int, k2: int, block: int = 256) -> sparse.csr_matrix:
    """(M, M) sparse rows V: each item's expanded k-reciprocal set weighted by exp(-d) and summing to 1, then
    averaged over its k2 nearest items (local query expansion).

    R(i) is expanded by R(c, k1/2) for each c in R(i) that shares more than 2/3 of R(c, k1/2) with R(i).
    """
    m = len(d)
    order = nearest(d, max(k1 + 1, k2), block)
    r = reciprocal(order[:, :min(k1, m - 1) + 1])
    rh = reciprocal(order[:, :min(int(round(k1 / 2)), m - 1) + 1])
    overlap = (r @ rh.T).multiply(r).tocoo()  # [i, c] = |R(i) ∩ R(c, k1/2)| for c in R(i)
    size = np.asarray(rh.sum(1)).ravel()
    grow = 3 * overlap.data > 2 * size[overlap.col]  # integer form of |overlap| > 2/3 |R(c, k1/2)|
    expanded = (r + pattern(overlap.row[grow], overlap.col[grow], m) @ rh).tocoo()
    w = np.exp(-d[expanded.row, expanded.col].astype(np.float64))
    v = pattern(expanded.row, expanded.col, m, w)
    s = np.asarray(v.sum(1)).ravel()
    v = sparse.diags(np.divide(1, s, out=np.zeros_like(s), where=s > 0)) @ v
    k2 = min(k2, m)
    if k2 > 1:
        v = pattern(np.repeat(np.arange(m), k2), order[:, :k2].ravel(), m, 1 / k2) @ v
    return v.tocsr()


def jaccard(v: sparse.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(len(rows), len(cols)) float32 Jaccard distances 1 - Σmin / Σmax between rows of ``v`` (each sums to 1,
    so Σmax = 2 - Σmin), summing the minima over shared entries through an inverted index of ``cols``."""
    by_entry = v[cols].tocsc()  # entry k -> the ``cols`` items holding it
    held = np.diff(by_entry.indptr)
    vr = v[rows].tocsr()
    cost = np.cumsum(np.bincount(np.repeat(np.arange(len(rows)), np.diff(vr.indptr)), held[vr.indices],
                                 len(rows)))  # triples needed by the rows up to each one
    out = np.empty((len(rows), len(cols)), np.float32)
    start = 0
    while start < len(rows):
        done = cost[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(cost, done + PAIRS_PER_CHUNK, side="right")))
        q = vr[start:stop].tocoo()
        n = held[q.col]
        which = np.repeat(np.arange(len(q.data)), n)
        at = np.repeat(by_entry.indptr[q.col] - np.cumsum(n) + n, n) + np.arange(n.sum())
        mins = np.minimum(q.data[which], by_entry.data[at])
        total = np.bincount(q.row[which] * len(cols) + by_entry.indices[at], mins, (stop - start) * len(cols))
        total = total.reshape(stop - start, len(cols))
        out[start:stop] = 1 - total / (2 - total)
        start = stop
    return out


def kreciprocal_transductive(probes: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3,
                             queries: np.ndarray | None = None, block: int = 256) -> np.ndarray:
    """Transductive k-reciprocal re-ranking: (len(queries), N) distances (1 - lam) * Jaccard + lam * original.

    Uses every probe in ``probes`` (Q, D) at once, with the ``gallery`` (N, D), as one set: an evaluation
    baseline over a whole test set, not something that can re-rank one new photo. ``queries`` are rows of
    that set to return distances for (probes are 0..Q-1, gallery images Q..Q+N-1); default every probe.
    Memory: one dense (Q+N)² float32 matrix and sparse encodings.
    """
    q = len(probes)
    d = joint_distances(np.concatenate([probes, gallery]))
    v = kreciprocal_encoding(d, k1, k2, block)
    rows = np.arange(q) if queries is None else np.asarray(queries, np.int64)
    cols = np.arange(q, len(d))
    final = jaccard(v, rows, cols)
    final *= 1 - lam
    final += lam * d[np.ix_(rows, cols)]
    return final
