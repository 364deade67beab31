"""Fit a model, then plan: the lecture's v0.5, v1.0, v1.5 (MPC) and PETS (Chua et al. 2018) in one loop.

The loop (the lecture's boxes; PETS's Algorithm 1 is the last variant):

    collect D with a random policy (init_episodes episodes)                    # 1. random data
    repeat for each further episode:
        fit the dynamics model on D                                           # 2. fit the model
        (v0.5: only the first time; the others refit on all of D every episode)
        for each step t of the episode:
            if it is time to plan (t = 0 for open loop; every `replan_every` steps for MPC):
                plan an action sequence through the model with CEM / MPPI / random shooting   # 3. plan
                (PETS: particles propagated through the ensemble with TS∞ or TS1)
            execute the next planned action in the real environment           # 4. act
        append the episode's transitions to D                                 # 5. aggregate

Variants (`--variant`, which fills the settings you leave unset):
* v0.5: deterministic MLP fitted by MSE once on random data; each episode executes one open-loop plan made at
  its start (horizon = the episode length) — distribution mismatch is not corrected.
* v1.0: the same open-loop episodes, but the data is aggregated and the model refit after every episode.
* v1.5: MPC — replan every `replan_every` steps (1: every step) with horizon `horizon` and execute only the
  first action(s); plans are warm-started from the shifted previous solution.
* pets: v1.5 with a probabilistic ensemble (E = 5), trajectory sampling (TS∞, 20 particles) and CEM.

Components: the planners are `planning.shooting` (pure, jitted, explicit `PlanState`), the returns come from
`planning.propagation` (TS1 / TS∞ / expectation through the `EnsembleModel`), and one MPC action is one
compiled call (`plan`). The reward is known where mbrlax knows it exactly — a pure-JAX env's reward, or
`known_fns.reward_fn(env)` with the action rescaled from [-1, 1] to the env's bounds — and learned by the model
otherwise (the `EnsembleModel` predicts the reward with the state change).

Deviations, each deliberate: the model fit uses mbrlax's `fit` (a small holdout set picks each member's best
epoch) instead of PETS's fixed epochs on all data; a variant's "evaluation return" is the return of the
episode executed with the planner right after each fit, as in PETS's learning curves (set `eval_episodes`
for separate evaluation episodes); the cart-pole observation is PETS's preprocessed one (envs/cartpole.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import tyro

from mbrlax import runs
from mbrlax.algorithms.common import Result, RunOptions, check_positive
from mbrlax.algorithms.model_loop import ModelLoop, run_name, upgrade_legacy  # noqa: F401 (mbrlax checkpoint convert)
from mbrlax.envs import jax_envs, known_fns
from mbrlax.envs.make import make
from mbrlax.models.ensemble import EnsembleModel, ModelState
from mbrlax.planning import propagation as prop
from mbrlax.planning import shooting

# Values a variant or preset may set; None in a Config means: the variant's value, else the env preset's,
# else DEFAULTS.
DEFAULTS: dict[str, Any] = dict(
    episodes=10,
    init_episodes=1,
    planner="cem",
    model="deterministic",
    propagation=None,  # None: tsinf for a probabilistic model, expectation for a deterministic one
    particles=None,  # None: 20 (PETS) for TS1/TS∞, 1 for expectation
    replan_every=1,
    refit=True,
    horizon=25,
    population=400,
    elites=40,
    iterations=5,
    alpha=0.1,
    ensemble_size=5,
    model_hidden=(200, 200, 200),
    model_weight_decay=(2.5e-5, 5e-5, 7.5e-5, 1e-4),
    model_lr=1e-3,
    model_batch_size=32,
    # PETS fits 5 passes per iteration and mbrl-lib 25 every 50 steps (≈ 100 per 200-step episode). Measured on
    # 1400 cart-pole transitions (64×3 nets, batch 32, same holdout): the probabilistic ensemble's holdout MSE is
    # 0.066 after 25 epochs, 0.030 after 50, 0.019 after 100, 0.013 after 200 (deterministic MLP: 0.0087 after
    # 25, 0.0036 after 100); a 100-epoch fit costs ~4 s there. Large-data presets lower it.
    model_epochs=100,
    reward="auto",
    env_kwargs={},
)

# The lecture's variants: structure only (numbers that depend on the task live in PRESETS).
VARIANTS: dict[str, dict[str, Any]] = {
    "v0.5": dict(model="deterministic", replan_every=0, refit=False),
    "v1.0": dict(model="deterministic", replan_every=0, refit=True),
    "v1.5": dict(model="deterministic", replan_every=1, refit=True),
    # PETS (Chua et al. 2018): probabilistic ensemble of 5, TS∞ with 20 particles, CEM, replanning every step.
    "pets": dict(model="ensemble", propagation="tsinf", particles=20, replan_every=1, refit=True, planner="cem",
                 ensemble_size=5),
}

PRESETS: dict[str, dict[str, Any]] = {
    # PETS paper's cart-pole (handful-of-trials dmbrl/config/cartpole.py): plan horizon 25, CEM popsize 400,
    # 40 elites, 5 iterations, α 0.1; model 3×500 swish, weight decay 1e-4/2.5e-4/2.5e-4/5e-4, lr 1e-3,
    # 1 random initial rollout of 200 steps (5 epochs per training there; 25 here, see DEFAULTS). The paper
    # runs 50 iterations; 15 here (the target: swing-up within 15 episodes).
    "mbrlax/CartPoleSwingUp-v0": dict(
        episodes=15, init_episodes=1, horizon=25, population=400, elites=40, iterations=5, alpha=0.1,
        model_hidden=(500, 500, 500), model_weight_decay=(1e-4, 2.5e-4, 2.5e-4, 5e-4),
    ),
    # Not in the paper: Pendulum-v1 (200 steps, known reward). H = 30 (1.5 s): with the true dynamics CEM does
    # not swing the pendulum up from hanging down at H = 15 (return −1093 vs −368 at H = 30).
    "Pendulum-v1": dict(
        episodes=10, init_episodes=1, horizon=30, population=400, elites=40, iterations=5,
        model_hidden=(200, 200, 200),
    ),
    # Gymnasium's 2-link Reacher-v5 (50 steps, known reward). PETS's reacher is a different 7-DoF arm; its
    # planner settings are used (horizon 25, CEM 400/40/5, α 0.1) with a 4×200 model.
    "Reacher-v5": dict(
        episodes=30, init_episodes=1, horizon=25, population=400, elites=40, iterations=5,
        model_hidden=(200, 200, 200, 200), model_weight_decay=(2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4),
    ),
    # PETS halfcheetah (dmbrl/config/halfcheetah.py): horizon 30, CEM popsize 500, 50 elites, 5 iterations,
    # α 0.1; model 4×200 swish, weight decay 2.5e-5/5e-5/7.5e-5/7.5e-5/1e-4, 5 epochs; 1000-step episodes,
    # 300 iterations in the paper (30 here). The reward is learned (Gymnasium's forward velocity is not a
    # function of the observation).
    "HalfCheetah-v5": dict(
        episodes=30, init_episodes=1, horizon=30, population=500, elites=50, iterations=5,
        model_hidden=(200, 200, 200, 200), model_weight_decay=(2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4), model_epochs=25,
    ),
}


@dataclass
class Config(RunOptions):
    """Fit-then-plan MBRL (v0.5 / v1.0 / v1.5 / PETS). Fields left None take the variant's value, else the
    env preset's (see PRESETS), else DEFAULTS. checkpoint_every counts episodes (None: every episode).

    The model fields are PETS's, not common.ModelOptions: a fit here runs a fixed `model_epochs` (PETS's
    fixed epochs, keeping each member's best on a small holdout) instead of early stopping."""

    env: str = "Pendulum-v1"
    """Gymnasium environment id (Box observations and actions); mbrlax/CartPoleSwingUp-v0 is PETS's cart-pole."""
    variant: str = "v1.5"
    """v0.5 | v1.0 | v1.5 | pets: fills the structural settings below that are left unset."""
    seed: int = 0
    """Seed of everything: two runs with the same seed are identical."""
    episodes: int | None = None
    """Total real episodes, including the random ones."""
    init_episodes: int | None = None
    """Episodes of uniformly random actions before the first fit (PETS: 1)."""
    planner: str | None = None
    """cem | mppi | random."""
    model: str | None = None
    """deterministic (one MLP, MSE) | probabilistic (one Gaussian MLP) | ensemble (PETS's probabilistic ensemble)."""
    propagation: str | None = None
    """tsinf | ts1 | expectation (the mean of the members' means; the only choice for one deterministic net)."""
    particles: int | None = None
    """Particles per candidate sequence (PETS: 20); a multiple of the ensemble size for TS1/TS∞."""
    replan_every: int | None = None
    """Execute this many planned actions before replanning (1: MPC); 0: one open-loop plan per episode."""
    refit: bool | None = None
    """Aggregate the data and refit after every episode (v1.0+); False: fit once on the random data (v0.5)."""
    horizon: int | None = None
    """Planning horizon H (ignored for open-loop episodes, which plan the whole episode)."""
    population: int | None = None
    """Candidate sequences per planner iteration."""
    elites: int | None = None
    """CEM elites."""
    iterations: int | None = None
    """CEM / MPPI iterations per plan."""
    alpha: float | None = None
    """CEM smoothing of mean and variance (PETS: 0.1)."""
    noise_beta: float = 0.0
    """CEM colored-noise exponent (iCEM: 2.5; 0: PETS's white noise)."""
    keep_elites: float = 0.0
    """CEM: fraction of elites kept into the next iteration and plan (iCEM: 0.3)."""
    mppi_temperature: float = 1.0
    """MPPI λ (in units of return)."""
    mppi_noise_std: float = 0.5
    """MPPI's exploration noise σ on the actions."""
    mppi_smoothing: float = 0.6
    """MPPI's smoothing of successive noise samples."""
    ensemble_size: int | None = None
    """Members of the 'ensemble' model (PETS: 5)."""
    model_hidden: tuple[int, ...] | None = None
    """Hidden layer widths of the model."""
    model_weight_decay: tuple[float, ...] | None = None
    """L2 decay per layer (hidden layers then output), or one value for all."""
    model_lr: float | None = None
    """Adam learning rate of the model."""
    model_batch_size: int | None = None
    """Minibatch size of model training, per member."""
    model_epochs: int | None = None
    """Epochs per model fit (PETS: 5); the fit keeps each member's best epoch on a small holdout."""
    holdout_ratio: float = 0.1
    """Fraction of the data held out to pick each member's best epoch."""
    reward: str | None = None
    """auto (known if mbrlax knows it exactly, else learned) | known | learned."""
    eval_episodes: int = 0
    """Extra evaluation episodes after each fit (0: the planner's own episode is the evaluation, as in PETS)."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make; Python API and presets only."""


