"""PETS learning: does it swing up the cart-pole within 15 episodes and reach ≥ −200 on Pendulum-v1 within
10 episodes? (HalfCheetah-v5 for 30 episodes of 1000 steps with --halfcheetah: hours on a CPU.)

    python benchmarks/pets_learning.py                 # cart-pole (15 episodes) + Pendulum (10), seeds 0-2
    python benchmarks/pets_learning.py --halfcheetah   # also HalfCheetah-v5 (resumable: re-run to continue)
    python benchmarks/pets_learning.py --report        # rebuild JSON + figure from the runs

PETS = CEM + probabilistic ensemble of 5 + TS∞ with 20 particles + known reward, replanning every step, with the
planner/model sizes of benchmarks/mpc_lineage.py (runs are shared with it: benchmarks/runs/mpc/...).
"Swings up and balances" = an episode return ≥ 150 of the maximum 200 (reward ≤ 1 per step: the tip held
near the goal for most of the 8-second episode after a swing-up of about 1 s). A target counts as met when an
episode within the budget reaches the threshold and the mean of the last 3 episodes is above it too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_json  # noqa: E402
from mpc_lineage import MODEL, PLANNER, SETTINGS, curve, ensure, run_dir  # noqa: E402

from mbrlax import checkpoint  # noqa: E402

TARGETS = {
    # env: (episodes, seeds, success threshold on an episode's return)
    "mbrlax/CartPoleSwingUp-v0": (15, (0, 1, 2), 150.0),
    "Pendulum-v1": (10, (0, 1, 2), -200.0),
}
HALFCHEETAH = ("HalfCheetah-v5", 30, (0,))


def ensure_halfcheetah(seed: int, episodes: int) -> Path:
    from mbrlax import runs
    from mbrlax.algorithms import mpc

    rd = run_dir(HALFCHEETAH[0], "pets", seed)
    if checkpoint.exists(rd):
        if runs.load_checkpoint(rd)["episode"] < episodes:
            mpc.train(mpc.Config(resume=str(rd), episodes=episodes, progress=False, tensorboard=False))
        return rd
    # the HalfCheetah preset (PETS paper: H 30, CEM 500/50/5, 4×200 model), reward learned
    mpc.train(mpc.Config(env=HALFCHEETAH[0], variant="pets", seed=seed, episodes=episodes, run_dir=str(rd),
                         progress=False, tensorboard=False))
    return rd


def report(with_halfcheetah: bool) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mbrlax.envs.make import make

    out = {"machine": machine(), "planner": PLANNER, "model": MODEL, "settings": SETTINGS,
           "envs": {}}
    envs = dict(TARGETS)
    if with_halfcheetah:
        envs[HALFCHEETAH[0]] = (HALFCHEETAH[1], HALFCHEETAH[2], None)
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 4))
    for ax, (env, (episodes, seeds, threshold)) in zip(np.atleast_1d(axes), envs.items()):
        e, spec = make(env)
        e.close()
        per_seed = {}
        for seed in seeds:
            rd = run_dir(env, "pets", seed)
            if not (rd / "metrics.jsonl").exists():
                continue
            c = curve(rd, episodes * spec.max_episode_steps)
            first = next((i for i, (_, r) in enumerate(c) if threshold is not None and r >= threshold), None)
            per_seed[seed] = {
                "returns": [r for _, r in c],
                "steps": [s for s, _ in c],
                "episodes_done": len(c) + 1,  # + the random first episode
                "first_success_episode": None if first is None else first + 2,  # 1-based, after 1 random episode
                "best": max((r for _, r in c), default=None),
                "final": c[-1][1] if c else None,
                "mean_last3": float(np.mean([r for _, r in c[-3:]])) if c else None,
            }
            ax.plot([s // spec.max_episode_steps for s, _ in c], [r for _, r in c], marker="o", ms=3,
                    label=f"seed {seed}")
        out["envs"][env] = {
            "episodes": episodes, "threshold": threshold, "per_seed": per_seed,
            # met: an episode at or above the threshold within the budget AND the last 3 episodes average above it
            # (Pendulum's random starts make a single good episode cheap: a start near upright scores ~0)
            "target_met_all_seeds": bool(per_seed) and threshold is not None and all(
                v["first_success_episode"] is not None and v["first_success_episode"] <= episodes
                and v["episodes_done"] >= episodes and v["mean_last3"] >= threshold for v in per_seed.values()),
        }
        if threshold is not None:
            ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"target {threshold:g}")
        ax.set_title(f"PETS on {env}")
        ax.set_xlabel("episode")
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / "pets_learning.png", dpi=110)
    print(write_json("pets_learning.json", out))
    for env, d in out["envs"].items():
        print(env, "target met:", d["target_met_all_seeds"],
              {s: (v["first_success_episode"], v["best"]) for s, v in d["per_seed"].items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", nargs="*", default=list(TARGETS))
    ap.add_argument("--seeds", nargs="*", type=int, default=None, help="default: TARGETS' seeds (0 1 2)")
    ap.add_argument("--halfcheetah", action="store_true")
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if not args.report:
        for env in args.envs:
            episodes, seeds, _ = TARGETS[env]
            for seed in seeds if args.seeds is None else args.seeds:
                ensure(env, "pets", seed, episodes)
        if args.halfcheetah:
            for seed in HALFCHEETAH[2]:
                ensure_halfcheetah(seed, HALFCHEETAH[1])
    report(args.halfcheetah)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
