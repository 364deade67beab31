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
ME-TRPO (metrpo.py) is this loop with TRPO plus validation across the members to decide when to stop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from mbrlax import runs
from mbrlax.agents.ppo import PG_METHODS, PGState, PolicyGradient, model_rollout, rollout_to_batch
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
from mbrlax.envs.make import make
from mbrlax.models.ensemble import EnsembleModel, ModelState

DEFAULTS: dict[str, Any] = dict(
    steps=20_000,
    init_steps=1000,
    steps_per_round=1000,
    iterations_per_round=20,
    horizon=100,
    rollouts=64,
    gamma=0.99,
    lam=0.95,
    lr=3e-4,
    max_kl=0.01,
    model_hidden=(200, 200, 200),
    ensemble_size=5,
    eval_episodes=5,
    env_kwargs={},
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
class Config:
    """v2.5 (policy gradient on model rollouts). Fields left as None take the env's preset, else DEFAULTS."""

    env: str = "Pendulum-v1"
    """Gymnasium environment id (Box observations and actions)."""
    pg: str = "ppo"
    """Policy-gradient method on the model rollouts: reinforce (with a value baseline), ppo or trpo."""
    seed: int = 0
    """Seed of everything: two runs with the same seed are identical."""
    steps: int | None = None
    """Total real environment steps, including the initial random exploration."""
    init_steps: int | None = None
    """Steps of uniformly random actions before the first model fit (whole episodes)."""
    steps_per_round: int | None = None
    """Real steps collected by the policy per round (whole episodes; at least this many)."""
    iterations_per_round: int | None = None
    """K: policy-gradient iterations per round (each on fresh model rollouts), no real data in between."""
    horizon: int | None = None
    """H: model rollout length; V(s_H) bootstraps the truncated rest through GAE."""
    rollouts: int | None = None
    """Rollouts (start states from D) per iteration: an iteration has H × rollouts samples."""
    gamma: float | None = None
    """Discount."""
    lam: float | None = None
    """GAE λ."""
    lr: float | None = None
    """Policy learning rate (REINFORCE and PPO; TRPO uses max_kl)."""
    max_kl: float | None = None
    """TRPO's trust region δ on the mean KL."""
    model_hidden: tuple[int, ...] | None = None
    """Hidden widths of each model member."""
    ensemble_size: int | None = None
    """Model members; rollouts pick a random member per step (1: a single model)."""
    eval_episodes: int | None = None
    """Deterministic evaluation episodes after every round."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make; Python API and presets only."""
    epochs: int = 10
    """PPO epochs over each iteration's samples."""
    minibatches: int = 16
    """PPO (and value-fit) minibatches per epoch."""
    value_epochs: int = 10
    """Value-baseline epochs per iteration."""
    pg_steps: int = 1
    """REINFORCE full-batch gradient steps per iteration."""
    clip_eps: float = 0.2
    """PPO clip range ε."""
    ent_coef: float = 0.0
    """Entropy bonus coefficient (REINFORCE and PPO)."""
    value_lr: float = 1e-3
    """Learning rate of the value baseline."""
    init_log_std: float = -0.5
    """Initial log σ of the Gaussian policy."""
    member_mode: str = "step"
    """Ensemble member per rollout step: 'step' (one random member per step), 'sample' or 'mean'."""
    probabilistic: bool = False
    """Gaussian-NLL model instead of MSE."""
    use_known_reward: bool = True
    """Use mbrlax's known reward function when it has one (else the model's reward head)."""
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


def resolve(cfg: Config) -> Config:
    cfg = resolve_with(cfg, DEFAULTS, PRESETS)
    if cfg.pg not in PG_METHODS:
        raise ValueError(f"--pg must be one of {', '.join(PG_METHODS)}, got {cfg.pg!r}")
    if cfg.member_mode not in ("step", "sample", "mean"):
        raise ValueError(f"member_mode must be 'step', 'sample' or 'mean', got {cfg.member_mode!r}")
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
        roll = model_rollout(agent, st, model, model_state, s0, k_roll, horizon=horizon, mode=mode,
                             reward_fn=reward_fn, term_fn=term_fn)
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
    std = None

    def act(o: np.ndarray) -> np.ndarray:
        nonlocal std
        mean, log_std = mean_fn(state.policy, jnp.asarray(o[None], jnp.float32))
        std = np.exp(np.asarray(log_std))
        return np.clip(np.asarray(mean)[0] + std * np_rng.standard_normal(std.shape), -1.0, 1.0)

    return act


def train(cfg: Config) -> Result:
    """Train v2.5 (REINFORCE / PPO / TRPO on model rollouts); returns the final evaluation and the run dir."""
    cfg = resolve(load_saved(Config, cfg) if cfg.resume is not None else cfg)
    env, spec = make(cfg.env, **cfg.env_kwargs)
    eval_env, _ = make(cfg.env, **cfg.env_kwargs)
    reward_fn, term_fn = env_functions(cfg.env, env, cfg.use_known_reward, cfg.env_kwargs)
    model = make_model(cfg, spec.obs_dim, spec.act_dim, learn_termination=term_fn is None)
    agent = make_agent(cfg, spec.obs_dim, spec.act_dim, cfg.pg)
    loop = Loop(cfg, "mbpg", spec.obs_dim, spec.act_dim)
    k_model, k_agent = jax.random.split(jax.random.key(cfg.seed + 1))
    model_state, agent_state = model.init(k_model), agent.init(k_agent)
    if cfg.resume is not None:
        parts = loop.restore({"model": model_state, "agent": agent_state})
        model_state, agent_state = parts["model"], parts["agent"]
    logger = runs.MetricsLogger(loop.run_dir, tensorboard=cfg.tensorboard)
    logger.truncate_after(loop.t)
    mean_act = jax.jit(agent.mean_action)
    bar = runs.ProgressBar(cfg.steps, f"mbpg-{cfg.pg} {cfg.env}", cfg.progress, loop.t)
    try:
        if loop.t == 0:
            # 1. collect real data with the base policy (uniformly random actions)
            rand = lambda o: loop.np_rng.uniform(-1, 1, spec.act_dim).astype(np.float32)  # noqa: E731
            n, loop.episodes, rets = collect_episodes(env, rand, cfg.init_steps, loop.buffer, cfg.seed, loop.episodes)
            loop.t += n
            logger.log(loop.t, {"train/episode_return": float(np.mean(rets))})
        while loop.t < cfg.steps:
            # 2. fit the model on all of D
            tic = time.perf_counter()
            model_state, minfo = fit_model(model, model_state, loop.buffer, loop.next_key(), cfg, loop.model_fitted)
            loop.model_fitted = True
            t_model = time.perf_counter() - tic
            # 3. K policy-gradient iterations on model rollouts from real start states (no new real data)
            tic = time.perf_counter()
            data = loop.buffer.all().obs
            idx = loop.np_rng.integers(0, len(data), (cfg.iterations_per_round, cfg.rollouts))
            agent_state, infos = improve(agent, agent_state, model, model_state, jnp.asarray(data[idx]),
                                         loop.next_key(), horizon=cfg.horizon, mode=cfg.member_mode,
                                         reward_fn=reward_fn, term_fn=term_fn)
            pinfo = {k: float(np.mean(v)) for k, v in infos.items()}
            t_policy = time.perf_counter() - tic
            # 1. run the improved policy and append its transitions to D
            n, loop.episodes, rets = collect_episodes(env, collect_act(agent, agent_state, loop.np_rng),
                                                      cfg.steps_per_round, loop.buffer, cfg.seed, loop.episodes)
            loop.t += n
            loop.round += 1
            ret = loop.evaluate(eval_env, jnp_act(mean_act, agent_state.policy), logger, {
                **{k: v for k, v in minfo.items() if not isinstance(v, list)}, **pinfo,
                "pg/iterations": cfg.iterations_per_round, "train/episode_return": float(np.mean(rets)),
                "time/model": t_model, "time/policy": t_policy,
            })
            loop.save(model=model_state, agent=agent_state)
            bar.update(min(loop.t, cfg.steps), f"eval {ret:.1f}  model mse {minfo.get('model/holdout_mse', float('nan')):.3g}")
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
    agent = make_agent(cfg, spec.obs_dim, spec.act_dim, cfg.pg)
    payload = runs.load_checkpoint(run_dir)
    state = runs.check_like("agent", payload["agent"], agent.init(jax.random.key(0)))
    return jnp_act(jax.jit(agent.mean_action), state.policy), cfg
