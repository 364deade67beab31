"""sbx's SAC learning one task, with the settings benchmarks/sac_learning.py gives mbrlax's SAC: uniformly random
actions for `--init-steps`, then one update per step, 256×256 nets, batch 256, lr 3e-4, the given target entropy;
every `--eval-every` steps the deterministic policy's mean return over `--eval-episodes` episodes (seeded as
mbrlax's evaluation: 10,000 + seed, +1 per episode). Writes a JSON curve as it goes. Needs the sbx venv
(`bash benchmarks/peers/setup.sh sbx`); benchmarks/sac_learning.py calls:

    benchmarks/peers/.venvs/sbx/bin/python benchmarks/peers/sbx_sac_learning.py --env Hopper-v5 --seed 0 \\
        --steps 100000 --out out.json
"""

import argparse
import json
import time

import gymnasium as gym
import numpy as np
from sbx import SAC

ap = argparse.ArgumentParser()
ap.add_argument("--env", default="Hopper-v5")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--steps", type=int, default=100_000)
ap.add_argument("--init-steps", type=int, default=5000)
ap.add_argument("--eval-every", type=int, default=5000)
ap.add_argument("--eval-episodes", type=int, default=3)
ap.add_argument("--target-entropy", default="auto", help="'auto' is -dim(A), as mbrlax's default")
ap.add_argument("--out", required=True)
args = ap.parse_args()

env = gym.make(args.env)
eval_env = gym.make(args.env)
target = args.target_entropy if args.target_entropy == "auto" else float(args.target_entropy)
model = SAC("MlpPolicy", env, learning_starts=args.init_steps, seed=args.seed, verbose=0, batch_size=256,
            learning_rate=3e-4, target_entropy=target, policy_kwargs=dict(net_arch=[256, 256]))


def evaluate() -> float:
    rets = []
    for i in range(args.eval_episodes):
        obs, _ = eval_env.reset(seed=10_000 + args.seed + i)
        ret, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = eval_env.step(action)
            ret += float(reward)
            done = terminated or truncated
        rets.append(ret)
    return float(np.mean(rets))


curve, start = [], time.time()
while model.num_timesteps < args.steps:
    model.learn(args.eval_every, reset_num_timesteps=False)
    curve.append((int(model.num_timesteps), evaluate()))
    payload = dict(env=args.env, seed=args.seed, steps=args.steps, curve=curve, seconds=time.time() - start,
                   done=model.num_timesteps >= args.steps)
    with open(args.out, "w") as f:
        json.dump(payload, f)
    print(curve[-1], f"{time.time() - start:.0f}s", flush=True)
