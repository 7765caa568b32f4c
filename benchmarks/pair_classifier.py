"""A pair-level disambiguator trained only on mined pairs (genuine vs lookalike): does it make re-ranking the
top of the list matter, and does it beat the LDA grid on validation?

The LDA disambiguator is a metric (whitened cosine): valid for any pair, so re-ranking the top of the list with
it and ranking the whole gallery with it agree (README: ``lookalike-best`` ~ ``lookalike-global``). A classifier
that has only seen lookalike impostors is specialised to the top of the list, where every candidate already
looks like the probe. Here: features of a pair in the LDA space (elementwise product and absolute difference of
the L2-normalised projections, symmetric in the two faces) and a small MLP (or a logistic regression) trained
with class-balanced binary cross-entropy on the mined pairs of the train people.

Printed for each benchmark run's protocol, **validation only**: rank-1 of the saved model (``LookalikeModel``,
every choice tuned on validation as the benchmark does) with the LDA grid alone and with the pair classifiers
added; and, for the pair classifier alone, rank-1 when it re-ranks the top of the list (``lookalike-best`` with
only it in the grid) against the same classifier ranking the whole validation gallery (global).

The rule, written before the first run: the pair classifier joins the default grid if the saved model with it in
the grid beats the LDA-only model's validation rank-1 on every run given (LFW seeds 0 and 1 and PubFig at ~20 px,
flip matcher); otherwise it is not added to the library and the README notes the numbers. Added after that first
run, under the same rule: ``Stacked``, the LDA score plus ``gamma`` times the MLP's logit (gamma 0.01, 0.03, 0.1;
LDA power 0 or 0.5, with or without its cohort), so the classifier only corrects a metric that is valid everywhere.

    python benchmarks/pair_classifier.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from validation_runs import (
    ExperimentDisambiguator,
    beats_everywhere,
    fit_grids,
    global_rank1,
    grid_runs,
    save_json,
    validation_data,
)

from lookalike.disambiguators.base import distinct_rows
from lookalike.disambiguators.lda import LookalikeLDA
from lookalike.faces import FaceSet
from lookalike.metrics import evaluate
from lookalike.mining import Pairs
from lookalike.rerank import DisambiguatorPool, default_disambiguators


class PairClassifier(ExperimentDisambiguator):
    """Logit of "same person" from [z1 * z2, |z1 - z2|] in a lookalike-LDA space; ``hidden`` 0: logistic
    regression, else an MLP with one hidden layer of that width."""

    def __init__(self, hidden: int = 64, epochs: int = 30, lr: float = 1e-3, weight_decay: float = 1e-4,
                 seed: int = 0) -> None:
        super().__init__()
        self.hidden, self.epochs, self.lr, self.weight_decay, self.seed = hidden, epochs, lr, weight_decay, seed
        self.lda_: LookalikeLDA | None = None
        self.net_: torch.nn.Module | None = None

    def _net(self, d: int) -> torch.nn.Module:
        if self.hidden:
            return torch.nn.Sequential(torch.nn.Linear(2 * d, self.hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(self.hidden, 1))
        return torch.nn.Linear(2 * d, 1)

    @staticmethod
    def _features(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([a * b, np.abs(a - b)], axis=-1).astype(np.float32))

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        torch.manual_seed(self.seed)
        self.lda_ = LookalikeLDA(power=0.5, seed=self.seed).fit(train, pairs)
        z = self.lda_.transform(train.vectors)
        x = self._features(z[pairs.left], z[pairs.right])
        y = torch.from_numpy(pairs.labels.astype(np.float32))
        pos = float(y.mean())
        weight = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos))
        self.net_ = self._net(z.shape[1])
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(y), generator=gen).split(512):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net_(x[idx])[:, 0], y[idx],
                                                                            weight=weight[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.stats = {"pairs": len(y), "genuine_share": round(pos, 4), "final_loss": round(loss.item(), 4)}

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        rows, inverse = distinct_rows(candidates, ids)
        zp, zc = self.lda_.transform(probes), self.lda_.transform(rows)[inverse]
        with torch.no_grad():
            return self.net_(self._features(np.broadcast_to(zp[:, None], zc.shape), zc))[..., 0].numpy()


class Stacked(ExperimentDisambiguator):
    """LDA score + ``gamma`` * a pair MLP's logit, both fitted on the same mined pairs."""

    def __init__(self, power: float = 0.5, cohort_n: int = 50, gamma: float = 0.03, hidden: int = 64,
                 seed: int = 0) -> None:
        super().__init__()
        self.power, self.cohort_n, self.gamma, self.hidden, self.seed = power, cohort_n, gamma, hidden, seed
        self.lda_: LookalikeLDA | None = None
        self.pair_: PairClassifier | None = None

    def _fit(self, train: FaceSet, pairs: Pairs) -> None:
        self.lda_ = LookalikeLDA(power=self.power, cohort_n=self.cohort_n, cohort_beta=1.0, seed=self.seed)
        self.lda_.fit(train, pairs)
        self.pair_ = PairClassifier(hidden=self.hidden, seed=self.seed).fit(train, pairs)

    def _score_lists(self, probes: np.ndarray, candidates: np.ndarray, ids: np.ndarray | None) -> np.ndarray:
        return self.lda_.score_lists(probes, candidates, ids) + self.gamma * self.pair_.score_lists(probes, candidates,
                                                                                                    ids)


def validation(run: Path, args: argparse.Namespace) -> dict:
    cfg, features, train, val = validation_data(run, args.cache)
    seed, pool, out = cfg.seed, DisambiguatorPool(seed=cfg.seed), {}
    lda = default_disambiguators(seed)
    pair = [PairClassifier(hidden=64, seed=seed), PairClassifier(hidden=0, seed=seed)]
    stacked = [Stacked(power=p, cohort_n=n, gamma=g, seed=seed) for p in (0.0, 0.5) for n in (0, 50)
               for g in (0.01, 0.03, 0.1)]

    out["base"] = evaluate(val.positions(), n_boot=0)["rank1"]
    grids = {"lda": lda, "lda+pair": lda + pair, "mlp": pair[:1], "lr": pair[1:], "lda+stacked": lda + stacked}
    out["grids"], models = fit_grids(cfg, features, train, val, grids, pool)
    for name, d in (("mlp", pair[0]), ("lr", pair[1]), ("lda", models["lda"].disambiguator_),
                    ("lda+stacked", models["lda+stacked"].disambiguator_)):
        out[f"{name}_global_rank1"] = global_rank1(pool.get(d, train), val)
    return out


def show_global(r: dict) -> None:
    print(f"  global (whole gallery): mlp {100 * r['mlp_global_rank1']:.2f}, lr {100 * r['lr_global_rank1']:.2f}, "
          f"lda {100 * r['lda_global_rank1']:.2f}, lda+stacked's choice {100 * r['lda+stacked_global_rank1']:.2f}")


def main() -> None:
    args, results = grid_runs(__doc__, validation, show_global)
    adopt = {g: beats_everywhere(results, g) for g in ("lda+pair", "lda+stacked")}
    print(f"\nrule: adopt a grid if it beats lda on every run's validation -> {adopt}")
    save_json(args.out, {"results": results, "adopt": adopt})


if __name__ == "__main__":
    main()
