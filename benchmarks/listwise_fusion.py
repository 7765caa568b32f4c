"""Learned list-wise fusion: does a fusion that reads the whole top of the list beat the saved model's grid?

The saved model fuses the matcher's and the disambiguator's scores with one weight for every list. Which of the
two to trust may depend on the list: how ambiguous its top is (the gap between the first two base scores), how
high the best score is, where a candidate sits in the matcher's and in the disambiguator's order, how much the
candidate looks like the matcher's first candidate (a lookalike group). Such a fusion only exists at the top of
a list, so it is the kind of disambiguation that global use of the disambiguator cannot copy.

For each run's validation split (never a test split) this script fits the saved model as the benchmark does,
takes the disambiguator it chose, and scores the first ``K`` = 20 candidates of each validation list with two
learned fusions of per-candidate features (base and disambiguator scores, their gaps to the list's best, their
ranks, the list's base gap and best score, the candidate's similarity with the first candidate, and products):

- ``clogit``: a linear conditional logit (soft-max over the list; L2 penalty), trained to put the mate first;
- ``gbm``: gradient-boosted trees (scikit-learn's ``HistGradientBoostingClassifier``) scoring each candidate as
  mate or not, from the same features.

Each is scored by 5-fold cross-validation over validation identities (a probe's lists are scored by a fusion
fitted on the other folds' people): the cross-validated rank-1 of the whole validation split. Printed beside it:
the saved model's validation rank-1 (tuned in-sample over its whole grid, so favoured), a cross-validated
weighted fusion of the same disambiguator over the same top ``K`` (its weight chosen on the other folds: the
like-for-like comparison), and the disambiguator ranking the whole validation gallery (global use).

The rule, written before the first run: the variant with the higher mean cross-validated gain over the saved
model's validation rank-1 is added to the model's grid if it beats the saved model's validation rank-1 on every
run given (LFW seeds 0 and 1 and PubFig seeds 0 and 1 at ~20 px; LFW and PubFig seed 0 at full resolution);
otherwise it is not added to the library, and the README notes the numbers.

    PYTHONPATH=src:benchmarks python benchmarks/listwise_fusion.py --cache /work/cache/lookalike.sqlite \\
        --runs runs/lfw-lowres20 runs/lfw-lowres20-s1 runs/pubfig-lowres20 runs/pubfig-lowres20-s1 runs/lfw runs/pubfig
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.ensemble import HistGradientBoostingClassifier
from validation_runs import fit_grids, global_rank1, runs_parser, save_json, validation_data

from lookalike.rerank import DisambiguatorPool, LabelledLists, default_disambiguators

K = 20
FOLDS = 5
WEIGHTS = np.linspace(0, 1, 21)


def list_features(base: np.ndarray, dis: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """(Q, K, F) features of each list's first K candidates: base scores (Q, K) and the disambiguator's, the
    candidates' vectors (Q, K, D)."""
    q, k = base.shape
    bz, dz = (base - base.mean()) / base.std(), (dis - dis.mean()) / dis.std()
    gap = np.broadcast_to((bz[:, 0] - bz[:, 1])[:, None], (q, k))
    top = np.broadcast_to(bz[:, :1], (q, k))
    brank = np.broadcast_to(np.log1p(np.arange(k)), (q, k))
    drank = np.log1p(np.argsort(np.argsort(-dz, 1), 1))
    group = np.einsum("qd,qkd->qk", cand[:, 0], cand)
    dgap = dz - dz.max(1, keepdims=True)
    cols = [bz, dz, bz - top, dgap, brank, drank, gap, top, group, dz * gap, bz * gap, dz * top, bz * top,
            dz * group, dz * brank, bz * drank]
    return np.stack(cols, -1)


def fit_clogit(f: np.ndarray, mate: np.ndarray, lam: float = 1.0) -> np.ndarray:
    """Weights of a conditional logit over lists ``f`` (N, K, F) whose mate sits at ``mate`` (N,)."""
    n = len(f)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = f @ w
        lse = logsumexp(s, 1)
        p = np.exp(s - lse[:, None])
        val = -(s[np.arange(n), mate] - lse).sum() + lam / 2 * w @ w
        grad = -(f[np.arange(n), mate] - np.einsum("nk,nkf->nf", p, f)).sum(0) + lam * w
        return val, grad

    return minimize(loss, np.zeros(f.shape[-1]), jac=True, method="L-BFGS-B").x


