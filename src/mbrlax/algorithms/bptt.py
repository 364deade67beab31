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

This file also holds the loop pieces that mbpg.py and metrpo.py share (collecting whole episodes, fitting,
evaluating, checkpointing), so that the three algorithms differ only in their step 3.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import tyro

from mbrlax import runs
from mbrlax.agents.pathwise import Pathwise
from mbrlax.algorithms.common import Result
from mbrlax.data.replay import ReplayBuffer
from mbrlax.envs import known_fns
from mbrlax.envs.make import make
from mbrlax.evaluation import evaluate
from mbrlax.models.ensemble import EnsembleModel
from mbrlax.models.fit import ModelDivergedError, fit

DEFAULTS: dict[str, Any] = dict(
    steps=20_000,
    init_steps=1000,
    steps_per_round=1000,
    updates_per_round=200,
    horizon=20,
    batch_size=128,
    gamma=0.99,
    lr=1e-3,
    grad_clip=10.0,
    action_noise=0.1,
    expl_noise=0.2,
    model_hidden=(200, 200, 200),
    ensemble_size=5,
    eval_episodes=5,
    env_kwargs={},
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
class Config:
    """v2.0 (BPTT through a learned model). Fields left as None take the env's preset, else DEFAULTS."""

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
    updates_per_round: int | None = None
    """BPTT policy updates per round (each on `batch_size` start states)."""
    horizon: int | None = None
    """H: model steps backpropagated through; the value V(s_H) bootstraps the rest."""
    batch_size: int | None = None
    """Start states (sampled from all real data) per policy update."""
    gamma: float | None = None
    """Discount of the H-step return and the value."""
    lr: float | None = None
    """Policy learning rate (Adam)."""
    grad_clip: float | None = None
    """Clip the policy gradient to this global norm (0: no clipping)."""
    action_noise: float | None = None
    """σ of the reparameterized policy a = tanh(μ(s) + σε) inside model rollouts (0: deterministic)."""
    expl_noise: float | None = None
    """σ of the same pre-tanh Gaussian noise when collecting real data."""
    model_hidden: tuple[int, ...] | None = None
    """Hidden widths of each model member."""
    ensemble_size: int | None = None
    """Model members (1: the single MSE-fitted MLP of v2.0)."""
    eval_episodes: int | None = None
    """Deterministic evaluation episodes after every round."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make; Python API and presets only."""
    value_bootstrap: bool = True
    """Bootstrap the truncated return with a learned value (SVG(H)/MVE); False: plain H-step BPTT."""
    value_lr: float = 1e-3
    """Learning rate of the value used for the bootstrap."""
    tau: float = 0.01
    """Polyak rate of the value's target network."""
    member_mode: str = "step"
    """Ensemble member per rollout step: 'step' (one random member per step), 'sample' or 'mean'."""
    probabilistic: bool = False
    """Gaussian-NLL model instead of MSE (noise is then reparameterized in the rollouts)."""
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


# ======================================================================================================
# Shared loop pieces (also used by mbpg.py and metrpo.py)
# ======================================================================================================


def resolve_with(cfg: Any, defaults: dict, presets: dict) -> Any:
    """Fill every None field from the env's preset, then `defaults`; validate the shared ranges."""
    preset = presets.get(cfg.env, {})
    filled = {k: (preset.get(k, v) if getattr(cfg, k) is None else getattr(cfg, k)) for k, v in defaults.items()}
    cfg = dataclasses.replace(cfg, **filled)
    for name in ("steps", "steps_per_round", "eval_episodes", "ensemble_size", "horizon"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    if cfg.init_steps < 2:
        raise ValueError(f"init_steps must be at least 2 (the first model fit needs data), got {cfg.init_steps}")
    if not 0.0 < cfg.gamma <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {cfg.gamma}")
    return cfg


def load_saved(cfg_cls: type, cfg: Any) -> Any:
    """For --resume: the run's own config, except what a resume may change (steps, progress, tensorboard)."""
    saved = runs.load_config(cfg.resume)
    keep = {k: getattr(cfg, k) for k in ("progress", "tensorboard")}
    if cfg.steps is not None:
        keep["steps"] = cfg.steps
    saved.update(run_dir=cfg.resume, resume=cfg.resume, **keep)
    return cfg_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def env_functions(env_id: str, env: gym.Env, use_known_reward: bool = True, env_kwargs: dict | None = None):
    """(reward_fn, term_fn) in the *agent's* action space [-1, 1], each None where mbrlax knows none:
    pure-JAX `mbrlax/...` envs give theirs, Gymnasium ids the `known_fns` ones (rescaled from the env's
    own action bounds, e.g. Pendulum's torque 2a)."""
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
        obs_dim, act_dim, ensemble_size=cfg.ensemble_size, num_elites=cfg.ensemble_size, hidden=cfg.model_hidden,
        probabilistic=cfg.probabilistic, learn_termination=learn_termination, lr=cfg.model_lr,
    )


def collect_episodes(env: gym.Env, act: Callable[[np.ndarray], np.ndarray], n_steps: int, buffer: ReplayBuffer,
                     seed: int, episode_count: int) -> tuple[int, int, list[float]]:
    """Run whole episodes until at least `n_steps` real steps were taken; episode i is reset with seed
    `seed + i` (so a resumed run continues the exact sequence). Returns (steps, new episode count, returns)."""
    steps, returns = 0, []
    while steps < n_steps:
        obs, _ = env.reset(seed=seed + episode_count)
        done, ret = False, 0.0
        while not done:
            action = np.asarray(act(obs), np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, reward, next_obs, float(terminated))
            obs, ret, steps = next_obs, ret + float(reward), steps + 1
            done = terminated or truncated
        returns.append(ret)
        episode_count += 1
    return steps, episode_count, returns


def fit_model(model: EnsembleModel, model_state: Any, buffer: ReplayBuffer, key: jax.Array, cfg: Any,
              fitted: bool) -> tuple[Any, dict]:
    """Refit the model on all real data (warm start from the last fit); a diverged fit keeps the old model."""
    try:
        return fit(model, model_state, buffer.all(), key, holdout_ratio=cfg.holdout_ratio,
                   batch_size=cfg.model_batch_size, max_epochs=cfg.model_max_epochs, patience=cfg.model_patience)
    except ModelDivergedError as e:
        if not fitted:
            raise RuntimeError(f"the first model fit diverged ({e}); lower model_lr") from e
        return model_state, {"model/diverged": 1.0}


class Loop:
    """The bookkeeping every round-based algorithm here shares: run dir, logger, buffer, RNGs, counters,
    checkpoints (at round ends, where no episode is in progress, so a resume is exact)."""

    def __init__(self, cfg: Any, name: str, obs_dim: int, act_dim: int):
        self.cfg, self.name = cfg, name
        if cfg.resume is not None:
            self.run_dir = Path(cfg.resume)
        else:
            self.run_dir = Path(cfg.run_dir) if cfg.run_dir else runs.new_run_dir(cfg.run_root, f"{name}-{cfg.env.replace('/', '_')}-s{cfg.seed}")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            runs.save_config(self.run_dir, cfg, algorithm=name)
        self.t, self.round, self.episodes = 0, 0, 0
        self.key = jax.random.key(cfg.seed)
        self.np_rng = np.random.default_rng(cfg.seed)
        self.buffer = ReplayBuffer(max(cfg.steps + 2000, 1000), obs_dim, act_dim)
        self.model_fitted = False
        self.evals: list[tuple[int, float]] = []

    def next_key(self) -> jax.Array:
        self.key, k = jax.random.split(self.key)
        return k

    def save(self, **parts: Any) -> None:
        payload = dict(config=dataclasses.asdict(self.cfg), t=self.t, round=self.round, episodes=self.episodes,
                       key=np.asarray(jax.random.key_data(self.key)), np_rng=self.np_rng.bit_generator.state,
                       buffer=self.buffer.state_dict(), model_fitted=self.model_fitted, evals=self.evals,
                       **{k: runs.to_host(v) for k, v in parts.items()})
        runs.save_checkpoint(self.run_dir, payload)

    def restore(self, fresh: dict[str, Any]) -> dict[str, Any]:
        """Load the checkpoint; `fresh` maps part names to freshly initialized pytrees (for shape checks)."""
        payload = runs.load_checkpoint(self.run_dir)
        for k in ("env", "seed", "ensemble_size", "model_hidden", "policy_hidden"):
            if _plain(payload["config"].get(k)) != _plain(getattr(self.cfg, k)):
                raise runs.CheckpointError(
                    f"checkpoint was made with {k}={payload['config'].get(k)!r} but this run has "
                    f"{k}={getattr(self.cfg, k)!r}; resume with the run's own config (`--resume` alone)."
                )
        self.t, self.round, self.episodes = int(payload["t"]), int(payload["round"]), int(payload["episodes"])
        self.key = jax.random.wrap_key_data(jnp.asarray(payload["key"]))
        self.np_rng.bit_generator.state = payload["np_rng"]
        self.buffer.load_state_dict(payload["buffer"])
        self.model_fitted = payload["model_fitted"]
        self.evals = [tuple(e) for e in payload["evals"]]
        return {k: runs.check_like(k, payload[k], v) for k, v in fresh.items()}

    def evaluate(self, eval_env: gym.Env, act: Callable[[np.ndarray], np.ndarray], logger: runs.MetricsLogger,
                 extra: dict) -> float:
        mean, std, _ = evaluate(eval_env, act, self.cfg.eval_episodes, seed=10_000 + self.cfg.seed)
        self.evals.append((self.t, mean))
        logger.log(self.t, {"eval/return_mean": mean, "eval/return_std": std, "round": self.round, **extra})
        runs.plot_runs([self.run_dir], self.run_dir / "curve.png", title=self.run_dir.name)
        return mean

    def result(self) -> Result:
        final = [r for r in runs.read_metrics(self.run_dir) if "eval/return_mean" in r]
        if not final:
            return Result(self.run_dir, self.t, float("nan"), float("nan"), self.evals)
        return Result(self.run_dir, self.t, final[-1]["eval/return_mean"], final[-1]["eval/return_std"], self.evals)


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x, default=list))


