"""Local models benchmark (issue 6): iLQR, LQR-FLM (plain vs Bayesian regression), GPS, distillation and DnC.

    nice -n 10 .venv/bin/python benchmarks/local_models.py            # all sections, resumable
    nice -n 10 .venv/bin/python benchmarks/local_models.py --only flm # one section (ilqr, flm, gps, distill, dnc)

Sections (each is stored in results/local_models.json as soon as it finishes; a re-run skips finished ones):
- ilqr:    iLQR-MPC swing-up of the pure-JAX pendulum from rest (return, upright time).
- flm:     LQR-FLM on Reacher-v5 from one fixed start, 20 iterations × 5 trajectories, plain vs Bayesian (GMM
           prior) regression, over seeds: real cost per iteration, monotonicity, iteration at which the mean
           controller reaches the target, and samples each needs to reach a cost threshold.
- flm_model: the same with the global-model prior (regression='model'), against flm's cost threshold.
- gps:     MDGPS on Reacher-v5 (preset: one target, 4 arm starts), 3 seeds; the global policy's success from those
           4, from 4 unseen starts and from a 5×5 grid of starts; and the same from the env's random-target resets.
- distill: iLQR teachers → one student on mbrlax/Arm2-v0 (success from training and unseen conditions).
- dnc:     DnC (4 partitions) vs a single policy with the same samples on mbrlax/PointMass-v0.
- dnc_reach: the same on GPS's task made pure-JAX (mbrlax/Arm2-v0, fixed target, arm starts in a box).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, machine, write_json  # noqa: E402

NAME = "local_models"
REACH = 0.02  # Reacher: fingertip (radius 0.01) touches the target (radius 0.009) below ~0.02


def _load() -> dict:
    path = RESULTS / f"{NAME}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save(res: dict) -> None:
    res["machine"] = machine()
    write_json(f"{NAME}.json", res)


def run_ilqr() -> dict:
    from mbrlax.algorithms import ilqr

    r = ilqr.train(ilqr.Config(env="mbrlax/PendulumSwingUp-v0", eval_episodes=3, run_root=str(RUNS), progress=False))
    return dict(env="mbrlax/PendulumSwingUp-v0", returns=[e[1] for e in r.evals],
                return_median=float(np.median([e[1] for e in r.evals])),
                note="Gymnasium Pendulum reward from the hanging-down rest state; staying down scores about -1900 "
                     "over 200 steps")


def _flm_runs(reg: str, seeds) -> list[dict]:
    from mbrlax.algorithms import lqr_flm

    per_seed = []
    for s in seeds:
        tic = time.time()
        r = lqr_flm.train(lqr_flm.Config(env="Reacher-v5", seed=s, start_seed=0, iterations=20, samples=5,
                                          regression=reg, run_root=str(RUNS), progress=False))
        rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
        dist = [row["eval/final_distance"] for row in rows if "eval/final_distance" in row]
        reached = next((i + 1 for i, d in enumerate(dist) if d < REACH), None)
        costs = r.costs
        per_seed.append(dict(seed=s, costs=costs, eval_final_distance=dist, reached_at_iteration=reached,
                             increases=int(sum(b > a for a, b in zip(costs, costs[1:]))),
                             kl=[row["lqr_flm/kl"] for row in rows], epsilon=[row["lqr_flm/epsilon"] for row in rows],
                             seconds=time.time() - tic))
    return per_seed


def run_flm_model(seeds=(0, 1, 2)) -> dict:
    """The global-model prior (regression='model'), against the flm section's cost threshold."""
    per_seed = _flm_runs("model", seeds)
    thr = _load()["flm"]["cost_threshold"]
    its = [next((i + 1 for i, c in enumerate(p["costs"]) if c <= thr), None) for p in per_seed]
    return {"model": per_seed, "cost_threshold": thr,
            "model_samples_to_threshold": [None if i is None else i * 5 for i in its]}


def run_flm(seeds=(0, 1, 2)) -> dict:
    out = {reg: _flm_runs(reg, seeds) for reg in ("plain", "bayes")}
    # samples needed to reach a cost threshold: 1.2 × the median final cost of plain regression
    thr = 1.2 * float(np.median([p["costs"][-1] for p in out["plain"]]))
    for reg in ("plain", "bayes"):
        its = [next((i + 1 for i, c in enumerate(p["costs"]) if c <= thr), None) for p in out[reg]]
        out[f"{reg}_samples_to_threshold"] = [None if i is None else i * 5 for i in its]
    out["cost_threshold"] = thr
    med = lambda xs: float(np.median([x if x is not None else np.inf for x in xs]))
    out["samples_saved_by_prior_median"] = (med(out["plain_samples_to_threshold"])
                                            - med(out["bayes_samples_to_threshold"]))
    return out


