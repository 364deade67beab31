"""MB-MPO: model-based meta-policy optimization (Clavera, Rothfuss, Schulman, Fujita, Asfour & Abbeel 2018).

Algorithm 1 of the paper, and where each line lives below:

    Initialize the policy π_θ and the models f_φ1, …, f_φK; D ← ∅
    repeat
        Sample trajectories from the real env with the adapted policies π_θ'_1 … π_θ'_K; add them to D
                                                                   # 1. collect real data (random at first)
        Train all models using D                                   # 2. fit the ensemble
        for all models f_φk do                                     # 3. meta-policy optimization, `meta_steps` times:
            Sample imaginary trajectories T_k from f_φk using π_θ          3a. (agents/maml.MAML.meta_step)
            Compute adapted parameters θ'_k = θ + α ∇_θ J_k(θ) using T_k   3b. inner step
            Sample imaginary trajectories T'_k from f_φk using π_θ'_k      3c.
        Update θ ← θ − β ∇_θ 1/K Σ_k J_k(θ'_k) using the T'_k              3d. outer TRPO step (KL ≤ δ)
    until the policy performs well in the real environment
    return the pre-update parameters θ

As in the authors' code (jonasrothfuss/model_ensemble_meta_learning): a meta-batch of `meta_batch_size` tasks,
task i using member i // (meta_batch_size / K), `rollouts` imagined trajectories per task of `horizon` steps
from the env's initial-state distribution; the inner surrogate mean[log π Â] (see agents/maml.py for it and
the two alternatives); TRPO on the mean of the adapted policies' surrogates with the KL of the adapted
policies; advantages from a linear-feature baseline refit per task, normalized per task; real data collected
with the adapted policies, one whole episode each in turn; the reward from the known reward function where
mbrlax has one. The evaluation runs the pre-update policy's mean action (the paper reports the pre-update
policy); `load_policy` returns the same.

Deviations, each deliberate: the models are mbrlax's deterministic ensemble (SiLU, input/target
normalization, bootstrapped minibatches, holdout early stopping with `model_patience`) instead of ReLU with
weight normalization and a rolling-average stop; where mbrlax knows no reward function (HalfCheetah) the
model predicts the reward; a predicted state that is not finite ends the imagined trajectory instead of the
authors' clipping to the env's observation bounds; the start states of imagined trajectories are a pool of
`start_pool` initial observations from seeded resets (the authors call env.reset() per trajectory); the
adapted policies that collect real data are computed from the final θ of the iteration (the authors reuse
the adaptation made just before the last outer step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mbrlax import runs
from mbrlax.agents.maml import INNER_TYPES, MAML, EnsembleDynamics
from mbrlax.algorithms import model_loop
from mbrlax.algorithms.common import ModelOptions, OnlineOptions, Result, RunOptions, check_positive
from mbrlax.algorithms.model_loop import Rounds
from mbrlax.envs.make import EnvSpec, make
from mbrlax.models.ensemble import EnsembleModel

# Values a preset may set; `None` in a Config means "the preset's value for this env, else DEFAULTS".
DEFAULTS: dict[str, Any] = dict(
    # The paper's MuJoCo settings (appendix A.3 and experiments/run_scripts/mb_mpo_train.py of the authors' code):
    # 100 iterations, 5000 random steps, then 20 tasks × 1 real episode of 200 steps per iteration.
    steps=5000 + 99 * 4000,
    init_steps=5000,
    steps_per_round=4000,
    meta_steps=30,  # num_maml_steps_per_iter
    meta_batch_size=20,
    rollouts=50,  # batch_size_dynamics_samples: imagined trajectories per task
    horizon=200,  # path_length_dyn = path_length_env
    inner_lr=1e-3,  # fast_lr
    max_kl=0.01,  # meta_step_size
    gamma=0.99,
    lam=1.0,  # rllab's gae_lambda default
    ensemble_size=5,  # num_models
    model_hidden=(512, 512),  # hidden_sizes_model
    model_max_epochs=500,  # dynamic_model_max_epochs
    eval_episodes=3,
    env_kwargs={},
)

PRESETS: dict[str, dict[str, Any]] = {
    # Paper Figure 1: HalfCheetah with 200-step episodes (path_length_env=200), otherwise DEFAULTS.
    "HalfCheetah-v5": dict(env_kwargs={"max_episode_steps": 200}),
    # Not in the paper: sized for a laptop CPU (one 200-step episode per round, one task per member, shorter
    # imagined trajectories with a shorter discount, as rl-baselines3-zoo's TRPO uses γ = 0.9 on Pendulum).
    "Pendulum-v1": dict(
        steps=4000, init_steps=400, steps_per_round=200, meta_steps=20, meta_batch_size=5, rollouts=50,
        horizon=100, gamma=0.95, lam=0.95, max_kl=0.02, model_hidden=(128, 128), model_max_epochs=100,
        eval_episodes=5,
    ),
    # The analytic test system: 100-step episodes, a tiny model.
    "mbrlax/LinearQuadratic-v0": dict(
        steps=1000, init_steps=200, steps_per_round=100, meta_steps=10, meta_batch_size=5, rollouts=20,
        horizon=50, gamma=0.95, lam=0.95, model_hidden=(32, 32), model_max_epochs=50,
    ),
}


@dataclass
class Config(OnlineOptions, ModelOptions, RunOptions):
    """MB-MPO. Fields left as None take the preset value of the environment (see PRESETS), else DEFAULTS."""

    steps_per_round: int | None = None
    """Real steps per round (iteration), collected by the adapted policies, one whole episode each in turn
    (paper: 20 × 200)."""
    meta_steps: int | None = None
    """Meta steps (imagine, inner step, imagine, one outer TRPO step) per round (paper: 30)."""
    meta_batch_size: int | None = None
    """Tasks per meta step, a multiple of ensemble_size; task i uses member i // (meta_batch_size / K) (paper: 20)."""
    rollouts: int | None = None
    """Imagined trajectories per task and per sampling (paper: 50)."""
    horizon: int | None = None
    """Length of the imagined trajectories, from the env's initial states; no bootstrap after it (paper: 200)."""
    inner_lr: float | None = None
    """α, the inner (adaptation) step size (paper: 1e-3)."""
    max_kl: float | None = None
    """δ, the outer TRPO step's mean-KL bound on the adapted policies (paper: 0.01)."""
    gamma: float | None = None
    """Discount (paper: 0.99)."""
    lam: float | None = None
    """GAE λ against the linear-feature baseline (paper: 1)."""
    ensemble_size: int | None = None
    """K, the models, each one task (paper: 5; its ablation uses 1, 5, 10, 20)."""
    num_elites: int | None = None
    """Unused by MB-MPO (every member is a task); None: ensemble_size."""
    model_max_epochs: int | None = None
    """At most this many epochs per model fit (warm-started from the last fit; paper: 500)."""
    probabilistic: bool = False
    """Gaussian-NLL members instead of the paper's deterministic MSE members (then rollouts sample their noise)."""
    inner_type: str = "log_likelihood"
    """Inner surrogate: 'log_likelihood' (the authors' code), 'likelihood_ratio' (ProMP's LVC) or 'dice'."""
    policy_hidden: tuple[int, ...] = (32, 32)
    """Hidden widths of the Gaussian MLP policy (tanh; paper: 32 × 32)."""
    init_log_std: float = 0.0
    """Initial log σ of the policy (the authors' init_std = 1)."""
    cg_iters: int = 10
    """Conjugate-gradient iterations of the outer TRPO step."""
    cg_damping: float = 1e-5
    """Damping of the Fisher-vector product (rllab's reg_coeff)."""
    use_known_reward: bool = True
    """Use mbrlax's known reward function when it has one (else the model's reward head)."""
    start_pool: int = 1000
    """Initial observations (seeded resets) that imagined trajectories start from."""
    clip_obs_margin: float | None = 0.5
    """Clip predicted observations to the range of D widened by this fraction of it on each side (the authors clip
    to the env's observation bounds); None: no clipping."""


