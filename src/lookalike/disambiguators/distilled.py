"""Cross-resolution distillation: dlib's network's top fine-tuned so that low-resolution chips embed like the
full-resolution image.

The student is :class:`~lookalike.disambiguators.finetuned.FineTunedNet`'s network (frozen trunk run once per
train chip, top block(s) + fc trained on the cached activations) fed each train image at its protocol
resolution (``FaceSet.lowres``, e.g. ~20 px); the teacher is the matcher's full-resolution embedding of the
same image (read from the embedding cache; computed, and stored there, where missing). The loss is
``1 - cos(student, teacher)``, which needs no identity labels, so every train image counts (single-image
people too). ``triplet_weight`` > 0 adds that weight times FineTunedNet's lookalike triplet loss on the mined
pairs (a combined disambiguator and adapter). The epoch is chosen by the same loss on the images of a held-out
fraction of the train people (epoch 0 = dlib's weights). At full resolution the student already equals the
teacher (loss ~0): the fit then keeps dlib's weights.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch

from lookalike.disambiguators.finetuned import FineTunedNet
from lookalike.disambiguators.projection import triplets
from lookalike.faces import FaceSet
from lookalike.matchers.cache import DEFAULT_CACHE
from lookalike.mining import Pairs


class DistilledNet(FineTunedNet):
    """A low-resolution student of dlib's network pulled towards its full-resolution (teacher) embeddings.

    ``teacher``: the matcher whose cached full-resolution vectors are the targets (``"torch"``: dlib's network,
    the student's starting point); ``holdout``: fraction of the train people whose images (and pairs) are held
    out to pick the epoch; ``triplet_weight``: weight of the lookalike triplet loss (0: pure distillation, and
    the mined pairs passed to :meth:`fit` are unused); ``margin``, ``hard_weight``, ``max_pairs`` and the rest
    as :class:`FineTunedNet`.
    """

    def __init__(self, trainable: str = "last2", epochs: int = 8, batch_size: int = 64, lr: float = 3e-5,
                 anchor_decay: float = 1e-4, holdout: float = 0.15, seed: int = 0, teacher: str = "torch",
                 triplet_weight: float = 0.0, margin: float = 0.1, hard_weight: float = 0.5,
                 max_pairs: int | None = 20_000, cache_path: str | None = str(DEFAULT_CACHE),
                 weights: str | None = None, device: str = "cpu", embed_batch: int = 64,
                 central_fraction: float = 0.45) -> None:
        super().__init__(trainable=trainable, epochs=epochs, batch_size=batch_size, lr=lr, margin=margin,
                         hard_weight=hard_weight, anchor_decay=anchor_decay, max_pairs=max_pairs, holdout=holdout,
                         seed=seed, cache_path=cache_path, weights=weights, device=device, embed_batch=embed_batch,
                         central_fraction=central_fraction)
        self.teacher, self.triplet_weight = teacher, triplet_weight

    def teacher_embeddings(self, faces: FaceSet) -> tuple[np.ndarray, np.ndarray]:
        """(N, 128) L2-normalised full-resolution teacher embeddings of ``faces``' images, and the ok mask."""
        from lookalike.embed import embed_paths
        from lookalike.matchers.base import l2_normalize

        cache, aligner = self._io()
        emb = embed_paths(faces.paths, self.teacher, aligner, None, cache, workers=1, progress=False)
        ok = emb.ok & (np.linalg.norm(emb.vectors, axis=1) > 0) if len(emb.vectors) else emb.ok
        return np.where(ok[:, None], l2_normalize(emb.vectors), 0).astype(np.float32), ok

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        rng = np.random.default_rng(self.seed)
        t0 = time.perf_counter()
        cut, params = self._start()
        target, ok_t = self.teacher_embeddings(train)
        acts, ok_s = self._activations(train, cut)
        t_acts = time.perf_counter() - t0
        ok = ok_t & ok_s
        rows = np.flatnonzero(ok)
        if len(rows) == 0:
            raise ValueError(f"no usable train images: all {len(train)} failed (unreadable or no face)")
        # hold out whole people (the loss needs no labels; the split keeps the epoch choice honest about new faces)
        people = np.unique(train.identities[rows])
        n_people = int(round(self.holdout * len(people))) if len(people) > 1 else 0
        held_person = np.isin(train.identities, rng.choice(people, n_people, replace=False))
        held, fit_rows = rows[held_person[rows]], rows[~held_person[rows]]
        target_t = torch.from_numpy(target).to(self.device)
        ident = torch.as_tensor(np.unique(train.identities, return_inverse=True)[1], device=self.device)
        fit_t = held_t = np.zeros((0, 3), np.int64)
        if self.triplet_weight:
            pairs = self._used_pairs(pairs)
            pairs = pairs.subset(ok[pairs.left] & ok[pairs.right])
            on_held = held_person[pairs.left] | held_person[pairs.right]
            held_t = triplets(pairs.subset(on_held), np.random.default_rng(self.seed + 2))
            pairs = pairs.subset(~on_held)

        def loss(r: np.ndarray, t: np.ndarray) -> torch.Tensor:
            """Distillation loss of rows ``r`` (+ the weighted triplet loss of triplets ``t``)."""
            both = np.concatenate([r, t.reshape(-1)])
            z = self._head(self._head_input(acts[torch.as_tensor(both)], cut), cut)
            out = torch.zeros((), device=self.device)
            if len(r):
                out = 1.0 - (z[:len(r)] * target_t[torch.as_tensor(r, device=self.device)]).sum(1).mean()
            if len(t):
                zt = z[len(r):].reshape(-1, 3, z.shape[1])
                out = out + self.triplet_weight * self._triplet_loss(zt, ident[torch.as_tensor(t.reshape(-1))])[0]
            return out

        def mean_loss(r: np.ndarray, t: np.ndarray) -> float:
            n = max(len(r), len(t), 1)
            step = -(-n // max(-(-n // 512), 1))  # <= 512 rows and triplets per batch, evenly split
            with torch.no_grad():
                parts = [float(loss(r[s:s + step], t[s:s + step])) for s in range(0, n, step)]
            return float(np.mean(parts))

        def batches() -> Iterator[tuple[torch.Tensor, int]]:
            order = fit_rows[rng.permutation(len(fit_rows))]
            t = np.zeros((0, 3), np.int64)
            if self.triplet_weight:  # fresh positives each epoch, one batch of triplets per batch of images
                t = triplets(pairs, rng)
                t = t[rng.permutation(len(t))]
            for k, s in enumerate(range(0, len(order), self.batch_size)):
                tb = t[(k * self.batch_size) % max(len(t), 1):][: self.batch_size]
                yield loss(order[s:s + self.batch_size], tb), len(order[s:s + self.batch_size])

        if self.triplet_weight:
            fit_t = triplets(pairs, np.random.default_rng(self.seed + 1))
        loss0 = mean_loss(fit_rows, fit_t)
        held_loss = (lambda: mean_loss(held, held_t)) if len(held) else None
        losses, held_losses, best_epoch = self._train(params, batches, held_loss)
        loss1 = mean_loss(fit_rows, fit_t)
        self._done(params)
        self.stats = {"n_train_images": int(len(fit_rows)), "n_holdout_images": int(len(held)),
                      "failed_images": int(len(train) - len(rows)), "n_triplets": int(len(fit_t)),
                      "frozen_layers": cut, "trainable_params": int(sum(p.numel() for p in params)),
                      "loss_init": round(loss0, 5), "loss_final": round(loss1, 5),
                      "epoch_losses": [round(x, 5) for x in losses],
                      "holdout_losses": [round(x, 5) for x in held_losses], "best_epoch": best_epoch,
                      "activations_s": round(t_acts, 1), "fit_s": round(time.perf_counter() - t0, 1)}