def jnp_act(fn: Callable, params: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A host-side act(obs) from a jitted fn(params, obs B×D) -> B×A."""
    return lambda o: np.asarray(fn(params, jnp.asarray(o[None], jnp.float32)))[0]


# ======================================================================================================
# v2.0
# ======================================================================================================


def resolve(cfg: Config) -> Config:
    cfg = resolve_with(cfg, DEFAULTS, PRESETS)
    if cfg.member_mode not in ("step", "sample", "mean"):
        raise ValueError(f"member_mode must be 'step', 'sample' or 'mean', got {cfg.member_mode!r}")
    for name in ("updates_per_round", "batch_size"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    return cfg


def _components(cfg: Config, env: gym.Env, obs_dim: int, act_dim: int):
    reward_fn, term_fn = env_functions(cfg.env, env, cfg.use_known_reward, cfg.env_kwargs)
    model = make_model(cfg, obs_dim, act_dim, learn_termination=term_fn is None)
    agent = Pathwise(
        obs_dim, act_dim, model, reward_fn=reward_fn, term_fn=term_fn, hidden=cfg.policy_hidden, lr=cfg.lr,
        value_lr=cfg.value_lr, horizon=cfg.horizon, gamma=cfg.gamma, grad_clip=cfg.grad_clip or None,
        value_bootstrap=cfg.value_bootstrap, action_noise=cfg.action_noise, member_mode=cfg.member_mode, tau=cfg.tau,
    )
    return model, agent


def train(cfg: Config) -> Result:
    """Train v2.0 (BPTT through the model); returns the final evaluation and the run directory."""
    cfg = resolve(load_saved(Config, cfg) if cfg.resume is not None else cfg)
    env, spec = make(cfg.env, **cfg.env_kwargs)
    eval_env, _ = make(cfg.env, **cfg.env_kwargs)
    model, agent = _components(cfg, env, spec.obs_dim, spec.act_dim)
    loop = Loop(cfg, "bptt", spec.obs_dim, spec.act_dim)
    k_model, k_agent = jax.random.split(jax.random.key(cfg.seed + 1))
    model_state, agent_state = model.init(k_model), agent.init(k_agent)
    if cfg.resume is not None:
        parts = loop.restore({"model": model_state, "agent": agent_state})
        model_state, agent_state = parts["model"], parts["agent"]
    logger = runs.MetricsLogger(loop.run_dir, tensorboard=cfg.tensorboard)
    logger.truncate_after(loop.t)
    mean_act = jax.jit(agent.mean_action)
    pre_tanh = jax.jit(agent.actor_net.apply)
    bar = runs.ProgressBar(cfg.steps, f"bptt {cfg.env}", cfg.progress, loop.t)
    try:
        if loop.t == 0:
            # 1. collect real data with the base policy (uniformly random actions)
            rand = lambda o: loop.np_rng.uniform(-1, 1, spec.act_dim).astype(np.float32)  # noqa: E731
            n, loop.episodes, rets = collect_episodes(env, rand, cfg.init_steps, loop.buffer, cfg.seed, loop.episodes)
            loop.t += n
            logger.log(loop.t, {"train/episode_return": float(np.mean(rets))})
        while loop.t < cfg.steps:
            tic = time.perf_counter()
            # 2. fit the dynamics model on all of D (MSE; an ensemble if ensemble_size > 1)
            model_state, minfo = fit_model(model, model_state, loop.buffer, loop.next_key(), cfg, loop.model_fitted)
            loop.model_fitted = True
            t_model = time.perf_counter() - tic
            # 3. backpropagate the H-step model return (+ γ^H V(s_H)) into the policy, G times
            tic = time.perf_counter()
            data = loop.buffer.all().obs
            idx = loop.np_rng.integers(0, len(data), (cfg.updates_per_round, cfg.batch_size))
            agent_state, pinfo = agent.update_many(agent_state, model_state, jnp.asarray(data[idx]), loop.next_key())
            pinfo = {k: float(v) for k, v in pinfo.items()}
            t_policy = time.perf_counter() - tic
            # 1. run the new policy (with exploration noise) and append its transitions to D
            u = jnp_act(pre_tanh, agent_state.policy)
            act = lambda o: np.tanh(u(o) + cfg.expl_noise * loop.np_rng.standard_normal(spec.act_dim))  # noqa: E731
            n, loop.episodes, rets = collect_episodes(env, act, cfg.steps_per_round, loop.buffer, cfg.seed, loop.episodes)
            loop.t += n
            loop.round += 1
            ret = loop.evaluate(eval_env, jnp_act(mean_act, agent_state.policy), logger, {
                **{k: v for k, v in minfo.items() if not isinstance(v, list)}, **pinfo,
                "train/episode_return": float(np.mean(rets)), "time/model": t_model, "time/policy": t_policy,
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
    """The deterministic policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    saved = runs.load_config(run_dir)
    cfg = resolve(Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    _, agent = _components(cfg, env, spec.obs_dim, spec.act_dim)
    env.close()
    payload = runs.load_checkpoint(run_dir)
    state = runs.check_like("agent", payload["agent"], agent.init(jax.random.key(0)))
    return jnp_act(jax.jit(agent.mean_action), state.policy), cfg