def resolve(cfg: Config) -> Config:
    """Fill every None from the env's preset, then DEFAULTS; validate ranges."""
    cfg = model_loop.resolve(cfg, DEFAULTS, PRESETS)
    check_positive(cfg, "meta_steps", "meta_batch_size", "rollouts", "inner_lr", "max_kl", "start_pool")
    if cfg.meta_batch_size % cfg.ensemble_size:
        raise ValueError(f"meta_batch_size ({cfg.meta_batch_size}) must be a multiple of ensemble_size "
                         f"({cfg.ensemble_size}): every model is the task of meta_batch_size / K tasks")
    if cfg.inner_type not in INNER_TYPES:
        raise ValueError(f"inner_type must be one of {INNER_TYPES}, got {cfg.inner_type!r}")
    if not 0.0 <= cfg.lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {cfg.lam}")
    if cfg.clip_obs_margin is not None and cfg.clip_obs_margin < 0:
        raise ValueError(f"clip_obs_margin must be ≥ 0 (or None: no clipping), got {cfg.clip_obs_margin}")
    return cfg


def _components(cfg: Config, env: Any, spec: EnvSpec) -> tuple[EnsembleModel, MAML]:
    """The ensemble (every member a task) and the MAML agent whose tasks run in it."""
    model, reward_fn, term_fn = model_loop.model_and_fns(cfg, env, spec.obs_dim, spec.act_dim)
    agent = MAML(spec.obs_dim, spec.act_dim, EnsembleDynamics(model, reward_fn, term_fn),
                 cfg.meta_batch_size, hidden=cfg.policy_hidden, init_log_std=cfg.init_log_std, rollouts=cfg.rollouts,
                 horizon=cfg.horizon, gamma=cfg.gamma, lam=cfg.lam, inner_lr=cfg.inner_lr, inner_type=cfg.inner_type,
                 max_kl=cfg.max_kl, cg_iters=cfg.cg_iters, cg_damping=cfg.cg_damping)
    return model, agent


