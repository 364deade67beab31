"""sbx's SAC on HalfCheetah-v5 (5,000 random steps, 1 update per step, 256×256, seed 0): the deterministic
evaluation return (one episode) every 2,500 steps up to 20,000. A sanity check of our SAC's early learning,
beside (from the repository root, in .venv):

    mbrlax train sac --env HalfCheetah-v5 --steps 30000 --init-steps 5000 --updates-per-step 1 \\
        --eval-every 2500 --target-entropy -6

Needs the sbx venv (setup.sh sbx) plus `pip install mujoco imageio` in it:

    benchmarks/peers/.venvs/sbx/bin/python benchmarks/peers/sbx_sac_halfcheetah.py
"""

import time

import gymnasium as gym
from sbx import SAC

env = gym.make("HalfCheetah-v5")
eval_env = gym.make("HalfCheetah-v5")
model = SAC("MlpPolicy", env, learning_starts=5000, seed=0, verbose=0, policy_kwargs=dict(net_arch=[256, 256]))


def evaluate() -> float:
    obs, _ = eval_env.reset(seed=10_000)
    ret = 0.0
    for _ in range(1000):
        action, _ = model.predict(obs, deterministic=True)
        obs, reward, terminated, truncated, _ = eval_env.step(action)
        ret += float(reward)
        if terminated or truncated:
            break
    return ret


start = time.time()
for chunk in range(6):
    model.learn(7500 if chunk == 0 else 2500, reset_num_timesteps=False)
    print(model.num_timesteps, round(evaluate(), 1), f"{time.time() - start:.0f}s", flush=True)
