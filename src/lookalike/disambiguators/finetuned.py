"""An image-level disambiguator: dlib's face network fine-tuned on mined lookalike pairs.

A copy of the network (:class:`~lookalike.matchers.torch_resnet.DlibResNet`) is trained with a margin triplet
loss whose negatives are the mined lookalikes of each anchor plus the hardest other-person image in the batch,
on chips degraded to each image's protocol resolution (``FaceSet.lowres``). On CPU the practical setting is to
freeze the trunk: the frozen layers run once per train chip (forward only, batched; the network's own
:meth:`~lookalike.matchers.torch_resnet.DlibResNet.trunk`) and only the top residual block(s) and the fc layer
are trained on those cached activations. ``trainable="all"`` trains everything (for a GPU). Pairs are scored by
the cosine of the fine-tuned embeddings, computed from aligned chips (:meth:`FineTunedNet.embed_chips`) or,
for evaluation code, from a FaceSet's images (:meth:`FineTunedNet.embed_faces`, through the project's one chip
pipeline, :func:`lookalike.embed.read_chips`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from lookalike.disambiguators.base import Disambiguator
from lookalike.faces import FaceSet
from lookalike.matchers.base import CHIP_SIZE
from lookalike.matchers.cache import DEFAULT_CACHE, EmbeddingCache
from lookalike.matchers.torch_resnet import DlibResNet, build_dlib_resnet, fuse_affine, preprocess
from lookalike.mining import Pairs, triplets

Key = tuple[str, int]  # (path, lowres); lowres 0 = full resolution


def n_frozen(trainable: str, n_blocks: int) -> int:
    """How many of the layers [stem, block_0, ..., block_{n-1}] stay frozen for a ``trainable`` setting:
    ``"fc"`` (only the fc layer), ``"last"``/``"lastN"`` (the last N residual blocks + fc) or ``"all"``."""
    if trainable == "all":
        return 0
    if trainable == "fc":
        return n_blocks + 1
    if trainable.startswith("last"):
        n = int(trainable[4:]) if trainable[4:].isdigit() else (1 if trainable == "last" else 0)
        if 1 <= n <= n_blocks:
            return n_blocks + 1 - n
    raise ValueError(f"trainable must be 'fc', 'last', 'lastN' (1 <= N <= {n_blocks}) or 'all', got {trainable!r}")


def check_chips(chips: np.ndarray) -> np.ndarray:
    """Aligned uint8 (N, 150, 150, 3) RGB chips, or a clear ValueError."""
    chips = np.asarray(chips)
    if chips.dtype != np.uint8 or chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(f"expected aligned uint8 chips (N, {CHIP_SIZE}, {CHIP_SIZE}, 3), got {chips.dtype} "
                         f"{chips.shape}")
    return np.ascontiguousarray(chips)


class FineTunedNet(Disambiguator):
    """dlib's ResNet fine-tuned on genuine vs lookalike pairs; scores = cosine of the new embeddings.

    ``trainable``: ``"fc"``, ``"last"`` (last residual block + fc), ``"lastN"`` or ``"all"``.
    ``margin``: triplet margin on cosines; ``hard_weight``: weight of the in-batch hardest-negative term;
    ``anchor_decay``: L2 pull of the trained weights towards dlib's; ``max_pairs``: at most this many mined
    lookalike pairs are used (the highest-scoring ones); ``holdout``: fraction of the train people (with
    genuine pairs) whose triplets are held out to pick the best epoch (epoch 0 = dlib's weights, so a
    fine-tuning that does not generalise is undone); ``cache_path``: embedding cache holding the alignments
    (read only; images without a cached alignment are aligned here); ``weights``: dlib .dat to start from
    (default: the shipped model); ``device``: torch device; ``embed_batch``: chips per forward pass.

    Unfitted, :meth:`embed_chips` is dlib's own network (L2-normalised descriptors). torch's thread count is
    the caller's (set it in the application, not here). Learned state: the trained layers' weights in
    ``net_``; images that failed (unreadable, no face) get NaN embeddings, counted in ``stats``.
    """

    input = "image"

    def __init__(self, trainable: str = "last", epochs: int = 10, batch_size: int = 128, lr: float = 1e-4,
                 margin: float = 0.1, hard_weight: float = 0.5, anchor_decay: float = 1e-3,
                 max_pairs: int | None = 50_000, holdout: float = 0.2, seed: int = 0,
                 cache_path: str | None = str(DEFAULT_CACHE), weights: str | None = None, device: str = "cpu",
                 embed_batch: int = 64, central_fraction: float = 0.45,
                 cnn_fallback: bool = False) -> None:
        super().__init__()
        self.central_fraction = central_fraction  # the data's aligner fallbacks, as its embeddings were made
        self.cnn_fallback = cnn_fallback
        self.trainable, self.epochs, self.batch_size, self.lr = trainable, epochs, batch_size, lr
        self.margin, self.hard_weight, self.anchor_decay = margin, hard_weight, anchor_decay
        self.max_pairs, self.holdout, self.seed = max_pairs, holdout, seed
        self.cache_path, self.weights, self.device, self.embed_batch = cache_path, weights, device, embed_batch
        self._net: DlibResNet | None = None
        self._fused: DlibResNet | None = None  # inference copy of _net (affines folded), rebuilt on change
        self._emb: dict[Key, np.ndarray] = {}  # embed_faces memo (NaN rows: image failed)
        self._cache: EmbeddingCache | None = None
        self._aligner = None

    # ---------------------------------------------------------------------------------------------
    # network

    @property
    def net_(self) -> DlibResNet:
        """The (possibly fine-tuned) unfused network; dlib's weights until fitted or loaded."""
        if self._net is None:
            self._net = build_dlib_resnet(self.weights).to(self.device)
            self._changed()
        return self._net

    def _changed(self) -> None:
        """The weights changed: drop the inference copy and the memoised embeddings."""
        self._fused, self._emb = None, {}

    def _cut(self) -> int:
        return n_frozen(self.trainable, len(self.net_.blocks))

    def _inference_net(self) -> DlibResNet:
        """The network with its affine layers folded into the convolutions, channels-last on CPU."""
        if self._fused is None:
            fmt = torch.channels_last if torch.device(self.device).type == "cpu" else torch.contiguous_format
            self._fused = fuse_affine(self.net_).to(memory_format=fmt)
        return self._fused

    def _input(self, chips: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 chips -> the network's float input on the device (memory format of the inference copy)."""
        x = preprocess(torch.as_tensor(chips).to(self.device))
        return x.contiguous(memory_format=torch.channels_last) if torch.device(self.device).type == "cpu" else x

    def _head(self, acts: torch.Tensor, cut: int) -> torch.Tensor:
        """Activations after the first ``cut`` layers -> L2-normalised embeddings (the trainable layers)."""
        return F.normalize(self.net_.head(self.net_.trunk(acts, cut)), dim=1)

    # ---------------------------------------------------------------------------------------------
    # embeddings

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """(N, 128) L2-normalised embeddings of aligned uint8 (N, 150, 150, 3) chips (already degraded to the
        resolution they stand for)."""
        chips = check_chips(chips)
        net = self._inference_net()
        out = np.empty((len(chips), net.fc.out_features), np.float32)
        with torch.inference_mode():
            for s in range(0, len(chips), self.embed_batch):
                z = F.normalize(net(self._input(chips[s:s + self.embed_batch])), dim=1)
                out[s:s + len(z)] = z.float().cpu().numpy()
        return out

    def _chips(self, paths: Sequence[str], lowres: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Aligned chips of images, each degraded to its ``lowres`` (0 = full), and the ok mask."""
        from lookalike.embed import read_chips
        from lookalike.matchers.align import FaceAligner

        if self._aligner is None:
            self._aligner = FaceAligner(self.central_fraction, cnn_fallback=self.cnn_fallback)
        if self._cache is None:
            use = self.cache_path is not None and Path(self.cache_path).exists()
            self._cache = EmbeddingCache(self.cache_path if use else None)
        chips = np.zeros((len(paths), CHIP_SIZE, CHIP_SIZE, 3), np.uint8)
        ok = np.zeros(len(paths), bool)
        lowres = np.asarray(lowres, np.int64)
        for lr in np.unique(lowres):
            rows = np.flatnonzero(lowres == lr)
            chips[rows], ok[rows] = read_chips([str(paths[i]) for i in rows], self._cache, self._aligner,
                                               int(lr) or None, align_missing=True)
        return chips, ok

    def embed_faces(self, faces: FaceSet) -> np.ndarray:
        """(N, 128) embeddings of a FaceSet's images, each in its resolution (``faces.lowres``); NaN rows for
        images that failed (counted in ``stats["embed_failed"]``). Memoised per (path, lowres)."""
        keys = [(str(p), int(r)) for p, r in zip(faces.paths, faces.lowres, strict=True)]
        todo = sorted(set(keys) - self._emb.keys())
        dim = self.net_.fc.out_features
        for s in tqdm(range(0, len(todo), self.embed_batch), desc="fine-tuned net: embed", unit="batch",
                      disable=None, leave=False):
            batch = todo[s:s + self.embed_batch]
            chips, ok = self._chips([k[0] for k in batch], [k[1] for k in batch])
            z = np.full((len(batch), dim), np.nan, np.float32)
            if ok.any():
                z[ok] = self.embed_chips(chips[ok])
            self.stats["embed_failed"] = self.stats.get("embed_failed", 0) + int((~ok).sum())
            self._emb.update(zip(batch, z, strict=True))
        if not keys:
            return np.zeros((0, dim), np.float32)
        return np.stack([self._emb[k] for k in keys])

    def _activations(self, faces: FaceSet, cut: int) -> tuple[torch.Tensor, np.ndarray]:
        """Every row's input to the trainable layers (zeros where the chip failed) and the ok mask: the frozen
        layers' output, or the uint8 chips themselves when every layer is trained."""
        acts: torch.Tensor | None = None
        ok = np.zeros(len(faces), bool)
        net = self._inference_net()
        for s in tqdm(range(0, len(faces), self.embed_batch), desc="fine-tuned net: frozen layers", unit="batch",
                      disable=None, leave=False):
            rows = np.arange(s, min(s + self.embed_batch, len(faces)))
            chips, k = self._chips(faces.paths[rows], faces.lowres[rows])
            if cut == 0:
                a = torch.from_numpy(chips)
            else:
                with torch.no_grad():
                    a = net.trunk(self._input(chips), 0, cut).contiguous().cpu()
            if acts is None:
                acts = torch.zeros((len(faces), *a.shape[1:]), dtype=a.dtype)
            acts[rows], ok[rows] = a, k
        if acts is None:
            raise ValueError("no train images")
        return acts, ok

    def _head_input(self, acts: torch.Tensor, cut: int) -> torch.Tensor:
        return preprocess(acts.to(self.device)) if cut == 0 else acts.to(self.device)

    # ---------------------------------------------------------------------------------------------
    # fitting

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        rng = np.random.default_rng(self.seed)
        t0 = time.perf_counter()
        look, gen = pairs.lookalike, pairs.genuine
        if self.max_pairs is not None and len(look) > self.max_pairs:
            look = look.subset(np.argsort(-look.scores, kind="stable")[: self.max_pairs])
        pairs = gen + look
        self._net = None  # every fit starts from dlib's weights
        net, cut = self.net_, self._cut()
        for p in net.parameters():
            p.requires_grad_(False)
        head = ([net.stem_conv, net.stem_affine] if cut == 0 else []) + list(net.blocks[max(cut - 1, 0):]) + [net.fc]
        params = [p for m in head for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        init = [p.detach().clone() for p in params]

        # the frozen layers, once per used train row (in its protocol resolution)
        used = np.unique(np.concatenate([pairs.left, pairs.right]))
        acts, ok = self._activations(train.take(used), cut)
        t_acts = time.perf_counter() - t0
        local = np.full(len(train), -1, np.int64)
        local[used] = np.arange(len(used))
        pairs = pairs.subset(ok[local[pairs.left]] & ok[local[pairs.right]])
        ident = np.unique(train.identities, return_inverse=True)[1]
        id_t = torch.as_tensor(ident[used], device=self.device)

        def batch_loss(t: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            rows, inv = np.unique(local[t.reshape(-1)], return_inverse=True)
            z = self._head(self._head_input(acts[torch.as_tensor(rows)], cut), cut)
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
            raise ValueError(f"no usable genuine/lookalike pairs: {int((~ok).sum())} of {len(ok)} train images "
                             "failed (unreadable or no face)")
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
        self._changed()
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

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        """Cosine of the fine-tuned embeddings (``ids`` unused: a dot product per pair is already the least
        work); a pair with a failed image (NaN) gets its list's mean."""
        s = np.einsum("qd,qkd->qk", probes, candidates)
        bad = ~np.isfinite(s)
        if bad.any():
            n = (~bad).sum(1)
            fill = np.divide(np.where(bad, 0.0, s).sum(1), n, out=np.zeros(len(s)), where=n > 0)  # none: 0
            s = np.where(bad, fill[:, None], s)
        return s.astype(np.float32)

    # ---------------------------------------------------------------------------------------------
    # persistence: the trained layers' tensors (the frozen ones are dlib's and rebuilt from the weights)

    def _trained_names(self) -> list[str]:
        cut = self._cut()
        prefixes = ["fc."] + [f"blocks.{i}." for i in range(max(cut - 1, 0), len(self.net_.blocks))]
        if cut == 0:
            prefixes += ["stem_conv.", "stem_affine."]
        return [n for n in self.net_.state_dict() if n.startswith(tuple(prefixes))]

    def _state(self) -> dict[str, np.ndarray]:
        sd = self.net_.state_dict()
        return {f"net.{n}": sd[n].detach().cpu().numpy() for n in self._trained_names()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._net = None  # dlib's weights, then the trained layers on top
        names = {n[4:] for n in state if n.startswith("net.")}
        expected = set(self._trained_names())
        if names != expected:
            raise ValueError(f"FineTunedNet state does not match trainable={self.trainable!r}: "
                             f"{len(names - expected)} unexpected and {len(expected - names)} missing tensors")
        sd = {n: torch.from_numpy(np.asarray(state[f"net.{n}"])) for n in names}
        self.net_.load_state_dict(sd, strict=False)
        self._changed()

    def __deepcopy__(self, memo: dict) -> FineTunedNet:
        """Copies drop the embedding memo, the open cache connection and the aligner's dlib models."""
        new = copy.copy(self)
        new._emb, new._cache, new._aligner, new._fused = {}, None, None, None
        new._net = copy.deepcopy(self._net, memo)
        new.stats = copy.deepcopy(self.stats, memo)
        return new
