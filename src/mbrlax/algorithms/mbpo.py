"""MBPO: model-based policy optimization (Janner, Fu, Zhang & Levine 2019) — the lecture's "v3.0".

Algorithm 2 of the paper, and where each line lives below:

    Initialize policy π_φ, predictive model p_θ, environment dataset D_env, model dataset D_model
    for N epochs do
        Train model p_θ on D_env via maximum likelihood                       # 2. fit the model
        for E steps do
            Take action in environment according to π_φ; add to D_env          # 1. collect real data
            for M model rollouts do
                Sample s_t uniformly from D_env                                # 3. branched rollouts
                Perform k-step model rollout starting from s_t using π_φ; add to D_model
            for G gradient updates do
                Update policy parameters on model data: φ ← φ − λ_π ∇̂_φ J_π(φ, D_model)   # 4. SAC
    
As in the authors' code, the model is refit every `model_train_freq` steps (not once per epoch), the M
rollouts of a whole `model_train_freq` window are done in one batch of `rollout_batch_size` right after the
fit, the rollout length k follows the schedule [start epoch, end epoch, min k, max k], D_model keeps the
rollouts of `model_retain_epochs` epochs, and each SAC batch mixes a `real_ratio` fraction of D_env.
With `real_ratio=1` nothing model-based runs: that is SAC alone, with every other setting unchanged.

Deviations from the paper's code, each deliberate: the ensemble also normalizes its targets; minibatches
are drawn with replacement per member (a bootstrap) instead of per-member permutations; a model-training
epoch is at least `model_min_epoch_steps` minibatches (on small data the paper's patience of 5 one-pass
epochs stops the fit after ~10 gradient steps); each refit starts a fresh Adam state (see models/fit.py);
the evaluation averages `eval_episodes` deterministic episodes instead of one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
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
from mbrlax.agents.sac import SAC, SACState
from mbrlax.algorithms.common import Result, fill_preset
from mbrlax.data.replay import (
    DeviceBuffer,
    ReplayBuffer,
    device_buffer,
    device_buffer_from_host,
    device_buffer_to_host,
    device_buffer_sample,
    device_buffer_set_limit,
)
from mbrlax.envs import known_fns
from mbrlax.envs.make import get_env_state, make, set_env_state
from mbrlax.evaluation import evaluate
from mbrlax.models.ensemble import EnsembleModel
from mbrlax.models.fit import ModelDivergedError, fit
from mbrlax.rollout import branched_rollout
from mbrlax.types import Transition

# Values a preset may set; `None` in a Config means "the preset's value for this env, else DEFAULTS".
DEFAULTS: dict[str, Any] = dict(
    # MBPO's base config for the MuJoCo tasks (jannerm/mbpo, examples/development/base.py + config/*).
    steps=125_000,
    init_steps=5000,
    epoch_length=1000,
    model_train_freq=250,
    rollout_batch_size=100_000,
    rollout_schedule=(20, 100, 1, 1),
    model_retain_epochs=1,
    updates_per_step=20,
    real_ratio=0.05,
    target_entropy=None,  # None: -dim(A)
    model_hidden=(200, 200, 200, 200),
    eval_every=1000,
    eval_episodes=3,
    env_kwargs={},
    model_max_epochs=200,
)

PRESETS: dict[str, dict[str, Any]] = {
    # Not in the paper: sized so that MBPO solves it within 5,000 steps on a laptop CPU
    # (benchmarks/mbpo_pendulum.py). One epoch is one 200-step episode.
    "Pendulum-v1": dict(
        steps=5000, init_steps=400, epoch_length=200, model_train_freq=200, rollout_batch_size=20_000,
        rollout_schedule=(0, 10, 1, 1), model_retain_epochs=2, updates_per_step=10, real_ratio=0.1,
        model_hidden=(200, 200, 200), eval_every=200, eval_episodes=5, model_max_epochs=50,
    ),
    # Paper config inverted_pendulum/0.py: 80 epochs of 250 steps, 10 updates/step, k=1, H_target=-0.05.
    "InvertedPendulum-v5": dict(
        steps=20_500, init_steps=500, epoch_length=250, model_train_freq=250, rollout_schedule=(1, 15, 1, 1),
        updates_per_step=10, target_entropy=-0.05, eval_every=500, eval_episodes=3,
    ),
    # Paper config hopper/0.py: 125 epochs, k from 1 to 15 over epochs 20-150, H_target=-1.
    "Hopper-v5": dict(steps=130_000, rollout_schedule=(20, 150, 1, 15), target_entropy=-1.0),
    # Paper config walker2d/0.py: 300 epochs, k=1, H_target=-3.
    "Walker2d-v5": dict(steps=305_000, rollout_schedule=(20, 150, 1, 1), target_entropy=-3.0),
    # Paper config halfcheetah/0.py: 400 epochs, 40 updates/step, k=1, H_target=-3.
    "HalfCheetah-v5": dict(
        steps=405_000, updates_per_step=40, rollout_schedule=(20, 150, 1, 1), target_entropy=-3.0
    ),
    # Paper config ant/0.py: 300 epochs, k from 1 to 25 over epochs 20-100, H_target=-4, truncated
    # observation (27-d: no contact forces).
    "Ant-v5": dict(
        steps=305_000, rollout_schedule=(20, 100, 1, 25), target_entropy=-4.0,
        env_kwargs={"include_cfrc_ext_in_observation": False},
    ),
    # Paper config humanoid/0.py: model refit every 1000 steps, 5 epochs retained, k 1→20 over epochs
    # 20-300, 400-unit model, H_target=-2, truncated observation (45-d: positions and velocities only).
    "Humanoid-v5": dict(
        steps=305_000, model_train_freq=1000, model_retain_epochs=5, rollout_schedule=(20, 300, 1, 20),
        target_entropy=-2.0, model_hidden=(400, 400, 400, 400),
        env_kwargs={"include_cinert_in_observation": False, "include_cvel_in_observation": False,
                    "include_qfrc_actuator_in_observation": False, "include_cfrc_ext_in_observation": False},
    ),
}


@dataclass
class Config:
    """MBPO. Fields left as None take the preset value of the environment (see PRESETS), else DEFAULTS."""

    env: str = "Pendulum-v1"
    """Gymnasium environment id; any id with Box observations and Box actions works."""
    seed: int = 0
    """Seed of everything: two runs with the same seed are identical."""
    steps: int | None = None
    """Total real environment steps, including the initial random exploration."""
    init_steps: int | None = None
    """Steps of uniformly random actions before learning starts."""
    epoch_length: int | None = None
    """Environment steps per epoch (the rollout schedule counts epochs)."""
    model_train_freq: int | None = None
    """Refit the model (and do the branched rollouts) every this many environment steps."""
    rollout_batch_size: int | None = None
    """Branched rollouts started at each refit (M × model_train_freq in the paper's terms)."""
    rollout_schedule: tuple[int, int, int, int] | None = None
    """[start epoch, end epoch, min k, max k]: k grows linearly from min to max between the two epochs."""
    model_retain_epochs: int | None = None
    """Epochs of model rollouts kept in D_model."""
    updates_per_step: int | None = None
    """G: SAC gradient updates per environment step."""
    real_ratio: float | None = None
    """Fraction of each SAC batch drawn from real data (0: model data only); 1.0 turns MBPO into SAC alone."""
    target_entropy: float | None = None
    """SAC's entropy target; None gives -dim(A)."""
    model_hidden: tuple[int, ...] | None = None
    """Hidden layer widths of each ensemble member."""
    eval_every: int | None = None
    """Evaluate the deterministic policy every this many environment steps."""
    eval_episodes: int | None = None
    """Episodes per evaluation."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make (e.g. a truncated observation); Python API and presets only."""
    ensemble_size: int = 7
    """Ensemble members (paper: 7)."""
    num_elites: int = 5
    """Members used for rollouts, by holdout error (paper: 5)."""
    model_lr: float = 1e-3
    """Adam learning rate of the model (paper: 1e-3)."""
    model_batch_size: int = 256
    """Minibatch size of model training, per member."""
    holdout_ratio: float = 0.2
    """Fraction of D_env held out to measure each member's error (early stopping, elites)."""
    max_holdout: int = 5000
    """Cap on the holdout set size (paper: 5000)."""
    model_patience: int = 5
    """Stop fitting after this many epochs without a 1 % holdout improvement."""
    model_max_epochs: int | None = None
    """Cap on model-training epochs per refit."""
    model_min_epoch_steps: int = 20
    """An epoch of model training is one pass over D_env but at least this many minibatches (small data)."""
    learn_termination: bool | None = None
    """Learn a termination head; None: only when mbrlax knows no termination function for the env."""
    sac_hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of SAC's actor and each critic."""
    sac_lr: float = 3e-4
    """Adam learning rate of actor, critics and temperature."""
    sac_batch_size: int = 256
    """SAC minibatch size (real and model rows together)."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    replay_size: int = 1_000_000
    """Capacity of D_env."""
    run_root: str = "runs"
    """Where run directories are created."""
    run_dir: str | None = None
    """Use exactly this run directory (created if needed) instead of a new one under run_root."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint."""
    checkpoint_every: int | None = None
    """Checkpoint every this many steps; None: every epoch."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Also write TensorBoard event files (metrics.jsonl is always written)."""


def resolve(cfg: Config) -> Config:
    """Fill every None from the env's preset, then DEFAULTS; validate ranges."""
    cfg = fill_preset(cfg, PRESETS.get(cfg.env, {}), DEFAULTS)
    if cfg.checkpoint_every is None:
        cfg = dataclasses.replace(cfg, checkpoint_every=cfg.epoch_length)
    if not 0.0 <= cfg.real_ratio <= 1.0:
        raise ValueError(f"real_ratio must be in [0, 1], got {cfg.real_ratio}")
    if len(cfg.rollout_schedule) != 4 or cfg.rollout_schedule[2] < 1:
        raise ValueError(f"rollout_schedule must be [start epoch, end epoch, min k ≥ 1, max k], got {cfg.rollout_schedule}")
    for name in ("steps", "epoch_length", "model_train_freq", "rollout_batch_size", "updates_per_step", "eval_every"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
    return cfg


def rollout_length(schedule: tuple[int, int, int, int], epoch: int) -> int:
    """MBPO's linear schedule: min k until `start`, then linear to max k at `end` (authors' code)."""
    start, end, k_min, k_max = schedule
    if epoch <= start:
        return int(k_min)
    frac = min((epoch - start) / max(end - start, 1), 1.0)
    return int(frac * (k_max - k_min) + k_min)


def model_buffer_size(cfg: Config, k: int) -> int:
    """D_model holds the rollouts of `model_retain_epochs` epochs at the current length k (authors' code)."""
    rollouts_per_epoch = cfg.rollout_batch_size * cfg.epoch_length // cfg.model_train_freq
    return max(cfg.model_retain_epochs * rollouts_per_epoch * k, cfg.rollout_batch_size)


@partial(jax.jit, static_argnames=("sac", "n_model"))
def policy_updates(
    sac: SAC, sac_state: SACState, real: Transition, model_buf: DeviceBuffer, key: jax.Array, n_model: int
) -> tuple[SACState, dict]:
    """G SAC updates. `real` is G×B_real from D_env; B - B_real rows of each batch come from D_model.
    Returns the new state, the mean update info and the next key."""
    key, k_sample, k_update = jax.random.split(key, 3)
    if n_model > 0:
        g = real.obs.shape[0]
        fake = device_buffer_sample(model_buf, k_sample, (g, n_model))
        real = jax.tree.map(lambda r, f: jnp.concatenate([r, f], 1), real, fake)
    sac_state, info = sac.update_many(sac_state, real, k_update)
    return sac_state, info, key


@partial(jax.jit, static_argnames=("sac",))
def act(sac: SAC, actor_params: Any, obs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One exploratory action for one observation D -> A, and the next key."""
    key, k = jax.random.split(key)
    return sac.sample_action(actor_params, obs[None], k)[0], key


def _components(cfg: Config, obs_dim: int, act_dim: int):
    term_fn = known_fns.termination_fn(cfg.env)
    learn_term = cfg.learn_termination if cfg.learn_termination is not None else term_fn is None
    model = EnsembleModel(
        obs_dim, act_dim, ensemble_size=cfg.ensemble_size, num_elites=cfg.num_elites,
        hidden=cfg.model_hidden, learn_termination=learn_term, lr=cfg.model_lr,
    )
    sac = SAC(
        obs_dim, act_dim, hidden=cfg.sac_hidden, lr=cfg.sac_lr, gamma=cfg.gamma, tau=cfg.tau,
        target_entropy=cfg.target_entropy,
    )
    return model, sac, (None if learn_term else term_fn)


def _fresh_state(cfg: Config, model: EnsembleModel, sac: SAC, obs_dim: int, act_dim: int) -> dict:
    key = jax.random.key(cfg.seed)
    key, k_model, k_sac = jax.random.split(key, 3)
    k0 = rollout_length(cfg.rollout_schedule, 0)
    max_k = max(cfg.rollout_schedule[2], cfg.rollout_schedule[3])
    use_model = cfg.real_ratio < 1.0
    return dict(
        t=0,
        key=key,
        np_rng=np.random.default_rng(cfg.seed),
        sac=sac.init(k_sac),
        model=model.init(k_model),
        model_fitted=False,
        real=ReplayBuffer(cfg.replay_size, obs_dim, act_dim),
        # Allocated once at the largest size the schedule reaches; `limit` tracks the current size.
        fake=device_buffer(model_buffer_size(cfg, max_k) if use_model else 1, obs_dim, act_dim,
                           limit=model_buffer_size(cfg, k0) if use_model else 1),
        k=k0,
        episode=dict(ret=0.0, len=0, count=0),
        obs=None,
        env_state=None,
    )


def _checkpoint_payload(st: dict, cfg: Config) -> dict:
    host = runs.to_host
    return dict(
        config=dataclasses.asdict(cfg),
        t=st["t"],
        key=np.asarray(jax.random.key_data(st["key"])),
        np_rng=st["np_rng"].bit_generator.state,
        sac=host(st["sac"]),
        model=host(st["model"]),
        model_fitted=st["model_fitted"],
        real=st["real"].state_dict(),
        fake=device_buffer_to_host(st["fake"]),
        k=st["k"],
        episode=dict(st["episode"]),
        obs=st["obs"],
        env_state=st["env_state"],
    )


def slim_checkpoint(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Copy a run to `out_dir` with a checkpoint that keeps everything but the model buffer (D_model: most of the
    bytes, and regenerated from D_env by the model). Resuming from it refills D_model with one rollout batch, so
    it continues closely but not exactly as the full checkpoint would. For carrying long runs between machines."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    payload = runs.load_checkpoint(run_dir)
    fake = payload["fake"]
    payload["fake"] = dict(fake, data={k: v[:0] for k, v in fake["data"].items()}, ptr=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.jsonl", "run.json"):
        if (run_dir / name).exists():
            shutil.copyfile(run_dir / name, out_dir / name)
    payload.pop("format", None)
    path = runs.save_checkpoint(out_dir, payload)
    (out_dir / "checkpoint.prev.pkl").unlink(missing_ok=True)  # a carried copy needs only the latest
    return path


def _restore(payload: dict, fresh: dict, cfg: Config) -> dict:
    saved = payload["config"]
    for name in ("env", "ensemble_size", "sac_hidden", "model_hidden", "seed"):
        mine, theirs = getattr(cfg, name), saved.get(name)
        if _plain(mine) != _plain(theirs):
            raise runs.CheckpointError(
                f"checkpoint was made with {name}={theirs!r} but this run has {name}={mine!r}; resume with the "
                f"run's own config (`--resume` alone reads it from config.json)."
            )
    st = dict(fresh)
    st["t"] = int(payload["t"])
    st["key"] = jax.random.wrap_key_data(jnp.asarray(payload["key"]))
    st["np_rng"].bit_generator.state = payload["np_rng"]
    st["sac"] = runs.check_like("sac", payload["sac"], fresh["sac"])
    st["model"] = runs.check_like("model", payload["model"], fresh["model"])
    try:
        st["fake"] = device_buffer_from_host(payload["fake"], fresh["fake"])
        st["real"].load_state_dict(payload["real"])
    except (ValueError, KeyError) as e:
        raise runs.CheckpointError(f"checkpoint buffers do not match this run: {e}") from e
    for name in ("model_fitted", "k", "episode", "obs", "env_state"):
        st[name] = payload[name]
    return st


def train(cfg: Config) -> Result:
    """Train MBPO (or SAC alone with real_ratio=1); returns the final evaluation and the run directory."""
    if cfg.resume is not None:
        saved = runs.load_config(cfg.resume)
        # The run's own config, except what a resume may change: how far to go and how to show it.
        keep = {k: getattr(cfg, k) for k in ("progress", "tensorboard")}
        if cfg.steps is not None:
            keep["steps"] = cfg.steps
        saved.update(run_dir=cfg.resume, resume=cfg.resume, **keep)
        cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    cfg = resolve(cfg)

    env, spec = make(cfg.env, **cfg.env_kwargs)
    eval_env, _ = make(cfg.env, **cfg.env_kwargs)
    model, sac, term_fn = _components(cfg, spec.obs_dim, spec.act_dim)
    st = _fresh_state(cfg, model, sac, spec.obs_dim, spec.act_dim)

    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        st = _restore(runs.load_checkpoint(run_dir), st, cfg)
    else:
        name = f"{'sac' if cfg.real_ratio >= 1.0 else 'mbpo'}-{cfg.env}-s{cfg.seed}"
        run_dir = Path(cfg.run_dir) if cfg.run_dir else runs.new_run_dir(cfg.run_root, name)
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.save_config(run_dir, cfg, algorithm="sac" if cfg.real_ratio >= 1.0 else "mbpo")
    logger = runs.MetricsLogger(run_dir, tensorboard=cfg.tensorboard)
    logger.truncate_after(st["t"])  # rows after the checkpoint are re-done by this run

    use_model = cfg.real_ratio < 1.0
    if use_model and st["model_fitted"] and int(st["fake"].size) == 0:
        # resumed from a slim checkpoint (`slim_checkpoint`: no model buffer): refill it with one rollout batch
        # of the current length from the current model and policy before any policy update samples from it
        st["key"], k_roll = jax.random.split(st["key"])
        start = st["real"].sample(st["np_rng"], cfg.rollout_batch_size).obs
        st["fake"], _ = branched_rollout(model, st["model"], sac.sample_action, st["sac"].actor, jnp.asarray(start),
                                         st["k"], st["fake"], k_roll, term_fn)
    if st["obs"] is None or st["env_state"] is None:
        st["obs"], _ = env.reset(seed=cfg.seed + st["episode"]["count"])
    else:  # continue the interrupted episode exactly where it was
        env.reset(seed=cfg.seed)
        set_env_state(env, st["env_state"])
    n_real = cfg.sac_batch_size if not use_model else int(round(cfg.sac_batch_size * cfg.real_ratio))
    mean_act = jax.jit(sac.mean_action)
    bar = runs.ProgressBar(cfg.steps, f"{'mbpo' if use_model else 'sac'} {cfg.env}", cfg.progress, st["t"])
    evals = [(r["step"], r["eval/return_mean"]) for r in runs.read_metrics(run_dir) if "eval/return_mean" in r] \
        if (run_dir / "metrics.jsonl").exists() else []
    timer = dict(env=0.0, model=0.0, rollout=0.0, policy=0.0)
    last_info: dict[str, Any] = {}

    try:
        while st["t"] < cfg.steps:
            t = st["t"]
            learning = t >= cfg.init_steps
            since = t - cfg.init_steps

            if learning and use_model and since % cfg.model_train_freq == 0:
                # 2. fit the model on all of D_env (maximum likelihood, holdout early stopping, elites)
                logger.log(t, {f"time/{k_}": v for k_, v in timer.items()})
                tic = time.perf_counter()
                st["key"], k_fit, k_roll = jax.random.split(st["key"], 3)
                try:
                    st["model"], info = fit(
                        model, st["model"], st["real"].all(), k_fit, holdout_ratio=cfg.holdout_ratio,
                        max_holdout=cfg.max_holdout, batch_size=cfg.model_batch_size,
                        max_epochs=cfg.model_max_epochs, patience=cfg.model_patience,
                        min_epoch_steps=cfg.model_min_epoch_steps,
                    )
                    st["model_fitted"] = True
                    logger.log(t, info)
                    last_info["mse"] = info["model/holdout_mse"]
                except ModelDivergedError as e:
                    if not st["model_fitted"]:
                        raise RuntimeError(f"the first model fit diverged ({e}); lower model_lr") from e
                    msg = f"model fit at step {t} diverged ({e}); kept the last good model"
                    logger.log(t, {"model/diverged": 1.0})
                    _warn(msg)
                timer["model"] += time.perf_counter() - tic
                # 3. branched rollouts of length k from states sampled uniformly from D_env
                tic = time.perf_counter()
                k = rollout_length(cfg.rollout_schedule, since // cfg.epoch_length)
                if k != st["k"]:
                    st["fake"] = device_buffer_set_limit(st["fake"], model_buffer_size(cfg, k))
                    st["k"] = k
                start = st["real"].sample(st["np_rng"], cfg.rollout_batch_size).obs
                st["fake"], rinfo = branched_rollout(
                    model, st["model"], sac.sample_action, st["sac"].actor, jnp.asarray(start), k,
                    st["fake"], k_roll, term_fn,
                )
                rinfo = {k_: float(v) for k_, v in rinfo.items()}
                logger.log(t, {**rinfo, "rollout/length": k, "rollout/buffer_size": int(st["fake"].size)})
                timer["rollout"] += time.perf_counter() - tic

            # 1. act in the real environment (uniformly random during the initial exploration)
            tic = time.perf_counter()
            if learning:
                action, st["key"] = act(sac, st["sac"].actor, jnp.asarray(st["obs"], jnp.float32), st["key"])
                action = np.asarray(action)
            else:
                action = st["np_rng"].uniform(-1.0, 1.0, spec.act_dim).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            st["real"].add(st["obs"], action, reward, next_obs, float(terminated))
            ep = st["episode"]
            ep["ret"] += float(reward)
            ep["len"] += 1
            if terminated or truncated:
                logger.log(t + 1, {"train/episode_return": ep["ret"], "train/episode_length": ep["len"]})
                ep.update(ret=0.0, len=0, count=ep["count"] + 1)
                next_obs, _ = env.reset(seed=cfg.seed + ep["count"])
            st["obs"] = next_obs
            timer["env"] += time.perf_counter() - tic

            # 4. G policy updates on batches mixing D_env (real_ratio) and D_model
            if learning:
                tic = time.perf_counter()
                real = st["real"].sample(st["np_rng"], (cfg.updates_per_step, n_real))
                n_model = cfg.sac_batch_size - n_real if use_model else 0
                st["sac"], sinfo, st["key"] = policy_updates(sac, st["sac"], real, st["fake"], st["key"], n_model)
                jax.block_until_ready(st["sac"])  # so that the timers attribute this time to the policy
                timer["policy"] += time.perf_counter() - tic
            st["t"] = t = t + 1

            if t % cfg.eval_every == 0 or t == cfg.steps:
                mean, std, _ = evaluate(
                    eval_env, lambda o: np.asarray(mean_act(st["sac"].actor, jnp.asarray(o[None])))[0],
                    cfg.eval_episodes, seed=10_000 + cfg.seed,
                )
                evals.append((t, mean))
                row = {"eval/return_mean": mean, "eval/return_std": std, **{f"time/{k_}": v for k_, v in timer.items()}}
                if learning:
                    row.update({k_: float(v) for k_, v in sinfo.items()})
                logger.log(t, row)
                runs.plot_runs([run_dir], run_dir / "curve.png", title=f"{run_dir.name}")
                last_info["ret"] = mean
            if t % cfg.checkpoint_every == 0 or t == cfg.steps:
                st["env_state"] = get_env_state(env)
                runs.save_checkpoint(run_dir, _checkpoint_payload(st, cfg))
            if t % 50 == 0 or t == cfg.steps:
                status = "  ".join(
                    s for s in (
                        f"eval {last_info['ret']:.1f}" if "ret" in last_info else "",
                        f"model mse {last_info['mse']:.3g}" if "mse" in last_info else "",
                        f"k={st['k']}" if use_model and learning else "",
                    ) if s
                )
                bar.update(t, status)
    finally:
        bar.close()
        logger.close()
        env.close()
        eval_env.close()

    final = [r for r in runs.read_metrics(run_dir) if "eval/return_mean" in r][-1]
    return Result(run_dir, st["t"], final["eval/return_mean"], final["eval/return_std"], evals)


def _plain(x: Any) -> Any:
    """Tuples and lists compare equal after this (configs round-trip through JSON)."""
    return json.loads(json.dumps(x, default=list))


def _warn(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(f"[yellow]warning:[/yellow] {msg}")


def load_policy(run_dir: str | Path):
    """The deterministic policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    saved = runs.load_config(run_dir)
    cfg = resolve(Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    env.close()
    _, sac, _ = _components(cfg, spec.obs_dim, spec.act_dim)
    payload = runs.load_checkpoint(run_dir)
    sac_state = runs.check_like("sac", payload["sac"], sac.init(jax.random.key(0)))
    mean_act = jax.jit(sac.mean_action)
    return (lambda o: np.asarray(mean_act(sac_state.actor, jnp.asarray(o[None])))[0]), cfg
