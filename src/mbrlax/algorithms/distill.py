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

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrlax import runs
from mbrlax.algorithms import gps
from mbrlax.algorithms import ilqr as ilqr_alg
from mbrlax.algorithms import lqr_flm as flm
from mbrlax.algorithms.common import Result as BaseResult
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
class Config:
    """Policy distillation of per-condition iLQR teachers into one neural student."""

    env: str = "mbrlax/PointMass-v0"
    """A pure-JAX environment id (the teachers plan on its known dynamics)."""
    seed: int = 0
    """Seed of the teachers' noise, iLQR initial guesses and the student."""
    cost: str | None = None
    """Teachers' cost: 'reward', 'reach' or 'pendulum' (see ilqr.planner_fns)."""
    w_dist: float | None = None
    """Weight of the distance term of the teachers' cost."""
    w_ctrl: float | None = None
    """Weight of the control term of the teachers' cost."""
    final_weight: float | None = None
    """Multiplier of the teachers' final-state cost."""
    success_dist: float | None = None
    """Success: final fingertip–target distance below this."""
    train_seeds: tuple[int, ...] | None = None
    """Reset seeds of the conditions, one teacher each."""
    test_seeds: tuple[int, ...] | None = None
    """Unseen conditions for the student's evaluation."""
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
    run_root: str = "runs"
    """Where run directories are created."""
    run_dir: str | None = None
    """Use exactly this run directory instead of a new one under run_root."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Also write TensorBoard event files."""


@dataclass
class Result(BaseResult):
    train_success: float = 0.0
    test_success: float = 0.0


def resolve(cfg: Config) -> Config:
    if cfg.env not in jax_envs.JAX_ENVS:
        raise ValueError(f"distill trains iLQR teachers on known dynamics: '{cfg.env}' is not a pure-JAX env")
    preset = DEFAULTS | PRESETS.get(cfg.env, {})
    return dataclasses.replace(cfg, **{k: (preset[k] if getattr(cfg, k) is None else getattr(cfg, k)) for k in DEFAULTS})


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


