"""v2.0: learn a policy by backpropagating the return through a learned model (BPTT, pathwise gradient).

The lecture's v2.0 loop (CS 285, "model-based policy learning"), and where each line lives below:

    run a base policy π_0 (random) to collect D = {(s, a, s')}                    # 1. collect real data
    repeat:
        learn the dynamics model f(s, a) to minimize Σ ||f(s_i, a_i) − s'_i||²      # 2. fit the model (MSE)
        backpropagate through f(s, a) into the policy to optimize π_θ(a|s)          # 3. BPTT policy steps
        run π_θ(a|s), append the visited (s, a, s') to D                             # 1. again
With the two fixes practitioners use (both options here): the policy gradient is clipped to a global norm,
and the horizon is truncated to H steps with a learned value V(s_H) at the end, SVG(H)/MVE-style
(Heess et al. 2015; Feinberg et al. 2018). The model is the deterministic MLP of v0.5–v2.0 fitted by MSE
(`probabilistic=False`), optionally an ensemble whose members are chosen at random per step.

Deviations, each deliberate: the policy rollouts start from states sampled from all real data (not only
the current episode's start states), so that the gradient covers the visited state space; rewards come from
the known reward function when mbrlax has one for the environment (`use_known_reward`), else from the model.
A hard termination masks the rollout and is not differentiated, so a reward that is constant until a
termination (InvertedPendulum) gives BPTT a zero gradient: that is a property of the pathwise estimator.

Steps 1 and 2, the evaluation and the checkpoints are model_loop.Rounds, shared with mbpg.py and metrpo.py:
the three algorithms differ only in their step 3.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import jax
import numpy as np

from mbrlax import runs
from mbrlax.agents.pathwise import Pathwise
from mbrlax.algorithms import model_loop
from mbrlax.algorithms.common import Result, check_positive
from mbrlax.algorithms.model_loop import (  # noqa: F401 (diagnostics/gradients.py; `mbrlax checkpoint convert`)
    LoopOptions,
    Rounds,
    env_functions,
    jnp_act,
    make_model,
    model_and_fns,
    upgrade_legacy,
)
from mbrlax.envs.make import make

DEFAULTS: dict[str, Any] = dict(
    model_loop.DEFAULTS, updates_per_round=200, horizon=20, batch_size=128, lr=1e-3, grad_clip=10.0, action_noise=0.1,
    expl_noise=0.2,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Not from a paper (v2.0 has none): sized so that it solves Pendulum-v1 on a laptop CPU;
    # one round = one 200-step episode (benchmarks/policy_through_model.py).
    "Pendulum-v1": dict(
        steps=5000, init_steps=400, steps_per_round=200, updates_per_round=100, horizon=15, batch_size=128,
        gamma=0.97, model_hidden=(128, 128), action_noise=0.1, expl_noise=0.3,
    ),
    # Swing-up needs longer credit assignment: H=30 with the value bootstrap (SVG(H)-style).
    "mbrlax/CartPoleSwingUp-v0": dict(
        steps=20_000, init_steps=1000, steps_per_round=200, updates_per_round=150, horizon=30, batch_size=128,
        gamma=0.98, model_hidden=(200, 200, 200),
    ),
    # The MuJoCo preset is Reacher-v5, whose known reward (−distance − ‖a‖²) is smooth in the predicted state.
    # Not InvertedPendulum-v5: its reward is 1 until a hard termination, so the pathwise gradient of the known
    # reward is exactly zero (BPTT cannot see a discrete event; the policy-gradient algorithms can).
    "Reacher-v5": dict(
        steps=10_000, init_steps=500, steps_per_round=500, updates_per_round=100, horizon=20, batch_size=128,
        gamma=0.95, model_hidden=(200, 200, 200),
    ),
}


@dataclass
class Config(LoopOptions):
    """v2.0 (BPTT through a learned model). Fields left as None take the env's preset, else DEFAULTS."""

    updates_per_round: int | None = None
    """BPTT policy updates per round (each on `batch_size` start states)."""
    batch_size: int | None = None
    """Start states (sampled from all real data) per policy update."""
    lr: float | None = None
    """Policy learning rate (Adam)."""
    grad_clip: float | None = None
    """Clip the policy gradient to this global norm (0: no clipping)."""
    action_noise: float | None = None
    """σ of the reparameterized policy a = tanh(μ(s) + σε) inside model rollouts (0: deterministic)."""
    expl_noise: float | None = None
    """σ of the same pre-tanh Gaussian noise when collecting real data."""
    value_bootstrap: bool = True
    """Bootstrap the truncated return with a learned value (SVG(H)/MVE); False: plain H-step BPTT."""
    tau: float = 0.01
    """Polyak rate of the value's target network."""
    member_mode: str = "step"
    """Ensemble member per rollout step: 'step' (one random member per step), 'sample' or 'mean'."""


