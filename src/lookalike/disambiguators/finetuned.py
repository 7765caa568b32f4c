"""An image-level disambiguator: dlib's face network fine-tuned on mined lookalike pairs.

A copy of the network (:mod:`lookalike.matchers.torch_resnet`) is trained with a margin triplet loss whose
negatives are the mined lookalikes of each anchor plus the hardest other-person image in the batch, on chips
degraded to each image's protocol resolution (``FaceSet.lowres``). On CPU the practical setting is to freeze
the trunk: the frozen layers run once per train chip (forward only, batched) and only the top residual
block(s) and the fc layer are trained on those cached activations. ``trainable="all"`` trains everything
(for a GPU). Pairs are scored by the cosine of the fine-tuned embeddings.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookalike.disambiguators.base import Disambiguator
from lookalike.disambiguators.projection import triplets
from lookalike.faces import FaceSet
from lookalike.matchers.cache import DEFAULT_CACHE, EmbeddingCache
from lookalike.mining import Pairs

Key = tuple[str, int]  # (path, lowres); lowres 0 = full resolution


def n_frozen(trainable: str, n_blocks: int) -> int:
    """How many of the layers [stem, block_0, ..., block_{n-1}] stay frozen for a ``trainable`` setting:
    ``"fc"`` (only the fc layer), ``"last"``/``"lastN"`` (the last N residual blocks + fc) or ``"all"``."""
    if trainable == "all":
        return 0
    if trainable == "fc":
        return n_blocks + 1
    if trainable.startswith("last"):
        n = int(trainable[4:] or 1)
        if 1 <= n <= n_blocks:
            return n_blocks + 1 - n
    raise ValueError(f"trainable must be 'fc', 'last', 'lastN' (1 <= N <= {n_blocks}) or 'all', got {trainable!r}")


def _layers(model: nn.Module) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """The network as a sequence: the stem, then each residual block (global pool + fc come after)."""

    def stem(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(model.stem_affine(model.stem_conv(x))), 3, 2)

    return [stem, *model.blocks]


class FineTunedNet(Disambiguator):
    """dlib's ResNet fine-tuned on genuine vs lookalike pairs; scores = cosine of the new embeddings.

    ``trainable``: ``"fc"``, ``"last"`` (last residual block + fc), ``"lastN"`` or ``"all"``.
    ``margin``: triplet margin on cosines; ``hard_weight``: weight of the in-batch hardest-negative term;
    ``anchor_decay``: L2 pull of the trained weights towards dlib's; ``max_pairs``: at most this many mined
    lookalike pairs are used (the highest-scoring ones); ``holdout``: fraction of the train people (with
    genuine pairs) whose triplets are held out to pick the best epoch (epoch 0 = dlib's weights, so a
    fine-tuning that does not generalise is undone); ``cache_path``: embedding cache holding the
    alignments (images without a cached alignment are aligned here); ``threads``: torch CPU threads.
    """

    def __init__(self, trainable: str = "last", epochs: int = 10, batch_size: int = 128, lr: float = 1e-4,
                 margin: float = 0.1, hard_weight: float = 0.5, anchor_decay: float = 1e-3,
                 max_pairs: int | None = 50_000, holdout: float = 0.2, seed: int = 0,
                 cache_path: str | None = str(DEFAULT_CACHE), weights: str | None = None, threads: int | None = None,
                 device: str = "cpu", embed_batch: int = 64) -> None:
        super().__init__()
        self.trainable, self.epochs, self.batch_size, self.lr = trainable, epochs, batch_size, lr
        self.margin, self.hard_weight, self.anchor_decay = margin, hard_weight, anchor_decay
        self.max_pairs, self.holdout, self.seed = max_pairs, holdout, seed
        self.cache_path, self.weights = cache_path, weights
        self.threads, self.device, self.embed_batch = threads, device, embed_batch
        self._net: nn.Module | None = None
        self._frozen_cache: tuple[int, nn.Module] | None = None
        self._emb: dict[Key, np.ndarray] = {}  # fine-tuned embeddings (NaN rows: image failed)
        self._cache = None
        self._aligner = None

    input = "image"

    # ---------------------------------------------------------------------------------------------
    # network

    @property
    def net(self) -> nn.Module:
        """The (possibly fine-tuned) unfused network; built from dlib's weights on first use."""
        if self._net is None:
            from lookalike.matchers.torch_resnet import build_dlib_resnet

            self._net = build_dlib_resnet(self.weights).to(self.device)
            self._frozen_cache = None
        return self._net

    def _cut(self) -> int:
        return n_frozen(self.trainable, len(self.net.blocks))

    def _trunk(self) -> nn.Module:
        """A fused (inference) copy of the network for the frozen layers (refreshed when weights change)."""
        from lookalike.matchers.torch_resnet import fuse_affine

        if self._frozen_cache is None:
            self._frozen_cache = (0, fuse_affine(self.net).to(memory_format=torch.channels_last))
        return self._frozen_cache[1]

    def _trunk_forward(self, chips: np.ndarray, cut: int) -> torch.Tensor:
        """uint8 chips -> activations after the first ``cut`` layers (frozen; no gradient)."""
        from lookalike.matchers.torch_resnet import preprocess

        x = preprocess(torch.from_numpy(np.ascontiguousarray(chips)).to(self.device))
        if cut == 0:
            return x
        with torch.no_grad():
            x = x.contiguous(memory_format=torch.channels_last)
            for layer in _layers(self._trunk())[:cut]:
                x = layer(x)
            return x.contiguous().clone()

    def _head_forward(self, acts: torch.Tensor, cut: int) -> torch.Tensor:
        """Activations after ``cut`` layers -> L2-normalised embeddings through the trainable layers."""
        x = acts
        for layer in _layers(self.net)[cut:]:
            x = layer(x)
        return F.normalize(self.net.fc(x.mean(dim=(2, 3))), dim=1)

    def _set_threads(self) -> None:
        if self.threads is not None:
            torch.set_num_threads(self.threads)

    # ---------------------------------------------------------------------------------------------
    # chips

    def _chips(self, paths: Sequence[str], lowres: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Aligned chips degraded to ``lowres`` (0 = full): cached alignments first, else aligned here."""
        from lookalike.data.images import degrade, load_image
        from lookalike.embed import read_chips
        from lookalike.matchers.align import FaceAligner

        if self._aligner is None:
            self._aligner = FaceAligner()
        if self._cache is None:
            use = self.cache_path is not None and Path(self.cache_path).exists()
            self._cache = EmbeddingCache(self.cache_path if use else None)
        al = self._aligner
        size = al.chip_size
        chips = np.zeros((len(paths), size, size, 3), np.uint8)
        ok = np.zeros(len(paths), bool)
        lowres = np.asarray(lowres, np.int64)
        paths = [str(p) for p in paths]
        for lr in np.unique(lowres):
            rows = np.flatnonzero(lowres == lr)
            try:
                c, k = read_chips([paths[i] for i in rows], self._cache, al, int(lr) or None)
                chips[rows[k]], ok[rows[k]] = c[k], True
            except Exception:  # noqa: BLE001 - fall back to aligning each image below
                pass
            for i in rows[~ok[rows]]:
                try:
                    image = load_image(paths[i])
                    a = al.align(image)
                    if a is None:
                        continue
                    chip = al.chip(image, a)
                    chips[i] = degrade(chip, int(lr)) if lr else chip
                    ok[i] = True
                except Exception:  # noqa: BLE001 - an unreadable image gets a NaN embedding, never a crash
                    continue
        return chips, ok

    def _activations(self, faces: FaceSet, cut: int) -> tuple[torch.Tensor, np.ndarray]:
        """Frozen-trunk activations of every row (zeros where the chip failed) and the ok mask."""
        acts: torch.Tensor | None = None
        ok = np.zeros(len(faces), bool)
        for s in range(0, len(faces), self.embed_batch):
            rows = np.arange(s, min(s + self.embed_batch, len(faces)))
            chips, k = self._chips(faces.paths[rows], faces.lowres[rows])
            # all layers trainable: keep the uint8 chips rather than float inputs
            a = torch.from_numpy(chips) if cut == 0 else self._trunk_forward(chips, cut)
            if acts is None:
                acts = torch.zeros((len(faces), *a.shape[1:]), dtype=a.dtype)
            acts[rows], ok[rows] = a.cpu(), k
        assert acts is not None
        return acts, ok

    def _head_input(self, acts: torch.Tensor, cut: int) -> torch.Tensor:
        if cut == 0:
            from lookalike.matchers.torch_resnet import preprocess

            return preprocess(acts.to(self.device))
        return acts.to(self.device)

    # ---------------------------------------------------------------------------------------------
    # fitting

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        self._set_threads()
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        t0 = time.perf_counter()
        look, gen = pairs.lookalike, pairs.genuine
        if self.max_pairs is not None and len(look) > self.max_pairs:
            look = look.subset(np.argsort(-look.scores, kind="stable")[: self.max_pairs])
        pairs = gen + look
        net, cut = self.net, self._cut()
        for p in net.parameters():
            p.requires_grad_(False)
        head = ([net.stem_conv, net.stem_affine] if cut == 0 else []) + list(net.blocks[max(cut - 1, 0):]) + [net.fc]
        params = [p for m in head for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        init = [p.detach().clone() for p in params]

        # the frozen trunk, once per used train row (in its protocol resolution)
        used = np.unique(np.concatenate([pairs.left, pairs.right]))
        acts, ok = self._activations(train.take(used), cut)
        t_acts = time.perf_counter() - t0
        local = np.full(len(train), -1, np.int64)
        local[used] = np.arange(len(used))
        good = ok[local[pairs.left]] & ok[local[pairs.right]]
        pairs = pairs.subset(good)
        ident = np.unique(train.identities, return_inverse=True)[1]
        id_t = torch.as_tensor(ident[used], device=self.device)

        def batch_loss(t: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            rows, inv = np.unique(local[t.reshape(-1)], return_inverse=True)
            z = self._head_forward(self._head_input(acts[torch.as_tensor(rows)], cut), cut)
            z = z[torch.as_tensor(inv.reshape(-1, 3))]  # (B, 3, D)
            pos = (z[:, 0] * z[:, 1]).sum(1)
            neg = (z[:, 0] * z[:, 2]).sum(1)
            mined = F.relu(self.margin + neg - pos)
            # in-batch hardest negative: the most similar image of another person among the batch rows
            zb = z.reshape(-1, z.shape[-1])
            idb = id_t[torch.as_tensor(local[t.reshape(-1)])]
            sim = z[:, 0] @ zb.T
            other = idb[None, :] != idb[0::3][:, None]
            hard = F.relu(self.margin + torch.where(other, sim, torch.full_like(sim, -2.0)).max(1).values - pos)
            return mined.mean() + self.hard_weight * hard.mean(), (neg < pos).float().mean()

        if len(pairs.lookalike) == 0 or len(pairs.genuine) == 0:
            raise ValueError("no usable genuine/lookalike pairs (chips failed)")
        # hold out some people (all their pairs) to choose the epoch
        candidates = np.unique(train.identities[pairs.genuine.left])
        n_held = int(round(self.holdout * len(candidates))) if len(candidates) > 1 else 0
        held = np.isin(train.identities, rng.choice(candidates, n_held, replace=False) if n_held else [])
        held_pair = held[pairs.left] | held[pairs.right]
        held_t = triplets(pairs.subset(held_pair), np.random.default_rng(self.seed + 2))
        pairs = pairs.subset(~held_pair)
        fixed = triplets(pairs, np.random.default_rng(self.seed + 1))
        if len(fixed) == 0:
            raise ValueError("no triplets: lookalike anchors need genuine mates")

        def evaluate_fixed(t: np.ndarray) -> tuple[float, float]:
            if len(t) == 0:
                return float("nan"), float("nan")
            with torch.no_grad():
                out = [batch_loss(t[s:s + 512]) for s in range(0, len(t), 512)]
            w = np.asarray([min(512, len(t) - s) for s in range(0, len(t), 512)], np.float64)
            return (float(np.average([float(a) for a, _ in out], weights=w)),
                    float(np.average([float(b) for _, b in out], weights=w)))

        loss0, acc0 = evaluate_fixed(fixed)
        held_losses = [evaluate_fixed(held_t)[0]]
        best = (held_losses[0], 0, [p.detach().clone() for p in params])
        opt = torch.optim.Adam(params, lr=self.lr)
        losses = []
        for epoch in range(1, self.epochs + 1):
            t = triplets(pairs, rng)  # fresh positives each epoch
            t = t[rng.permutation(len(t))]
            total = 0.0
            for s in range(0, len(t), self.batch_size):
                loss, _ = batch_loss(t[s:s + self.batch_size])
                if self.anchor_decay:
                    loss = loss + self.anchor_decay * sum(((p - q) ** 2).sum() for p, q in zip(params, init,
                                                                                           strict=True))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(t[s:s + self.batch_size])
            losses.append(total / len(t))
            held_losses.append(evaluate_fixed(held_t)[0])
            if len(held_t) and held_losses[-1] < best[0]:
                best = (held_losses[-1], epoch, [p.detach().clone() for p in params])
        if len(held_t):  # back to the best epoch on the held-out people
            with torch.no_grad():
                for p, q in zip(params, best[2], strict=True):
                    p.copy_(q)
        loss1, acc1 = evaluate_fixed(fixed)
        for p in net.parameters():
            p.requires_grad_(False)
        self._frozen_cache = None
        self._emb = {}
        self.stats = {"n_triplets": int(len(fixed)), "n_train_images": int(len(used)),
                      "failed_images": int((~ok).sum()), "frozen_layers": cut,
                      "trainable_params": int(sum(p.numel() for p in params)),
                      "loss_init": round(loss0, 5), "loss_final": round(loss1, 5),
                      "triplet_acc_init": round(acc0, 4), "triplet_acc_final": round(acc1, 4),
                      "epoch_losses": [round(x, 5) for x in losses], "n_holdout_triplets": int(len(held_t)),
                      "holdout_losses": [round(x, 5) for x in held_losses],
                      "best_epoch": best[1] if len(held_t) else self.epochs,
                      "activations_s": round(t_acts, 1), "fit_s": round(time.perf_counter() - t0, 1)}

    # ---------------------------------------------------------------------------------------------
    # scoring

    def embed(self, faces: FaceSet) -> np.ndarray:
        """(N, 128) L2-normalised fine-tuned embeddings of the rows in their resolution (NaN rows: failed)."""
        self._set_threads()
        keys = [(str(p), int(r)) for p, r in zip(faces.paths, faces.lowres, strict=True)]
        todo = sorted({k for k in keys if k not in self._emb})
        cut = self._cut()
        for s in range(0, len(todo), self.embed_batch):
            batch = todo[s:s + self.embed_batch]
            chips, ok = self._chips([k[0] for k in batch], [k[1] for k in batch])
            with torch.inference_mode():
                z = self._head_forward(self._trunk_forward(chips, cut), cut)
            z = z.float().cpu().numpy()
            z[~ok] = np.nan
            for k, v in zip(batch, z, strict=True):
                self._emb[k] = v
        if not keys:
            return np.zeros((0, self.net.fc.out_features), np.float32)
        return np.stack([self._emb[k] for k in keys]).astype(np.float32)

    def embed_faces(self, faces: FaceSet) -> np.ndarray:
        """Evaluation's entry point: :meth:`embed` of a FaceSet's images in their resolutions."""
        return self.embed(faces)

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        """Cosine of the fine-tuned embeddings; a candidate whose image failed (NaN) gets its list's mean."""
        s = np.einsum("qd,qkd->qk", probes, candidates)
        bad = ~np.isfinite(s)
        if bad.any():
            with np.errstate(invalid="ignore"):
                fill = np.nan_to_num(np.nanmean(np.where(bad, np.nan, s), axis=1), nan=0.0)
            s = np.where(bad, fill[:, None], s)
        return s.astype(np.float32)

    # ---------------------------------------------------------------------------------------------
    # persistence: the trained layers' tensors (the frozen ones are dlib's and rebuilt from the weights)

    def _trained_names(self) -> list[str]:
        cut = self._cut()
        prefixes = ["fc."] + [f"blocks.{i}." for i in range(max(cut - 1, 0), len(self.net.blocks))]
        if cut == 0:
            prefixes += ["stem_conv.", "stem_affine."]
        return [n for n in self.net.state_dict() if n.startswith(tuple(prefixes))]

    def _state(self) -> dict[str, np.ndarray]:
        sd = self.net.state_dict()
        return {f"net.{n}": sd[n].detach().cpu().numpy() for n in self._trained_names()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        sd = {n[4:]: torch.from_numpy(np.asarray(v)) for n, v in state.items() if n.startswith("net.")}
        self.net.load_state_dict(sd, strict=False)
        self._frozen_cache = None
        self._emb = {}

    def __deepcopy__(self, memo: dict) -> FineTunedNet:
        """Copies drop the embedding memo, the open cache connection and the aligner's dlib models."""
        new = copy.copy(self)
        new._emb, new._cache, new._aligner = {}, None, None
        new._net = copy.deepcopy(self._net, memo)
        new._frozen_cache = None
        new.stats = copy.deepcopy(self.stats, memo)
        return new
