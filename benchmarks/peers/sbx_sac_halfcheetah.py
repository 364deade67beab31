"""sbx's SAC on HalfCheetah-v5 (5,000 random steps, 1 update per step, 256×256, seed 0): the deterministic
evaluation return every 2,500 steps up to 20,000. A sanity check of our SAC's early learning, beside
    mbrlax train sac --env HalfCheetah-v5 --steps 30000 --init-steps 5000 --updates-per-step 1 --eval-every 2500 --target-entropy -6
Needs the sbx venv (setup.sh sbx) plus `pip install mujoco imageio` in it.
    benchmarks/peers/.venvs/sbx/bin/python benchmarks/peers/sbx_sac_halfcheetah.py
"""
import gymnasium as gym, numpy as np, time
from sbx import SAC
env = gym.make("HalfCheetah-v5")
model = SAC("MlpPolicy", env, learning_starts=5000, seed=0, verbose=0, policy_kwargs=dict(net_arch=[256, 256]))
ev = gym.make("HalfCheetah-v5")
def evaluate():
    o, _ = ev.reset(seed=10000); ret = 0.0
    for _ in range(1000):
        a, _ = model.predict(o, deterministic=True); o, r, te, tr, _ = ev.step(a); ret += r
        if te or tr: break
    return ret
t0 = time.time()
for k in range(6):
    model.learn(2500 if k else 7500, reset_num_timesteps=False)
    print(model.num_timesteps, round(evaluate(), 1), round(time.time() - t0), flush=True)
