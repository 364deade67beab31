"""MBPO learning on MuJoCo v5 tasks with the paper's presets: InvertedPendulum-v5 (target: 1000 within
10,000 steps) and Hopper-v5 (learning curve to 50,000 steps on 2 seeds).

Runs are resumable (checkpoint every epoch): re-running continues unfinished runs and skips finished ones,
so a long run can be spread over several sessions. Results are written from whatever has been run so far.
Run directories (benchmarks/runs/) are not committed; `--carry` writes a slim copy of each run (no model
buffer, ~15 MB) to benchmarks/carry/, which is committed, and a run missing from benchmarks/runs/ starts
from its carried copy, so a run can continue on another machine (D_model is refilled on resume).

    python benchmarks/mbpo_mujoco.py --task inverted_pendulum [--seeds 0 1 2] [--steps 10000]
    python benchmarks/mbpo_mujoco.py --task hopper [--seeds 0 1] [--steps 50000]
    python benchmarks/mbpo_mujoco.py --task hopper --seeds 0 1 --carry --report-only   # save slim copies

Writes benchmarks/results/mbpo_<task>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CARRY, RESULTS, RUNS, eval_curve, machine, restore_carried, train_or_resume, write_json  # noqa: E402

from mbrlax import checkpoint  # noqa: E402

TASKS = {
    "inverted_pendulum": {"env": "InvertedPendulum-v5", "steps": 10_000, "threshold": 1000.0, "overrides": {}},
    "hopper": {"env": "Hopper-v5", "steps": 50_000, "threshold": None, "overrides": {"eval_every": 1000}},
}

# Published reference points (steps, return, source) drawn beside our curves. The MBPO paper publishes its
# curves only as figures (Figure 2); this point is a faithful PyTorch port's reported result.
REFERENCE = {
    "hopper": [(75_000, 3100.0, "MBPO PyTorch port (x35f/model_based_rl), reported in jiangsy/mbpo_pytorch#6")],
}


def run_one(task: str, seed: int, steps: int) -> str:
    from mbrlax.algorithms import mbpo

    spec = TASKS[task]
    run_dir = RUNS / f"{task}-mbpo-s{seed}"
    restore_carried(run_dir, "checkpoints")  # continue a run carried from another machine
    train_or_resume(mbpo, run_dir, steps, new=dict(env=spec["env"], seed=seed, steps=steps, progress=False,
                                                   **spec["overrides"]),
                    resume=dict(steps=steps, progress=False))
    return str(run_dir)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=sorted(TASKS), required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--report-only", action="store_true", help="only collect what has been run so far")
    ap.add_argument("--carry", action="store_true", help="write slim copies of the runs to benchmarks/carry/")
    args = ap.parse_args()
    spec = TASKS[args.task]
    steps = args.steps or spec["steps"]
    if not args.report_only:
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(run_one, [args.task] * len(args.seeds), args.seeds, [steps] * len(args.seeds)))

    out: dict = {"task": args.task, "env": spec["env"], "target_steps": steps, "threshold": spec["threshold"],
                 "reference": REFERENCE.get(args.task, []), "machine": machine(), "runs": {}}
    for seed in args.seeds:
        d = RUNS / f"{args.task}-mbpo-s{seed}"
        if not (d / "metrics.jsonl").exists():
            continue
        x, y = eval_curve(d)
        cross = next((s for s, v in zip(x, y) if spec["threshold"] is not None and v >= spec["threshold"]), None)
        out["runs"][f"s{seed}"] = {"eval_steps": x, "eval_returns": y, "steps_run": x[-1] if x else 0,
                                   "crossing_step": cross, "best_return": max(y) if y else None,
                                   "config": json.loads((d / "config.json").read_text())}
    write_json(f"mbpo_{args.task}.json", out)
    if args.carry:
        from mbrlax.algorithms import mbpo

        for seed in args.seeds:
            d = RUNS / f"{args.task}-mbpo-s{seed}"
            if checkpoint.exists(d):
                print("carried:", mbpo.slim_checkpoint(d, CARRY / d.name))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in out["runs"].items():
        ax.plot(r["eval_steps"], r["eval_returns"], lw=1.8, label=f"mbrlax MBPO {name}")
    # SAC alone beside it (benchmarks/sac_learning.py: G = 1, 3 evaluation episodes), when that was run
    sac_json = RESULTS / f"sac_learning_{spec['env']}.json"
    if sac_json.exists():
        sac = json.loads(sac_json.read_text())
        for which, style in (("mbrlax", "--"), ("sbx", ":")):
            med = {int(k): v for k, v in sac["median"].get(which, {}).items() if int(k) <= steps}
            if med:
                ax.plot(list(med), list(med.values()), "k" + style, lw=1.2,
                        label=f"SAC alone ({which}), median of {len(sac['curves'][which])} seeds")
    for x_ref, y_ref, source in REFERENCE.get(args.task, []):
        ax.plot([x_ref], [y_ref], "k*", ms=10, label=f"{y_ref:.0f} at {x_ref // 1000}k: {source}")
    if spec["threshold"] is not None:
        ax.axhline(spec["threshold"], color="k", ls="--", lw=1, label=f"target {spec['threshold']:.0f}")
    ax.axvline(steps, color="gray", ls=":", lw=1)
    ax.set(xlabel="environment steps", ylabel="evaluation return", title=f"MBPO on {spec['env']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"mbpo_{args.task}.png", dpi=110)
    print(json.dumps({k: {kk: v for kk, v in r.items() if kk in ("steps_run", "crossing_step", "best_return")}
                      for k, r in out["runs"].items()}, indent=1))


if __name__ == "__main__":
    main()
