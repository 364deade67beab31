"""SAC gradient steps per second of Stable-Baselines3 (PyTorch) or SBX (JAX), CPU.

Runs INSIDE the sb3 or sbx venv (benchmarks/peers/setup.sh sb3|sbx):

    benchmarks/peers/.venvs/sb3/bin/python benchmarks/peers/sac_speed.py --impl sb3 --out sb3.json
    benchmarks/peers/.venvs/sbx/bin/python benchmarks/peers/sac_speed.py --impl sbx --out sbx.json

No environment interaction is timed: the SAC model is built on a dummy Box env of the given
dimensions, its replay buffer is filled with random transitions, ``model.train(gradient_steps=N,
batch_size=B)`` is called once to warm up (for SBX this jit-compiles the scanned update loop for
that N), then ``model.train`` is timed ``R`` times. Library defaults otherwise (automatic entropy
tuning with target entropy -act_dim, Adam lr 3e-4, tau 0.005, gamma 0.99, 2 critics, ReLU,
one critic + one actor + one entropy-coefficient update per gradient step, target update every step).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import gymnasium as gym
import numpy as np


class DummyEnv(gym.Env):
    """Box obs / Box action env; never stepped during timing."""

    def __init__(self, obs_dim: int, act_dim: int):
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}


def fill_buffer(rb, n: int, obs_dim: int, act_dim: int, seed: int = 0):
    """Write n random transitions straight into an SB3 ReplayBuffer (n_envs=1)."""
    rng = np.random.default_rng(seed)
    rb.observations[:n, 0] = rng.standard_normal((n, obs_dim), dtype=np.float32)
    nxt = rng.standard_normal((n, obs_dim), dtype=np.float32)
    if rb.optimize_memory_usage:
        rb.observations[1 : n + 1, 0] = nxt
    else:
        rb.next_observations[:n, 0] = nxt
    rb.actions[:n, 0] = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
    rb.rewards[:n, 0] = rng.standard_normal(n, dtype=np.float32)
    rb.dones[:n, 0] = (rng.random(n) < 0.01).astype(np.float32)
    if hasattr(rb, "timeouts"):
        rb.timeouts[:n, 0] = 0.0
    rb.pos = n
    rb.full = False


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", choices=["sb3", "sbx"], required=True)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--obs-dim", type=int, default=17)
    p.add_argument("--act-dim", type=int, default=6)
    p.add_argument("--steps", type=int, default=1000, help="gradient steps per timed train() call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--buffer", type=int, default=10_000, help="random transitions in the replay buffer")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (sb3 only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()

    from stable_baselines3.common.logger import configure

    if args.impl == "sb3":
        import stable_baselines3 as lib
        from stable_baselines3 import SAC
    else:
        import sbx as lib
        from sbx import SAC

    env = DummyEnv(args.obs_dim, args.act_dim)
    model = SAC(
        "MlpPolicy",
        env,
        batch_size=args.batch,
        buffer_size=max(args.buffer + 1, 10_000),
        learning_starts=0,
        policy_kwargs=dict(net_arch=[args.hidden, args.hidden]),
        seed=args.seed,
        device="cpu",
        verbose=0,
    )
    model.set_logger(configure(None, []))
    fill_buffer(model.replay_buffer, args.buffer, args.obs_dim, args.act_dim, args.seed)

    t0 = time.perf_counter()
    model.train(gradient_steps=args.steps, batch_size=args.batch)  # warm-up / jit compile
    if args.impl == "sbx":
        import jax

        jax.block_until_ready(model.policy.qf_state.params)
    warmup_s = time.perf_counter() - t0

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        model.train(gradient_steps=args.steps, batch_size=args.batch)
        if args.impl == "sbx":
            jax.block_until_ready(model.policy.qf_state.params)
        times.append(time.perf_counter() - t0)
    sps = [args.steps / t for t in times]

    result = {
        "impl": args.impl,
        "library": f"{'stable-baselines3' if args.impl == 'sb3' else 'sbx-rl'} {lib.__version__}",
        "steps_per_sec_median": statistics.median(sps),
        "ms_per_step_median": 1e3 / statistics.median(sps),
        "steps_per_sec_all": sps,
        "seconds_all": times,
        "gradient_steps_per_call": args.steps,
        "repeats": args.repeats,
        "warmup_seconds": warmup_s,
        "batch_size": args.batch,
        "obs_dim": args.obs_dim,
        "act_dim": args.act_dim,
        "replay_buffer_transitions": args.buffer,
        "net_arch": {"actor": [args.hidden, args.hidden], "critic": [args.hidden, args.hidden],
                     "n_critics": 2, "activation": "ReLU"},
        "defaults": {"ent_coef": "auto (init 1.0, learned)", "target_entropy": -args.act_dim,
                     "learning_rate": 3e-4, "tau": 0.005, "gamma": 0.99,
                     "target_update_interval": 1, "policy_delay": 1},
        "timing_includes": "replay-buffer sampling + numpy/tensor conversion + updates"
                           + (" (sbx: all N batches sampled at once, updates in one jitted loop)"
                              if args.impl == "sbx" else " (sb3: per-step sampling and eager updates)"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "gymnasium": gym.__version__},
        "torch_num_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
    }
    if args.impl == "sbx":
        import flax
        import jax
        import optax

        result["versions"].update(jax=jax.__version__, flax=flax.__version__, optax=optax.__version__)
        result["jax_devices"] = [str(d) for d in jax.devices()]
        result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{args.impl}: median {result['steps_per_sec_median']:.1f} steps/s "
          f"({result['ms_per_step_median']:.2f} ms/step), all {[round(s, 1) for s in sps]}, "
          f"warm-up {warmup_s:.1f}s, torch threads {result['torch_num_threads']}, load {load_start}")


if __name__ == "__main__":
    main()
