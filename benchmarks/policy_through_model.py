"""Learning a policy through the model on Pendulum-v1: v2.0 (bptt), v2.5 (mbpg, PPO by default) and ME-TRPO
(metrpo) beside SAC alone. Target (issue 4): each reaches an evaluation return ≥ -300 within 20,000 real steps
on 3 seeds. Reported per run: the first evaluation step at which the return is ≥ -300, the final return, the
curve; per algorithm the median over seeds.

Every algorithm uses its Pendulum-v1 preset; SAC alone is `mbrlax.algorithms.mbpo` with real_ratio=1.0
(`mbrlax train sac`, its Pendulum preset). Real steps count environment steps used for learning (the
evaluation episodes are not counted, for any algorithm). Runs are resumable: re-running the script continues
unfinished runs from their checkpoints and skips finished ones; finished SAC-alone runs of
benchmarks/mbpo_pendulum.py (same preset and seed) are reused instead of being re-run.

    nice -n 10 python benchmarks/policy_through_model.py [--seeds 0 1 2] [--steps 4000] [--workers 2]
        [--algos bptt mbpg metrpo sac] [--report-only]

`--report-only` runs nothing: it aggregates whatever the run directories hold (a partial run is marked
with the steps it reached), so the JSON can be written while runs are still going.

Writes benchmarks/results/policy_through_model.json and policy_through_model.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, eval_curve, machine, write_json  # noqa: E402

from mbrlax import checkpoint  # noqa: E402

THRESHOLD = -300.0
BUDGET = 20_000
ALGOS = ("bptt", "mbpg", "metrpo", "sac")


def _done(run_dir: Path, steps: int) -> bool:
    from mbrlax import runs

    return checkpoint.exists(run_dir) and runs.load_checkpoint(run_dir)["t"] >= steps


def _progress(run_dir: Path) -> int:
    from mbrlax.runs import read_metrics

    if not (run_dir / "metrics.jsonl").exists():
        return -1
    return max((r["step"] for r in read_metrics(run_dir) if "eval/return_mean" in r), default=0)


def run_dir_of(algo: str, seed: int, steps: int) -> Path:
    """For --report-only: the furthest-along run directory of (algo, seed), over the default one, one made with
    a --suffix (a second runner), and for SAC alone the shared run of mbpo_pendulum.py."""
    candidates = [RUNS / f"ptm-{algo}-s{seed}", *sorted(RUNS.glob(f"ptm-{algo}-s{seed}-*"))]
    if algo == "sac":
        candidates.append(RUNS / f"pendulum-sac-s{seed}")
    return max(candidates, key=_progress)


def run_one(algo: str, seed: int, steps: int, suffix: str = "") -> str:
    from mbrlax.algorithms import registry

    if algo == "sac":  # reuse a finished SAC-alone run of mbpo_pendulum.py (same preset, same seed)
        shared = RUNS / f"pendulum-sac-s{seed}"
        if _done(shared, steps):
            return str(shared)
    run_dir = RUNS / f"ptm-{algo}-s{seed}{suffix}"
    module, overrides = registry.get(algo)
    tic = time.time()
    if _done(run_dir, steps):
        return str(run_dir)
    if checkpoint.exists(run_dir):
        module.train(module.Config(resume=str(run_dir), steps=steps, progress=False, tensorboard=False))
    else:
        module.train(module.Config(env="Pendulum-v1", seed=seed, steps=steps, run_dir=str(run_dir), progress=False,
                                   tensorboard=False, **overrides))
    (run_dir / "wallclock.txt").write_text(f"{time.time() - tic:.1f}\n")
    return str(run_dir)


def first_crossing(steps: list[int], returns: list[float]) -> int | None:
    return next((s for s, r in zip(steps, returns) if r >= THRESHOLD), None)


def worst_after_crossing(steps: list[int], returns: list[float]) -> float | None:
    """The lowest evaluation return from the crossing on: does the policy stay above the threshold?"""
    c = first_crossing(steps, returns)
    return None if c is None else min(r for s, r in zip(steps, returns) if s >= c)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=4000, help="real steps per run (the target allows 20,000)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--algos", nargs="+", default=list(ALGOS), choices=ALGOS)
    ap.add_argument("--report-only", action="store_true", help="aggregate the existing runs, run nothing")
    ap.add_argument("--suffix", default="", help="run directories ptm-ALGO-sSEED-SUFFIX (a second runner that "
                    "must not share directories with a running first one)")
    args = ap.parse_args()
    if args.steps > BUDGET:
        raise SystemExit(f"--steps {args.steps} exceeds the 20,000-step budget of the target")
    info = machine()
    jobs = [(a, s) for s in args.seeds for a in args.algos]
    if args.report_only:
        dirs = {(a, s): str(run_dir_of(a, s, args.steps)) for a, s in jobs}
        dirs = {k: d for k, d in dirs.items() if (Path(d) / "metrics.jsonl").exists()}
    else:
        # spawn, not fork: JAX is multithreaded and a forked child can deadlock
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            suffix = f"-{args.suffix}" if args.suffix else ""
            dirs = dict(zip(jobs, pool.map(run_one, *zip(*jobs), [args.steps] * len(jobs), [suffix] * len(jobs))))

    result: dict = {"threshold": THRESHOLD, "budget_steps": BUDGET, "steps": args.steps, "machine": info, "runs": {}}
    for (algo, seed), d in dirs.items():
        x, y = eval_curve(d)
        wall = Path(d) / "wallclock.txt"
        result["runs"][f"{algo}/s{seed}"] = {
            "run_dir": str(d), "steps_done": x[-1] if x else 0, "complete": bool(x) and x[-1] >= args.steps,
            "crossing_step": first_crossing(x, y), "worst_after_crossing": worst_after_crossing(x, y),
            "final_return": y[-1] if y else None, "eval_steps": x, "eval_returns": y,
            "wallclock_s": float(wall.read_text()) if wall.exists() else None,
            "config": json.loads((Path(d) / "config.json").read_text()),
        }
    # SAC alone: a seed with no run directory here (or a less advanced one) takes its curve from the recorded
    # results of benchmarks/mbpo_pendulum.py (same Pendulum preset of mbpo with real_ratio=1, same seed).
    recorded = RESULTS / "mbpo_pendulum.json"
    if "sac" in args.algos and recorded.exists():
        rec = json.loads(recorded.read_text())
        for seed in args.seeds:
            r = rec.get("runs", {}).get(f"sac/s{seed}")
            mine = result["runs"].get(f"sac/s{seed}")
            if r is None or (mine is not None and mine["steps_done"] >= r["eval_steps"][-1]):
                continue
            x, y = r["eval_steps"], r["eval_returns"]
            result["runs"][f"sac/s{seed}"] = {
                "run_dir": None, "source": f"{recorded.name} (machine date {rec['machine'].get('date')})",
                "steps_done": x[-1], "complete": x[-1] >= args.steps, "crossing_step": first_crossing(x, y),
                "worst_after_crossing": worst_after_crossing(x, y), "final_return": y[-1], "eval_steps": x,
                "eval_returns": y, "wallclock_s": None,
                "config": r.get("config"),
            }
    algos = [a for a in args.algos if any(f"{a}/s{s}" in result["runs"] for s in args.seeds)]
    for algo in algos:
        seeds = [s for s in args.seeds if f"{algo}/s{s}" in result["runs"]]
        cross = [result["runs"][f"{algo}/s{s}"]["crossing_step"] for s in seeds]
        finals = [result["runs"][f"{algo}/s{s}"]["final_return"] for s in seeds]
        result[algo] = {
            "seeds": seeds,
            "crossing_steps": cross,
            "all_seeds_reached": len(seeds) == len(args.seeds) and all(c is not None and c <= BUDGET for c in cross),
            "median_crossing_step": float(np.median([c if c is not None else np.inf for c in cross])),
            "final_returns": finals,
            "median_final_return": (float(np.median([f for f in finals if f is not None]))
                                    if any(f is not None for f in finals) else None),
        }
    result["target_met"] = {a: result[a]["all_seeds_reached"] for a in algos if a != "sac"}
    write_json("policy_through_model.json", result)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"bptt": "v2.0 BPTT", "mbpg": "v2.5 model-based PPO", "metrpo": "ME-TRPO", "sac": "SAC alone"}
    fig, ax = plt.subplots(figsize=(8, 4.8))
    for i, algo in enumerate(algos):
        color = f"C{i}"
        ys, xs = [], None
        for seed in result[algo]["seeds"]:
            x, y = result["runs"][f"{algo}/s{seed}"]["eval_steps"], result["runs"][f"{algo}/s{seed}"]["eval_returns"]
            ax.plot(x, y, color=color, alpha=0.25, lw=1)
            if y:
                ys.append(y)
                xs = x if xs is None or len(x) < len(xs) else xs
        if not ys:
            continue
        n = min(len(y) for y in ys)
        ax.plot(xs[:n], np.median([y[:n] for y in ys], 0), color=color, lw=2.2,
                label=f"{labels[algo]} (median of {len(ys)}; ≥{THRESHOLD:.0f} at {result[algo]['crossing_steps']})")
    ax.axhline(THRESHOLD, color="k", ls="--", lw=1)
    ax.set_xlabel("real environment steps")
    ax.set_ylabel("evaluation return (5 episodes)")
    ax.set_title("Pendulum-v1: learning a policy through the model vs SAC alone")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "policy_through_model.png", dpi=110)
    print(json.dumps({a: result[a] for a in algos}, indent=1))


if __name__ == "__main__":
    main()
