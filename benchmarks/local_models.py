"""Local models benchmark (issue 6): iLQR, LQR-FLM (plain vs Bayesian regression), GPS, distillation and DnC.

    nice -n 10 .venv/bin/python benchmarks/local_models.py            # all sections, resumable
    nice -n 10 .venv/bin/python benchmarks/local_models.py --only flm # one section (ilqr, flm, gps, distill, dnc)

Sections (each is stored in results/local_models.json as soon as it finishes; a re-run skips finished ones):
- ilqr:    iLQR-MPC swing-up of the pure-JAX pendulum from rest (return, upright time).
- flm:     LQR-FLM on Reacher-v5 from one fixed start, 20 iterations × 5 trajectories, plain vs Bayesian (GMM
           prior) regression, over seeds: real cost per iteration, monotonicity, iteration at which the mean
           controller reaches the target, and samples each needs to reach a cost threshold.
- flm_model: the same with the global-model prior (regression='model'), against flm's cost threshold.
- gps:     MDGPS on Reacher-v5 with 4 training conditions; the global policy's success from those 4 and 4 unseen.
- distill: iLQR teachers → one student on mbrlax/Arm2-v0 (success from training and unseen conditions).
- dnc:     DnC (4 partitions) vs a single policy with the same samples on mbrlax/PointMass-v0.
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
    return dict(env="mbrlax/PendulumSwingUp-v0", returns=[e[1] for e in r.evals], return_median=float(np.median([e[1] for e in r.evals])),
                note="Gymnasium Pendulum reward from the hanging-down rest state; staying down scores about -1900 over 200 steps")


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
    return {"model": per_seed, "cost_threshold": thr, "model_samples_to_threshold": [None if i is None else i * 5 for i in its]}


def run_flm(seeds=(0, 1, 2)) -> dict:
    out = {reg: _flm_runs(reg, seeds) for reg in ("plain", "bayes")}
    # samples needed to reach a cost threshold: 1.2 × the median final cost of plain regression
    thr = 1.2 * float(np.median([p["costs"][-1] for p in out["plain"]]))
    for reg in ("plain", "bayes"):
        its = [next((i + 1 for i, c in enumerate(p["costs"]) if c <= thr), None) for p in out[reg]]
        out[f"{reg}_samples_to_threshold"] = [None if i is None else i * 5 for i in its]
    out["cost_threshold"] = thr
    med = lambda xs: float(np.median([x if x is not None else np.inf for x in xs]))
    out["samples_saved_by_prior_median"] = med(out["plain_samples_to_threshold"]) - med(out["bayes_samples_to_threshold"])
    return out


def run_gps() -> dict:
    from mbrlax.algorithms import gps

    r = gps.train(gps.Config(env="Reacher-v5", run_root=str(RUNS), progress=False))
    rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    return dict(train_seeds=[0, 1, 2, 3], test_seeds=[100, 101, 102, 103], success_dist=0.05,
                train_success=[row["eval/train_success"] for row in rows], test_success=[row["eval/test_success"] for row in rows],
                train_distance=[row["eval/train_distance"] for row in rows], test_distance=[row["eval/test_distance"] for row in rows],
                local_cost=[row["gps/local_cost"] for row in rows], final_train_success=r.train_success,
                final_test_success=r.test_success)


def run_distill() -> dict:
    from mbrlax.algorithms import distill

    r = distill.train(distill.Config(env="mbrlax/Arm2-v0", run_root=str(RUNS), progress=False))
    rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    return dict(env="mbrlax/Arm2-v0", rows=rows, train_success=r.train_success, test_success=r.test_success)


def run_dnc(seeds=(0, 1), iterations=150) -> dict:
    from mbrlax.algorithms import dnc

    out = {}
    for name, kw in (("dnc_K4", dict(partitions=4, batch=16, kl_weight=0.01)), ("single", dict(partitions=1, batch=64, kl_weight=0.0))):
        out[name] = []
        for s in seeds:
            r = dnc.train(dnc.Config(env="mbrlax/PointMass-v0", seed=s, iterations=iterations, eval_every=25, distill_every=25,
                                     run_root=str(RUNS), progress=False, **kw))
            out[name].append(dict(seed=s, evals=r.evals, success=r.success, final_return=r.final_return_mean))
        out[f"{name}_median_success"] = float(np.median([x["success"] for x in out[name]]))
        out[f"{name}_median_return"] = float(np.median([x["final_return"] for x in out[name]]))
    return out


SECTIONS = {"ilqr": run_ilqr, "flm": run_flm, "flm_model": run_flm_model, "dnc": run_dnc, "distill": run_distill,
            "gps": run_gps}


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
    if g:
        it = np.arange(1, len(g["train_success"]) + 1)
        ax.plot(it, g["train_success"], "o-", label="4 training conditions")
        ax.plot(it, g["test_success"], "s-", label="4 unseen conditions")
        ax.set_ylim(-0.05, 1.05)
        ax.legend()
    ax.set_xlabel("MDGPS iteration")
    ax.set_ylabel("global policy success rate")
    ax.set_title("GPS on Reacher-v5")
    ax = axes[2]
    d = res.get("dnc")
    if d:
        for name, color in (("dnc_K4", "C2"), ("single", "C3")):
            for x in d[name]:
                steps, rets = zip(*x["evals"])
                ax.plot(steps, rets, color=color, alpha=0.7, label=name if x["seed"] == 0 else None)
        ax.legend()
    ax.set_xlabel("environment steps")
    ax.set_ylabel("central policy return")
    ax.set_title("DnC vs single policy, PointMass")
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
