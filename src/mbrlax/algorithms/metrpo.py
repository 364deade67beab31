"""ME-TRPO: model-ensemble trust-region policy optimization (Kurutach, Clavera, Duan, Tamar & Abbeel 2018).

Algorithm 1 of the paper, and where each line lives below:

    Initialize a policy π_θ and all models f_φ1, …, f_φK; initialize an empty dataset D
    repeat
        Collect samples from the real system f using π_θ and add them to D  # 1. collect real data
        Train all models using D                                            # 2. fit the ensemble
        repeat                                                              # 3. optimize π_θ in the ensemble
            Collect fictitious samples from {f_φi} using π_θ                #    3a. rollouts, a random member per step
            Update the policy using TRPO on the fictitious samples          #    3b. TRPO step
            Estimate the performances η̂(θ; φ_i) for i = 1, …, K             #    4. policy validation
        until the performances stop improving                               #    5. stop rule
    until the policy performs well in the real environment f

Stop rule (section 4.3): every `validate_every` TRPO iterations the policy's return is estimated in *each*
member (the same start states and noise for every member and every validation, so the comparison is not
drowned in sampling noise); the fraction of members in which it improved on the previous validation is the
ratio. Optimization stops once the ratio has been below `threshold` (paper: 70 %) for `patience`
consecutive validations, or after `max_iterations` iterations. The policy is then run in the real system.

Deviations, each deliberate: rollouts have a finite horizon H from states sampled from D and are bootstrapped
with a value function through GAE (the paper rolls out whole episodes from the initial-state distribution
and uses a linear-feature baseline); the members are fitted to all of D with different initializations and
bootstrapped minibatches (the paper: different initializations and minibatch orders); the reward is the
known one where mbrlax has it (the paper: known reward functions throughout).
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
from mbrlax.agents.ppo import PGState, PolicyGradient, model_rollout
from mbrlax.algorithms import model_loop
from mbrlax.algorithms.common import Result
from mbrlax.algorithms.mbpg import PGOptions, collect_act, improve
from mbrlax.algorithms.model_loop import (
    Rounds,
    model_and_fns,
    upgrade_legacy,  # noqa: F401 (for `mbrlax checkpoint convert`)
)
from mbrlax.envs.make import make
from mbrlax.models.ensemble import EnsembleModel, ModelState

DEFAULTS: dict[str, Any] = dict(
    model_loop.DEFAULTS, max_iterations=100, validate_every=5, horizon=100, rollouts=64, lam=0.95, max_kl=0.01,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Not in the paper; γ and λ as the rl-baselines3-zoo TRPO Pendulum-v1 settings. One round = one episode.
    "Pendulum-v1": dict(
        steps=5000, init_steps=400, steps_per_round=200, max_iterations=40, validate_every=5, horizon=64,
        rollouts=64, gamma=0.9, lam=0.95, max_kl=0.02, model_hidden=(128, 128), ensemble_size=5,
    ),
    "mbrlax/CartPoleSwingUp-v0": dict(
        steps=20_000, init_steps=1000, steps_per_round=200, max_iterations=50, validate_every=5, horizon=100,
        rollouts=64, gamma=0.98, lam=0.95, max_kl=0.02,
    ),
    # Paper (appendix, Swimmer/Snake/...): 5 models (ensemble ablation 5–20), TRPO step size 0.01,
    # validation every 5 updates, threshold 70 %.
    "InvertedPendulum-v5": dict(
        steps=10_000, init_steps=1000, steps_per_round=1000, max_iterations=50, validate_every=5, horizon=100,
        rollouts=64, gamma=0.99, lam=0.95, max_kl=0.01,
    ),
}


@dataclass
class Config(PGOptions):
    """ME-TRPO. Fields left as None take the env's preset, else DEFAULTS."""

    max_iterations: int | None = None
    """At most this many TRPO iterations per round, even if validation keeps improving."""
    validate_every: int | None = None
    """Validate the policy in every member after this many TRPO iterations (paper: 5)."""
    threshold: float = 0.7
    """Keep optimizing while at least this fraction of members sees an improvement (paper: 70 %)."""
    patience: int = 3
    """Stop after this many consecutive validations below the threshold."""
    validation_rollouts: int = 64
    """Start states (fixed per round) for the per-member return estimates."""


def make_agent(cfg: Config, obs_dim: int, act_dim: int) -> PolicyGradient:
    return PolicyGradient(
        obs_dim, act_dim, method="trpo", hidden=cfg.policy_hidden, value_lr=cfg.value_lr, gamma=cfg.gamma,
        lam=cfg.lam, minibatches=cfg.minibatches, value_epochs=cfg.value_epochs, max_kl=cfg.max_kl,
        init_log_std=cfg.init_log_std,
    )


def resolve(cfg: Config) -> Config:
    cfg = model_loop.resolve(cfg, DEFAULTS, PRESETS)
    if not 0.0 < cfg.threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {cfg.threshold}")
    if cfg.patience < 1 or cfg.validate_every < 1 or cfg.max_iterations < cfg.validate_every:
        raise ValueError("need patience ≥ 1, validate_every ≥ 1 and max_iterations ≥ validate_every, got "
                         f"{cfg.patience}, {cfg.validate_every}, {cfg.max_iterations}")
    if cfg.ensemble_size < 2:
        raise ValueError(f"ME-TRPO validates across members: ensemble_size must be ≥ 2, got {cfg.ensemble_size}")
    return cfg


# ---- 4./5. policy validation and the stop rule ---------------------------------------------------------


