"""PETS planning speed: milliseconds per MPC action, mbrlax vs mbrl-lib 0.2.0 side by side in one run, and how
mbrlax's planning time grows with the horizon, the population and the ensemble size (around SMALL).

    python benchmarks/pets_speed.py              # resumable: finished measurements are kept in benchmarks/runs/
    python benchmarks/pets_speed.py --no-peer    # mbrlax only

The issue's setting: planning horizon 30, population 500, 5 CEM iterations, ensemble of 5, 20 particles (TS∞),
the model 4 hidden layers × 200 SiLU (mbrl-lib's shipped `gaussian_mlp_ensemble.yaml`; PETS's halfcheetah
model), cart-pole shapes (obs 5, action 1) and the PETS cart-pole reward, untrained weights. One MPC action =
one full CEM plan (replanning every step, warm-started from the shifted previous solution); mbrlax's time is
`mpc.Controller(obs)` end to end (host → one jitted call → host), mbrl-lib's is `TrajectoryOptimizerAgent.act`.
After one warm-up action (mbrlax: the compilation), the median of `--actions` timed actions is reported.
The peer runs in its own venv (benchmarks/peers/mbrl_pets_speed.py) right after mbrlax, under the same load;
torch with 1 thread and with its default (2) threads, the faster one is the one compared.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, machine, write_json  # noqa: E402

BASE = dict(horizon=30, population=500, iterations=5, ensemble=5, particles=20, hidden=200, layers=4)
# The cart-pole setting of benchmarks/mpc_lineage.py (a small model: per-call overheads matter more).
SMALL = dict(horizon=20, population=100, iterations=5, ensemble=5, particles=20, hidden=64, layers=3)
# Scaling is measured around SMALL (around BASE it would cost ~1 CPU-hour on this shared machine).
SWEEPS = {"horizon": (10, 20, 40), "population": (50, 100, 200), "ensemble": (1, 5, 10)}
PEER = Path(__file__).resolve().parent / "peers"
PEER_PY = PEER / ".venvs" / "mbrl" / "bin" / "python"
CACHE = RUNS / "pets_speed_partial.json"


def mbrlax_ms_per_action(horizon, population, iterations, ensemble, particles, hidden, layers, actions) -> dict:
    import jax
    import jax.numpy as jnp

    from mbrlax.algorithms.mpc import Controller
    from mbrlax.envs.jax_envs import load
    from mbrlax.models.ensemble import EnsembleModel
    from mbrlax.planning import shooting

    env = load("mbrlax/CartPoleSwingUp-v0")
    model = EnsembleModel(5, 1, ensemble_size=ensemble, num_elites=ensemble, hidden=(hidden,) * layers)
    state = model.init(jax.random.key(0))
    planner = shooting.CEM(population=population, elites=max(1, population // 10), iterations=iterations, alpha=0.1)
    ctrl = Controller(model, planner, state, horizon=horizon, replan_every=1, episode_len=10**9, particles=particles,
                      propagation="tsinf", reward_fn=env.reward, term_fn=None, act_dim=1)
    obs = np.random.default_rng(0).normal(size=5).astype(np.float32)
    keys = jax.random.split(jax.random.key(1), actions + 1)
    tic = time.perf_counter()
    ctrl(obs, keys[0])
    warmup = time.perf_counter() - tic
    times = []
    for k in keys[1:]:
        tic = time.perf_counter()
        ctrl(obs, k)
        times.append(time.perf_counter() - tic)
    del jnp
    return {"warmup_ms": 1e3 * warmup, "ms_per_action_all": [1e3 * t for t in times],
            "ms_per_action_median": 1e3 * float(np.median(times)), "load_avg_1min": os.getloadavg()[0]}


def peer_ms_per_action(cfg: dict, actions: int, threads: int) -> dict:
    if not PEER_PY.exists():
        return {"error": f"{PEER_PY} missing: run `bash benchmarks/peers/setup.sh mbrl`"}
    out = RUNS / f"mbrl_pets_speed_t{threads}.json"
    cmd = [str(PEER_PY), str(PEER / "mbrl_pets_speed.py"), "--actions", str(actions), "--threads", str(threads),
           "--out", str(out)] + [f"--{k}={v}" for k, v in cfg.items()]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        return {"error": res.stderr[-2000:]}
    return json.loads(out.read_text())


def flops_per_action(horizon, population, iterations, ensemble, particles, hidden, layers, obs=5, act=1) -> float:
    """Multiply-adds ×2 of the network over all particle-steps of one plan (each particle runs one member)."""
    per = (obs + act) * hidden + (layers - 1) * hidden * hidden + hidden * 2 * (obs + 1)
    return 2.0 * per * population * particles * horizon * iterations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--actions", type=int, default=3, help="timed actions per mbrlax setting")
    ap.add_argument("--peer-actions", type=int, default=2, help="timed actions for mbrl-lib (slow)")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--fresh", action="store_true", help="ignore cached measurements")
    ap.add_argument("--cached-only", action="store_true", help="write the report from cached measurements only")
    args = ap.parse_args()
    RUNS.mkdir(parents=True, exist_ok=True)
    cache = {} if args.fresh or not CACHE.exists() else json.loads(CACHE.read_text())

    def measure(name, fn):
        if name not in cache and args.cached_only:
            return {"error": "not measured"}
        if name not in cache:
            print(f"measuring {name} ...", flush=True)
            cache[name] = fn()
            CACHE.write_text(json.dumps(cache, indent=2))
        print(name, {k: v for k, v in cache[name].items() if k.endswith("median") or k == "error"}, flush=True)
        return cache[name]

    # 1. side by side at the setting
    ours = measure("mbrlax/base", lambda: mbrlax_ms_per_action(**BASE, actions=args.actions))
    peers = {}
    if not args.no_peer:
        for threads in (1, 2):
            peers[threads] = measure(f"mbrl/base/t{threads}",
                                     functools.partial(peer_ms_per_action, BASE, args.peer_actions, threads))
    # 1b. side by side at the learning benchmarks' small setting
    ours_small = measure("mbrlax/small", lambda: mbrlax_ms_per_action(**SMALL, actions=args.actions))
    peers_small = {}
    if not args.no_peer:
        for threads in (1, 2):
            peers_small[threads] = measure(f"mbrl/small/t{threads}",
                                           functools.partial(peer_ms_per_action, SMALL, args.actions, threads))
    # 2. scaling (mbrlax), one knob at a time around SMALL
    scaling = {}
    for knob, values in SWEEPS.items():
        for v in values:
            cfg = {**SMALL, knob: v}
            name = "mbrlax/small" if cfg == SMALL else f"mbrlax/small/{knob}={v}"
            r = measure(name, functools.partial(mbrlax_ms_per_action, **cfg, actions=args.actions))
            if "ms_per_action_median" in r:
                scaling.setdefault(knob, []).append({"value": v, "ms_per_action": r["ms_per_action_median"],
                                                     "gflop_per_action": flops_per_action(**cfg) / 1e9})

    ok = [p for p in peers.values() if "ms_per_action_median" in p]
    best_peer = min(ok, key=lambda p: p["ms_per_action_median"]) if ok else None
    speedup = best_peer["ms_per_action_median"] / ours["ms_per_action_median"] if best_peer else None
    gflop = flops_per_action(**BASE) / 1e9
    ok_small = [p for p in peers_small.values() if "ms_per_action_median" in p]
    best_small = min(ok_small, key=lambda p: p["ms_per_action_median"]) if ok_small else None
    out = {
        "machine": machine(),
        "setting": BASE,
        "gflop_per_action": gflop,
        "mbrlax": {**ours, "gflops_achieved": gflop / (ours["ms_per_action_median"] / 1e3)},
        "mbrl_lib": {f"torch_threads_{t}": p for t, p in peers.items()},
        "speedup_vs_best_mbrl_lib": speedup,
        "target_speedup": 5.0,
        "target_met": None if speedup is None else bool(speedup >= 5.0),
        "small_setting": {
            "setting": SMALL, "gflop_per_action": flops_per_action(**SMALL) / 1e9, "mbrlax": ours_small,
            "mbrl_lib": {f"torch_threads_{t}": p for t, p in peers_small.items()},
            "speedup_vs_best_mbrl_lib": best_small["ms_per_action_median"] / ours_small["ms_per_action_median"]
            if best_small else None,
        },
        "scaling_mbrlax": scaling,
        "scaling_points_missing": [f"{k}={v}" for k, vals in SWEEPS.items() for v in vals
                                   if v not in [r["value"] for r in scaling.get(k, [])]],
        "note": "shared 2-core CPU; other jobs ran at the same time (load average recorded per measurement)",
    }
    print(write_json("pets_speed.json", out))
    print(f"mbrlax {ours['ms_per_action_median']:.0f} ms/action; mbrl-lib "
          f"{best_peer['ms_per_action_median'] if best_peer else float('nan'):.0f}; speedup {speedup}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (knob, rows) in zip(axes, scaling.items()):
        x = [r["value"] for r in rows]
        ax.plot(x, [r["ms_per_action"] for r in rows], marker="o", label="mbrlax")
        if best_small and knob in SMALL:
            ax.scatter([SMALL[knob]], [best_small["ms_per_action_median"]], color="r", marker="s",
                       label="mbrl-lib 0.2.0 (same setting)")
        ax.set_xlabel(knob)
        ax.set_ylabel("ms per MPC action")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("mbrlax PETS planning time around H=20, pop 100, E=5, 20 particles, 3×64 model, CEM 5 iters")
    fig.tight_layout()
    fig.savefig(RESULTS / "pets_speed.png", dpi=110)


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
