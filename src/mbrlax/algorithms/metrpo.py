"""ME-TRPO: model-ensemble trust-region policy optimization (Kurutach, Clavera, Duan, Tamar & Abbeel 2018).

Algorithm 1 of the paper, and where each line lives below:

    Initialize a policy π_θ and all models f_φ1, …, f_φK; initialize an empty dataset D
    repeat
        Collect samples from the real system f using π_θ and add them to D        # 1. collect real data
        Train all models using D                                                   # 2. fit the ensemble
        repeat                                                                     # 3. optimize π_θ in the ensemble
            Collect fictitious samples from {f_φi} using π_θ                         #    3a. rollouts, a random member per step
            Update the policy using TRPO on the fictitious samples                   #    3b. TRPO step
            Estimate the performances η̂(θ; φ_i) for i = 1, …, K                      #    4. policy validation
        until the performances stop improving                                      #    5. stop rule
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
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from mbrlax import runs
from mbrlax.agents.ppo import PGState, PolicyGradient, model_rollout
from mbrlax.algorithms.bptt import (
    Loop,
    Result,
    collect_episodes,
    env_functions,
    fit_model,
    jnp_act,
    load_saved,
    make_model,
    resolve_with,
)
from mbrlax.algorithms.mbpg import collect_act, improve
from mbrlax.envs.make import make
from mbrlax.models.ensemble import EnsembleModel, ModelState

DEFAULTS: dict[str, Any] = dict(
    steps=20_000,
    init_steps=1000,
    steps_per_round=1000,
    max_iterations=100,
    validate_every=5,
    horizon=100,
    rollouts=64,
    gamma=0.99,
    lam=0.95,
    max_kl=0.01,
    model_hidden=(200, 200, 200),
    ensemble_size=5,
    eval_episodes=5,
    env_kwargs={},
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
class Config:
    """ME-TRPO. Fields left as None take the env's preset, else DEFAULTS."""

    env: str = "Pendulum-v1"
    """Gymnasium environment id (Box observations and actions)."""
    seed: int = 0
    """Seed of everything: two runs with the same seed are identical."""
    steps: int | None = None
    """Total real environment steps, including the initial random exploration."""
    init_steps: int | None = None
    """Steps of uniformly random actions before the first model fit (whole episodes)."""
    steps_per_round: int | None = None
    """Real steps collected by the policy per round (whole episodes; at least this many)."""
    max_iterations: int | None = None
    """At most this many TRPO iterations per round, even if validation keeps improving."""
    validate_every: int | None = None
    """Validate the policy in every member after this many TRPO iterations (paper: 5)."""
    horizon: int | None = None
    """H: model rollout length; V(s_H) bootstraps the truncated rest through GAE."""
    rollouts: int | None = None
    """Rollouts (start states from D) per TRPO iteration."""
    gamma: float | None = None
    """Discount."""
    lam: float | None = None
    """GAE λ."""
    max_kl: float | None = None
    """TRPO step size δ (paper: 0.01)."""
    model_hidden: tuple[int, ...] | None = None
    """Hidden widths of each member."""
    ensemble_size: int | None = None
    """K, the number of models (paper: 5–20)."""
    eval_episodes: int | None = None
    """Deterministic evaluation episodes after every round."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make; Python API and presets only."""
    threshold: float = 0.7
    """Keep optimizing while at least this fraction of members sees an improvement (paper: 70 %)."""
    patience: int = 3
    """Stop after this many consecutive validations below the threshold."""
    validation_rollouts: int = 64
    """Start states (fixed per round) for the per-member return estimates."""
    value_lr: float = 1e-3
    """Learning rate of the value baseline."""
    value_epochs: int = 10
    """Value-baseline epochs per TRPO iteration."""
    minibatches: int = 16
    """Minibatches per value epoch."""
    init_log_std: float = -0.5
    """Initial log σ of the Gaussian policy."""
    probabilistic: bool = False
    """Gaussian-NLL members instead of MSE (the paper: deterministic, MSE)."""
    use_known_reward: bool = True
    policy_hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy (and value) networks."""
    model_lr: float = 1e-3
    model_batch_size: int = 256
    model_max_epochs: int = 100
    """At most this many epochs per model fit (warm-started from the last fit)."""
    model_patience: int = 5
    """Stop a fit after this many epochs without a 1 % holdout improvement."""
    holdout_ratio: float = 0.2
    run_root: str = "runs"
    """Where run directories are created."""
    run_dir: str | None = None
    """Use exactly this run directory instead of a new one under run_root."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True


def make_agent(cfg: Config, obs_dim: int, act_dim: int) -> PolicyGradient:
    return PolicyGradient(
        obs_dim, act_dim, method="trpo", hidden=cfg.policy_hidden, value_lr=cfg.value_lr, gamma=cfg.gamma,
        lam=cfg.lam, minibatches=cfg.minibatches, value_epochs=cfg.value_epochs, max_kl=cfg.max_kl,
        init_log_std=cfg.init_log_std,
    )