def make_teacher(env: jax_envs.JaxEnv, gym_env, seed: int, fns, T: int, iters: int, noise: float, key: jax.Array):
    """iLQR from the initial state of reset(seed): the plan (X, U, K) and its covariance σ² Q_uu⁻¹."""
    obs, _ = gym_env.reset(seed=seed)
    x0 = jnp.asarray(ilqr_alg.state_from_obs(env, obs))
    res = il.ilqr(*fns, x0, 0.1 * jax.random.normal(key, (T, env.act_dim)), max_iters=iters, tol=1e-6)
    Quu = jnp.where(jnp.isfinite(res.Quu), res.Quu, jnp.eye(env.act_dim))
    cov = noise * jnp.linalg.inv(Quu)
    return dict(X=np.asarray(res.X), U=np.asarray(res.U), K=np.asarray(res.K), cov=np.asarray(0.5 * (cov + jnp.swapaxes(cov, -1, -2))))


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
    cfg = resolve(cfg)
    gym_env, spec = make(cfg.env)
    env = jax_envs.load(cfg.env)
    T = spec.max_episode_steps
    icfg = ilqr_alg.Config(env=cfg.env, cost=cfg.cost, w_dist=cfg.w_dist, w_ctrl=cfg.w_ctrl, final_weight=cfg.final_weight)
    icfg = ilqr_alg.resolve(icfg)
    fns = ilqr_alg.planner_fns(env, icfg.cost, icfg.w_dist, icfg.w_ctrl, icfg.final_weight, icfg.action_penalty)
    run_dir = Path(cfg.run_dir) if cfg.run_dir else runs.new_run_dir(cfg.run_root, f"distill-{cfg.env.replace('/', '_')}-s{cfg.seed}")
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.save_config(run_dir, cfg, algorithm="distill")
    logger = runs.MetricsLogger(run_dir, tensorboard=cfg.tensorboard)
    rng = np.random.default_rng(cfg.seed)
    key = jax.random.key(cfg.seed)
    hidden, A = tuple(cfg.hidden), spec.act_dim
    bar = runs.ProgressBar(len(cfg.train_seeds) + cfg.dagger_rounds + 1, f"distill {cfg.env}", cfg.progress)
    try:
        # 1. one teacher per condition
        teachers, data, teacher_rets = [], [], []
        for i, s in enumerate(cfg.train_seeds):
            key, k = jax.random.split(key)
            teachers.append(make_teacher(env, gym_env, int(s), fns, T, cfg.teacher_iters, cfg.teacher_noise, k))
            # 2. the teachers' own (noisy) state distribution, labelled with their action distributions
            O, M, C, _, _ = rollouts(gym_env, env, teachers[-1], int(s), T, cfg.samples, rng)
            data.append((O, M, C))
            _, _, _, r, _ = rollouts(gym_env, env, dict(teachers[-1], cov=0 * teachers[-1]["cov"] + 1e-12 * np.eye(A)),
                                     int(s), T, 1, rng)
            teacher_rets.append(r[0])
            bar.update(i + 1)
        key, k = jax.random.split(key)
        student = init_student(hidden, spec.obs_dim, A, k)
        evals = []
        for rnd in range(cfg.dagger_rounds + 1):
            # 3. distill: minimize KL(teacher ‖ student) on all states gathered so far
            O = jnp.asarray(np.concatenate([d[0] for d in data]), jnp.float32)
            M = jnp.asarray(np.concatenate([d[1] for d in data]), jnp.float32)
            C = jnp.asarray(np.concatenate([d[2] for d in data]), jnp.float32)
            student, loss = distill_step(hidden, A, student, O, M, C, cfg.epochs, cfg.lr)
            mean = jax.jit(lambda o: gps.policy_mean(hidden, A, student, o))
            act = lambda o: np.asarray(mean(jnp.asarray(o, jnp.float32)))
            tr = [rollouts(gym_env, env, teachers[i], int(s), T, 1, rng, act) for i, s in enumerate(cfg.train_seeds)]
            r_tr = np.array([t_[3][0] for t_ in tr])
            d_tr = np.array([t_[4][0] for t_ in tr])
            r_te, d_te = gps.evaluate_global(gym_env, hidden, A, student, gps.conditions(cfg.test_seeds, None), T)
            step = (rnd + 1) * len(cfg.train_seeds) * T
            logger.log(step, {"distill/kl": float(loss), "eval/return_mean": float(r_tr.mean()), "eval/return_std": float(r_tr.std()),
                              "eval/train_success": float((d_tr < cfg.success_dist).mean()),
                              "eval/test_success": float((d_te < cfg.success_dist).mean()),
                              "eval/test_return_mean": float(r_te.mean()), "teacher/return_mean": float(np.mean(teacher_rets))})
            evals.append((step, float(r_tr.mean())))
            # DAgger: the student's own states, labelled by the teacher of each condition
            if rnd < cfg.dagger_rounds:
                for i, t_ in enumerate(tr):
                    data.append(t_[:3])
            bar.update(len(cfg.train_seeds) + rnd + 1, f"KL {float(loss):.3f}  success {float((d_tr < cfg.success_dist).mean()):.2f}")
        runs.save_checkpoint(run_dir, dict(student=runs.to_host(student), teachers=teachers))
        runs.plot_runs([run_dir], run_dir / "curve.png", title=run_dir.name)
    finally:
        bar.close()
        logger.close()
        gym_env.close()
    rows = [r for r in runs.read_metrics(run_dir) if "eval/return_mean" in r]
    return Result(run_dir, len(evals) * len(cfg.train_seeds) * T, rows[-1]["eval/return_mean"], rows[-1]["eval/return_std"],
                  evals, rows[-1]["eval/train_success"], rows[-1]["eval/test_success"])


def load_policy(run_dir: str | Path):
    """The student's mean action as `act(obs) -> action`."""
    cfg = resolve(Config(**flm._plain(runs.load_config(run_dir))))
    env, spec = make(cfg.env)
    env.close()
    student = jax.tree.map(jnp.asarray, runs.load_checkpoint(run_dir)["student"])
    mean = jax.jit(lambda o: gps.policy_mean(tuple(cfg.hidden), spec.act_dim, student, o))
    return (lambda o: np.clip(np.asarray(mean(jnp.asarray(o, jnp.float32))), -1, 1)), cfg
