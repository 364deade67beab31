"""v2.5: model-based policy gradient — REINFORCE with a baseline, PPO or TRPO on trajectories sampled from
a learned model.

The lecture's v2.5 loop (CS 285, "model-based policy learning"), and where each line lives below:

    run a base policy π_0 (random) to collect D = {(s, a, s')}                    # 1. collect real data
    repeat:
        learn the dynamics model f(s, a) on D                                        # 2. fit the model
        repeat K times (no new real data in between):                                # 3. policy improvement
            sample trajectories of π_θ through f, starting from real states           #    3a. model rollouts
            improve π_θ with a policy gradient on them (REINFORCE / PPO / TRPO)       #    3b. PG update
        run π_θ, append the visited (s, a, s') to D                                  # 1. again
The point of v2.5 (vs v2.0) is that the likelihood-ratio gradient needs no derivative of the model, so it
does not suffer the exploding/vanishing Jacobian products of BPTT (see `mbrlax diagnose gradients`), and
model samples are cheap, so many policy updates run per round of real data.

Details: rollouts of length H start from states sampled uniformly from D and are bootstrapped with the
learned value V(s_H) through GAE; each step uses one randomly chosen ensemble member (`member_mode='step'`,
as ME-TRPO does), so with `ensemble_size=1` it is the plain single-model v2.5. K iterations are one
`lax.scan` (one device call per round). The reward is the known one where mbrlax has it.
ME-TRPO (metrpo.py) is this loop with TRPO plus validation across the members to decide when to stop; steps 1
and 2, the evaluation and the checkpoints are model_loop.Rounds, shared with bptt.py and metrpo.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mbrlax import runs
from mbrlax.agents.pathwise import stepper
from mbrlax.agents.ppo import PG_METHODS, PGState, PolicyGradient, model_rollout, rollout_to_batch
from mbrlax.algorithms import model_loop
from mbrlax.algorithms.common import Result
from mbrlax.algorithms.model_loop import (
    LoopOptions,
    Rounds,
    model_and_fns,
    upgrade_legacy,  # noqa: F401 (for `mbrlax checkpoint convert`)
)
from mbrlax.envs.make import make
from mbrlax.models.ensemble import EnsembleModel, ModelState

DEFAULTS: dict[str, Any] = dict(
    model_loop.DEFAULTS, iterations_per_round=20, horizon=100, rollouts=64, lam=0.95, lr=3e-4, max_kl=0.01,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Not from a paper: discount and GAE as in the rl-baselines3-zoo PPO/TRPO Pendulum-v1 settings
    # (γ = 0.9, λ = 0.95, lr 1e-3); one round = one 200-step episode.
    "Pendulum-v1": dict(
        steps=5000, init_steps=400, steps_per_round=200, iterations_per_round=20, horizon=64, rollouts=64,
        gamma=0.9, lam=0.95, lr=1e-3, max_kl=0.02, model_hidden=(128, 128),
    ),
    "mbrlax/CartPoleSwingUp-v0": dict(
        steps=20_000, init_steps=1000, steps_per_round=200, iterations_per_round=25, horizon=100, rollouts=64,
        gamma=0.98, lam=0.95, lr=1e-3, max_kl=0.02,
    ),
    # ME-TRPO's MuJoCo settings scaled down: 5 members, TRPO step 0.01; termination is known.
    "InvertedPendulum-v5": dict(
        steps=10_000, init_steps=1000, steps_per_round=1000, iterations_per_round=20, horizon=100, rollouts=64,
        gamma=0.99, lam=0.95, lr=3e-4, max_kl=0.01,
    ),
}


@dataclass
class PGOptions(LoopOptions):
    """The policy-gradient settings mbpg and metrpo share (agents/ppo.py)."""

    rollouts: int | None = None
    """Rollouts (start states from D) per iteration: an iteration has H × rollouts samples."""
    lam: float | None = None
    """GAE λ."""
    max_kl: float | None = None
    """TRPO's trust region δ on the mean KL (ME-TRPO paper: 0.01)."""
    value_epochs: int = 10
    """Value-baseline epochs per iteration."""
    minibatches: int = 16
    """Minibatches per PPO and value-fit epoch."""
    init_log_std: float = -0.5
    """Initial log σ of the Gaussian policy."""


@dataclass
class Config(PGOptions):
    """v2.5 (policy gradient on model rollouts). Fields left as None take the env's preset, else DEFAULTS."""

    pg: str = "ppo"
    """Policy-gradient method on the model rollouts: reinforce (with a value baseline), ppo or trpo."""
    iterations_per_round: int | None = None
    """K: policy-gradient iterations per round (each on fresh model rollouts), no real data in between."""
    lr: float | None = None
    """Policy learning rate (REINFORCE and PPO; TRPO uses max_kl)."""
    epochs: int = 10
    """PPO epochs over each iteration's samples."""
    pg_steps: int = 1
    """REINFORCE full-batch gradient steps per iteration."""
    clip_eps: float = 0.2
    """PPO clip range ε."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient (REINFORCE and PPO)."""
    member_mode: str = "step"
    """Ensemble member per rollout step: 'step' (one random member per step), 'sample' or 'mean'."""