def resolve(cfg: Config) -> Config:
    cfg = resolve_with(cfg, DEFAULTS, PRESETS)
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
        roll = model_rollout(agent, state, model, model_state, starts, key, horizon=horizon, mode="fixed", member=m,
                             reward_fn=reward_fn, term_fn=term_fn)
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
                 "metrpo/member_return_mean": float(np.mean(prev)), "metrpo/stopped_early": float(iters < max_iterations)})
    return state, info, ratios


def train(cfg: Config) -> Result:
    """Train ME-TRPO; returns the final evaluation and the run directory."""
    cfg = resolve(load_saved(Config, cfg) if cfg.resume is not None else cfg)
    env, spec = make(cfg.env, **cfg.env_kwargs)
    eval_env, _ = make(cfg.env, **cfg.env_kwargs)
    reward_fn, term_fn = env_functions(cfg.env, env, cfg.use_known_reward, cfg.env_kwargs)
    model = make_model(cfg, spec.obs_dim, spec.act_dim, learn_termination=term_fn is None)
    agent = make_agent(cfg, spec.obs_dim, spec.act_dim)
    loop = Loop(cfg, "metrpo", spec.obs_dim, spec.act_dim)
    k_model, k_agent = jax.random.split(jax.random.key(cfg.seed + 1))
    model_state, agent_state = model.init(k_model), agent.init(k_agent)
    if cfg.resume is not None:
        parts = loop.restore({"model": model_state, "agent": agent_state})
        model_state, agent_state = parts["model"], parts["agent"]
    logger = runs.MetricsLogger(loop.run_dir, tensorboard=cfg.tensorboard)
    logger.truncate_after(loop.t)
    mean_act = jax.jit(agent.mean_action)
    bar = runs.ProgressBar(cfg.steps, f"metrpo {cfg.env}", cfg.progress, loop.t)
    try:
        if loop.t == 0:
            # 1. collect real data (uniformly random actions before the first policy exists)
            rand = lambda o: loop.np_rng.uniform(-1, 1, spec.act_dim).astype(np.float32)  # noqa: E731
            n, loop.episodes, rets = collect_episodes(env, rand, cfg.init_steps, loop.buffer, cfg.seed, loop.episodes)
            loop.t += n
            logger.log(loop.t, {"train/episode_return": float(np.mean(rets))})
        while loop.t < cfg.steps:
            # 2. train all models on D
            model_state, minfo = fit_model(model, model_state, loop.buffer, loop.next_key(), cfg, loop.model_fitted)
            loop.model_fitted = True
            # 3.–5. TRPO in the ensemble until validation stops improving
            data = loop.buffer.all().obs
            val_starts = jnp.asarray(data[loop.np_rng.integers(0, len(data), cfg.validation_rollouts)])
            val_key = loop.next_key()
            validate = lambda s: member_returns(agent, s, model, model_state, val_starts, val_key,  # noqa: E731
                                                horizon=cfg.horizon, reward_fn=reward_fn, term_fn=term_fn)
            sample_starts = lambda n: jnp.asarray(data[loop.np_rng.integers(0, len(data), (n, cfg.rollouts))])  # noqa: E731
            agent_state, pinfo, ratios = optimize_in_ensemble(
                agent, agent_state, model, model_state, sample_starts, validate, max_iterations=cfg.max_iterations,
                validate_every=cfg.validate_every, threshold=cfg.threshold, patience=cfg.patience,
                key=loop.next_key(), horizon=cfg.horizon, reward_fn=reward_fn, term_fn=term_fn,
            )
            # 1. collect real samples with the policy
            n, loop.episodes, rets = collect_episodes(env, collect_act(agent, agent_state, loop.np_rng),
                                                      cfg.steps_per_round, loop.buffer, cfg.seed, loop.episodes)
            loop.t += n
            loop.round += 1
            ret = loop.evaluate(eval_env, jnp_act(mean_act, agent_state.policy), logger, {
                **{k: v for k, v in minfo.items() if not isinstance(v, list)}, **pinfo,
                "metrpo/ratios": ratios, "train/episode_return": float(np.mean(rets)),
            })
            loop.save(model=model_state, agent=agent_state)
            bar.update(min(loop.t, cfg.steps), f"eval {ret:.1f}  iters {pinfo['metrpo/iterations']}")
    finally:
        bar.close()
        logger.close()
        env.close()
        eval_env.close()
    return loop.result()


def load_policy(run_dir: str | Path):
    """The deterministic (mean) policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    saved = runs.load_config(run_dir)
    cfg = resolve(Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    env.close()
    agent = make_agent(cfg, spec.obs_dim, spec.act_dim)
    payload = runs.load_checkpoint(run_dir)
    state = runs.check_like("agent", payload["agent"], agent.init(jax.random.key(0)))
    return jnp_act(jax.jit(agent.mean_action), state.policy), cfg