def cv_rank1(f: np.ndarray, labels: np.ndarray, folds: np.ndarray, kind: str, seed: int) -> float:
    """Cross-validated rank-1 over all lists (a list whose mate is not in the first K counts as a miss)."""
    hit = labels.any(1)
    right = np.zeros(len(f), bool)
    for k in range(FOLDS):
        tr, te = (folds != k) & hit, folds == k
        if kind == "clogit":
            mu, sd = f[tr].reshape(-1, f.shape[-1]).mean(0), f[tr].reshape(-1, f.shape[-1]).std(0) + 1e-9
            w = fit_clogit((f[tr] - mu) / sd, labels[tr].argmax(1))
            s = ((f[te] - mu) / sd) @ w
        elif kind == "gbm":
            m = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                               random_state=seed)
            m.fit(f[tr].reshape(-1, f.shape[-1]), labels[tr].reshape(-1))
            s = m.predict_proba(f[te].reshape(-1, f.shape[-1]))[:, 1].reshape(te.sum(), -1)
        else:  # weighted fusion of the z-scored scores (list_features' first two columns), weight chosen on the folds
            bz, dz = f[..., 0], f[..., 1]
            acc = [labels[tr][np.arange(tr.sum()), ((1 - w) * bz[tr] + w * dz[tr]).argmax(1)].sum() for w in WEIGHTS]
            w = WEIGHTS[int(np.argmax(acc))]
            s = (1 - w) * bz[te] + w * dz[te]
        right[te] = labels[te][np.arange(te.sum()), s.argmax(1)]
    return float(right.mean())


def run_one(run: str, cache: str) -> dict:
    cfg, features, train, val = validation_data(run, cache)
    pool = DisambiguatorPool(seed=cfg.seed)
    grids, models = fit_grids(cfg, features, train, val, {"lda": default_disambiguators(cfg.seed)}, pool)
    model = models["lda"]
    lab = LabelledLists.search(val.probes, val.gallery, cfg.depth)
    d = model.disambiguator_
    dis = d.score_lists(lab.probes.vectors, lab.candidates, ids=lab.lists.indices)[:, :K]
    base, labels = lab.lists.scores[:, :K].astype(np.float64), lab.labels()[:, :K]
    f = list_features(base, dis, lab.candidates[:, :K].astype(np.float64))
    people = np.unique(lab.probes.identities)
    fold_of = dict(zip(people, np.random.default_rng(cfg.seed).permutation(len(people)) % FOLDS, strict=True))
    folds = np.array([fold_of[p] for p in lab.probes.identities])
    out = {"base": lab.quality()[0], "saved_model": grids["lda"]["val_rank1"], "chosen": grids["lda"]["chosen"],
           "global": global_rank1(d, val), "top_k_hit": float(labels.any(1).mean()),
           "weighted_cv": cv_rank1(f, labels, folds, "weighted", cfg.seed),
           "clogit_cv": cv_rank1(f, labels, folds, "clogit", cfg.seed),
           "gbm_cv": cv_rank1(f, labels, folds, "gbm", cfg.seed)}
    print(f"\n{run}: validation rank-1 (%), {len(lab.probes)} probes; mate in the first {K}: "
          f"{100 * out['top_k_hit']:.2f}")
    for key in ("base", "saved_model", "global", "weighted_cv", "clogit_cv", "gbm_cv"):
        print(f"  {key:12s} {100 * out[key]:.2f}")
    return out


def main() -> None:
    args = runs_parser(__doc__).parse_args()
    results = {run: run_one(run, args.cache) for run in args.runs}
    gains = {v: [r[f"{v}_cv"] - r["saved_model"] for r in results.values()] for v in ("clogit", "gbm")}
    best = max(gains, key=lambda v: np.mean(gains[v]))
    adopt = all(g > 0 for g in gains[best])
    print("\ngain over the saved model's validation rank-1 (points), per run:")
    for v, g in gains.items():
        print(f"  {v:7s} " + " ".join(f"{100 * x:+.2f}" for x in g) + f"  mean {100 * np.mean(g):+.2f}")
    print(f"rule: add {best} (the higher mean gain) if it beats the saved model on every run -> {adopt}")
    save_json(args.out, {"results": results, "gains": gains, "variant": best, "adopt": adopt})


if __name__ == "__main__":
    main()
