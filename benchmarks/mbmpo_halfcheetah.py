"""MB-MPO on HalfCheetah-v5 with 200-step episodes (the paper's Figure 1 setting), beside ME-TRPO and MBPO at the
same real steps, and the paper's ensemble-size experiment (MB-MPO with 1, 3 and 5 models; Figure 6).

Every run gets `max_episode_steps=200` through its env_kwargs (gymnasium.make takes it: the TimeLimit is 200
for the real episodes and the evaluations of all three algorithms). MB-MPO runs the paper's settings (its
HalfCheetah-v5 preset: 5 models 512×512, policy 32×32 tanh, inner lr 1e-3, meta-batch 20, 50 imagined
trajectories per task, 30 meta steps per iteration, 5000 random steps, 4000 real steps per iteration); with 1 and 3
models the meta-batch stays 20 (21 for 3 models, a multiple of 3) so every variant imagines as much per step.
ME-TRPO gets the same random start (5000 steps), 4000 real steps per round, 200-step imagined trajectories and
5 members of 512×512; MBPO its own HalfCheetah preset. Curves are evaluation returns of each algorithm's
deterministic policy (MB-MPO: the pre-update policy, as the paper reports), medians over seeds on a common
grid of real steps.

Runs are resumable: re-running continues unfinished runs (from their last checkpoint) and skips finished ones;
the JSON and PNG are rewritten after every run, from whatever has been run so far. Runs not here (a new machine)
are carried from the report being replaced, with the machine they ran on. Processes run side by side need
disjoint seeds or variants and their own --out; `--merge` folds their reports into one.

    python benchmarks/mbmpo_halfcheetah.py [--steps 100000] [--seeds 0 1 2] [--variants mbmpo metrpo mbpo ...]
    python benchmarks/mbmpo_halfcheetah.py --report-only [--merge OUT_A OUT_B ...]

Writes benchmarks/results/mbmpo_halfcheetah.json and .png (run directories under benchmarks/runs/mbmpo_halfcheetah/).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, eval_curve, machine, train_or_resume, write_json  # noqa: E402

ENV = "HalfCheetah-v5"
EPISODE = {"max_episode_steps": 200}
NAME = "mbmpo_halfcheetah"
INIT_STEPS = 5000  # every variant's random start

# variant -> (algorithm module, Config overrides). "mbmpo" is also the 5-model point of the ensemble-size study.
VARIANTS: dict[str, tuple[str, dict]] = {
    "mbmpo": ("mbmpo", {}),
    "metrpo": ("metrpo", dict(init_steps=INIT_STEPS, steps_per_round=4000, horizon=200, model_hidden=(512, 512),
                              ensemble_size=5)),
    "mbpo": ("mbpo", {}),
    "mbmpo_k1": ("mbmpo", dict(ensemble_size=1, meta_batch_size=20)),
    "mbmpo_k3": ("mbmpo", dict(ensemble_size=3, meta_batch_size=21, rollouts=48)),
}
COMPARISON = ("mbmpo", "metrpo", "mbpo")
ENSEMBLE = {"mbmpo_k1": 1, "mbmpo_k3": 3, "mbmpo": 5}


def run_dir(variant: str, seed: int) -> Path:
    return RUNS / NAME / f"{variant}-s{seed}"


def run_one(variant: str, seed: int, steps: int) -> dict:
    """Train (or continue) one run to `steps` real steps; returns its wall-clock seconds and the real steps past
    the random start it ran now (the cost of a learning step: the random steps cost next to nothing)."""
    import importlib

    module, overrides = VARIANTS[variant]
    algo = importlib.import_module(f"mbrlax.algorithms.{module}")
    d = run_dir(variant, seed)
    d.parent.mkdir(parents=True, exist_ok=True)
    before = _steps_done(d)
    tic = time.perf_counter()
    train_or_resume(algo, d, steps, new=dict(env=ENV, seed=seed, steps=steps, env_kwargs=EPISODE, progress=False,
                                             tensorboard=False, **overrides),
                    resume=dict(steps=steps, progress=False))
    after = _steps_done(d)
    return {"seconds": time.perf_counter() - tic, "steps": max(after - max(before, INIT_STEPS), 0)}


def _steps_done(d: Path) -> int:
    from mbrlax import checkpoint, runs

    return int(runs.load_checkpoint(d)["t"]) if checkpoint.exists(d) else 0


def _medians(curves: list[tuple[list[int], list[float]]], grid: np.ndarray) -> list[float | None]:
    """Median over runs of each run's return interpolated at the grid steps (None where not every run reached it)."""
    out = []
    for g in grid:
        vals = [float(np.interp(g, x, y)) for x, y in curves if x and x[0] <= g <= x[-1]]
        out.append(float(np.median(vals)) if len(vals) == len(curves) and vals else None)
    return out