def resolve(cfg: Config) -> Config:
    cfg = model_loop.resolve(cfg, DEFAULTS, PRESETS)
    check_positive(cfg, "updates_per_round", "batch_size")
    return cfg


def _components(cfg: Config, env: gym.Env, obs_dim: int, act_dim: int) -> tuple[Any, Pathwise]:
    model, reward_fn, term_fn = model_and_fns(cfg, env, obs_dim, act_dim)
    agent = Pathwise(
        obs_dim, act_dim, model, reward_fn=reward_fn, term_fn=term_fn, hidden=cfg.policy_hidden, lr=cfg.lr,
        value_lr=cfg.value_lr, horizon=cfg.horizon, gamma=cfg.gamma, grad_clip=cfg.grad_clip or None,
        value_bootstrap=cfg.value_bootstrap, action_noise=cfg.action_noise, member_mode=cfg.member_mode, tau=cfg.tau,
    )
    return model, agent


def explore_act(pre_tanh: Callable, params: Any, np_rng: np.random.Generator, sigma: float):
    """Exploration policy for real data: tanh(μ(s) + σε), with host noise ε (so a run is reproducible)."""
    mean = jnp_act(pre_tanh, params)

    def act(o: np.ndarray) -> np.ndarray:
        u = mean(o)
        return np.tanh(u + sigma * np_rng.standard_normal(u.shape))

    return act


def load_policy(run_dir: str | Path):
    """The deterministic policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    return model_loop.load_policy(run_dir, Config, resolve,
                                  lambda cfg, env, spec: _components(cfg, env, spec.obs_dim, spec.act_dim)[1])


def train(cfg: Config) -> Result:
    """Train v2.0 (BPTT through the model); returns the final evaluation and the run directory."""
    cfg = resolve(runs.prepare(cfg, "bptt", may_change=("steps",)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    model, agent = _components(cfg, env, spec.obs_dim, spec.act_dim)
    pre_tanh = jax.jit(agent.actor_net.apply)
    with Rounds(cfg, "bptt", env, model, agent) as loop:
        # 1. collect real data with the base policy (uniformly random actions)
        loop.collect_initial(cfg.init_steps)
        while loop.t < cfg.steps:
            # 2. fit the dynamics model on all of D (MSE; an ensemble if ensemble_size > 1)
            loop.fit()
            # 3. backpropagate the H-step model return (+ γ^H V(s_H)) into the policy, G times
            with loop.run.timer("policy"):
                starts = loop.starts((cfg.updates_per_round, cfg.batch_size))
                loop.agent_state, info = agent.update_many(loop.agent_state, loop.model_state, starts, loop.next_key())
                info = {k: float(v) for k, v in info.items()}
            # 1. run the new policy (with exploration noise) and append its transitions to D
            act = explore_act(pre_tanh, loop.agent_state.policy, loop.np_rng, cfg.expl_noise)
            loop.collect(act, cfg.steps_per_round)
            loop.end_round(info)
        return loop.result()