def _gps_grid(run_dir, n: int = 5) -> dict:
    """The final global policy from an n×n grid of arm starts spanning the training box (Reacher-v5 preset)."""
    import jax
    import jax.numpy as jnp

    from mbrlax import runs
    from mbrlax.algorithms import gps
    from mbrlax.algorithms import lqr_flm as flm
    from mbrlax.envs.make import make

    cfg = gps.resolve(runs.config_from_dict(gps.Config, runs.load_config(run_dir)))
    env, spec = make(cfg.env)
    pol = jax.tree.map(jnp.asarray, runs.load_checkpoint(run_dir)["pol"])
    arm = np.asarray(gps.REACHER_TRAIN_ARM)
    starts = [(a, b) for a in np.linspace(arm[:, 0].min(), arm[:, 0].max(), n)
              for b in np.linspace(arm[:, 1].min(), arm[:, 1].max(), n)]
    conds = [(0, tuple(q) + gps.REACHER_GOAL) for q in starts]
    _, dist = gps.evaluate_global(env, cfg.policy_hidden, spec.act_dim, pol, conds, flm._horizon(spec))
    env.close()
    return dict(starts=[list(map(float, q)) for q in starts], final_distance=dist.tolist(),
                success=float((dist < cfg.success_dist).mean()))


def run_gps(seeds=(0, 1, 2)) -> dict:
    """MDGPS on the Reacher-v5 preset (one target, 4 arm starts, 4 unseen starts), over seeds; plus one run from
    the env's own resets (4 random targets; unseen = 4 other random targets) on the same seeds for comparison."""
    from mbrlax.algorithms import gps

    def one(**kw) -> dict:
        r = gps.train(gps.Config(env="Reacher-v5", run_root=str(RUNS), progress=False, **kw))
        rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
        return dict(train_success=[row["eval/train_success"] for row in rows],
                    test_success=[row["eval/test_success"] for row in rows],
                    train_distance=[row["eval/train_distance"] for row in rows],
                    test_distance=[row["eval/test_distance"] for row in rows],
                    local_cost=[row["gps/local_cost"] for row in rows], final_train_success=r.train_success,
                    final_test_success=r.test_success, run_dir=str(r.run_dir))

    cfg = gps.resolve(gps.Config(env="Reacher-v5"))
    out = dict(preset={k: getattr(cfg, k) for k in ("iterations", "samples", "kl_step", "max_step_mult", "init_var",
                                                    "policy_cov", "precision_cap", "success_dist")},
               goal=gps.REACHER_GOAL, train_arm=gps.REACHER_TRAIN_ARM, test_arm=gps.REACHER_TEST_ARM, seeds={})
    for s in seeds:
        res = one(seed=s)
        res["grid"] = _gps_grid(res["run_dir"])
        out["seeds"][str(s)] = res
    # the env's own resets: each seed a random target and a small random arm start
    out["random_targets"] = {str(s): one(seed=s, train_qpos=(), test_qpos=(), train_seeds=(0, 1, 2, 3),
                                         test_seeds=(100, 101, 102, 103)) for s in seeds}
    fin = lambda k: [out["seeds"][str(s)][k] for s in seeds]
    out["final_train_success"], out["final_test_success"] = fin("final_train_success"), fin("final_test_success")
    out["grid_success"] = [out["seeds"][str(s)]["grid"]["success"] for s in seeds]
    out["random_targets_final"] = {k: [out["random_targets"][str(s)][k] for s in seeds]
                                   for k in ("final_train_success", "final_test_success")}
    return out


def run_distill() -> dict:
    from mbrlax.algorithms import distill

    r = distill.train(distill.Config(env="mbrlax/Arm2-v0", run_root=str(RUNS), progress=False))
    rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    return dict(env="mbrlax/Arm2-v0", rows=rows, train_success=r.train_success, test_success=r.test_success)


def run_dnc(seeds=(0, 1), iterations=150) -> dict:
    from mbrlax.algorithms import dnc

    out = {}
    for name, kw in (("dnc_K4", dict(partitions=4, batch=16, kl_weight=0.01)),
                     ("single", dict(partitions=1, batch=64, kl_weight=0.0))):
        out[name] = []
        for s in seeds:
            r = dnc.train(dnc.Config(env="mbrlax/PointMass-v0", seed=s, iterations=iterations, eval_every=25,
                                     distill_every=25, run_root=str(RUNS), progress=False, **kw))
            out[name].append(dict(seed=s, evals=r.evals, success=r.success, final_return=r.final_return_mean))
        out[f"{name}_median_success"] = float(np.median([x["success"] for x in out[name]]))
        out[f"{name}_median_return"] = float(np.median([x["final_return"] for x in out[name]]))
    return out


