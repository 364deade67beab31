"""Which MOPO penalty tracks the model's true error? Penalty value vs true error on held-out transitions.

Fit MOPO's ensemble (7 members, 5 elites, the model settings of mbrlax.algorithms.mopo) on 80 % of a training
dataset, then, on held-out transitions — the other 20 % (in distribution) and transitions of other datasets
of the same env (out of distribution) — compare each penalty u(s, a) of models/penalties.py with the true
error of the model there: ‖ŷ − y‖₂, y = (next_obs, reward) the real outcome and ŷ the model's sampled step (a
random elite + its Gaussian: exactly what a MOPO rollout uses). The score of a penalty is the Spearman rank
correlation between u and the error (MOPO's theory needs u ≥ the error, up to scale: a rank measure is the
fair comparison across penalties with different units). The ensemble-mean error ‖μ̄ − y‖₂ is reported too.

    python benchmarks/mopo_penalties.py                         # halfcheetah datasets of offline_datasets.py
    python benchmarks/mopo_penalties.py --train PATH --heldout PATH [PATH ...] --name hopper

Committed: `--name hopper` (train hopper-medium-replay; held out: hopper-random, hopper-medium) and the
default halfcheetah run, both with MOPO's model settings (fit up to 200 epochs).

Writes benchmarks/results/mopo_penalties[_NAME].json and .png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, machine, write_json  # noqa: E402

ROOT = RUNS / "datasets" / "mbrlax"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default=str(ROOT / "halfcheetah-medium-replay-v0"))
    ap.add_argument("--heldout", nargs="*", default=[str(ROOT / "halfcheetah-random-v0"),
                                                     str(ROOT / "halfcheetah-medium-v0")])
    ap.add_argument("--name", default="")
    ap.add_argument("--per-set", type=int, default=5000, help="held-out transitions per set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-max-epochs", type=int, default=None, help="cap on model epochs (default: MOPO's, 200)")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    from scipy.stats import spearmanr

    from mbrlax.algorithms import mopo
    from mbrlax.data import offline
    from mbrlax.envs.make import make
    from mbrlax.models import penalties
    from mbrlax.models.fit import fit
    from mbrlax.types import Transition

    train_ds = offline.load(args.train)
    env, spec = make(train_ds.env_id)
    space = env.unwrapped.action_space
    env.close()
    cfg = mopo.resolve(mopo.Config(dataset=args.train), train_ds)
    model, _, _ = mopo._components(cfg, spec.obs_dim, spec.act_dim)
    data = train_ds.transitions(space.low, space.high)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(data.obs))
    n_hold = len(perm) // 5
    hold_idx, train_idx = perm[:n_hold], perm[n_hold:]
    tic = time.perf_counter()
    state, info = fit(model, model.init(jax.random.key(args.seed)), Transition(*(x[train_idx] for x in data)),
                      jax.random.key(args.seed + 1), max_epochs=args.model_max_epochs or cfg.model_max_epochs,
                      patience=cfg.model_patience)
    fit_s = time.perf_counter() - tic
    print(f"model fitted in {fit_s:.0f} s, {info['model/epochs']} epochs, holdout mse {info['model/holdout_mse']:.4f}")

    sets = {"in-distribution (held-out 20 %)": Transition(*(x[hold_idx[: args.per_set]] for x in data))}
    for p in args.heldout:
        if not Path(p).exists():
            print(f"skipping {p}: not generated yet")
            continue
        ds = offline.load(p)
        t = ds.transitions(space.low, space.high)
        idx = rng.permutation(len(t.obs))[: args.per_set]
        sets[f"{ds.meta.get('kind', Path(p).name)} (other dataset)"] = Transition(*(x[idx] for x in t))

    @jax.jit
    def evaluate_batch(obs, act, y, key):
        nxt, rew, _, pred = model.sample_step(state, obs, act, key)
        sample = jnp.concatenate([nxt, rew[:, None]], -1)
        mean, std = penalties.outputs(pred)
        us = {k: penalties.penalty(k, mean, std, sample) for k in penalties.PENALTIES}
        err = jnp.linalg.norm(sample - y, axis=-1)
        elite_mean = mean[state.elites].mean(0)
        return us, err, jnp.linalg.norm(elite_mean - y, axis=-1)

    per_set, pooled = {}, {k: [] for k in (*penalties.PENALTIES, "_err", "_mean_err")}
    for i, (name, t) in enumerate(sets.items()):
        y = np.concatenate([t.next_obs, t.reward[:, None]], -1)
        us, err, mean_err = jax.device_get(evaluate_batch(jnp.asarray(t.obs), jnp.asarray(t.action), jnp.asarray(y),
                                                          jax.random.key(100 + i)))
        per_set[name] = {
            "n": int(len(err)), "true_error_median": float(np.median(err)),
            "mean_error_median": float(np.median(mean_err)),
            "spearman_vs_sampled_error": {k: float(spearmanr(us[k], err).statistic) for k in penalties.PENALTIES},
            "spearman_vs_mean_error": {k: float(spearmanr(us[k], mean_err).statistic) for k in penalties.PENALTIES},
            "penalty_median": {k: float(np.median(us[k])) for k in penalties.PENALTIES},
        }
        for k in penalties.PENALTIES:
            pooled[k].append(us[k])
        pooled["_err"].append(err)
        pooled["_mean_err"].append(mean_err)
    pooled = {k: np.concatenate(v) for k, v in pooled.items()}
    rho = {k: float(spearmanr(pooled[k], pooled["_err"]).statistic) for k in penalties.PENALTIES}
    rho_mean = {k: float(spearmanr(pooled[k], pooled["_mean_err"]).statistic) for k in penalties.PENALTIES}
    best = max(rho, key=rho.get)
    print("Spearman ρ (pooled) vs sampled-step error:", {k: round(v, 3) for k, v in rho.items()}, "best:", best)

    suffix = f"_{args.name}" if args.name else ""
    write_json(f"mopo_penalties{suffix}.json", {
        "machine": machine(), "train_dataset": args.train, "env": train_ds.env_id,
        "model": {"ensemble_size": cfg.ensemble_size, "num_elites": cfg.num_elites, "hidden": list(cfg.model_hidden),
                  "epochs": info["model/epochs"], "holdout_mse": info["model/holdout_mse"], "fit_seconds": fit_s},
        "true_error": "‖ŷ − y‖₂ over (next_obs, reward), ŷ the model's sampled step (random elite + its Gaussian)",
        "spearman_pooled_vs_sampled_error": rho, "spearman_pooled_vs_mean_error": rho_mean,
        "best_penalty": best, "sets": per_set,
    })

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(penalties.PENALTIES), figsize=(4 * len(penalties.PENALTIES), 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, k in zip(axes, penalties.PENALTIES):
        start = 0
        for j, name in enumerate(sets):
            n = per_set[name]["n"]
            ax.scatter(pooled["_err"][start:start + n], pooled[k][start:start + n], s=2, alpha=0.3,
                       color=colors[j % len(colors)], label=name)
            start += n
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("true error ‖ŷ − y‖")
        ax.set_title(f"{k}\nSpearman ρ = {rho[k]:.2f}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("penalty u(s, a)")
    axes[0].legend(fontsize=7, markerscale=4)
    fig.suptitle(f"MOPO penalties vs true model error, {train_ds.env_id} (model fit on {Path(args.train).name})")
    fig.tight_layout()
    fig.savefig(RESULTS / f"mopo_penalties{suffix}.png", dpi=100)
    print(f"wrote {RESULTS / f'mopo_penalties{suffix}.json'}")


if __name__ == "__main__":
    main()