def resolve(cfg: Config) -> Config:
    cfg = model_loop.resolve(cfg, DEFAULTS, PRESETS)
    if cfg.pg not in PG_METHODS:
        raise ValueError(f"--pg must be one of {', '.join(PG_METHODS)}, got {cfg.pg!r}")
    if cfg.horizon * cfg.rollouts < cfg.minibatches:
        raise ValueError(f"horizon × rollouts = {cfg.horizon * cfg.rollouts} samples is fewer than minibatches="
                         f"{cfg.minibatches}; raise rollouts or lower minibatches")
    return cfg


def make_agent(cfg: Any, obs_dim: int, act_dim: int, method: str) -> PolicyGradient:
    return PolicyGradient(
        obs_dim, act_dim, method=method, hidden=cfg.policy_hidden, lr=cfg.lr, value_lr=cfg.value_lr,
        gamma=cfg.gamma, lam=cfg.lam, clip_eps=cfg.clip_eps, epochs=cfg.epochs, minibatches=cfg.minibatches,
        value_epochs=cfg.value_epochs, pg_steps=cfg.pg_steps, ent_coef=cfg.ent_coef, max_kl=cfg.max_kl,
        init_log_std=cfg.init_log_std,
    )


@partial(jax.jit, static_argnames=("agent", "model", "horizon", "mode", "reward_fn", "term_fn"))
def improve(agent: PolicyGradient, state: PGState, model: EnsembleModel, model_state: ModelState,
            starts: jax.Array, key: jax.Array, *, horizon: int, mode: str, reward_fn=None, term_fn=None):
    """K policy-gradient iterations, each on fresh model rollouts from its own start states (K×B×D), fused
    in one `lax.scan`. Returns the new state and the per-iteration infos (K each)."""

    def it(st, xs):
        s0, k = xs
        k_roll, k_upd = jax.random.split(k)
        # 3a. sample H-step trajectories of π_θ through the model from real start states
        step = stepper(model, model_state, mode=mode, reward_fn=reward_fn, term_fn=term_fn)
        roll = model_rollout(agent, st, step, s0, k_roll, horizon)
        # 3b. one policy-gradient update (GAE advantages, value baseline refit)
        st, info = agent.update(st, rollout_to_batch(agent, roll), k_upd)
        w = roll.alive
        info = {**info, "model/rollout_reward": (roll.reward * w).sum() / jnp.maximum(w.sum(), 1.0),
                "model/rollout_return": (roll.reward * w).sum(0).mean()}
        return st, info

    return jax.lax.scan(it, state, (starts, jax.random.split(key, starts.shape[0])))


def collect_act(agent: PolicyGradient, state: PGState, np_rng: np.random.Generator):
    """Exploration policy for real data: a Gaussian sample (host noise, so a run is reproducible), clipped."""
    mean_fn = jax.jit(lambda p, o: agent.policy_net.apply(p, o))

    def act(o: np.ndarray) -> np.ndarray:
        mean, log_std = mean_fn(state.policy, jnp.asarray(o[None], jnp.float32))
        std = np.exp(np.asarray(log_std))
        return np.clip(np.asarray(mean)[0] + std * np_rng.standard_normal(std.shape), -1.0, 1.0)

    return act


def load_policy(run_dir: str | Path):
    """The deterministic (mean) policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    return model_loop.load_policy(run_dir, Config, resolve,
                                  lambda cfg, env, spec: make_agent(cfg, spec.obs_dim, spec.act_dim, cfg.pg))


def train(cfg: Config) -> Result:
    """Train v2.5 (REINFORCE / PPO / TRPO on model rollouts); returns the final evaluation and the run dir."""
    cfg = resolve(runs.prepare(cfg, "mbpg", may_change=("steps",)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    model, reward_fn, term_fn = model_and_fns(cfg, env, spec.obs_dim, spec.act_dim)
    agent = make_agent(cfg, spec.obs_dim, spec.act_dim, cfg.pg)
    with Rounds(cfg, "mbpg", env, model, agent) as loop:
        # 1. collect real data with the base policy (uniformly random actions)
        loop.collect_initial(cfg.init_steps)
        while loop.t < cfg.steps:
            # 2. fit the model on all of D
            loop.fit()
            # 3. K policy-gradient iterations on model rollouts from real start states (no new real data)
            with loop.run.timer("policy"):
                loop.agent_state, infos = improve(
                    agent, loop.agent_state, model, loop.model_state,
                    loop.starts((cfg.iterations_per_round, cfg.rollouts)), loop.next_key(), horizon=cfg.horizon,
                    mode=cfg.member_mode, reward_fn=reward_fn, term_fn=term_fn)
                info = {k: float(np.mean(v)) for k, v in infos.items()}
            # 1. run the improved policy and append its transitions to D
            loop.collect(collect_act(agent, loop.agent_state, loop.np_rng), cfg.steps_per_round)
            loop.end_round({**info, "pg/iterations": cfg.iterations_per_round})
        return loop.result()