def resolve(cfg: Config) -> Config:
    """Fill every None from the variant, then the env preset, then DEFAULTS; validate."""
    if cfg.variant not in VARIANTS:
        raise ValueError(f"unknown variant '{cfg.variant}'; use one of {', '.join(VARIANTS)}")
    variant, preset = VARIANTS[cfg.variant], PRESETS.get(cfg.env, {})
    filled = {}
    for k, v in DEFAULTS.items():
        mine = getattr(cfg, k)
        filled[k] = mine if mine is not None else variant.get(k, preset.get(k, v))
    if filled["propagation"] is None:
        filled["propagation"] = "expectation" if filled["model"] == "deterministic" else "tsinf"
    if filled["particles"] is None:
        filled["particles"] = 1 if filled["propagation"] == "expectation" else 20
    cfg = dataclasses.replace(cfg, **filled)
    if cfg.planner not in ("cem", "mppi", "random"):
        raise ValueError(f"unknown planner '{cfg.planner}'; use cem, mppi or random")
    if cfg.model not in ("deterministic", "probabilistic", "ensemble"):
        raise ValueError(f"unknown model '{cfg.model}'; use deterministic, probabilistic or ensemble")
    if cfg.reward not in ("auto", "known", "learned"):
        raise ValueError(f"reward must be auto, known or learned, got '{cfg.reward}'")
    members = cfg.ensemble_size if cfg.model == "ensemble" else 1
    prop.check_particles(cfg.particles, members, cfg.propagation)
    if cfg.model == "deterministic" and cfg.propagation != "expectation" and cfg.particles > 1:
        raise ValueError("a deterministic single network gives identical particles: use --propagation expectation "
                         "--particles 1 (or --model ensemble)")
    if cfg.checkpoint_every is None:
        cfg = dataclasses.replace(cfg, checkpoint_every=1)
    check_positive(cfg, "episodes", "horizon", "population", "iterations", "model_epochs", "checkpoint_every")
    if cfg.replan_every < 0:
        raise ValueError(f"replan_every must be ≥ 0 (0: open loop), got {cfg.replan_every}")
    if cfg.planner == "cem" and cfg.elites > cfg.population:
        raise ValueError(f"elites ({cfg.elites}) must not exceed population ({cfg.population})")
    if not 0 <= cfg.init_episodes < cfg.episodes:
        raise ValueError(f"init_episodes must be in [0, episodes), got {cfg.init_episodes} of {cfg.episodes}")
    if cfg.init_episodes == 0:
        raise ValueError("init_episodes must be ≥ 1: the first model needs data (PETS uses 1 random episode)")
    return cfg


