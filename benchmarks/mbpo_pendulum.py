"""MBPO vs SAC alone on Pendulum-v1: steps until the evaluation return first reaches -200, per seed.

Both use the Pendulum preset of mbrlax.algorithms.mbpo (20 SAC updates per step, 400 random steps first);
SAC alone ("sac") is the same loop with real_ratio=1 (no model), every other setting unchanged. A third arm,
"sac-g1", is SAC alone with its standard one update per step: the baseline of the MBPO paper's figures, shown
for reference only (it differs from MBPO in two settings, not one). Runs are resumable: re-running the script
continues unfinished runs from their checkpoints and skips finished ones.

    python benchmarks/mbpo_pendulum.py [--seeds 0 1 2] [--steps 1000] [--workers 2] [--arms mbpo sac sac-g1]

Writes benchmarks/results/mbpo_pendulum.json and mbpo_pendulum.png.
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
from mbrlax.algorithms import mbpo as mbpo_presets  # noqa: E402

THRESHOLD = -200.0
# arm -> Config overrides of the Pendulum preset. `sac` has presets of its own (SAC's usual settings), so the SAC
# arms are given MBPO's Pendulum preset explicitly: "same settings" means the same loop with no model.
_SAME = {k: v for k, v in mbpo_presets.PRESETS["Pendulum-v1"].items() if k != "steps"}
ARMS = {"mbpo": {}, "sac": {**_SAME, "real_ratio": 1.0},
        "sac-g1": {**_SAME, "real_ratio": 1.0, "updates_per_step": 1}}
LABELS = {"mbpo": "MBPO", "sac": "SAC alone (same settings, G=20)", "sac-g1": "SAC alone, G=1 (paper's baseline)"}
COLORS = {"mbpo": "tab:blue", "sac": "tab:orange", "sac-g1": "tab:gray"}


def run_one(algo: str, seed: int, steps: int) -> str:
    from mbrlax import runs
    from mbrlax.algorithms import mbpo

    run_dir = RUNS / f"pendulum-{algo}-s{seed}"
    if checkpoint.exists(run_dir):
        if runs.load_checkpoint(run_dir)["t"] >= steps:
            return str(run_dir)
        mbpo.train(mbpo.Config(resume=str(run_dir), steps=steps, progress=False))
    else:
        mbpo.train(mbpo.Config(env="Pendulum-v1", seed=seed, steps=steps, run_dir=str(run_dir), progress=False,
                               **ARMS[algo]))
    return str(run_dir)


def first_crossing(steps: list[int], returns: list[float]) -> int | None:
    return next((s for s, r in zip(steps, returns) if r >= THRESHOLD), None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    ap.add_argument("--report-only", action="store_true",
                    help="only collect the runs made so far (unfinished ones are reported with their steps_run)")
    args = ap.parse_args()
    info = machine()
    jobs = [(a, s) for s in args.seeds for a in args.arms]
    if not args.report_only:
        # spawn, not fork: JAX is multithreaded and a forked child can deadlock
        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(run_one, *zip(*jobs), [args.steps] * len(jobs)))
    # the report covers every arm that has runs, not only the arms run now
    dirs = {(a, s): str(RUNS / f"pendulum-{a}-s{s}") for s in args.seeds for a in ARMS
            if (RUNS / f"pendulum-{a}-s{s}" / "metrics.jsonl").exists()}
    args.arms = [a for a in ARMS if any(j[0] == a for j in dirs)]

    result: dict = {"threshold": THRESHOLD, "steps": args.steps, "machine": info, "runs": {}}
    for (algo, seed), d in dirs.items():
        x, y = eval_curve(d)
        result["runs"][f"{algo}/s{seed}"] = {
            "crossing_step": first_crossing(x, y), "final_return": y[-1], "eval_steps": x, "eval_returns": y,
            "steps_run": x[-1], "finished": x[-1] >= args.steps,
            "config": json.loads((Path(d) / "config.json").read_text()),
        }
    arms = [a for a in args.arms if any(k.startswith(f"{a}/") for k in result["runs"])]
    for algo in arms:
        # a seed not run yet counts as not crossed (inf); one still running counts if it has crossed
        cross = [result["runs"].get(f"{algo}/s{s}", {}).get("crossing_step") for s in args.seeds]
        reached = [c for c in cross if c is not None]
        result[algo] = {
            "crossing_steps": cross,
            "all_seeds_reached": len(reached) == len(cross),
            "median_crossing_step": float(np.median([c if c is not None else np.inf for c in cross])),
        }
    m = result["mbpo"]["median_crossing_step"]
    for algo in (a for a in arms if a != "mbpo"):
        s = result[algo]["median_crossing_step"]
        # > 1: MBPO needs that many times fewer steps than this arm to first reach the threshold
        key = "sample_efficiency_ratio_sac_over_mbpo" + ("" if algo == "sac" else f"_{algo}")
        result[key] = s / m if np.isfinite(s) and np.isfinite(m) else None
    write_json("mbpo_pendulum.json", result)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for algo in arms:
        color = COLORS[algo]
        ys = []
        for seed in (s for s in args.seeds if f"{algo}/s{s}" in result["runs"]):
            x, y = result["runs"][f"{algo}/s{seed}"]["eval_steps"], result["runs"][f"{algo}/s{seed}"]["eval_returns"]
            ax.plot(x, y, color=color, alpha=0.3, lw=1)
            ys.append((x, y))
        x = min((x for x, _ in ys), key=len)  # the median over the steps every seed has reached
        ax.plot(x, np.median([y[: len(x)] for _, y in ys], 0), color=color, lw=2.2,
                label=f"{LABELS[algo]} (median of {len(ys)} seeds; "
                      f"crosses at {result[algo]['crossing_steps']})")
    ax.axhline(THRESHOLD, color="k", ls="--", lw=1, label="-200")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return (5 episodes)")
    ratio = result.get("sample_efficiency_ratio_sac_over_mbpo")
    ax.set_title("Pendulum-v1: MBPO vs SAC alone" + (f" — SAC/MBPO steps to -200: {ratio:.2f}" if ratio else ""))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "mbpo_pendulum.png", dpi=110)
    print(json.dumps({k: v for k, v in result.items() if k in args.arms or k.startswith("sample_efficiency")},
                     indent=1))


if __name__ == "__main__":
    main()
