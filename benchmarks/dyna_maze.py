"""Sutton & Barto chapter 8 with mbrlax's Dyna-Q: Figures 8.2, 8.4 and 8.5.

    python benchmarks/dyna_maze.py            # ~2-4 minutes on 2 cores (mostly XLA compilation)

Figure 8.2: steps per episode on the Dyna Maze for n = 0, 5, 50 planning steps (plus prioritized sweeping
with n = 5, not in the figure), 30 runs, α = 0.1, ε = 0.1, γ = 0.95, 50 episodes.
Figure 8.4: cumulative reward of Dyna-Q and Dyna-Q+ on the blocking maze (wall moves after 1000 steps).
Figure 8.5: the same on the shortcut maze (a shortcut opens after 3000 steps).
All runs of one setting are one vmapped, jitted computation (`dyna_q.run_many`).

Writes benchmarks/results/dyna_maze.json and dyna_maze.png. Each section is stored as soon as it is done and
skipped when the JSON already has it (delete the file, or pass --fresh, to recompute).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_json  # noqa: E402

from mbrlax.algorithms import dyna_q
from mbrlax.envs import tabular

RUNS = 30
OPTIMAL = 14  # BFS on the Dyna Maze (tests/unit/test_tabular.py)


def first_below(curve: np.ndarray, level: float) -> int | None:
    """1-based index of the first episode (from the second on, as the figure) whose value is ≤ level."""
    idx = np.nonzero(curve[1:] <= level)[0]
    return int(idx[0]) + 2 if len(idx) else None


def fig_8_2(seed: int) -> dict:
    t = tabular.maze_tables(tabular.DYNA_MAZE)
    out: dict = {"runs": RUNS, "episodes": 50, "alpha": 0.1, "epsilon": 0.1, "gamma": 0.95, "curves": {}}
    settings = [("n=0", dict(n=0)), ("n=5", dict(n=5)), ("n=50", dict(n=50)),
                ("prioritized sweeping n=5", dict(n=5, prioritized=True, theta=1e-4))]
    for label, kw in settings:
        tic = time.perf_counter()
        r = dyna_q.run_many(t, jax.random.key(seed), RUNS, alpha=0.1, gamma=0.95, epsilon=0.1, max_steps=100_000,
                            max_episodes=50, **kw)
        if (r["episodes"] < 50).any():
            raise RuntimeError(f"{label}: some runs did not finish 50 episodes in 100,000 steps")
        mean = r["lengths"].mean(0)
        greedy_med = np.median(r["greedy"], 0)
        out["curves"][label] = {
            "mean_steps_per_episode": mean.tolist(),
            "median_greedy_path_after_episode": greedy_med.tolist(),
            "first_episode_greedy_path_optimal_median": (int(np.nonzero(greedy_med == OPTIMAL)[0][0]) + 1
                                                         if (greedy_med == OPTIMAL).any() else None),
            "seconds_incl_compile": time.perf_counter() - tic,
        }
        print(f"{label}: episodes 2-6 {np.round(mean[1:6], 1).tolist()} ... 50: {mean[-1]:.1f}", flush=True)
    # ε-optimal level: the n = 50 plateau (mean of episodes 41-50; ε-greedy steps make it > 14)
    plateau = float(np.mean(out["curves"]["n=50"]["mean_steps_per_episode"][40:]))
    level = 1.2 * plateau
    out["epsilon_optimal_plateau"] = plateau
    out["threshold"] = level
    for c in out["curves"].values():
        c["first_episode_mean_within_20pct_of_plateau"] = first_below(np.array(c["mean_steps_per_episode"]), level)
    first = {k: c["first_episode_mean_within_20pct_of_plateau"] for k, c in out["curves"].items()}
    # The book: "about 25 episodes" for n = 0, "about five" for n = 5, "only three" for n = 50.
    out["targets"] = {
        "n=50 within about 3 episodes (≤ 4)": first["n=50"] is not None and first["n=50"] <= 4,
        "n=0 needs 25+ episodes": first["n=0"] is not None and first["n=0"] >= 25,
        "n=5 in between": first["n=5"] is not None and first["n=50"] <= first["n=5"] <= first["n=0"],
    }
    return out


def changing(maze: tabular.Maze, steps: int, n: int, kappa: float, seed: int) -> dict:
    t = tabular.maze_tables(maze)
    short_len = tabular.shortest_path_length(t, 1)  # the optimal path after the switch
    out: dict = {"runs": RUNS, "steps": steps, "switch_step": t.switch_step, "n": n, "alpha": 1.0, "epsilon": 0.1,
                 "gamma": 0.95, "kappa": kappa, "curves": {}}
    for label, kw in (("Dyna-Q", dict(plus=False)), ("Dyna-Q+", dict(plus=True, kappa=kappa))):
        tic = time.perf_counter()
        r = dyna_q.run_many(t, jax.random.key(seed), RUNS, n=n, alpha=1.0, gamma=0.95, epsilon=0.1,
                            max_steps=steps, max_episodes=steps, track_greedy=False, **kw)
        cum = r["rewards"].cumsum(1)
        mean = cum.mean(0)
        sw = t.switch_step
        # steps after the switch until a run next reaches the goal (the time to find the changed way)
        after = r["rewards"][:, sw:]
        recover = np.where(after.any(1), after.argmax(1) + 1, steps - sw + 1)
        out["curves"][label] = {
            "mean_cumulative_reward": mean[::10].tolist(),  # every 10th step
            "cumulative_reward_at_switch": float(mean[sw - 1]),
            "cumulative_reward_at_end": float(mean[-1]),
            "reward_in_last_1000_steps": float(mean[-1] - mean[-1001]),
            "median_steps_after_switch_to_next_goal": float(np.median(recover)),
            "final_greedy_path_median": float(np.median(r["final_greedy"])),
            "fraction_of_runs_whose_greedy_path_is_the_new_shortest": float((r["final_greedy"] == short_len).mean()),
            "seconds_incl_compile": time.perf_counter() - tic,
        }
        c = out["curves"][label]
        print(f"{maze.name} {label}: at switch {c['cumulative_reward_at_switch']:.1f}, "
              f"end {c['cumulative_reward_at_end']:.1f}, "
              f"last 1000 steps {c['reward_in_last_1000_steps']:.1f}, greedy shortest "
              f"{c['fraction_of_runs_whose_greedy_path_is_the_new_shortest']:.2f}", flush=True)
    out["shortest_path_after_switch"] = short_len
    return out


def plot(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    if "fig_8_2" in res:
        ax = axes[0]
        for label, c in res["fig_8_2"]["curves"].items():
            y = c["mean_steps_per_episode"]
            ax.plot(range(2, len(y) + 1), y[1:], label=label, lw=1.6, ls="--" if "prior" in label else "-")
        ax.axhline(OPTIMAL, color="gray", lw=0.8, ls=":")
        ax.set_ylim(0, 800)
        ax.set_xlabel("episodes")
        ax.set_ylabel(f"steps per episode (mean of {res['fig_8_2']['runs']} runs)")
        ax.set_title("Figure 8.2: Dyna Maze")
        ax.legend()
    for ax, key, title in ((axes[1], "fig_8_4", "Figure 8.4: blocking maze"),
                           (axes[2], "fig_8_5", "Figure 8.5: shortcut maze")):
        if key not in res:
            continue
        for label, c in res[key]["curves"].items():
            y = c["mean_cumulative_reward"]
            ax.plot(np.arange(len(y)) * 10, y, label=label, lw=1.6)
        ax.axvline(res[key]["switch_step"], color="gray", lw=0.8, ls=":")
        ax.set_xlabel("time steps")
        ax.set_ylabel("cumulative reward")
        ax.set_title(f"{title} (n={res[key]['n']}, κ={res[key]['kappa']})")
        ax.legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--fresh", action="store_true", help="recompute every section")
    p.add_argument("--redo", nargs="*", default=[], help="recompute these sections (fig_8_2, fig_8_4, fig_8_5)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    path = RESULTS / "dyna_maze.json"
    res = {} if args.fresh or not path.exists() else json.loads(path.read_text())
    for name in args.redo:
        res.pop(name, None)
    res["machine"] = machine()
    res["command"] = "python benchmarks/dyna_maze.py"
    sections = {
        "fig_8_2": lambda: fig_8_2(args.seed),
        "fig_8_4": lambda: changing(tabular.BLOCKING_MAZE, 3000, n=10, kappa=1e-3, seed=args.seed),
        "fig_8_5": lambda: changing(tabular.SHORTCUT_MAZE, 6000, n=50, kappa=1e-3, seed=args.seed),
    }
    for name, fn in sections.items():
        if name in res:
            print(f"{name}: already in {path}, skipped")
            continue
        res[name] = fn()
        write_json("dyna_maze.json", res)
        plot(res, RESULTS / "dyna_maze.png")
    targets = {**res["fig_8_2"]["targets"]}
    b, s = res["fig_8_4"]["curves"], res["fig_8_5"]["curves"]
    targets["blocking: Dyna-Q+ ahead of Dyna-Q at 3000 steps"] = (
        b["Dyna-Q+"]["cumulative_reward_at_end"] > b["Dyna-Q"]["cumulative_reward_at_end"])
    key = "fraction_of_runs_whose_greedy_path_is_the_new_shortest"
    targets["shortcut: Dyna-Q+ finds the shortcut (≥ half of runs), Dyna-Q does not (≤ 10 %)"] = (
        s["Dyna-Q+"][key] >= 0.5 and s["Dyna-Q"][key] <= 0.1)
    res["targets"] = targets
    write_json("dyna_maze.json", res)
    plot(res, RESULTS / "dyna_maze.png")
    for k, v in targets.items():
        print(f"{'met' if v else 'MISSED'}: {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
