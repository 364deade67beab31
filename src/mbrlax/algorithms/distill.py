"""Policy distillation (Rusu et al. 2016, "Policy distillation"; the lecture's "one student, many teachers"):
train one student policy π_θ(u|x) to match several teachers by minimizing the KL to their action
distributions on the states the teachers (and then the student) visit.

    for each condition i: a teacher π_i (here: iLQR on the known model from initial state i, executed as the
        time-varying linear-Gaussian controller N(U_t + K_t (x − X_t), σ² Q_uu⁻¹))            # 1. teachers
    D ← states from running each teacher (with its noise), labelled with its action distribution  # 2. data
    repeat: θ ← argmin Σ_{x∈D} KL(π_teacher(·|x) ‖ π_θ(·|x))                                   # 3. distill
            (DAgger rounds: run the student, label its states with the teacher of that condition, add to D)

The student is a Gaussian MLP on the observation with a state-independent diagonal covariance, so the KL
has a closed form: ½[tr(Σ_s⁻¹Σ_t) + (μ_s − μ_t)ᵀΣ_s⁻¹(μ_s − μ_t) − A + log|Σ_s| − log|Σ_t|]. It must
reach the target from every condition without the teachers (evaluated on its mean). Pure-JAX environments only
(the teachers need the known dynamics).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

from mbrlax import runs
from mbrlax.algorithms import gps
from mbrlax.algorithms import ilqr as ilqr_alg
from mbrlax.algorithms.common import RunOptions, fill_preset
from mbrlax.algorithms.local_common import (
    ConditionOptions,
    ConditionResult,
    CostOptions,
    condition_result,
    refuse_resume,
)
from mbrlax.envs import jax_envs
from mbrlax.envs.make import make
from mbrlax.planning import ilqr as il

DEFAULTS: dict[str, Any] = dict(cost="reach", w_dist=1.0, w_ctrl=0.1, final_weight=1.0, success_dist=0.05,
                                train_seeds=(0, 1, 2, 3), test_seeds=(100, 101, 102, 103))
PRESETS: dict[str, dict[str, Any]] = {
    "mbrlax/PointMass-v0": dict(success_dist=0.1),
    "mbrlax/Arm2-v0": dict(success_dist=0.05),
}


@dataclass
class Config(ConditionOptions, CostOptions, RunOptions):
    """Policy distillation of per-condition iLQR teachers into one neural student."""

    env: str = "mbrlax/PointMass-v0"
    """A pure-JAX environment id (the teachers plan on its known dynamics)."""
    seed: int = 0
    """Seed of the teachers' noise, iLQR initial guesses and the student."""
    teacher_iters: int = 50
    """iLQR iterations per teacher."""
    teacher_noise: float = 1.0
    """σ²: teacher covariance = σ² Q_uu⁻¹ (the max-entropy controller at σ² = 1)."""
    samples: int = 5
    """Noisy teacher trajectories per condition."""
    dagger_rounds: int = 2
    """Rounds of running the student and relabelling its states with the teachers."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the student MLP."""
    lr: float = 1e-3
    """Adam learning rate of the distillation."""
    epochs: int = 300
    """Full-batch Adam steps per distillation round."""
    # A run takes seconds and keeps no resumable state: the student and teachers are saved once, at the end.
    resume: Annotated[str | None, tyro.conf.Suppress] = None
    checkpoint_every: Annotated[int | None, tyro.conf.Suppress] = None


Result = ConditionResult


def resolve(cfg: Config) -> Config:
    if cfg.env not in jax_envs.JAX_ENVS:
        raise ValueError(f"distill trains iLQR teachers on known dynamics: '{cfg.env}' is not a pure-JAX env")
    return fill_preset(cfg, PRESETS.get(cfg.env, {}), DEFAULTS)


# ---- the student and the KL --------------------------------------------------------------------------------


def init_student(hidden, obs_dim: int, act_dim: int, key: jax.Array) -> dict:
    pol = gps.init_policy(tuple(hidden), obs_dim, act_dim, key)
    return dict(params=pol["params"], obs_mean=pol["obs_mean"], obs_std=pol["obs_std"], log_std=jnp.full(act_dim, -1.0))


