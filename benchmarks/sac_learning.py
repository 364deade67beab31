"""SAC alone learning a MuJoCo task, mbrlax's against sbx's (JAX, Stable-Baselines3's algorithms), same settings.

Why: MBPO's Hopper-v5 curve (benchmarks/mbpo_mujoco.py) is below the paper's, and MBPO's policy learner is our
SAC. If our SAC alone learns Hopper as sbx's does, the gap is not in SAC. Settings for both: uniformly random
actions for 5,000 steps, then one update per environment step, 256×256 actor and critics, batch 256, Adam 3e-4,
γ 0.99, τ 0.005, target entropy −dim(A); every 5,000 steps the deterministic policy's mean return over 3
episodes (seeds 10,000 + seed + i in both). The seeds differ in what they randomize, so compare medians.

    python benchmarks/sac_learning.py [--env Hopper-v5] [--seeds 0 1 2] [--steps 100000] [--which mbrlax sbx]

sbx runs in its own venv (`bash benchmarks/peers/setup.sh sbx`);
skipped with a message when it is missing. Each run writes its curve as it goes; finished runs are skipped, so
re-running continues. `--which mbrlax` and `--which sbx` can run side by side on two cores (both rewrite the JSON
from what exists). Writes benchmarks/results/sac_learning_<env>.json and .png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, eval_curve, machine, train_or_resume, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
SBX = HERE / "peers" / ".venvs" / "sbx" / "bin" / "python"
SETTINGS = dict(init_steps=5000, updates_per_step=1, eval_every=5000, eval_episodes=3)


def run_dir(env: str, which: str, seed: int) -> Path:
    return RUNS / "sac_learning" / f"{which}-{env}-s{seed}"


def run_mbrlax(env: str, seed: int, steps: int, target_entropy: float) -> None:
    from mbrlax.algorithms import mbpo

    # real_ratio=1: MBPO's loop with no model, i.e. SAC alone (`mbrlax train sac`)
    train_or_resume(mbpo, run_dir(env, "mbrlax", seed), steps,
                    new=dict(env=env, seed=seed, steps=steps, real_ratio=1.0, target_entropy=target_entropy,
                             progress=False, tensorboard=False, **SETTINGS),
                    resume=dict(steps=steps, progress=False, tensorboard=False))


def run_sbx(env: str, seed: int, steps: int) -> None:
    out = run_dir(env, "sbx", seed).with_suffix(".json")
    if out.exists() and json.loads(out.read_text()).get("done"):
        return
    if not SBX.exists():
        print("skipping sbx: no venv (bash benchmarks/peers/setup.sh sbx)", flush=True)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(SBX), str(HERE / "peers" / "sbx_sac_learning.py"), "--env", env, "--seed", str(seed),
                    "--steps", str(steps), "--init-steps", str(SETTINGS["init_steps"]),
                    "--eval-every", str(SETTINGS["eval_every"]), "--eval-episodes", str(SETTINGS["eval_episodes"]),
                    "--out", str(out)], check=True)


def curves(env: str, seeds: list[int]) -> dict:
    out: dict = {"mbrlax": {}, "sbx": {}}
    for s in seeds:
        d = run_dir(env, "mbrlax", s)
        if (d / "metrics.jsonl").exists():
            x, y = eval_curve(d)
            out["mbrlax"][s] = [(a, b) for a, b in zip(x, y) if a >= SETTINGS["eval_every"]]
        p = run_dir(env, "sbx", s).with_suffix(".json")
        if p.exists():
            out["sbx"][s] = [tuple(c) for c in json.loads(p.read_text())["curve"]]
    return out


def medians(per_seed: dict) -> dict[int, float]:
    """Median over the seeds that reached each evaluation step (only steps every seed reached)."""
    if not per_seed:
        return {}
    common = set.intersection(*({x for x, _ in c} for c in per_seed.values()))
    return {x: float(np.median([dict(c)[x] for c in per_seed.values()])) for x in sorted(common)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--which", nargs="+", choices=["mbrlax", "sbx"], default=["mbrlax", "sbx"])
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    import gymnasium as gym

    act_dim = gym.make(args.env).action_space.shape[0]
    for seed in [] if args.report_only else args.seeds:
        if "mbrlax" in args.which:
            run_mbrlax(args.env, seed, args.steps, -float(act_dim))
        if "sbx" in args.which:
            run_sbx(args.env, seed, args.steps)
        report(args.env, args.seeds, args.steps)
    report(args.env, args.seeds, args.steps)


def report(env: str, seeds: list[int], steps: int) -> None:
    c = curves(env, seeds)
    med = {k: medians(v) for k, v in c.items()}
    write_json(f"sac_learning_{env}.json", {
        "env": env, "steps": steps, "settings": {**SETTINGS, "hidden": [256, 256], "batch": 256, "lr": 3e-4,
                                                 "target_entropy": "-dim(A)"},
        "machine": machine(), "curves": c, "median": med,
        "final_median": {k: (v[max(v)] if v else None) for k, v in med.items()},
        "seeds_done": {k: sorted(s for s, cur in v.items() if cur and cur[-1][0] >= steps) for k, v in c.items()},
    })
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for which, color in (("mbrlax", "tab:blue"), ("sbx", "tab:orange")):
        for cur in c[which].values():
            if cur:
                ax.plot(*zip(*cur), color=color, lw=0.8, alpha=0.35)
        if med[which]:
            ax.plot(list(med[which]), list(med[which].values()), color=color, lw=2.2,
                    label=f"{which} SAC, median of {len(c[which])} seeds")
    ax.set(xlabel="environment steps", ylabel="evaluation return (3 episodes, deterministic)",
           title=f"SAC alone on {env}: mbrlax vs sbx, same settings")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"sac_learning_{env}.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
