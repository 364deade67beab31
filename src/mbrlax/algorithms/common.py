"""What every algorithm file shares: the config pieces (run, model, SAC options), the `Result` of `train`,
filling a Config from a preset, building the shared components from a config, and fit-or-keep.

The config pieces are dataclasses an algorithm's Config inherits from; an algorithm that needs another
default for a field redeclares it (e.g. `ensemble_size: int = 5`). Flag names and config.json keys are the
field names, the same in every algorithm.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import tyro

from mbrlax import runs

C = TypeVar("C")


@dataclass
class RunOptions:
    """Where a run is written and how it is shown; none of these change what is computed."""

    run_root: str = "runs"
    """Where run directories are created."""
    run_dir: str | None = None
    """Use exactly this run directory instead of a new one under run_root (refused if it holds files, unless
    --overwrite)."""
    overwrite: bool = False
    """Let a new run replace what --run-dir holds (its metrics and checkpoints are deleted)."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint, with its own config (only the run's length
    and how it is shown may change)."""
    checkpoint_every: int | None = None
    """Checkpoint every this many steps (the algorithm's unit); None: the algorithm's default."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Also write TensorBoard event files (metrics.jsonl is always written)."""


@dataclass
class OnlineOptions:
    """An online run in a Gymnasium environment: which one, with what seed, for how long, how it is evaluated.
    Fields left as None take the algorithm's preset for the environment."""

    env: str = "Pendulum-v1"
    """Gymnasium environment id; any id with Box observations and Box actions works."""
    seed: int = 0
    """Seed of everything: two runs with the same seed are identical."""
    steps: int | None = None
    """Total real environment steps, including the initial random exploration (may grow on a resume)."""
    init_steps: int | None = None
    """Steps of uniformly random actions before learning starts."""
    eval_episodes: int | None = None
    """Deterministic episodes per evaluation."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make (e.g. a truncated observation); Python API and presets only."""


@dataclass
class ModelOptions:
    """The probabilistic ensemble (models/ensemble.py) and how it is fitted (models/fit.py)."""

    ensemble_size: int = 7
    """Ensemble members (MBPO, MOPO: 7)."""
    num_elites: int = 5
    """Members used for rollouts, by holdout error (MBPO, MOPO: 5)."""
    model_hidden: tuple[int, ...] | None = None
    """Hidden layer widths of each ensemble member; None: the preset's."""
    model_lr: float = 1e-3
    """Adam learning rate of the model."""
    model_batch_size: int = 256
    """Minibatch size of model training, per member."""
    holdout_ratio: float = 0.2
    """Fraction of the data held out to measure each member's error (early stopping, elites)."""
    max_holdout: int = 5000
    """Cap on the holdout set size."""
    model_patience: int = 5
    """Stop fitting after this many epochs without a 1 % holdout improvement."""
    model_max_epochs: int | None = None
    """Cap on model-training epochs per fit; None: the preset's."""
    model_min_epoch_steps: int = 20
    """An epoch of model training is one pass over the data but at least this many minibatches (small data)."""
    learn_termination: bool | None = None
    """Learn a termination head; None: only when mbrlax knows no termination function for the env."""


@dataclass
class SACOptions:
    """Soft actor-critic (agents/sac.py)."""

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
    target_entropy: float | None = None
    """SAC's entropy target; None: the preset's, else -dim(A)."""


@dataclass
class Result:
    """What `train(cfg)` returns; algorithms with more to report subclass it."""

    run_dir: Path
    steps: int
    """Real environment steps (or the algorithm's own unit of progress) run in total."""
    final_return_mean: float
    final_return_std: float
    evals: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean evaluation return) of every evaluation."""


def fill_preset(cfg: C, preset: dict[str, Any], defaults: dict[str, Any]) -> C:
    """`cfg` with every field of `defaults` that is None in `cfg` taken from `preset`, else from `defaults`."""
    filled = {k: (preset.get(k, v) if getattr(cfg, k) is None else getattr(cfg, k)) for k, v in defaults.items()}
    return dataclasses.replace(cfg, **filled)  # type: ignore[type-var]  # C is always a Config dataclass


def check_positive(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be positive, got {getattr(cfg, name)}")


# ---- components from a config --------------------------------------------------------------------


def make_ensemble(cfg: Any, obs_dim: int, act_dim: int, learn_termination: bool):
    from mbrlax.models.ensemble import EnsembleModel

    return EnsembleModel(obs_dim, act_dim, ensemble_size=cfg.ensemble_size, num_elites=cfg.num_elites,
                         hidden=cfg.model_hidden, learn_termination=learn_termination, lr=cfg.model_lr)


def termination(cfg: Any):
    """(learn a termination head?, the known termination fn or None) for cfg.env and cfg.learn_termination."""
    from mbrlax.envs import known_fns

    term_fn = known_fns.termination_fn(cfg.env)
    learn = cfg.learn_termination if cfg.learn_termination is not None else term_fn is None
    return learn, (None if learn else term_fn)


def components(cfg: Any, obs_dim: int, act_dim: int):
    """(ensemble, SAC, known termination fn or None) of a config with ModelOptions and SACOptions (MBPO, MVE, MOPO)."""
    learn_term, term_fn = termination(cfg)
    return make_ensemble(cfg, obs_dim, act_dim, learn_term), make_sac(cfg, obs_dim, act_dim), term_fn


def make_sac(cfg: Any, obs_dim: int, act_dim: int):
    from mbrlax.agents.sac import SAC

    return SAC(obs_dim, act_dim, hidden=cfg.sac_hidden, lr=cfg.sac_lr, gamma=cfg.gamma, tau=cfg.tau,
               target_entropy=cfg.target_entropy)


def fit_kwargs(cfg: Any) -> dict[str, Any]:
    """models.fit.fit's keyword arguments from a ModelOptions config."""
    return dict(holdout_ratio=cfg.holdout_ratio, max_holdout=cfg.max_holdout, batch_size=cfg.model_batch_size,
                max_epochs=cfg.model_max_epochs, patience=cfg.model_patience,
                min_epoch_steps=cfg.model_min_epoch_steps)


