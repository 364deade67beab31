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

Deviations, each deliberate: the ensemble also normalizes its targets (as in mbrlax's MBPO); SAC's batches
are drawn with replacement; the paper trains for 1000 epochs, the benchmark budgets here are far smaller
(docs/mopo.md gives the numbers).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from mbrlax import runs
from mbrlax.agents.sac import SAC, SACState
from mbrlax.algorithms.common import Result as BaseResult
from mbrlax.data import offline
from mbrlax.data.replay import (
    DeviceBuffer,
    device_buffer,
    device_buffer_add,
    device_buffer_from_host,
    device_buffer_sample,
    device_buffer_to_host,
)
from mbrlax.envs import known_fns
from mbrlax.envs.make import make
from mbrlax.evaluation import evaluate
from mbrlax.models import penalties
from mbrlax.models.ensemble import EnsembleModel, ModelState
from mbrlax.models.fit import fit
from mbrlax.types import TermFn, Transition

# Values a preset may set; `None` in a Config means "the preset's value for this dataset, else DEFAULTS".
DEFAULTS: dict[str, Any] = dict(
    # The authors' base config (tianheyu927/mopo examples/config/d4rl/base.py; 1000 epochs in the paper).
    horizon=5,
    lam=1.0,
    epochs=1000,
    epoch_length=1000,
    rollout_freq=1000,
    rollout_batch_size=50_000,
    model_retain_epochs=5,
    real_ratio=0.05,
    target_entropy=-3.0,
    eval_every=1000,
    eval_episodes=10,
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
class Config:
    """MOPO. Fields left as None take the preset of the dataset (see PRESETS), else DEFAULTS."""

    dataset: str = ""
    """Path of a Minari dataset directory (make one with `mbrlax dataset make`)."""
    env: str | None = None
    """Environment of the dataset (None: the one the dataset records); used only for evaluation."""
    seed: int = 0
    """Seed of everything: two runs with the same seed are identical."""
    penalty: Penalty = "max_aleatoric"
    """Uncertainty penalty u(s, a): max_aleatoric (paper), disagreement, mean_gap_max, mean_gap_mean, prediction_error."""
    lam: float | None = None
    """λ: the penalized reward is r̂ − λ·u(s, a)."""
    horizon: int | None = None
    """h: length of the branched model rollouts."""
    epochs: int | None = None
    """Epochs of `epoch_length` SAC gradient steps (paper: 1000)."""
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
    model_hidden: tuple[int, ...] | None = None
    """Hidden layer widths of each ensemble member."""
    penalty_members: Literal["all", "elites"] = "all"
    """Members the penalty is computed over: all (the authors' code) or the elites only."""
    ensemble_size: int = 7
    """Ensemble members (paper: 7)."""
    num_elites: int = 5
    """Members used for rollouts, by holdout error (paper: 5)."""
    model_lr: float = 1e-3
    model_batch_size: int = 256
    holdout_ratio: float = 0.2
    max_holdout: int = 5000
    model_patience: int = 5
    """Stop fitting after this many epochs without a 1 % holdout improvement."""
    model_max_epochs: int = 200
    learn_termination: bool | None = None
    """Learn a termination head; None: only when mbrlax knows no termination function for the env."""
    sac_hidden: tuple[int, ...] = (256, 256)
    sac_lr: float = 3e-4
    sac_batch_size: int = 256
    gamma: float = 0.99
    tau: float = 0.005
    updates_per_call: int = 250
    """SAC gradient steps fused into one device call (a divisor of rollout_freq and eval_every)."""
    run_root: str = "runs"
    """Where run directories are created."""
    run_dir: str | None = None
    """Use exactly this run directory (created if needed) instead of a new one under run_root."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint."""
    checkpoint_every: int | None = None
    """Checkpoint every this many gradient steps; None: every 10 epochs."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True


@dataclass
class Result(BaseResult):
    final_normalized_score: float | None = None


def preset_key(ds: offline.OfflineDataset) -> str:
    return f"{offline.env_slug(ds.env_id)}-{ds.meta.get('kind', '')}"


def resolve(cfg: Config, ds: offline.OfflineDataset) -> Config:
    """Fill every None from the dataset's preset, then DEFAULTS; validate ranges."""
    preset = PRESETS.get(preset_key(ds), {})
    filled = {k: (preset.get(k, v) if getattr(cfg, k) is None else getattr(cfg, k)) for k, v in DEFAULTS.items()}
    cfg = dataclasses.replace(cfg, env=cfg.env or ds.env_id, **filled)
    if cfg.checkpoint_every is None:
        cfg = dataclasses.replace(cfg, checkpoint_every=10 * cfg.epoch_length)
    if cfg.penalty not in penalties.PENALTIES:
        raise ValueError(f"unknown penalty '{cfg.penalty}'; choose one of {', '.join(penalties.PENALTIES)}")
    if not 0.0 <= cfg.real_ratio <= 1.0:
        raise ValueError(f"real_ratio must be in [0, 1], got {cfg.real_ratio}")
    if cfg.lam < 0:
        raise ValueError(f"lam must be ≥ 0 (a penalty, not a bonus), got {cfg.lam}")
    for name in ("horizon", "epochs", "epoch_length", "rollout_freq", "rollout_batch_size", "eval_every",
                 "updates_per_call", "checkpoint_every"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")
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


@partial(jax.jit, static_argnames=("model", "policy", "term_fn", "penalty", "horizon", "elites_only"))
def penalized_rollout(
    model: EnsembleModel,
    model_state: ModelState,
    policy,
    policy_params: Any,
    start_obs: jax.Array,
    buffer: DeviceBuffer,
    key: jax.Array,
    *,
    horizon: int,
    lam: float | jax.Array,
    penalty: str,
    term_fn: TermFn | None = None,
    elites_only: bool = False,
) -> tuple[DeviceBuffer, dict]:
    """MOPO's branched rollouts: `horizon` steps from `start_obs` N×D through random elites, each reward
    replaced by r̂ − λ·u(s, a), every transition written into `buffer` until its rollout terminates.
    Termination: `term_fn` if given, else the learned head (probability > 0.5), else never."""
    n = start_obs.shape[0]
    learned = term_fn is None and model.learn_termination

    def step(carry, _):
        obs, alive, buffer, key = carry
        key, k_pi, k_model = jax.random.split(key, 3)
        action = policy(policy_params, obs, k_pi)
        next_obs, reward, term_prob, pred = model.sample_step(model_state, obs, action, k_model)
        u = penalties.from_prediction(penalty, pred, next_obs, reward,
                                      model_state.elites if elites_only else None)
        if term_fn is not None:
            terminated = term_fn(obs, action, next_obs)
        elif learned:
            terminated = term_prob > 0.5
        else:
            terminated = jnp.zeros((n,), bool)
        batch = Transition(obs, action, reward - lam * u, next_obs, terminated.astype(jnp.float32))
        buffer = device_buffer_add(buffer, batch, alive)
        w = alive.astype(jnp.float32)
        return (next_obs, alive & ~terminated, buffer, key), (w.sum(), (reward * w).sum(), (u * w).sum(), (u * w).max())

    init = (start_obs, jnp.ones((n,), bool), buffer, key)
    (_, alive, buffer, _), (count, r_sum, u_sum, u_max) = jax.lax.scan(step, init, None, length=horizon)
    total = jnp.maximum(count.sum(), 1.0)
    info = {
        "rollout/transitions": count.sum(),
        "rollout/mean_model_reward": r_sum.sum() / total,
        "rollout/mean_penalty": u_sum.sum() / total,
        "rollout/max_penalty": u_max.max(),
        "rollout/mean_penalized_reward": (r_sum.sum() - lam * u_sum.sum()) / total,
        "rollout/alive_fraction": alive.mean(),
    }
    return buffer, info


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


def _components(cfg: Config, obs_dim: int, act_dim: int):
    term_fn = known_fns.termination_fn(cfg.env)
    learn_term = cfg.learn_termination if cfg.learn_termination is not None else term_fn is None
    model = EnsembleModel(
        obs_dim, act_dim, ensemble_size=cfg.ensemble_size, num_elites=cfg.num_elites,
        hidden=cfg.model_hidden, learn_termination=learn_term, lr=cfg.model_lr,
    )
    sac = SAC(obs_dim, act_dim, hidden=cfg.sac_hidden, lr=cfg.sac_lr, gamma=cfg.gamma, tau=cfg.tau,
              target_entropy=cfg.target_entropy)
    return model, sac, (None if learn_term else term_fn)


def load_dataset(cfg: Config) -> offline.OfflineDataset:
    if not cfg.dataset:
        raise ValueError("no dataset given: pass --dataset PATH (make one with `mbrlax dataset make --env ENV "
                         "--kind KIND`)")
    return offline.load(cfg.dataset, env_id=cfg.env)


def _config_from_saved(saved: dict) -> Config:
    return Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})


def train(cfg: Config) -> Result:
    """Train MOPO on a fixed dataset; returns the final evaluation (and normalized score) and the run dir."""
    if cfg.resume is not None:
        saved = runs.load_config(cfg.resume)
        keep = {k: getattr(cfg, k) for k in ("progress", "tensorboard")}
        if cfg.epochs is not None:
            keep["epochs"] = cfg.epochs
        saved.update(run_dir=cfg.resume, resume=cfg.resume, **keep)
        cfg = _config_from_saved(saved)
    ds = load_dataset(cfg)
    cfg = resolve(cfg, ds)
    eval_env, spec = make(cfg.env, **ds.env_kwargs)
    raw_space = eval_env.unwrapped.action_space
    data = ds.transitions(raw_space.low, raw_space.high)
    model, sac, term_fn = _components(cfg, spec.obs_dim, spec.act_dim)
    total = cfg.epochs * cfg.epoch_length

    key = jax.random.key(cfg.seed)
    key, k_model, k_sac, k_fit = jax.random.split(key, 4)
    st: dict[str, Any] = dict(
        t=0, key=key, sac=sac.init(k_sac), model=model.init(k_model), model_info={},
        fake=device_buffer(model_buffer_size(cfg), spec.obs_dim, spec.act_dim),
    )
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        payload = runs.load_checkpoint(run_dir)
        for name in ("dataset", "penalty", "ensemble_size", "model_hidden", "sac_hidden", "seed", "horizon"):
            if _plain(getattr(cfg, name)) != _plain(payload["config"].get(name)):
                raise runs.CheckpointError(f"checkpoint was made with {name}={payload['config'].get(name)!r} but "
                                           f"this run has {name}={getattr(cfg, name)!r}; resume with `--resume` alone")
        st.update(t=int(payload["t"]), key=jax.random.wrap_key_data(jnp.asarray(payload["key"])),
                  sac=runs.check_like("sac", payload["sac"], st["sac"]),
                  model=runs.check_like("model", payload["model"], st["model"]), model_info=payload["model_info"],
                  fake=device_buffer_from_host(payload["fake"], st["fake"]))
    else:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else runs.new_run_dir(
            cfg.run_root, f"mopo-{preset_key(ds)}-{cfg.penalty}-s{cfg.seed}")
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.save_config(run_dir, cfg, algorithm="mopo")
    logger = runs.MetricsLogger(run_dir, tensorboard=cfg.tensorboard)
    logger.truncate_after(st["t"])
    evals = [(r["step"], r["eval/return_mean"]) for r in runs.read_metrics(run_dir) if "eval/return_mean" in r] \
        if (run_dir / "metrics.jsonl").exists() else []
    real = Transition(*(jnp.asarray(x) for x in data))  # the fixed dataset lives on the device
    n_real = int(round(cfg.sac_batch_size * cfg.real_ratio))
    n_model = cfg.sac_batch_size - n_real
    mean_act = jax.jit(sac.mean_action)
    has_ref = ds.ref_min_score is not None and ds.ref_max_score is not None
    bar = runs.ProgressBar(total, f"mopo {preset_key(ds)}", cfg.progress, st["t"])
    timer = dict(model=0.0, rollout=0.0, policy=0.0, eval=0.0)
    status: dict[str, float] = {}

    try:
        if st["t"] == 0 and not st["model_info"]:
            # 1. fit the ensemble on D_env by maximum likelihood (once: the data never changes)
            tic = time.perf_counter()
            st["model"], info = fit(
                model, st["model"], data, k_fit, holdout_ratio=cfg.holdout_ratio, max_holdout=cfg.max_holdout,
                batch_size=cfg.model_batch_size, max_epochs=cfg.model_max_epochs, patience=cfg.model_patience,
            )
            st["model_info"] = {k: v for k, v in info.items() if not isinstance(v, list)}
            logger.log(0, info)
            timer["model"] += time.perf_counter() - tic
        status["mse"] = st["model_info"].get("model/holdout_mse", float("nan"))

        while st["t"] < total:
            t = st["t"]
            if t % cfg.rollout_freq == 0:
                # 2. h-step rollouts from dataset states with the penalized reward r̂ − λ·u(s, a) -> D_model
                tic = time.perf_counter()
                st["key"], k_start, k_roll = jax.random.split(st["key"], 3)
                start = _start_states(real.obs, k_start, cfg.rollout_batch_size)
                st["fake"], rinfo = penalized_rollout(
                    model, st["model"], sac.sample_action, st["sac"].actor, start, st["fake"], k_roll,
                    horizon=cfg.horizon, lam=cfg.lam, penalty=cfg.penalty, term_fn=term_fn,
                    elites_only=cfg.penalty_members == "elites",
                )
                rinfo = {k: float(v) for k, v in rinfo.items()}
                logger.log(t, {**rinfo, "rollout/buffer_size": int(st["fake"].size)})
                status["u"] = rinfo["rollout/mean_penalty"]
                timer["rollout"] += time.perf_counter() - tic

            # 3. SAC on D_env ∪ D_model (real_ratio of each batch from the dataset)
            tic = time.perf_counter()
            g = cfg.updates_per_call
            st["sac"], sinfo, st["key"] = offline_updates(sac, st["sac"], real, st["fake"], st["key"], g, n_real, n_model)
            jax.block_until_ready(st["sac"])
            timer["policy"] += time.perf_counter() - tic
            st["t"] = t = t + g

            if t % cfg.eval_every == 0 or t == total:
                # 4. evaluate in the real environment: reporting only, nothing of it reaches the learner
                tic = time.perf_counter()
                mean, std, _ = evaluate(
                    eval_env, lambda o: np.asarray(mean_act(st["sac"].actor, jnp.asarray(o[None], jnp.float32)))[0],
                    cfg.eval_episodes, seed=10_000 + cfg.seed,
                )
                timer["eval"] += time.perf_counter() - tic
                evals.append((t, mean))
                row = {"eval/return_mean": mean, "eval/return_std": std,
                       **{k: float(v) for k, v in sinfo.items()}, **{f"time/{k}": v for k, v in timer.items()}}
                if has_ref:
                    row["eval/normalized_score"] = float(ds.normalized_score(mean))
                    status["score"] = row["eval/normalized_score"]
                logger.log(t, row)
                runs.plot_runs([run_dir], run_dir / "curve.png", title=run_dir.name)
                status["ret"] = mean
            if t % cfg.checkpoint_every == 0 or t == total:
                runs.save_checkpoint(run_dir, dict(
                    config=dataclasses.asdict(cfg), t=t, key=np.asarray(jax.random.key_data(st["key"])),
                    sac=runs.to_host(st["sac"]), model=runs.to_host(st["model"]), model_info=st["model_info"],
                    fake=device_buffer_to_host(st["fake"]),
                ))
            bar.update(t, "  ".join(s for s in (
                f"eval {status['ret']:.1f}" if "ret" in status else "",
                f"score {status['score']:.1f}" if "score" in status else "",
                f"u {status['u']:.3g}" if "u" in status else "",
                f"model mse {status['mse']:.3g}",
            ) if s))
    finally:
        bar.close()
        logger.close()
        eval_env.close()

    final = [r for r in runs.read_metrics(run_dir) if "eval/return_mean" in r][-1]
    return Result(run_dir, st["t"], final["eval/return_mean"], final["eval/return_std"], evals,
                  final.get("eval/normalized_score"))


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x, default=list))


def load_policy(run_dir: str | Path):
    """The deterministic policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    cfg = _config_from_saved(runs.load_config(run_dir))
    env, spec = make(cfg.env)
    env.close()
    _, sac, _ = _components(cfg, spec.obs_dim, spec.act_dim)
    payload = runs.load_checkpoint(run_dir)
    sac_state = runs.check_like("sac", payload["sac"], sac.init(jax.random.key(0)))
    mean_act = jax.jit(sac.mean_action)
    return (lambda o: np.asarray(mean_act(sac_state.actor, jnp.asarray(o[None], jnp.float32)))[0]), cfg