# ---- known reward / termination in the agents' [-1, 1] action convention ----------------------------


@dataclass(frozen=True)
class KnownFns:
    """The env's known reward and termination as functions of the agents' action in [-1, 1]. Frozen (hashable
    by value), so that `plan` compiles once per task, not once per instance."""

    env_id: str
    low: tuple[float, ...]
    high: tuple[float, ...]

    def _env_action(self, a: jax.Array) -> jax.Array:
        low, high = jnp.asarray(self.low, a.dtype), jnp.asarray(self.high, a.dtype)
        return low + (jnp.clip(a, -1.0, 1.0) + 1.0) * 0.5 * (high - low)

    def reward(self, obs, action, next_obs):
        if self.env_id in jax_envs.JAX_ENVS:
            return jax_envs.load(self.env_id).reward(obs, action, next_obs)
        return known_fns.reward_fn(self.env_id)(obs, self._env_action(action), next_obs)

    def terminated(self, obs, action, next_obs):
        if self.env_id in jax_envs.JAX_ENVS:
            return jax_envs.load(self.env_id).terminated(obs, action, next_obs)
        return known_fns.termination_fn(self.env_id)(obs, self._env_action(action), next_obs)


def _known(env_id: str, env) -> tuple[bool, bool]:
    """(reward known, termination known) for this id."""
    if env_id in jax_envs.JAX_ENVS:
        return True, True
    return known_fns.reward_fn(env_id) is not None, known_fns.termination_fn(env_id) is not None


