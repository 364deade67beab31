"""d3rlpy's IQL or CQL on an mbrlax offline dataset: the model-free reference beside MOPO's scores.

Run inside its own venv (benchmarks/peers/setup.sh d3rlpy); benchmarks/mopo_scores.py --reference calls it:

    benchmarks/peers/.venvs/d3rlpy/bin/python benchmarks/peers/d3rlpy_offline.py \
        --dataset benchmarks/runs/datasets/mbrlax/hopper-medium-replay-v0 --algo iql --steps 20000 --seed 0 \
        --out result.json

Reads the Minari-format dataset straight from its HDF5 file (every episode's observations, actions, rewards,
terminations and truncations), so d3rlpy trains on exactly the transitions MOPO and BC see. Settings are
d3rlpy's own D4RL reproduction settings (reproductions/offline/{iql,cql}.py): IQL with expectile 0.7,
temperature 3, rewards scaled by 1000 / (max - min episode return); CQL with its defaults. After `--steps`
gradient steps the greedy policy is run for `--episodes` episodes in the real Gymnasium env (the env id is
in the dataset's metadata), and the JSON records the mean return, the normalized score with the dataset's
own reference returns, and the wall-clock per gradient step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def load(path: Path):
    import h5py

    meta = json.loads((path / "data" / "metadata.json").read_text())
    obs, act, rew, term, trunc = [], [], [], [], []
    with h5py.File(path / "data" / "main_data.hdf5", "r") as f:
        for name in sorted(f.keys(), key=lambda k: int(k.split("_")[-1])):
            ep = f[name]
            n = len(ep["actions"])
            obs.append(np.asarray(ep["observations"][:n], np.float32))  # drop the final next-observation
            act.append(np.asarray(ep["actions"], np.float32))
            rew.append(np.asarray(ep["rewards"], np.float32))
            t = np.asarray(ep["terminations"], bool)
            tr = np.asarray(ep["truncations"], bool).copy()
            # d3rlpy closes an episode on terminal or timeout; an episode cut by the dataset's size is a timeout
            tr[-1] |= not t[-1]
            term.append(t)
            trunc.append(tr)
    cat = np.concatenate
    return meta, cat(obs), cat(act), cat(rew), cat(term), cat(trunc)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--algo", choices=["iql", "cql"], default="iql")
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import d3rlpy
    import gymnasium as gym
    import torch

    torch.set_num_threads(args.threads)
    d3rlpy.seed(args.seed)
    meta, obs, act, rew, term, trunc = load(Path(args.dataset))
    ds = d3rlpy.dataset.MDPDataset(obs, act, rew, term.astype(np.float32), timeouts=trunc.astype(np.float32))
    env_id = meta["mbrlax"]["env_id"]
    returns = [float(ep.rewards.sum()) for ep in ds.episodes]
    span = max(max(returns) - min(returns), 1e-6)
    if args.algo == "iql":
        algo = d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=256, weight_temp=3.0, max_weight=100.0,
            expectile=0.7, reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(1000.0 / span),
        ).create(device=False)
    else:
        algo = d3rlpy.algos.CQLConfig(
            actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4, batch_size=256,
            conservative_weight=5.0,
        ).create(device=False)
    tic = time.perf_counter()
    algo.fit(ds, n_steps=args.steps, n_steps_per_epoch=min(args.steps, 5000), show_progress=False,
             save_interval=10**9, logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    train_s = time.perf_counter() - tic

    env = gym.make(env_id, **meta["mbrlax"].get("env_kwargs", {}))
    low, high = env.action_space.low, env.action_space.high
    rets = []
    for ep in range(args.episodes):
        o, _ = env.reset(seed=10_000 + 100 * args.seed + ep)
        done, total = False, 0.0
        while not done:
            a = algo.predict(np.asarray(o, np.float32)[None])[0]
            o, r, terminated, truncated, _ = env.step(np.clip(a, low, high))
            total += float(r)
            done = terminated or truncated
        rets.append(total)
    lo, hi = meta["ref_min_score"], meta["ref_max_score"]
    out = {
        "peer": "d3rlpy", "version": d3rlpy.__version__, "torch": torch.__version__, "algo": args.algo,
        "dataset": str(args.dataset), "env_id": env_id, "seed": args.seed, "steps": args.steps,
        "transitions": int(len(act)), "train_seconds": train_s, "ms_per_step": 1e3 * train_s / args.steps,
        "return_mean": float(np.mean(rets)), "return_std": float(np.std(rets)), "returns": rets,
        "normalized_score": 100.0 * (float(np.mean(rets)) - lo) / (hi - lo),
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("algo", "dataset", "return_mean", "normalized_score", "ms_per_step")}))


if __name__ == "__main__":
    main()