@partial(jax.jit, static_argnames=("agent", "model", "horizon", "reward_fn", "term_fn"))
def member_returns(agent: PolicyGradient, state: PGState, model: EnsembleModel, model_state: ModelState,
                   starts: jax.Array, key: jax.Array, *, horizon: int, reward_fn=None, term_fn=None) -> jax.Array:
    """η̂(θ; φ_i) for every member i: the mean H-step return of π_θ rolled out through member i alone, from
    the same start states B×D with the same noise for every member. Returns K."""

    def one(m):
        step = stepper(model, model_state, mode="fixed", member=m, reward_fn=reward_fn, term_fn=term_fn)
        roll = model_rollout(agent, state, step, starts, key, horizon)
        return (roll.reward * roll.alive).sum(0).mean()

    return jax.vmap(one)(jnp.arange(model.ensemble_size))


def improvement_ratio(new: np.ndarray, old: np.ndarray) -> float:
    """The fraction of members in which the policy's estimated return improved."""
    return float(np.mean(np.asarray(new) > np.asarray(old)))


class StopRule:
    """ME-TRPO's stop rule: stop once the improvement ratio has been below `threshold` for `patience`
    consecutive validations."""

    def __init__(self, threshold: float, patience: int):
        self.threshold, self.patience, self.bad = threshold, patience, 0

    def update(self, ratio: float) -> bool:
        """Record one validation; True means stop optimizing the policy."""
        self.bad = self.bad + 1 if ratio < self.threshold else 0
        return self.bad >= self.patience


def optimize_in_ensemble(
    agent: PolicyGradient, state: PGState, model: EnsembleModel, model_state: ModelState,
    sample_starts, validate, *, max_iterations: int, validate_every: int, threshold: float, patience: int,
    key: jax.Array, horizon: int, reward_fn=None, term_fn=None,
) -> tuple[PGState, dict, list[float]]:
    """Steps 3–5: TRPO on model rollouts, validating in every member every `validate_every` iterations, until
    the stop rule fires or `max_iterations`. `sample_starts(n)` gives n×B×D start states; `validate(state)`
    gives the K member returns. Returns the state, the last iteration infos and the ratios seen."""
    rule = StopRule(threshold, patience)
    prev = np.asarray(validate(state))
    ratios: list[float] = []
    iters, infos = 0, {}
    while iters < max_iterations:
        key, k = jax.random.split(key)
        n = min(validate_every, max_iterations - iters)
        # 3a./3b. n TRPO iterations on fresh model rollouts (a random member per step)
        state, infos = improve(agent, state, model, model_state, sample_starts(n), k, horizon=horizon, mode="step",
                               reward_fn=reward_fn, term_fn=term_fn)
        iters += n
        # 4. estimate the performance in every member; 5. stop when too few members see an improvement
        new = np.asarray(validate(state))
        ratios.append(improvement_ratio(new, prev))
        prev = new
        if rule.update(ratios[-1]):
            break
    info = {k_: float(np.mean(v)) for k_, v in infos.items()}
    info.update({"metrpo/iterations": iters, "metrpo/validations": len(ratios),
                 "metrpo/last_ratio": ratios[-1] if ratios else float("nan"),
                 "metrpo/member_return_mean": float(np.mean(prev)),
                 "metrpo/stopped_early": float(iters < max_iterations)})
    return state, info, ratios


def load_policy(run_dir: str | Path):
    """The deterministic (mean) policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    return model_loop.load_policy(run_dir, Config, resolve,
                                  lambda cfg, env, spec: make_agent(cfg, spec.obs_dim, spec.act_dim))


def train(cfg: Config) -> Result:
    """Train ME-TRPO; returns the final evaluation and the run directory."""
    cfg = resolve(runs.prepare(cfg, "metrpo", may_change=("steps",)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    model, reward_fn, term_fn = model_and_fns(cfg, env, spec.obs_dim, spec.act_dim)
    agent = make_agent(cfg, spec.obs_dim, spec.act_dim)
    with Rounds(cfg, "metrpo", env, model, agent) as loop:
        # 1. collect real data (uniformly random actions before the first policy exists)
        loop.collect_initial(cfg.init_steps)
        while loop.t < cfg.steps:
            # 2. train all models on D
            loop.fit()
            # 3.–5. TRPO in the ensemble until validation stops improving (validation: the same start states and
            # noise all round)
            with loop.run.timer("policy"):
                validate = partial(member_returns, agent, model=model, model_state=loop.model_state,
                                   starts=loop.starts(cfg.validation_rollouts), key=loop.next_key(),
                                   horizon=cfg.horizon, reward_fn=reward_fn, term_fn=term_fn)
                loop.agent_state, info, ratios = optimize_in_ensemble(
                    agent, loop.agent_state, model, loop.model_state, lambda n: loop.starts((n, cfg.rollouts)),
                    validate, max_iterations=cfg.max_iterations, validate_every=cfg.validate_every,
                    threshold=cfg.threshold, patience=cfg.patience, key=loop.next_key(), horizon=cfg.horizon,
                    reward_fn=reward_fn, term_fn=term_fn)
            # 1. collect real samples with the policy
            loop.collect(collect_act(agent, loop.agent_state, loop.np_rng), cfg.steps_per_round)
            loop.end_round({**info, "metrpo/ratios": ratios})
            loop.run.progress(min(loop.t, cfg.steps), iters=f"iters {info['metrpo/iterations']}")
        return loop.result()