def _components(cfg: Config, env, spec):
    reward_known, term_known = _known(cfg.env, env)
    if cfg.reward == "known" and not reward_known:
        raise ValueError(f"mbrlax knows no exact reward function for '{cfg.env}': use --reward learned (or auto)")
    use_known_reward = reward_known and cfg.reward != "learned"
    space = env.unwrapped.action_space
    fns = KnownFns(cfg.env, tuple(np.asarray(space.low, float).ravel()), tuple(np.asarray(space.high, float).ravel()))
    members = cfg.ensemble_size if cfg.model == "ensemble" else 1
    model = EnsembleModel(
        spec.obs_dim, spec.act_dim, ensemble_size=members, num_elites=members, hidden=cfg.model_hidden,
        probabilistic=cfg.model != "deterministic", learn_termination=not term_known, lr=cfg.model_lr,
        weight_decay=cfg.model_weight_decay,
    )
    planner = shooting.make_planner(
        cfg.planner, population=cfg.population, iterations=cfg.iterations, elites=cfg.elites, alpha=cfg.alpha,
        noise_beta=cfg.noise_beta, keep_elites=cfg.keep_elites, temperature=cfg.mppi_temperature,
        noise_std=cfg.mppi_noise_std, smoothing=cfg.mppi_smoothing,
    )
    return model, planner, (fns.reward if use_known_reward else None), (fns.terminated if term_known else None)