def run_dnc_reach(seeds=(0, 1, 2), iterations=500) -> dict:
    """DnC vs a single policy on the GPS task made pure-JAX: mbrlax/Arm2-v0 (Reacher-v5's arm) with GPS's fixed
    target and initial arm angles uniform in a box of ±0.8 rad around (0, 0.8), the contexts DnC partitions."""
    from mbrlax.algorithms import dnc, gps

    env_kwargs = dict(target=gps.REACHER_GOAL, init_q=(0.0, 0.8), init_noise=0.8)
    out = dict(env="mbrlax/Arm2-v0", env_kwargs=env_kwargs, iterations=iterations, gamma=1.0)
    for name, kw in (("dnc_K4", dict(partitions=4, batch=16, kl_weight=0.01)),
                     ("single", dict(partitions=1, batch=64, kl_weight=0.0))):
        out[name] = []
        for s in seeds:
            # γ = 1: the fixed 100-step episode's undiscounted cost, which GPS optimizes too (at 0.99 both arms
            # stalled at a return of ≈ −10.5 and 31–44 % success)
            r = dnc.train(dnc.Config(env="mbrlax/Arm2-v0", seed=s, iterations=iterations, eval_every=25,
                                     distill_every=25, gamma=1.0, env_kwargs=env_kwargs, run_root=str(RUNS),
                                     progress=False, **kw))
            out[name].append(dict(seed=s, evals=r.evals, success=r.success, final_return=r.final_return_mean))
        out[f"{name}_median_success"] = float(np.median([x["success"] for x in out[name]]))
        out[f"{name}_median_return"] = float(np.median([x["final_return"] for x in out[name]]))
    return out


SECTIONS = {"ilqr": run_ilqr, "flm": run_flm, "flm_model": run_flm_model, "dnc": run_dnc, "dnc_reach": run_dnc_reach,
            "distill": run_distill, "gps": run_gps}


def plot(res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    for reg, color in (("plain", "C0"), ("bayes", "C1"), ("model", "C2")):
        for p in res.get("flm", {}).get(reg, []) or res.get("flm_model", {}).get(reg, []):
            x = 5 * np.arange(1, len(p["costs"]) + 1)
            ax.plot(x, p["costs"], color=color, alpha=0.7, label=f"{reg} regression" if p["seed"] == 0 else None)
    ax.set_xlabel("trajectories (5 per iteration)")
    ax.set_ylabel("real cost (−return) of the samples")
    ax.set_title("LQR-FLM on Reacher-v5, fixed start")
    ax.legend()
    ax = axes[1]
    g = res.get("gps")
    if g and "seeds" in g:
        for j, (s, r) in enumerate(g["seeds"].items()):
            it = np.arange(1, len(r["train_success"]) + 1)
            ax.plot(it, r["train_distance"], "-", color=f"C{j}", label=f"seed {s}: 4 training starts")
            ax.plot(it, r["test_distance"], "--", color=f"C{j}", label=f"seed {s}: 4 unseen starts")
        for j, r in enumerate(g["random_targets"].values()):
            it = np.arange(1, len(r["test_distance"]) + 1)
            ax.plot(it, r["test_distance"], ":", color="gray",
                    label="env resets (random targets): unseen" if j == 0 else None)
        ax.axhline(g["preset"]["success_dist"], color="k", lw=0.8)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    ax.set_xlabel("MDGPS iteration")
    ax.set_ylabel("global policy: mean final distance")
    ax.set_title("GPS on Reacher-v5 (line: success threshold)")
    ax = axes[2]
    d = res.get("dnc_reach") or res.get("dnc")
    if d:
        for name, color in (("dnc_K4", "C2"), ("single", "C3")):
            for x in d[name]:
                steps, rets = zip(*x["evals"])
                ax.plot(steps, rets, color=color, alpha=0.7, label=name if x["seed"] == 0 else None)
        ax.legend()
    ax.set_xlabel("environment steps")
    ax.set_ylabel("central policy return")
    ax.set_title(f"DnC vs single policy, {'Arm2 reach (GPS task)' if 'dnc_reach' in res else 'PointMass'}")
    fig.tight_layout()
    fig.savefig(RESULTS / f"{NAME}.png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=sorted(SECTIONS), default=None)
    ap.add_argument("--redo", action="store_true", help="recompute sections already in the JSON")
    args = ap.parse_args()
    res = _load()
    for name, fn in SECTIONS.items():
        if args.only and name != args.only:
            continue
        if name in res and not args.redo:
            print(f"{name}: done (in {NAME}.json)")
            continue
        tic = time.time()
        print(f"{name}: running ...", flush=True)
        out = fn()
        out["wall_seconds"] = time.time() - tic
        res = _load()  # merge: other sections may have been written by a parallel run meanwhile
        res[name] = out
        _save(res)
        plot(res)
        print(f"{name}: {time.time() - tic:.0f} s", flush=True)
    plot(res)


if __name__ == "__main__":
    main()