def start_pool(cfg: Config, n: int) -> jax.Array:
    """n initial observations of the env from seeded resets (seeds apart from training and evaluation): N×D."""
    env, _ = make(cfg.env, **cfg.env_kwargs)
    with env:
        base = 20_000_000 + 100_000 * cfg.seed
        return jnp.asarray(np.stack([env.reset(seed=base + i)[0] for i in range(n)]), jnp.float32)


def model_dyn(loop: Rounds, margin: float | None) -> tuple[Any, jax.Array, jax.Array]:
    """What the imagined trajectories step: (the ensemble's state, low D, high D), the bounds from all of D."""
    data = loop.buffer.all()
    seen = np.concatenate([data.obs, data.next_obs])
    low, high = seen.min(0), seen.max(0)
    pad = np.inf if margin is None else margin * (high - low)
    return loop.model_state, jnp.asarray(low - pad), jnp.asarray(high + pad)


def adapted_act(agent: MAML, loop: Rounds) -> Callable[[np.ndarray], np.ndarray]:
    """The real-data policy: episode j runs task (j mod T)'s adapted policy θ'_k, a Gaussian sample, clipped."""
    adapted, key = loop.agent_state.adapted, loop.next_key()

    def act(obs: np.ndarray) -> np.ndarray:
        task = jnp.int32(loop.episode % agent.tasks)
        k = jax.random.fold_in(key, loop.t)
        return np.asarray(agent.task_action(adapted, task, jnp.asarray(obs, jnp.float32), k))

    return act


def _mean_info(infos: dict) -> dict[str, float]:
    """Means over the meta steps of a round, plus the pre-update model return at its first and last step."""
    out = {k: float(np.mean(v)) for k, v in infos.items()}
    pre = np.asarray(infos["maml/pre_return"])
    return {**out, "maml/pre_return_first": float(pre[0]), "maml/pre_return_last": float(pre[-1])}


def train(cfg: Config) -> Result:
    """Train MB-MPO; returns the final evaluation (of the pre-update policy) and the run directory."""
    cfg = resolve(runs.prepare(cfg, "mbmpo", may_change=("steps",)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    model, agent = _components(cfg, env, spec)
    pool = start_pool(cfg, cfg.start_pool)
    with Rounds(cfg, "mbmpo", env, model, agent) as loop:
        # 1. collect real data: uniformly random actions before the first model
        loop.collect_initial(cfg.init_steps)
        while loop.t < cfg.steps:
            # 2. fit every model on all of D (the same data; different initializations and minibatches)
            loop.fit()
            # 3. meta-policy optimization, meta_steps times: imagine with π_θ in every model, inner step θ'_k,
            #    imagine with π_θ'_k, outer TRPO step on θ through the inner step; then the adapted policies of the
            #    final θ
            with loop.run.timer("policy"):
                dyn = model_dyn(loop, cfg.clip_obs_margin)
                loop.agent_state, infos = agent.optimize(loop.agent_state.policy, dyn, pool, loop.next_key(),
                                                         cfg.meta_steps)
                info = _mean_info(jax.device_get(infos))
            # 1. collect real data with the adapted policies, one whole episode each in turn
            loop.collect(adapted_act(agent, loop), cfg.steps_per_round)
            # evaluate the pre-update policy's mean action, checkpoint
            loop.end_round(info)
            loop.run.progress(min(loop.t, cfg.steps), gain=f"adapt {info['maml/adaptation_gain']:+.3g}")
        return loop.result()


def load_policy(run_dir: str | Path):
    """The pre-update (meta) policy's mean action of a run's last checkpoint, as `act(obs) -> action` (what the
    paper reports and the run's evaluations measure), plus the config."""
    return model_loop.load_policy(run_dir, Config, resolve, lambda cfg, env, spec: _components(cfg, env, spec)[1])
