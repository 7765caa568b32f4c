"""A learned linear projection trained with a triplet loss whose negatives are mined lookalikes.

Each lookalike pair (a, n) is paired with a positive p (another photo of a's person, from the genuine pairs);
the loss pushes cos(Pa, Pp) above cos(Pa, Pn) by ``margin``. ``P`` starts from the identity (or from a
closed-form :class:`LookalikeLDA`) and is kept near its start by ``anchor_decay``.
"""

from __future__ import annotations

import numpy as np

from lookalike.disambiguators.base import EmbeddingDisambiguator, l2n
from lookalike.disambiguators.lda import LookalikeLDA
from lookalike.faces import FaceSet
from lookalike.mining import Pairs


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


class LookalikeProjection(EmbeddingDisambiguator):
    """Linear map ``x -> P (x - mean)`` then cosine, trained on (anchor, mate, lookalike) triplets."""

    def __init__(self, dim: int = 128, margin: float = 0.2, epochs: int = 30, lr: float = 1e-3,
                 batch: int = 512, anchor_decay: float = 1e-3, init: str = "lda", seed: int = 0) -> None:
        super().__init__()
        self.dim, self.margin, self.epochs, self.lr = dim, margin, epochs, lr
        self.batch, self.anchor_decay, self.init, self.seed = batch, anchor_decay, init, seed
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        import torch

        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        x = np.asarray(train.vectors, np.float64)
        if self.init == "lda":
            lda = LookalikeLDA(dim=self.dim).fit(train, pairs)
            mean, w0 = lda.mean_, lda.components_
            w0 = w0 / np.linalg.norm(w0, axis=0).mean()
        else:
            mean, w0 = x.mean(0), np.eye(x.shape[1])[:, : self.dim]
        xt = torch.tensor(x - mean, dtype=torch.float32)
        w_init = torch.tensor(w0, dtype=torch.float32)
        w = w_init.clone().requires_grad_(True)
        m1, m2, beta1, beta2, step = torch.zeros_like(w), torch.zeros_like(w), 0.9, 0.999, 0
        losses = []
        for _ in range(self.epochs):
            t = triplets(pairs, rng)  # fresh positives each epoch
            if len(t) == 0:
                raise ValueError("no triplets: lookalike anchors need genuine mates")
            perm = rng.permutation(len(t))
            total = 0.0
            for s in range(0, len(t), self.batch):
                b = torch.as_tensor(t[perm[s:s + self.batch]])
                z = torch.nn.functional.normalize(xt[b.reshape(-1)] @ w, dim=1).reshape(len(b), 3, -1)
                pos = (z[:, 0] * z[:, 1]).sum(1)
                neg = (z[:, 0] * z[:, 2]).sum(1)
                loss = torch.relu(self.margin + neg - pos).mean() + self.anchor_decay * ((w - w_init) ** 2).sum()
                (grad,) = torch.autograd.grad(loss, w)
                with torch.no_grad():  # Adam, by hand (torch.optim pulls in the compiler stack on import)
                    step += 1
                    m1.mul_(beta1).add_(grad, alpha=1 - beta1)
                    m2.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    denom = (m2 / (1 - beta2 ** step)).sqrt_().add_(1e-8)
                    w.sub_(self.lr * (m1 / (1 - beta1 ** step)) / denom)
                total += float(loss.detach()) * len(b)
            losses.append(total / len(t))
        self.mean_, self.components_ = mean, w.detach().numpy().astype(np.float64)
        self.stats = {"n_triplets": int(len(t)), "loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4)}

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        if self.components_ is None:
            raise RuntimeError("fit first")
        return l2n((np.asarray(vectors, np.float64) - self.mean_) @ self.components_)

    def _state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean_, "components": self.components_}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean_, self.components_ = state["mean"], state["components"]
