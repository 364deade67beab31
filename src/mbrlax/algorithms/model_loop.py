"""The loop pieces the model-based algorithms that alternate "collect whole episodes, fit the model on all of D"
share, on top of runs.Run / runs.EnvLoop / common.fit_or_keep:

    ModelLoop   D (every real transition), the model fitted on it, the real env (whole episodes), the keys,
                and the checkpoint of all of them; mpc.py (one episode per iteration) uses it directly
    Rounds      ModelLoop plus a policy and round-end evaluation and checkpoints: the loop of bptt.py (v2.0),
                mbpg.py (v2.5) and metrpo.py (ME-TRPO), which differ only in their step 3

    collect D with a random policy                                     # 1. Rounds.collect_initial(init_steps)
    repeat:
        fit the model on all of D                                      # 2. Rounds.fit()
        improve the policy through the model                           # 3. the algorithm's own
        run the policy, append its whole episodes to D                 # 1. Rounds.collect(act, steps_per_round)
        evaluate, checkpoint                                           #    Rounds.end_round(info)

Checkpoints are written only where no episode is in progress (a round's or an episode's end), so a resume
continues exactly: the next episode is reset with the same seed (seed + episode index) either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from mbrlax import runs
from mbrlax.algorithms.common import (
    ModelOptions,
    OnlineOptions,
    Result,
    RunOptions,
    check_positive,
    fill_preset,
    fit_kwargs,
    fit_or_keep,
)
from mbrlax.data.replay import ReplayBuffer
from mbrlax.envs import known_fns
from mbrlax.models.ensemble import EnsembleModel
from mbrlax.types import Transition

MEMBER_MODES = ("step", "sample", "mean")

# What bptt's, mbpg's and metrpo's DEFAULTS share (each adds its own step 3's values).
DEFAULTS: dict[str, Any] = dict(
    steps=20_000, init_steps=1000, steps_per_round=1000, gamma=0.99, model_hidden=(200, 200, 200), ensemble_size=5,
    eval_episodes=5, env_kwargs={},
)


@dataclass
class LoopOptions(OnlineOptions, ModelOptions, RunOptions):
    """What bptt, mbpg and metrpo share. Fields left as None take the env's preset, else the algorithm's DEFAULTS."""

    steps_per_round: int | None = None
    """Real steps collected by the policy per round (whole episodes; at least this many)."""
    horizon: int | None = None
    """H: model steps per rollout from a real start state; a learned value V(s_H) bootstraps the rest."""
    gamma: float | None = None
    """Discount."""
    # ModelOptions with this loop's defaults
    ensemble_size: int | None = None
    """Model members (ME-TRPO: 5-20); None: the preset's. Rollouts pick a random member per step (1: one model)."""
    num_elites: int | None = None
    """Members the rollouts use, by holdout error; None: every member."""
    model_max_epochs: int = 100
    """At most this many epochs per model fit (warm-started from the last fit)."""
    probabilistic: bool = False
    """Gaussian-NLL model instead of MSE (its noise is then sampled in the rollouts)."""
    use_known_reward: bool = True
    """Use mbrlax's known reward function when it has one (else the model's reward head)."""
    policy_hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the policy (and value) networks."""
    value_lr: float = 1e-3
    """Learning rate of the learned value V(s)."""


def resolve(cfg: Any, defaults: dict[str, Any], presets: dict[str, dict[str, Any]]) -> Any:
    """Fill every None field from the env's preset, then `defaults`; validate the shared ranges."""
    cfg = fill_preset(cfg, presets.get(cfg.env, {}), defaults)
    check_positive(cfg, "steps", "steps_per_round", "eval_episodes", "ensemble_size", "horizon")
    if cfg.checkpoint_every is not None:
        check_positive(cfg, "checkpoint_every")
    if cfg.init_steps < 2:
        raise ValueError(f"init_steps must be at least 2 (the first model fit needs data), got {cfg.init_steps}")
    if not 0.0 < cfg.gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {cfg.gamma}")
    if getattr(cfg, "member_mode", "step") not in MEMBER_MODES:
        raise ValueError(f"member_mode must be 'step', 'sample' or 'mean', got {cfg.member_mode!r}")
    return cfg


