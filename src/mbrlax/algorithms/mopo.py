"""MOPO: model-based offline policy optimization (Yu, Thomas, Yu, Ermon, Zou, Levine, Finn & Ma 2020).

Algorithm 2 of the paper, and where each line lives below:

    Require: reward penalty coefficient λ, rollout horizon h, rollout batch size b
    Train on batch data D_env an ensemble of N probabilistic dynamics {T̂_i(s', r | s, a)}   # 1. fit the model
    Initialize policy π and empty replay buffer D_model
    for epoch 1, 2, ... do
        for 1, 2, ..., b (in parallel) do                                                    # 2. penalized rollouts
            Sample state s_1 from D_env for the initialization of the rollout
            for j = 1, 2, ..., h do
                Sample an action a_j ~ π(s_j)
                Randomly pick dynamics T̂ from {T̂_i} and sample s_{j+1}, r_j ~ T̂(s_j, a_j)
                Compute r̃_j = r_j − λ·u(s_j, a_j)
                Add sample (s_j, a_j, r̃_j, s_{j+1}) to D_model
        Drawing samples from D_env ∪ D_model, use SAC to update π                           # 3. SAC

As in the authors' code (tianheyu927/mopo, built on MBPO's): an epoch is `epoch_length` SAC gradient steps;
the rollouts of one batch are done every `rollout_freq` steps; D_model keeps `model_retain_epochs` epochs
of them; each SAC batch draws a `real_ratio` fraction from D_env; the model is fitted once (the data is
fixed) by maximum likelihood with holdout early stopping and 5 elites of 7; rollouts sample a random elite
per transition. The penalty u is selectable (models/penalties.py): `max_aleatoric` (the paper's default),
`disagreement`, `mean_gap_max` / `mean_gap_mean`, `prediction_error`; by default it is computed over all
members as in the authors' code (`penalty_members="elites"` restricts it).

Offline means no environment interaction while training: the real environment is used only by the
evaluation (`# 4. evaluate`), for reporting, with the dataset's reference returns turned into D4RL's
normalized score 100·(R − R_random)/(R_expert − R_random).

The rollouts are rollout.py's `branched_rollout` (MBPO's kernel) with `penalty=`: one jitted loop over h that
predicts with every member once per step, samples a random elite per transition and writes r̃ straight into
the device buffer D_model. The run loop (runs.py) keeps the run directory, metrics, checkpoints and resume;
an epoch count may grow on a resume (`--resume RUN --epochs N`).

Deviations, each deliberate: the ensemble also normalizes its targets (as in mbrlax's MBPO); SAC's batches
are drawn with replacement; the paper trains for 1000 epochs, the benchmark budgets here are far smaller
(docs/mopo.md gives the numbers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np

from mbrlax import runs
from mbrlax.agents.sac import SAC, SACState
from mbrlax.algorithms import common
from mbrlax.data import offline
from mbrlax.data.replay import (
    DeviceBuffer,
    device_buffer,
    device_buffer_from_host,
    device_buffer_sample,
    device_buffer_to_host,
)
from mbrlax.envs.make import EnvSpec, make
from mbrlax.evaluation import evaluate
from mbrlax.models import penalties
from mbrlax.rollout import branched_rollout
from mbrlax.types import Transition

# Values a preset may set; `None` in a Config means "the preset's value for this dataset, else DEFAULTS".
DEFAULTS: dict[str, Any] = dict(
    # The authors' base config (tianheyu927/mopo examples/config/d4rl/base.py; 1000 epochs in the paper).
    horizon=5, lam=1.0, epochs=1000, epoch_length=1000, rollout_freq=1000, rollout_batch_size=50_000,
    model_retain_epochs=5, real_ratio=0.05, target_entropy=-3.0, eval_every=1000, eval_episodes=10,
    model_hidden=(200, 200, 200, 200),
)

# Per dataset "<env>-<kind>": the authors' h and λ (tianheyu927/mopo examples/config/d4rl/<env>_<kind>.py,
# which the paper's appendix table reports; "mixed" is D4RL's medium-replay).
PRESETS: dict[str, dict[str, Any]] = {
    "halfcheetah-random": dict(horizon=5, lam=0.5),
    "halfcheetah-medium": dict(horizon=1, lam=1.0),
    "halfcheetah-medium-replay": dict(horizon=5, lam=1.0),
    "halfcheetah-medium-expert": dict(horizon=5, lam=5.0),
    "hopper-random": dict(horizon=5, lam=1.0),
    "hopper-medium": dict(horizon=5, lam=5.0),
    "hopper-medium-replay": dict(horizon=5, lam=1.0),
    "hopper-medium-expert": dict(horizon=5, lam=1.0),
    # Not in the paper: small and fast, for tests and demos on Pendulum datasets.
    **{f"pendulum-{k}": dict(
        horizon=5, lam=1.0, epochs=20, epoch_length=500, rollout_freq=250, rollout_batch_size=2000,
        model_retain_epochs=2, target_entropy=-1.0, eval_every=1000, eval_episodes=5, model_hidden=(200, 200, 200),
    ) for k in offline.KINDS},
}

Penalty = Literal["max_aleatoric", "disagreement", "mean_gap_max", "mean_gap_mean", "prediction_error"]


@dataclass
class DatasetOptions:
    """What an offline algorithm learns from (MOPO, bc.py)."""

    dataset: str = ""
    """Path of a Minari dataset directory (make one with `mbrlax dataset make`)."""
    env: str | None = None
    """Environment of the dataset (None: the one the dataset records); used only for evaluation."""
    seed: int = 0
    """Seed of everything: two runs with the same seed are identical."""


@dataclass
class Config(common.SACOptions, common.ModelOptions, common.RunOptions, DatasetOptions):
    """MOPO. Fields left as None take the preset of the dataset (see PRESETS), else DEFAULTS."""

    penalty: Penalty = "max_aleatoric"
    """Uncertainty penalty u(s, a): max_aleatoric (paper), disagreement, mean_gap_max/_mean, prediction_error."""
    lam: float | None = None
    """λ: the penalized reward is r̂ − λ·u(s, a)."""
    horizon: int | None = None
    """h: length of the branched model rollouts."""
    epochs: int | None = None
    """Epochs of `epoch_length` SAC gradient steps (paper: 1000); may grow on a resume."""
    epoch_length: int | None = None
    """SAC gradient steps per epoch."""
    rollout_freq: int | None = None
    """Do a batch of model rollouts every this many gradient steps."""
    rollout_batch_size: int | None = None
    """Rollouts started from dataset states at each rollout batch (paper code: 50,000)."""
    model_retain_epochs: int | None = None
    """Epochs of model rollouts kept in D_model."""
    real_ratio: float | None = None
    """Fraction of each SAC batch drawn from the dataset (the rest from D_model)."""
    target_entropy: float | None = None
    """SAC's entropy target (the authors' code: −3 for every task)."""
    eval_every: int | None = None
    """Evaluate in the real environment (reporting only) every this many gradient steps."""
    eval_episodes: int | None = None
    """Episodes per evaluation."""
    penalty_members: Literal["all", "elites"] = "all"
    """Members the penalty is computed over: all (the authors' code) or the elites only."""
    model_max_epochs: int = 200
    """Cap on model-training epochs of the one fit."""
    updates_per_call: int = 250
    """SAC gradient steps fused into one device call (a divisor of rollout_freq, eval_every, checkpoint_every)."""
    checkpoint_every: int | None = None
    """Checkpoint every this many gradient steps; None: every 10 epochs."""


# ---- what bc.py shares: the dataset, an evaluation that reports D4RL's normalized score ----------------


@dataclass
class Result(common.Result):
    final_normalized_score: float | None = None


def load_dataset(cfg: Any) -> offline.OfflineDataset:
    """`cfg.dataset` (with `cfg.env` overriding its env), or an error saying how to make one."""
    if not cfg.dataset:
        raise ValueError("no dataset given: pass --dataset PATH (make one with `mbrlax dataset make --env ENV "
                         "--kind KIND`)")
    return offline.load(cfg.dataset, env_id=cfg.env)


def open_offline(cfg: Any, algorithm: str, resolve: Callable[[Any, offline.OfflineDataset], Any],
                 may_change: tuple[str, ...]) -> tuple[Any, offline.OfflineDataset, gym.Env, EnvSpec, Transition]:
    """What an offline run starts from: its config (`runs.prepare`: a resume's own, checked; then `resolve`d
    against the dataset), the dataset, the evaluation env and its spec, and the dataset as host transitions
    with actions in the agents' [-1, 1]."""
    cfg = runs.prepare(cfg, algorithm, may_change=may_change)
    ds = load_dataset(cfg)
    cfg = resolve(cfg, ds)
    env, spec = make(cfg.env, **ds.env_kwargs)
    raw = env.unwrapped.action_space
    return cfg, ds, env, spec, ds.transitions(raw.low, raw.high)


def evaluate_offline(run: runs.Run, step: int, env: gym.Env, act: Callable[[np.ndarray], np.ndarray],
                     ds: offline.OfflineDataset, episodes: int, seed: int, extra: dict | None = None) -> None:
    """Evaluate `act` in the real env (reporting only: nothing of it reaches the learner) and record it with
    eval/normalized_score = 100·(R − R_random)/(R_expert − R_random) when the dataset has reference returns."""
    with run.timer("eval"):
        mean, std, _ = evaluate(env, act, episodes, seed=seed)
    extra = dict(extra or {})
    if ds.ref_min_score is not None and ds.ref_max_score is not None:
        extra["eval/normalized_score"] = float(ds.normalized_score(mean))
        run.progress(step, score=f"score {extra['eval/normalized_score']:.1f}")
    run.record_eval(step, mean, std, extra)


def offline_result(run: runs.Run, ds: offline.OfflineDataset) -> Result:
    """The run's `Result` with the final evaluation's normalized score (when the dataset has reference returns)."""
    res = run.result(Result)
    if ds.ref_min_score is not None and ds.ref_max_score is not None:
        res.final_normalized_score = float(ds.normalized_score(res.final_return_mean))
    return res


# ---- MOPO ----------------------------------------------------------------------------------------------


def preset_key(ds: offline.OfflineDataset) -> str:
    return f"{offline.env_slug(ds.env_id)}-{ds.meta.get('kind', '')}"


def resolve(cfg: Config, ds: offline.OfflineDataset) -> Config:
    """Fill every None from the dataset's preset, then DEFAULTS; validate ranges."""
    cfg = common.fill_preset(cfg, PRESETS.get(preset_key(ds), {}), DEFAULTS)
    cfg = dataclasses.replace(cfg, env=cfg.env or ds.env_id)
    if cfg.checkpoint_every is None:
        cfg = dataclasses.replace(cfg, checkpoint_every=10 * cfg.epoch_length)
    if cfg.penalty not in penalties.PENALTIES:
        raise ValueError(f"unknown penalty '{cfg.penalty}'; choose one of {', '.join(penalties.PENALTIES)}")
    if not 0.0 <= cfg.real_ratio <= 1.0:
        raise ValueError(f"real_ratio must be in [0, 1], got {cfg.real_ratio}")
    if cfg.lam < 0:
        raise ValueError(f"lam must be ≥ 0 (a penalty, not a bonus), got {cfg.lam}")
    common.check_positive(cfg, "horizon", "epochs", "epoch_length", "rollout_freq", "rollout_batch_size",
                          "eval_every", "updates_per_call", "checkpoint_every")
    g = cfg.updates_per_call
    for name in ("rollout_freq", "eval_every", "checkpoint_every"):
        if getattr(cfg, name) % g:
            raise ValueError(f"{name}={getattr(cfg, name)} is not a multiple of updates_per_call={g}; "
                             f"choose updates_per_call dividing it")
    return cfg


def model_buffer_size(cfg: Config) -> int:
    """D_model keeps `model_retain_epochs` epochs of rollouts at h transitions each (authors' code)."""
    per_epoch = cfg.rollout_batch_size * max(cfg.epoch_length // cfg.rollout_freq, 1)
    return cfg.model_retain_epochs * per_epoch * cfg.horizon


@partial(jax.jit, static_argnames=("sac", "g", "n_real", "n_model"))
def offline_updates(
    sac: SAC, sac_state: SACState, real: Transition, model_buf: DeviceBuffer, key: jax.Array,
    g: int, n_real: int, n_model: int,
) -> tuple[SACState, dict, jax.Array]:
    """g SAC updates on batches of n_real dataset rows (all on the device) and n_model D_model rows."""
    key, k_real, k_model, k_update = jax.random.split(key, 4)
    idx = jax.random.randint(k_real, (g, n_real), 0, real.reward.shape[0])
    batch = jax.tree.map(lambda x: x[idx], real)
    if n_model > 0:
        fake = device_buffer_sample(model_buf, k_model, (g, n_model))
        batch = jax.tree.map(lambda r, f: jnp.concatenate([r, f], 1), batch, fake)
    sac_state, info = sac.update_many(sac_state, batch, k_update)
    return sac_state, info, key


@partial(jax.jit, static_argnames=("n",))
def _start_states(obs: jax.Array, key: jax.Array, n: int) -> jax.Array:
    return obs[jax.random.randint(key, (n,), 0, obs.shape[0])]


def _restore(saved: dict, fresh: dict) -> dict:
    st = dict(fresh, t=int(saved["t"]), key=saved["key"], fitted=bool(saved["fitted"]),
              model_mse=float(saved["model_mse"]))
    st["sac"] = runs.check_like("sac", saved["sac"], fresh["sac"])
    st["model"] = runs.check_like("model", saved["model"], fresh["model"])
    try:
        st["fake"] = device_buffer_from_host(saved["fake"], fresh["fake"])
    except (ValueError, KeyError) as e:
        raise runs.CheckpointError(f"checkpoint model buffer does not match this run: {e}") from e
    return st


def upgrade_legacy(old: dict) -> dict:
    """A format-1 (pickle) checkpoint's state in today's layout (`mbrlax checkpoint convert`)."""
    return dict(t=old["t"], key=jax.random.wrap_key_data(np.asarray(old["key"])), sac=old["sac"], model=old["model"],
                fitted=True, model_mse=float(old["model_info"].get("model/holdout_mse", float("nan"))),
                fake=old["fake"])


def train(cfg: Config) -> Result:
    """Train MOPO on a fixed dataset; returns the final evaluation (and normalized score) and the run dir."""
    cfg, ds, eval_env, spec, data = open_offline(cfg, "mopo", resolve, may_change=("epochs",))
    real = Transition(*(jnp.asarray(x) for x in data))  # the fixed dataset lives on the device
    model, sac, term_fn = common.components(cfg, spec.obs_dim, spec.act_dim)
    total, g = cfg.epochs * cfg.epoch_length, cfg.updates_per_call
    n_real = int(round(cfg.sac_batch_size * cfg.real_ratio))
    mean_act = jax.jit(sac.mean_action)

    def policy(o: np.ndarray) -> np.ndarray:
        return np.asarray(mean_act(st["sac"].actor, jnp.asarray(o[None], jnp.float32)))[0]

    name = f"mopo-{preset_key(ds)}-{cfg.penalty}-s{cfg.seed}"
    with runs.Run(cfg, "mopo", name, total, unit="gradient steps") as run, eval_env:
        key, k_model, k_sac, k_fit = jax.random.split(jax.random.key(cfg.seed), 4)
        st = dict(t=0, key=key, sac=sac.init(k_sac), model=model.init(k_model), fitted=False, model_mse=float("nan"),
                  fake=device_buffer(model_buffer_size(cfg), spec.obs_dim, spec.act_dim))
        if run.resumed:
            st = _restore(run.resumed, st)
        if not st["fitted"]:
            # 1. fit the ensemble on D_env by maximum likelihood (once: the data never changes)
            st["model"], st["fitted"], info = common.fit_or_keep(
                run, 0, model, st["model"], data, k_fit, False, **common.fit_kwargs(cfg))
            st["model_mse"] = float(info["model/holdout_mse"])
        run.progress(st["t"], mse=f"model mse {st['model_mse']:.3g}")

        while st["t"] < total:
            t = st["t"]
            if t % cfg.rollout_freq == 0:
                # 2. h-step rollouts from dataset states with the penalized reward r̂ − λ·u(s, a) -> D_model
                with run.timer("rollout"):
                    st["key"], k_start, k_roll = jax.random.split(st["key"], 3)
                    start = _start_states(real.obs, k_start, cfg.rollout_batch_size)
                    st["fake"], rinfo = branched_rollout(
                        model, st["model"], sac.sample_action, st["sac"].actor, start, cfg.horizon, st["fake"],
                        k_roll, term_fn, penalty=cfg.penalty, lam=cfg.lam, penalty_members=cfg.penalty_members)
                    rinfo = {k: float(v) for k, v in rinfo.items()}
                run.log(t, {**rinfo, "rollout/buffer_size": int(st["fake"].size)})
                run.progress(t, u=f"u {rinfo['rollout/mean_penalty']:.3g}")

            # 3. SAC on D_env ∪ D_model (real_ratio of each batch from the dataset)
            with run.timer("policy"):
                st["sac"], sinfo, st["key"] = offline_updates(sac, st["sac"], real, st["fake"], st["key"], g, n_real,
                                                              cfg.sac_batch_size - n_real)
                jax.block_until_ready(st["sac"])
            run.rejected(t, float(sinfo["guard/rejected"]))
            st["t"] = t = t + g

            if run.due(t, cfg.eval_every, total):
                # 4. evaluate in the real environment: reporting only, nothing of it reaches the learner
                evaluate_offline(run, t, eval_env, policy, ds, cfg.eval_episodes, 10_000 + cfg.seed,
                                 extra={k: float(v) for k, v in sinfo.items()})
            if run.due(t, cfg.checkpoint_every, total):
                run.save(t, dict(st, fake=device_buffer_to_host(st["fake"])))
            run.progress(t)
        return offline_result(run, ds)


def load_policy(run_dir: str | Path):
    """The deterministic policy of a run's last checkpoint, as `act(obs) -> action`, plus the config (already
    resolved: MOPO's presets need the dataset)."""
    return common.load_sac_policy(run_dir, Config, lambda cfg: cfg, env_kwargs={})