def _last_step(run: dict) -> int:
    return (run["eval_steps"] or [0])[-1]


def _carried(previous: list[dict]) -> dict[tuple[str, str], dict]:
    """The runs of earlier reports, by (variant, "s<seed>"), the longest where several have one, each with the
    machine it was run on (reports from before runs carried their own machine record it once, at the top)."""
    out: dict[tuple[str, str], dict] = {}
    for rep in previous:
        top = rep.get("machine", {})
        for v, res in rep.get("variants", {}).items():
            for s, r in res.get("runs", {}).items():
                old = out.get((v, s))
                if old is None or _last_step(r) > _last_step(old):
                    out[(v, s)] = {**r, "machine": r.get("machine", top)}
    return out


def _local_run(d: Path, here: dict) -> dict | None:
    if not (d / "metrics.jsonl").exists():
        return None
    x, y = eval_curve(d)
    return {"eval_steps": x, "eval_returns": y, "machine": here}


def report(seeds: list[int], steps: int, timing: dict, previous: list[dict] | None = None) -> dict:
    """Curves and medians of every variant's runs. A run measured before (in `previous`: the report this one
    replaces, and any merged) whose directory is not here, or is here but shorter, is carried over with the
    machine it ran on: run directories are not kept from one machine to the next, and the runs are
    deterministic (a rerun gives the same curve), so a report grows across machines instead of losing what is
    not rerun. A run read from its directory here gets this machine's record, whose commit is the report's (run
    directories do not record the commit they were trained at)."""
    grid = np.arange(INIT_STEPS, steps + 1, 4000)
    projected = {v: t["seconds_per_step"] * (steps - INIT_STEPS) / 3600 for v, t in timing.items() if t.get("steps")}
    here = machine()
    carried = _carried(previous or [])
    out: dict = {"env": ENV, "env_kwargs": EPISODE, "target_steps": steps, "seeds": seeds, "grid_steps": grid.tolist(),
                 "machine": here, "variants": {},
                 "timing": timing, "projected_hours_per_run_at_target_steps": projected,
                 "timing_note": "seconds per real step past the 5000 random steps, wall clock of this script's runs "
                                "(one run at a time) on the machine above"}
    for variant in VARIANTS:
        runs_: dict[str, dict] = {}
        for seed in seeds:
            d, name = run_dir(variant, seed), f"s{seed}"
            found = [r for r in (_local_run(d, here), carried.get((variant, name))) if r]
            if found:
                runs_[name] = max(found, key=_last_step)  # the run here where it is as long (max keeps the first)
        if not runs_:
            continue
        curves = [(r["eval_steps"], r["eval_returns"]) for r in runs_.values()]
        finals = [float(np.interp(steps, x, y)) for x, y in curves if x and x[-1] >= steps]
        # the longest length every seed has reached, and the median there (variants may be run to different lengths)
        common = min(x[-1] if x else 0 for x, _ in curves) if len(curves) == len(seeds) else 0
        at_common = [float(np.interp(common, x, y)) for x, y in curves] if common else []
        out["variants"][variant] = {
            "runs": runs_, "median_curve": _medians(curves, grid),
            "final_median": float(np.median(finals)) if len(finals) == len(seeds) else None,
            "final_returns": finals,
            "common_steps": common, "median_at_common_steps": float(np.median(at_common)) if at_common else None,
            "returns_at_common_steps": at_common,
        }
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"mbmpo": "C0", "metrpo": "C1", "mbpo": "C2", "mbmpo_k1": "C3", "mbmpo_k3": "C4"}
    labels = {"mbmpo": "MB-MPO (5 models)", "metrpo": "ME-TRPO", "mbpo": "MBPO", "mbmpo_k1": "MB-MPO, 1 model",
              "mbmpo_k3": "MB-MPO, 3 models"}
    grid = np.asarray(res["grid_steps"])
    for ax, group, title in ((axes[0], COMPARISON, "MB-MPO vs ME-TRPO vs MBPO"),
                             (axes[1], tuple(ENSEMBLE), "MB-MPO: ensemble size")):
        for v in group:
            if v not in res["variants"]:
                continue
            r = res["variants"][v]
            for run in r["runs"].values():
                ax.plot(run["eval_steps"], run["eval_returns"], color=colors[v], alpha=0.3, lw=0.8, marker=".")
            med = np.array([np.nan if m is None else m for m in r["median_curve"]])
            ax.plot(grid, med, color=colors[v], lw=2, marker="o", ms=4,
                    label=f"{labels[v]} (median of {len(r['runs'])})")
        ax.set_title(f"{title}: {res['env']}, 200-step episodes")
        ax.set_xlabel("real environment steps")
        ax.set_ylabel("evaluation return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100_000, help="real steps per run (the same for every variant)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--report-only", action="store_true", help="only collect what has been run so far")
    ap.add_argument("--out", default=NAME, help="name of the JSON/PNG in benchmarks/results/")
    ap.add_argument("--merge", nargs="+", default=[], metavar="NAME",
                    help="reports (benchmarks/results/NAME.json) of runs made side by side under other --out names: "
                         "their runs are carried like this report's own, and their summed timings replace its timing")
    args = ap.parse_args()
    json_path = RESULTS / f"{args.out}.json"

    previous = [json.loads(json_path.read_text())] if json_path.exists() else []
    timing = previous[0].get("timing", {}) if previous else {}
    merged = [json.loads((RESULTS / f"{m}.json").read_text()) for m in args.merge]
    if merged:
        timing = {}
        for rep in merged:
            for v, t in rep.get("timing", {}).items():
                acc = timing.setdefault(v, {"seconds": 0.0, "steps": 0, "load_avg_1min": []})
                acc["seconds"] += t["seconds"]
                acc["steps"] += t["steps"]
                acc["load_avg_1min"] += t["load_avg_1min"]
                acc["seconds_per_step"] = acc["seconds"] / max(acc["steps"], 1)
        previous += merged

    def write() -> None:
        res = report(args.seeds, args.steps, timing, previous)
        if merged:
            res["timing_note"] = (f"seconds per real step past the 5000 random steps, summed over the reports "
                                  f"{', '.join(args.merge)}, whose processes ran side by side on the machine above "
                                  f"(see load_avg_1min): upper bounds of a run alone. A meta step alone: "
                                  f"results/mbmpo_speed.json")
        write_json(f"{args.out}.json", res)
        plot(res, RESULTS / f"{args.out}.png")

    if not args.report_only:
        for seed in args.seeds:
            for variant in args.variants:
                done = run_one(variant, seed, args.steps)
                if done["steps"]:
                    t = timing.setdefault(variant, {"seconds": 0.0, "steps": 0, "load_avg_1min": []})
                    t["seconds"] += done["seconds"]
                    t["steps"] += done["steps"]
                    t["seconds_per_step"] = t["seconds"] / t["steps"]
                    t["load_avg_1min"].append(os.getloadavg()[0])
                write()
                print(f"{variant} seed {seed}: {timing.get(variant)}", flush=True)
    write()
    res = json.loads(json_path.read_text())
    for v, r in res["variants"].items():
        print(f"{v:10s} final median {r['final_median']}; median {r['median_at_common_steps']} at "
              f"{r['common_steps']} steps, reached by all {len(r['runs'])} runs")


if __name__ == "__main__":
    main()