@partial(jax.jit, static_argnames=("model", "planner", "particles", "propagation", "reward_fn", "term_fn"))
def plan(
    model: EnsembleModel,
    model_state: ModelState,
    obs: jax.Array,
    plan_state: shooting.PlanState,
    key: jax.Array,
    *,
    planner: shooting.Planner,
    particles: int,
    propagation: str,
    reward_fn=None,
    term_fn=None,
) -> tuple[jax.Array, shooting.PlanState, dict]:
    """One planning call (one compiled function): obs D -> (action sequence H×A, next planner state, info)."""
    return_fn = prop.ensemble_return_fn(model, model_state, obs, particles=particles, propagation=propagation,
                                        reward_fn=reward_fn, term_fn=term_fn)
    return planner(return_fn, plan_state, key)


class Controller:
    """The MPC "policy": plans through the model every `replan_every` steps (0: once per episode, open loop)
    and executes the plan's actions in between. Host-side state: the action queue and the planner's state."""

    def __init__(self, model, planner, model_state, *, horizon, replan_every, episode_len, particles, propagation,
                 reward_fn, term_fn, act_dim):
        self.model, self.planner, self.model_state = model, planner, model_state
        self.h = episode_len if replan_every == 0 else horizon
        self.replan_every = self.h if replan_every == 0 else min(replan_every, self.h)
        self.kw = dict(planner=planner, particles=particles, propagation=propagation, reward_fn=reward_fn,
                       term_fn=term_fn)
        self.act_dim, self.episode_len = act_dim, episode_len
        self.plan_seconds, self.plans = 0.0, 0
        self.reset()

    def reset(self) -> None:
        """New episode: cold start, empty queue."""
        self.state = shooting.init_state(self.h, self.act_dim, shooting.n_keep(self.planner))
        self.queue: list[np.ndarray] = []
        self.steps = 0

    def __call__(self, obs: np.ndarray, key: jax.Array) -> np.ndarray:
        if self.steps == self.episode_len:  # a new episode (time limit reached): `evaluate` does not say so
            self.reset()
        self.steps += 1
        if not self.queue:
            tic = time.perf_counter()
            seq, st, _ = plan(self.model, self.model_state, jnp.asarray(obs, jnp.float32), self.state, key, **self.kw)
            seq = np.asarray(seq)  # blocks until the plan is done, so the timer is honest
            self.plan_seconds += time.perf_counter() - tic
            self.plans += 1
            self.queue = list(seq[: self.replan_every])
            self.state = shooting.shift(st, self.replan_every)  # warm start the next plan
        return self.queue.pop(0)

    def policy(self, next_key: Callable[[], jax.Array]) -> Callable[[np.ndarray], np.ndarray]:
        """act(obs), each step planning with the key `next_key()` gives."""
        return lambda obs: self(obs, next_key())


def algorithm_name(cfg: Config) -> str:
    """The `mbrlax train` name: pets for the PETS variant, else mpc. A resume that names no variant continues
    the run as whichever of the two made it."""
    if cfg.resume is not None and cfg.variant == Config.variant and Path(cfg.resume).is_dir():
        made_by = runs.run_algorithm(cfg.resume)
        if made_by in ("mpc", "pets"):
            return made_by
    return "pets" if cfg.variant == "pets" else "mpc"