def gaussian_kl(mu_t: jax.Array, cov_t: jax.Array, mu_s: jax.Array, log_std_s: jax.Array) -> jax.Array:
    """KL(N(mu_t, cov_t) ‖ N(mu_s, diag(exp(2 log_std_s)))) for batches P×A, P×A×A, P×A, A -> P."""
    var_s = jnp.exp(2 * log_std_s)
    A = mu_t.shape[-1]
    tr = jnp.einsum("...aa->...", cov_t / var_s[:, None])
    d = mu_s - mu_t
    logdet_t = jnp.linalg.slogdet(cov_t)[1]
    return 0.5 * (tr + jnp.sum(d**2 / var_s, -1) - A + jnp.sum(2 * log_std_s) - logdet_t)


@partial(jax.jit, static_argnames=("hidden", "act_dim", "epochs", "lr"))
def distill_step(hidden: tuple[int, ...], act_dim: int, student: dict, obs: jax.Array, mu_t: jax.Array,
                 cov_t: jax.Array, epochs: int, lr: float) -> tuple[dict, jax.Array]:
    """Minimize the mean KL(teacher ‖ student) over P states (obs P×D, teacher means P×A, covariances P×A×A)."""
    student = dict(student, obs_mean=obs.mean(0), obs_std=obs.std(0) + 1e-3)
    trainable = dict(params=student["params"], log_std=student["log_std"])
    opt = optax.adam(lr)

    def loss(tr):
        mu_s = gps.policy_mean(hidden, act_dim, dict(student, params=tr["params"]), obs)
        return gaussian_kl(mu_t, cov_t, mu_s, tr["log_std"]).mean()

    def step(carry, _):
        tr, s = carry
        v, g = jax.value_and_grad(loss)(tr)
        up, s = opt.update(g, s)
        return (optax.apply_updates(tr, up), s), v

    (tr, _), losses = jax.lax.scan(step, (trainable, opt.init(trainable)), None, length=epochs)
    return dict(student, **tr), losses[-1]


# ---- the teachers ------------------------------------------------------------------------------------------


def make_teacher(env: jax_envs.JaxEnv, gym_env, seed: int, fns: tuple[Callable, Callable, Callable], T: int, iters: int,
                 noise: float, key: jax.Array) -> dict:
    """iLQR from the initial state of reset(seed): the plan (X, U, K) and its covariance σ² Q_uu⁻¹."""
    obs, _ = gym_env.reset(seed=seed)
    x0 = jnp.asarray(ilqr_alg.state_from_obs(env, obs))
    res = il.ilqr(*fns, x0, 0.1 * jax.random.normal(key, (T, env.act_dim)), max_iters=iters, tol=1e-6)
    Quu = jnp.where(jnp.isfinite(res.Quu), res.Quu, jnp.eye(env.act_dim))
    cov = noise * jnp.linalg.inv(Quu)
    return dict(X=np.asarray(res.X), U=np.asarray(res.U), K=np.asarray(res.K),
                cov=np.asarray(0.5 * (cov + jnp.swapaxes(cov, -1, -2))))


def teacher_action(env: jax_envs.JaxEnv, teacher: dict, dims, t: int, obs: np.ndarray) -> np.ndarray:
    x = ilqr_alg.align(jnp.asarray(ilqr_alg.state_from_obs(env, obs)), jnp.asarray(teacher["X"][t]), dims)
    return teacher["U"][t] + teacher["K"][t] @ (np.asarray(x) - teacher["X"][t])


def rollouts(gym_env, env, teacher, seed: int, T: int, n: int, rng, act_student=None):
    """n episodes from reset(seed): the noisy teacher (act_student None) or the student's mean; every visited
    observation is labelled with the teacher's action distribution. Returns (obs, teacher means, covs, return, dist)."""
    dims = ilqr_alg.angle_dims(env)
    O, M, C, rets, dists = [], [], [], [], []
    for _ in range(n):
        obs, _ = gym_env.reset(seed=seed)
        ret = 0.0
        for t in range(T):
            mu = teacher_action(env, teacher, dims, t, obs)
            O.append(obs)
            M.append(mu)
            C.append(teacher["cov"][t])
            if act_student is None:
                u = mu + np.linalg.cholesky(teacher["cov"][t]) @ rng.normal(size=mu.shape)
            else:
                u = act_student(obs)
            obs, r, _, _, _ = gym_env.step(np.clip(u, -1, 1).astype(np.float32))
            ret += float(r)
        rets.append(ret)
        dists.append(float(np.linalg.norm(obs[-2:])))
    return np.array(O), np.array(M), np.array(C), np.array(rets), np.array(dists)