def fit_or_keep(run: runs.Run, step: int, model: Any, state: Any, data: Any, key: Any, fitted: bool,
                **kwargs: Any) -> tuple[Any, bool, dict | None]:
    """Fit `model` on `data` (models.fit.fit with `kwargs`) and log its info. A diverged refit keeps the last good
    model (logged as model/diverged, with a warning); a diverged first fit is an error naming the fix.
    Returns (state, fitted, info or None)."""
    from mbrlax.models.fit import ModelDivergedError, fit

    try:
        with run.timer("model"):
            state, info = fit(model, state, data, key, **kwargs)
    except ModelDivergedError as e:
        if not fitted:
            raise RuntimeError(f"the first model fit diverged ({e}) on finite data; lower --model-lr") from e
        run.log(step, {"model/diverged": 1.0})
        runs.warn(f"model fit at step {step} diverged ({e}); kept the last good model")
        return state, fitted, None
    run.log(step, info)
    return state, True, info



def load_sac_policy(run_dir: Any, cls: type, resolve: Any, env_kwargs: dict | None = None) -> tuple[Any, Any]:
    """(act, cfg) of a SAC-based run's last checkpoint: act(obs) -> the deterministic action tanh(mean).
    `cls` is the algorithm's Config and `resolve` its resolve; the env (with `env_kwargs`, default the
    config's) only tells the sizes."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mbrlax.envs.make import make

    cfg = resolve(runs.config_from_dict(cls, runs.load_config(run_dir)))
    if env_kwargs is None:
        env_kwargs = getattr(cfg, "env_kwargs", None) or {}
    env, spec = make(cfg.env, **env_kwargs)
    env.close()
    sac = make_sac(cfg, spec.obs_dim, spec.act_dim)
    sac_state = runs.check_like("sac", runs.load_checkpoint(run_dir)["sac"], sac.init(jax.random.key(0)))
    mean_act = jax.jit(sac.mean_action)
    return (lambda o: np.asarray(mean_act(sac_state.actor, jnp.asarray(o[None], jnp.float32)))[0]), cfg
