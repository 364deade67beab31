"""mbrl-lib 0.2.0's PETS planning time: milliseconds per MPC action (run in the `mbrl` peer venv).

    benchmarks/peers/.venvs/mbrl/bin/python benchmarks/peers/mbrl_pets_speed.py --horizon 30 --population 500 \
        --iterations 5 --ensemble 5 --particles 20 --actions 3 --threads 1 --out /tmp/mbrl_pets.json

What is timed: `TrajectoryOptimizerAgent.act(obs)` of mbrl-lib's own PETS stack, built exactly as
`mbrl.algorithms.pets` builds it — `GaussianMLP` ensemble (4 hidden layers × 200 SiLU, the shipped
`gaussian_mlp_ensemble.yaml`) wrapped in `OneDTransitionRewardModel` (normalized inputs, Δ targets, known
reward), `ModelEnv` with a known reward and no termination, `create_trajectory_optim_agent_for_model` with
`CEMOptimizer` (truncated normal, α 0.1, elite ratio 0.1, replan every step, warm start kept; `_recursive_: false` on
the agent config, the Hydra 1.0 behaviour mbrl-lib expects, see README.md),
`propagation_method="fixed_model"` (TS∞, each member computes only its own particles). The model is untrained
(weights do not change the cost). One warm-up action, then `--actions` timed actions on the same observation.
The task is the PETS cart-pole's shapes (obs 5, action 1 in [-3, 3]) with the PETS cart-pole reward written in
torch, the same reward mbrlax's side uses.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--horizon", type=int, default=30)
    ap.add_argument("--population", type=int, default=500)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--ensemble", type=int, default=5)
    ap.add_argument("--particles", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--actions", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import gymnasium as gym
    import mbrl
    import mbrl.models
    import mbrl.planning
    import omegaconf
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    obs_dim, act_dim = 5, 1

    def reward_fn(act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        # PETS cart-pole: exp(-|tip - (0, 0.6)|² / 0.6²) - 0.01 u², obs = (sin θ, cos θ, x, ẋ, θ̇)
        tip_x = next_obs[:, 2] - 0.6 * next_obs[:, 0]
        tip_z = -0.6 * next_obs[:, 1]
        r = torch.exp(-(tip_x**2 + (tip_z - 0.6) ** 2) / 0.36) - 0.01 * (act**2).sum(-1)
        return r.view(-1, 1)

    def term_fn(act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return torch.zeros(next_obs.shape[0], 1, dtype=torch.bool)

    env = gym.Env()
    env.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    env.action_space = gym.spaces.Box(-3.0, 3.0, (act_dim,), np.float32)

    torch.manual_seed(0)
    net = mbrl.models.GaussianMLP(
        in_size=obs_dim + act_dim, out_size=obs_dim, device="cpu", num_layers=args.layers,
        ensemble_size=args.ensemble, hid_size=args.hidden, deterministic=False, propagation_method="fixed_model",
        learn_logvar_bounds=False, activation_fn_cfg=omegaconf.OmegaConf.create({"_target_": "torch.nn.SiLU"}),
    )
    model = mbrl.models.OneDTransitionRewardModel(net, target_is_delta=True, normalize=True, learned_rewards=False)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(0)
    model_env = mbrl.models.ModelEnv(env, model, term_fn, reward_fn, generator=generator)
    agent_cfg = omegaconf.OmegaConf.create({
        "_target_": "mbrl.planning.TrajectoryOptimizerAgent",
        "action_lb": [-3.0], "action_ub": [3.0], "planning_horizon": args.horizon, "replan_freq": 1,
        "verbose": False,
        "_recursive_": False,  # Hydra ≥ 1.1 would instantiate optimizer_cfg too (mbrl-lib was written for 1.0)
        "optimizer_cfg": {
            "_target_": "mbrl.planning.CEMOptimizer", "num_iterations": args.iterations, "elite_ratio": 0.1,
            "population_size": args.population, "alpha": 0.1, "device": "cpu",
            "return_mean_elites": True, "clipped_normal": False,
        },
    })
    agent = mbrl.planning.create_trajectory_optim_agent_for_model(model_env, agent_cfg, num_particles=args.particles)
    obs = np.random.default_rng(0).normal(size=obs_dim).astype(np.float32)

    tic = time.perf_counter()
    agent.act(obs)
    warmup = time.perf_counter() - tic
    times = []
    for _ in range(args.actions):
        tic = time.perf_counter()
        agent.act(obs)
        times.append(time.perf_counter() - tic)
    out = {
        "library": "mbrl-lib", "mbrl_version": getattr(mbrl, "__version__", "0.2.0"), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "load_avg_1min": os.getloadavg()[0],
        "settings": vars(args),
        "warmup_ms": 1e3 * warmup,
        "ms_per_action_all": [1e3 * t for t in times],
        "ms_per_action_median": 1e3 * float(np.median(times)),
    }
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    print(json.dumps({k: out[k] for k in ("torch_threads", "ms_per_action_median", "warmup_ms")}))


if __name__ == "__main__":
    main()