def run_name(tag: str, cfg: Any) -> str:
    """The run directory's name (an env id such as mbrlax/CartPoleSwingUp-v0 must not make a subdirectory)."""
    return f"{tag}-{cfg.env.replace('/', '_')}-s{cfg.seed}"


# ---- components --------------------------------------------------------------------------------------


# (env id, use_known_reward, env_kwargs) -> (reward_fn, term_fn): the same function objects for the same env, so that
# an agent that holds them as a static jit argument is equal across train() calls and its compiled code is reused.
_ENV_FNS: dict[tuple, tuple] = {}


def env_functions(env_id: str, env: gym.Env, use_known_reward: bool = True, env_kwargs: dict | None = None):
    """(reward_fn, term_fn) in the *agent's* action space [-1, 1], each None where mbrlax knows none:
    pure-JAX `mbrlax/...` envs give theirs, Gymnasium ids the `known_fns` ones (rescaled from the env's
    own action bounds, e.g. Pendulum's torque 2a). Memoized per env (see _ENV_FNS)."""
    key = (env_id, use_known_reward, repr(sorted((env_kwargs or {}).items())))
    if key not in _ENV_FNS:
        _ENV_FNS[key] = _env_functions(env_id, env, use_known_reward, env_kwargs)
    return _ENV_FNS[key]


def _env_functions(env_id: str, env: gym.Env, use_known_reward: bool, env_kwargs: dict | None):
    if env_id.startswith("mbrlax/"):
        from mbrlax.envs import jax_envs

        jenv = jax_envs.load(env_id, **(env_kwargs or {}))
        return (jenv.reward if use_known_reward else None), jenv.terminated
    low = np.asarray(env.unwrapped.action_space.low, np.float32)
    high = np.asarray(env.unwrapped.action_space.high, np.float32)
    rfn, tfn = known_fns.reward_fn(env_id), known_fns.termination_fn(env_id)
    scaled_rfn = None
    if rfn is not None and use_known_reward:
        lo, hi = jnp.asarray(low), jnp.asarray(high)

        def scaled_rfn(obs, action, next_obs):
            return rfn(obs, lo + (jnp.clip(action, -1, 1) + 1.0) * 0.5 * (hi - lo), next_obs)

    return scaled_rfn, tfn


def make_model(cfg: Any, obs_dim: int, act_dim: int, learn_termination: bool) -> EnsembleModel:
    return EnsembleModel(
        obs_dim, act_dim, ensemble_size=cfg.ensemble_size, num_elites=cfg.num_elites or cfg.ensemble_size,
        hidden=cfg.model_hidden, probabilistic=cfg.probabilistic, learn_termination=learn_termination, lr=cfg.model_lr,
    )


def model_and_fns(cfg: Any, env: gym.Env, obs_dim: int, act_dim: int):
    """(model, reward_fn, term_fn): the model learns a termination head where mbrlax knows no termination
    function (or --learn-termination says so), and then the known one is not used."""
    reward_fn, term_fn = env_functions(cfg.env, env, cfg.use_known_reward, cfg.env_kwargs)
    learn = cfg.learn_termination if cfg.learn_termination is not None else term_fn is None
    return make_model(cfg, obs_dim, act_dim, learn), reward_fn, (None if learn else term_fn)


