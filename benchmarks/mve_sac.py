"""MVE-SAC vs SAC alone: environment steps until the evaluation return first reaches a threshold, per seed.

Both arms share every setting (steps, random steps first, G updates per step, networks, batch, entropy
target, evaluation); the only difference is the critic target: H-step model-based value expansion
(mbrlax.algorithms.mve) or SAC's one-step target (mbrlax.algorithms.mbpo with real_ratio=1, i.e. `mbrlax
train sac`). Runs are resumable: re-running the script continues unfinished runs from their checkpoints and
skips finished ones; the JSON is rewritten after every finished run.

    nice -n 10 python benchmarks/mve_sac.py [--envs Pendulum-v1 InvertedPendulum-v5] [--seeds 0 1 2] [--workers 2]

Writes benchmarks/results/mve_sac.json and mve_sac.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, eval_curve, machine, write_json  # noqa: E402

from mbrlax import checkpoint  # noqa: E402

# env -> (threshold, shared settings, MVE-only settings). The model is refit less often than in MVE's presets
# (and at most 50 epochs, like MBPO's Pendulum preset): the fits dominate the time of these short runs.
TASKS = {
    # MBPO's Pendulum preset settings (400 random steps, evaluation every 200) with G = 5; MVE with H = 3.
    "Pendulum-v1": (-200.0, dict(steps=2000, init_steps=400, updates_per_step=5, eval_every=200, eval_episodes=5),
                    dict(horizon=3, model_train_freq=400, model_max_epochs=50)),
    # One update per step (the paper's DDPG setting), H = 10 (the paper's imagination depth); return 1000 is
    # the maximum (balanced for the whole 1000-step episode).
    "InvertedPendulum-v5": (1000.0, dict(steps=6000, init_steps=500, updates_per_step=1, eval_every=500,
                                         eval_episodes=3, target_entropy=-0.05),
                            dict(horizon=10, model_train_freq=1000, model_max_epochs=50)),
}
# mve_mean: MVE imagining with the members' means instead of draws (model_noise=False), closer to the paper's
# deterministic model; an ablation, run with --arms mve_mean
ARMS = ("mve", "sac", "mve_mean")
LABELS = {"mve": "MVE-SAC", "sac": "SAC alone", "mve_mean": "MVE-SAC, model means"}
COLORS = {"mve": "tab:blue", "sac": "tab:orange", "mve_mean": "tab:green"}


def run_one(arm: str, env: str, seed: int) -> Path:
    from mbrlax import runs
    from mbrlax.algorithms import mbpo, mve

    _, shared, mve_only = TASKS[env]
    run_dir = RUNS / f"mve_sac-{env}-{arm}-s{seed}"
    module = mbpo if arm == "sac" else mve
    if checkpoint.exists(run_dir):
        if runs.load_checkpoint(run_dir)["t"] >= shared["steps"]:
            return run_dir
        module.train(module.Config(resume=str(run_dir), progress=False))
        return run_dir
    if arm != "sac":
        cfg = mve.Config(env=env, seed=seed, run_dir=str(run_dir), progress=False, model_noise=arm == "mve",
                         **shared, **mve_only)
    else:
        cfg = mbpo.Config(env=env, seed=seed, run_dir=str(run_dir), progress=False, real_ratio=1.0,
                          epoch_length=shared["eval_every"], **shared)
    module.train(cfg)
    return run_dir


def summarize(done: dict, envs: list[str], seeds: list[int]) -> dict:
    res: dict = {"machine": machine(), "command": "nice -n 10 python benchmarks/mve_sac.py", "tasks": {}}
    try:  # keep the tasks of other environments (a second process may run them: --envs)
        res["tasks"] = {e: t for e, t in json.loads((RESULTS / "mve_sac.json").read_text())["tasks"].items()
                        if e not in envs}
    except (OSError, ValueError, KeyError):
        pass
    for env in envs:
        thr, shared, mve_only = TASKS[env]
        t: dict = {"threshold": thr, "shared_settings": shared, "mve_settings": mve_only, "runs": {}}
        for arm in ARMS:
            cross = []
            for seed in seeds:
                d = done.get((arm, env, seed), RUNS / f"mve_sac-{env}-{arm}-s{seed}")  # also other arms' runs
                if not (d / "metrics.jsonl").exists():
                    continue
                x, y = eval_curve(d)
                c = next((s for s, r in zip(x, y) if r >= thr), None)
                finished = bool(x) and x[-1] >= shared["steps"]
                if not finished and c is None:
                    continue  # still running and not yet crossed: no number to report
                cross.append(c)
                t["runs"][f"{arm}/s{seed}"] = {"crossing_step": c, "final_return": y[-1], "eval_steps": x,
                                               "eval_returns": y, "finished": finished}
            if cross:
                t[arm] = {"crossing_steps": cross, "seeds_reported": len(cross),
                          "median_crossing_step": float(np.median([c if c is not None else np.inf for c in cross]))}
        for arm in ("mve", "mve_mean"):
            if arm in t and "sac" in t:
                m, s = t[arm]["median_crossing_step"], t["sac"]["median_crossing_step"]
                # > 1: MVE needs that many times fewer steps than SAC to first reach the threshold
                t[f"sample_efficiency_ratio_sac_over_{arm}"] = s / m if np.isfinite(s) and np.isfinite(m) else None
        res["tasks"][env] = t
    return res


def plot(res: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(res["tasks"])
    fig, axes = plt.subplots(1, len(envs), figsize=(7 * len(envs), 4.4), squeeze=False)
    for ax, env in zip(axes[0], envs):
        t = res["tasks"][env]
        for arm, color in COLORS.items():
            runs_ = [v for k, v in t["runs"].items() if k.startswith(arm + "/")]
            for r in runs_:
                ax.plot(r["eval_steps"], r["eval_returns"], color=color, alpha=0.3, lw=1)
            if runs_:
                n = min(len(r["eval_returns"]) for r in runs_)
                label = LABELS[arm] + (f" H={t['mve_settings']['horizon']}" if arm != "sac" else "") + \
                    f" (median of {len(runs_)}; crosses at {t[arm]['crossing_steps']})"
                ax.plot(runs_[0]["eval_steps"][:n], np.median([r["eval_returns"][:n] for r in runs_], 0), color=color,
                        lw=2.2, label=label)
        ax.axhline(t["threshold"], color="k", ls="--", lw=1)
        ax.set_title(f"{env}: G={t['shared_settings']['updates_per_step']}")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "mve_sac.png", dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--envs", nargs="+", choices=list(TASKS), default=list(TASKS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=["mve", "sac"])
    ap.add_argument("--summarize-only", action="store_true",
                    help="write the JSON/PNG from the run directories as they are (finished runs, and unfinished "
                         "ones that already crossed the threshold), without training")
    args = ap.parse_args()
    done: dict = {}
    if args.summarize_only:
        done = {(arm, env, seed): RUNS / f"mve_sac-{env}-{arm}-s{seed}" for env in args.envs for seed in args.seeds
                for arm in args.arms if (RUNS / f"mve_sac-{env}-{arm}-s{seed}" / "metrics.jsonl").exists()}
        res = summarize(done, args.envs, args.seeds)
        write_json("mve_sac.json", res)
        plot(res)
        print(json.dumps({e: {k: v for k, v in t.items() if k != "runs"} for e, t in res["tasks"].items()}, indent=1))
        return
    jobs = [(arm, env, seed) for env in args.envs for seed in args.seeds for arm in args.arms]
    # spawn, not fork: JAX is multithreaded and a forked child can deadlock
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {job: pool.submit(run_one, *job) for job in jobs}
        for job in jobs:  # in submission order; the JSON grows as runs finish
            done[job] = futures[job].result()
            res = summarize(done, args.envs, args.seeds)
            write_json("mve_sac.json", res)
            plot(res)
            print(f"done {' '.join(map(str, job))}", flush=True)
    print(json.dumps({e: {k: v for k, v in t.items() if k != "runs"} for e, t in res["tasks"].items()}, indent=1))


if __name__ == "__main__":
    main()