def train(cfg: Config) -> Result:
    """Teachers by iLQR per condition, then distillation with DAgger rounds; evaluates the student alone."""
    refuse_resume(cfg, "distill")
    cfg = resolve(cfg)
    gym_env, spec = make(cfg.env)
    env = jax_envs.load(cfg.env)
    T, M, A = spec.max_episode_steps, len(cfg.train_seeds), spec.act_dim
    icfg = ilqr_alg.resolve(ilqr_alg.Config(env=cfg.env, cost=cfg.cost, w_dist=cfg.w_dist, w_ctrl=cfg.w_ctrl,
                                            final_weight=cfg.final_weight))
    fns = ilqr_alg.planner_fns(env, icfg.cost, icfg.w_dist, icfg.w_ctrl, icfg.final_weight, icfg.action_penalty)
    rng, key = np.random.default_rng(cfg.seed), jax.random.key(cfg.seed)
    hidden = tuple(cfg.hidden)
    total = (cfg.dagger_rounds + 1) * M * T  # the student's own evaluation steps, as the steps of its rounds
    with gym_env, runs.Run(cfg, "distill", f"distill-{cfg.env.replace('/', '_')}-s{cfg.seed}", total) as run:
        # 1. one teacher per condition
        teachers, data, teacher_rets = [], [], []
        for i, s in enumerate(cfg.train_seeds):
            key, k = jax.random.split(key)
            with run.timer("teachers"):
                teachers.append(make_teacher(env, gym_env, int(s), fns, T, cfg.teacher_iters, cfg.teacher_noise, k))
                # 2. the teachers' own (noisy) state distribution, labelled with their action distributions
                data.append(rollouts(gym_env, env, teachers[-1], int(s), T, cfg.samples, rng)[:3])
                noiseless = dict(teachers[-1], cov=0 * teachers[-1]["cov"] + 1e-12 * np.eye(A))
                teacher_rets.append(rollouts(gym_env, env, noiseless, int(s), T, 1, rng)[3][0])
            run.progress(0, teachers=f"teacher {i + 1}/{M}")
        key, k = jax.random.split(key)
        student = init_student(hidden, spec.obs_dim, A, k)
        for rnd in range(cfg.dagger_rounds + 1):
            # 3. distill: minimize KL(teacher ‖ student) on all states gathered so far
            with run.timer("distill"):
                O, Mu, C = (jnp.asarray(np.concatenate(d), jnp.float32) for d in zip(*data, strict=True))
                student, loss = distill_step(hidden, A, student, O, Mu, C, cfg.epochs, cfg.lr)
            act = gps.mean_policy(hidden, A, student)
            with run.timer("eval"):
                tr = [rollouts(gym_env, env, teacher, int(s), T, 1, rng, act)
                      for teacher, s in zip(teachers, cfg.train_seeds, strict=True)]
                r_te, d_te = gps.evaluate_global(gym_env, hidden, A, student, gps.conditions(cfg.test_seeds, None), T)
            r_tr, d_tr = np.array([t_[3][0] for t_ in tr]), np.array([t_[4][0] for t_ in tr])
            step = (rnd + 1) * M * T
            run.record_eval(step, float(r_tr.mean()), float(r_tr.std()), extra={
                "distill/kl": float(loss), "eval/train_success": float((d_tr < cfg.success_dist).mean()),
                "eval/test_success": float((d_te < cfg.success_dist).mean()),
                "eval/test_return_mean": float(r_te.mean()), "teacher/return_mean": float(np.mean(teacher_rets))})
            # DAgger: the student's own states, labelled by the teacher of each condition
            if rnd < cfg.dagger_rounds:
                data.extend(t_[:3] for t_ in tr)
            run.progress(step, teachers=None,
                         kl=f"KL {float(loss):.3f}  success {float((d_tr < cfg.success_dist).mean()):.2f}")
        run.save(step, dict(student=runs.to_host(student), teachers=teachers))
        return condition_result(run, step)


def load_policy(run_dir: str | Path):
    """The student's mean action as `act(obs) -> action`."""
    cfg = resolve(runs.config_from_dict(Config, runs.load_config(run_dir)))
    student = runs.load_checkpoint(run_dir)["student"]
    return gps.mean_policy(cfg.hidden, student["log_std"].shape[-1], student), cfg