def jnp_act(fn: Callable, params: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A host-side act(obs) from a jitted fn(params, obs B×D) -> B×A."""
    return lambda o: np.asarray(fn(params, jnp.asarray(o[None], jnp.float32)))[0]


def load_policy(run_dir: Any, config_cls: type, resolve_fn: Callable, make_agent: Callable):
    """The deterministic (mean) policy of a run's last checkpoint as `act(obs) -> action`, plus the config.
    `make_agent(cfg, env, spec)` builds the run's agent (for the shapes of its saved state)."""
    from mbrlax.envs.make import make

    cfg = resolve_fn(runs.config_from_dict(config_cls, runs.load_config(run_dir)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    agent = make_agent(cfg, env, spec)
    env.close()
    state = runs.check_like("agent", runs.load_checkpoint(run_dir)["agent"], agent.init(jax.random.key(0)))
    return jnp_act(jax.jit(agent.mean_action), state.policy), cfg


# ---- D, the model, the real env ----------------------------------------------------------------------


def restore_buffer(saved: dict, capacity: int, obs_dim: int, act_dim: int) -> ReplayBuffer:
    """D from a checkpoint, in a buffer sized for this run (a resume may lengthen it): the same transitions in
    the same order, so it samples exactly as the saved one did."""
    data = saved["data"]
    n = len(data["reward"])
    order = np.arange(n)
    if "ptr" in saved and n == int(saved["capacity"]):  # a full ring: storage order starts at the write pointer
        order = np.roll(order, -int(saved["ptr"]))
    buf = ReplayBuffer(max(capacity, n), obs_dim, act_dim)
    try:
        buf.add(*(np.asarray(data[k])[order] for k in Transition._fields))
    except (KeyError, ValueError) as e:
        raise runs.CheckpointError(f"the checkpoint's real data does not fit this run ({e}): it was made with "
                                   f"another environment") from e
    return buf


class ModelLoop:
    """D (every real transition, never overwritten), the model fitted on it, the real env stepped in whole
    episodes, the JAX key and the host RNG: restored from `run.resumed`, saved by `state()`."""

    def __init__(self, run: runs.Run, env: gym.Env, model: EnsembleModel, *, seed: int, key: jax.Array,
                 model_state: Any, capacity: int, fit_kwargs: dict[str, Any]):
        self.run, self.model, self.fit_kwargs = run, model, fit_kwargs
        self.t, self.key, self.np_rng = 0, key, np.random.default_rng(seed)
        self.model_state, self.model_fitted = model_state, False
        self.buffer = ReplayBuffer(capacity, model.obs_dim, model.act_dim)
        env_state = None
        if run.resumed is not None:
            saved = run.resumed
            self.t, self.key, self.np_rng = int(saved["t"]), saved["key"], saved["np_rng"]
            self.model_state = runs.check_like("model", saved["model"], model_state)
            self.model_fitted = bool(saved["model_fitted"])
            self.buffer = restore_buffer(saved["buffer"], capacity, model.obs_dim, model.act_dim)
            env_state = saved["env"]
        self.env = runs.EnvLoop(env, seed, env_state)

    @property
    def episode(self) -> int:
        """Finished real episodes."""
        return self.env.count

    def next_key(self) -> jax.Array:
        self.key, k = jax.random.split(self.key)
        return k

    def random_action(self, obs: np.ndarray) -> np.ndarray:
        """The base policy π_0: uniformly random actions in [-1, 1]."""
        return self.np_rng.uniform(-1.0, 1.0, self.model.act_dim).astype(np.float32)

    def starts(self, shape: int | tuple[int, ...]) -> jax.Array:
        """Start states sampled uniformly from all real data, shape×D."""
        obs = self.buffer.all().obs
        return jnp.asarray(obs[self.np_rng.integers(0, len(obs), shape)])

    def collect(self, act: Callable[[np.ndarray], np.ndarray], n_steps: int, log: bool = True) -> list[dict]:
        """Run `act` for whole episodes until at least `n_steps` real steps; every transition joins D. Returns
        the finished episodes' stats (each logged at its last step unless `log=False`)."""
        episodes, steps, done = [], 0, None
        with self.run.timer("env"):
            while not (done and steps >= n_steps):
                transition, done = self.env.step(np.asarray(act(self.env.obs), np.float32), self.t)
                self.buffer.add(*transition)
                self.t, steps = self.t + 1, steps + 1
                if done:
                    episodes.append(done)
                    if log:
                        self.run.log(self.t, done)
                if self.t % 10 == 0:
                    self.run.progress(min(self.t, self.run.total))
        return episodes

    def fit(self) -> dict | None:
        """Fit the model on all of D (warm-started; a diverged refit keeps the last good model)."""
        self.model_state, self.model_fitted, info = fit_or_keep(
            self.run, self.t, self.model, self.model_state, self.buffer.all(), self.next_key(), self.model_fitted,
            **self.fit_kwargs)
        if info:
            self.run.progress(min(self.t, self.run.total), mse=f"model mse {info['model/holdout_mse']:.3g}")
        return info

    def state(self) -> dict:
        """What a checkpoint holds (only ever taken where no episode is in progress)."""
        return {"t": self.t, "episode": self.episode, "key": self.key, "np_rng": self.np_rng,
                "model": self.model_state, "model_fitted": self.model_fitted, "buffer": self.buffer.state_dict(),
                "env": self.env.state_dict()}


class Rounds(ModelLoop):
    """ModelLoop for the round-based policy learners (bptt, mbpg, metrpo), as a context manager that owns the
    run (runs.Run named `name`), the real env and an evaluation env: plus the agent's state, the round count,
    and each round's end (evaluation of the agent's mean action, checkpoint, progress)."""

    def __init__(self, cfg: Any, name: str, env: gym.Env, model: EnsembleModel, agent: Any):
        from mbrlax.envs.make import make

        run = None
        try:
            run = runs.Run(cfg, name, run_name(name, cfg), cfg.steps)
            self.eval_env = make(cfg.env, **cfg.env_kwargs)[0]
            k_model, k_agent = jax.random.split(jax.random.key(cfg.seed + 1))
            super().__init__(run, env, model, seed=cfg.seed, key=jax.random.key(cfg.seed),
                             model_state=model.init(k_model), capacity=max(cfg.steps + 2000, 1000),
                             fit_kwargs=fit_kwargs(cfg))
            self.round, self.agent_state = 0, agent.init(k_agent)
            if run.resumed is not None:
                self.round = int(run.resumed["round"])
                self.agent_state = runs.check_like("agent", run.resumed["agent"], self.agent_state)
        except BaseException:
            if run is not None:
                run.close()
            env.close()
            raise
        self.cfg, self.mean_action = cfg, jax.jit(agent.mean_action)
        self._saved_at = self.t

    def __enter__(self) -> Rounds:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.run.close()
        self.env.env.close()
        self.eval_env.close()

    def collect_initial(self, n_steps: int) -> None:
        """Step 1 with the base policy π_0 (uniformly random actions), unless a resumed run has it already."""
        if self.t == 0:
            self.collect(self.random_action, n_steps)

    def end_round(self, info: dict[str, Any]) -> None:
        """Evaluate the deterministic policy (logged with the round's `info`), and checkpoint at the first
        round end past each multiple of checkpoint_every steps (None: every round) and at the last."""
        cfg, t = self.cfg, self.t
        self.round += 1
        self.run.evaluate(t, self.eval_env, jnp_act(self.mean_action, self.agent_state.policy), cfg.eval_episodes,
                          seed=10_000 + cfg.seed, extra={"round": self.round, **info})
        every = cfg.checkpoint_every
        if every is None or t // every > self._saved_at // every or t >= cfg.steps:
            self.run.save(t, self.state())
            self._saved_at = t
        self.run.progress(min(t, cfg.steps))

    def state(self) -> dict:
        return {**super().state(), "round": self.round, "agent": self.agent_state}

    def result(self) -> Result:
        return self.run.result(steps=self.t)


def upgrade_legacy(old: dict) -> dict:
    """A format-1 (pickle) checkpoint of bptt / mbpg / metrpo / mpc in today's layout (`mbrlax checkpoint
    convert`). Those were saved at episode ends too, so the env starts the next episode afresh, exactly."""
    rng = np.random.default_rng()
    rng.bit_generator.state = old["np_rng"]
    episodes = int(old["episodes"] if "episodes" in old else old["episode"])
    rest = {k: v for k, v in old.items() if k not in ("config", "evals", "episodes", "data")}
    return dict(rest, key=jax.random.wrap_key_data(np.asarray(old["key"])), np_rng=rng, episode=episodes,
                buffer=old["buffer"] if "buffer" in old else old["data"],
                env={"ret": 0.0, "len": 0, "count": episodes, "obs": None, "env_state": None})