def train(cfg: Config) -> Result:
    """Run the variant; returns the last evaluation (the last planner episode) and the run directory."""
    name = algorithm_name(cfg)
    cfg = resolve(runs.prepare(cfg, name, may_change=("episodes",)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    eval_env = make(cfg.env, **cfg.env_kwargs)[0] if cfg.eval_episodes > 0 else None
    episode_len = spec.max_episode_steps or 1000
    model, planner, reward_fn, term_fn = _components(cfg, env, spec)
    make_controller = partial(
        Controller, model, planner, horizon=cfg.horizon, replan_every=cfg.replan_every, episode_len=episode_len,
        particles=cfg.particles, propagation=cfg.propagation, reward_fn=reward_fn, term_fn=term_fn,
        act_dim=spec.act_dim,
    )
    total = cfg.episodes * episode_len
    with runs.Run(cfg, name, run_name(cfg.variant, cfg), total) as run, env, eval_env or contextlib.nullcontext():
        key, k_model = jax.random.split(jax.random.key(cfg.seed))
        loop = ModelLoop(run, env, model, seed=cfg.seed, key=key, model_state=model.init(k_model), capacity=total,
                         fit_kwargs=dict(holdout_ratio=cfg.holdout_ratio, batch_size=cfg.model_batch_size,
                                         max_epochs=cfg.model_epochs, patience=cfg.model_epochs))
        while loop.episode < cfg.episodes:
            random_episode = loop.episode < cfg.init_episodes
            # 2. fit the model on all of D (v0.5: only once, on the random data)
            if not random_episode and (cfg.refit or not loop.model_fitted):
                loop.fit()

            # 3.–4. one episode: random actions, or the planner's actions (replanning as the variant says);
            # 5. aggregate: every real transition joins D
            controller = None if random_episode else make_controller(model_state=loop.model_state)
            act = loop.random_action if controller is None else controller.policy(loop.next_key)
            tic = time.perf_counter()
            (episode,) = loop.collect(act, 1, log=False)
            row = {**episode, "train/random": float(random_episode), "time/episode_seconds": time.perf_counter() - tic}
            if controller is None:
                run.log(loop.t, row)
            else:
                row.update({"time/plan_ms_per_action": 1e3 * controller.plan_seconds / episode["train/episode_length"],
                            "time/plan_ms_per_plan": 1e3 * controller.plan_seconds / max(controller.plans, 1),
                            "plan/calls": controller.plans})
                if eval_env is None:  # the planner's own episode is PETS's learning-curve point
                    run.record_eval(loop.t, episode["train/episode_return"], 0.0, extra=row)
                else:
                    keys = iter(jax.random.split(jax.random.key(cfg.seed + 7919 * loop.episode), 1 << 20))
                    run.evaluate(loop.t, eval_env, make_controller(model_state=loop.model_state).policy(keys.__next__),
                                 cfg.eval_episodes, seed=10_000 + cfg.seed, extra=row)
            if run.due(loop.episode, cfg.checkpoint_every, cfg.episodes):
                run.save(loop.t, loop.state())
            run.progress(loop.t, episode=f"episode {loop.episode}/{cfg.episodes}",
                         ret=f"return {episode['train/episode_return']:.1f}")
        return run.result(steps=loop.t)


def load_policy(run_dir: str | Path):
    """The MPC controller of a run's last checkpoint as `act(obs) -> action` (it plans through the checkpointed
    model, replanning as the run did; seeded, so two evaluations agree), plus the config."""
    cfg = resolve(runs.config_from_dict(Config, runs.load_config(run_dir)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    model, planner, reward_fn, term_fn = _components(cfg, env, spec)
    env.close()
    payload = runs.load_checkpoint(run_dir)
    model_state = runs.check_like("model", payload["model"], model.init(jax.random.key(0)))
    ctrl = Controller(model, planner, model_state, horizon=cfg.horizon, replan_every=cfg.replan_every,
                      episode_len=spec.max_episode_steps or 1000, particles=cfg.particles,
                      propagation=cfg.propagation, reward_fn=reward_fn, term_fn=term_fn, act_dim=spec.act_dim)
    keys = iter(jax.random.split(jax.random.key(cfg.seed + 123), 1_000_000))
    return ctrl.policy(keys.__next__), cfg
