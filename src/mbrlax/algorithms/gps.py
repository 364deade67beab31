"""Guided policy search, mirror-descent variant (MDGPS: Montgomery & Levine 2016, "Guided policy search via
approximate mirror descent"; `AlgorithmMDGPS` of the GPS code), with LQR-FLM local controllers.

Algorithm 1 of the paper (the "off-policy" variant, samples from the local controllers), and where it lives:

    for iteration k = 1..K
        for each condition (initial state) i: generate samples {τ_i^j} by running p_i        # 1. samples
        fit the local dynamics p(x_{t+1}|x_t,u_t) per condition (GMM prior over all)        # 2. dynamics
        linearize the global policy π_θ around each condition's samples → π̄_i               # 3. linearize π
        C-step: p_i ← argmin E_{p_i}[ℓ(τ)]  s.t.  D_KL(p_i(τ) ‖ π̄_i(τ)) ≤ ε_i               # 4. C-step
        S-step: π_θ ← argmin_θ Σ_{i,t,j} E_{p_i(u|x_{t,i}^j)} ‖π_θ(x) − u‖²_{Σ_p⁻¹}          # 5. S-step
        adjust ε_i (predicted vs actual improvement, the code's "classic" step rule)          # 6. step size

The global policy is a Gaussian MLP on the observation (no time input), so it must work from every initial
condition on its own; it is evaluated deterministically (its mean) from the training conditions and from
unseen ones, and "success" is a final fingertip–target distance below `success_dist`.

A condition is an `env.reset(seed=...)` seed, optionally followed by setting the MuJoCo joint positions
(`train_qpos` / `test_qpos`; the Reacher-v5 preset: one fixed target, four arm starts, four unseen starts
between them); training uses the `train_*` conditions, the generalization test the `test_*` ones.

Deviations: in iteration 1 (random global policy) the C-step is constrained to the previous local controller,
as LQR-FLM; the global policy's linearization is its Jacobian at each step's mean state (the GPS code fits a
linear-Gaussian policy by regression with a GMM prior). Three changes keep the loop from collapsing (measured
in docs/gps.md): the S-step targets are clipped to the action box; each target's precision is capped at 2× the
median (the GPS code caps its sample weights so); and the policy covariance Σ_π is by default the mean target
covariance plus the fit's squared errors (`policy_cov='moment'`) rather than the GPS code's inverse mean
precision, which ratchets down every iteration (C-step precision = anchor precision + Q_uu/η) until the local
controllers stop exploring. The input normalizer is fitted at the first S-step and then kept, as in the GPS code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

from mbrlax import runs
from mbrlax.agents.nets import MLP
from mbrlax.algorithms import lqr_flm as flm
from mbrlax.algorithms.common import RunOptions, check_positive, fill_preset
from mbrlax.algorithms.local_common import (
    ConditionOptions,
    ConditionResult,
    CostOptions,
    LocalStepOptions,
    condition_result,
)
from mbrlax.envs.make import make
from mbrlax.planning import ilqr as il

DEFAULTS: dict[str, Any] = dict(
    iterations=12, samples=5, kl_step=1.0, max_step_mult=10.0, init_var=0.1, cost="reach", w_dist=1.0, w_ctrl=0.1,
    final_weight=1.0, success_dist=0.05, train_seeds=(0, 1, 2, 3), test_seeds=(100, 101, 102, 103), train_qpos=None,
    test_qpos=None, env_kwargs={},
)

# Reacher-v5's initial conditions: one fixed target (qpos[2:4], the fingertip position at joint angles (0, 2))
# and the arm at rest at the corners of a box in joint space (shoulder ±1 rad, elbow 0.2 / 1.4 rad); the unseen
# conditions lie inside that box. (The env's own reset draws a new target each seed; 4 such targets do not
# cover the target disc, so the unseen ones would be extrapolation, see docs/gps.md.)
REACHER_GOAL = (0.05, 0.10)
REACHER_TRAIN_ARM = ((-1.0, 0.2), (-1.0, 1.4), (1.0, 0.2), (1.0, 1.4))
REACHER_TEST_ARM = ((0.0, 0.8), (0.5, 0.5), (-0.5, 1.1), (-0.5, 0.4))

PRESETS: dict[str, dict[str, Any]] = {
    # MDGPS paper: 4 training conditions, 5 samples each per iteration. kl_step 0.2 is the GPS code's default;
    # with 0.5 and multipliers up to 10 single C-steps collapsed the controllers' covariance (docs/gps.md).
    "Reacher-v5": dict(iterations=30, samples=5, kl_step=0.2, max_step_mult=5.0, init_var=0.3,
                       train_qpos=tuple(a + REACHER_GOAL for a in REACHER_TRAIN_ARM),
                       test_qpos=tuple(a + REACHER_GOAL for a in REACHER_TEST_ARM)),
    "mbrlax/Arm2-v0": dict(iterations=12, samples=5, kl_step=0.2),
    "mbrlax/PointMass-v0": dict(iterations=8, samples=5, kl_step=0.2, success_dist=0.1),
}


@dataclass
class Config(LocalStepOptions, ConditionOptions, CostOptions, RunOptions):
    """MDGPS. Fields left as None take the preset of the environment (PRESETS), else DEFAULTS."""

    env: str = "Reacher-v5"
    """Gymnasium id with a fixed horizon and the reach observation layout (last 2 entries: fingertip − target)."""
    seed: int = 0
    """Seed of controller noise, GMM and policy initialization."""
    train_qpos: Annotated[tuple[tuple[float, ...], ...] | None, tyro.conf.Suppress] = None
    """MuJoCo only: the training conditions' joint positions (one per train seed), set at rest after the reset;
    () keeps the env's own reset of each seed (None: the preset's). Python API and presets only."""
    test_qpos: Annotated[tuple[tuple[float, ...], ...] | None, tyro.conf.Suppress] = None
    """MuJoCo only: the unseen conditions' joint positions (one per test seed)."""
    max_step_mult: float | None = None
    """Upper bound of the adaptive multiplier of kl_step (None: the preset's, else 10 as the GPS code)."""
    policy_hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the global policy (the MDGPS reacher policy: 2 layers of 40-100)."""
    policy_lr: float = 1e-3
    """Adam learning rate of the S-step."""
    policy_epochs: int = 200
    """Full-batch Adam steps of the S-step per iteration (the GPS code: a few thousand minibatch steps)."""
    marginal_states: int = 20
    """Extra S-step states per step drawn from each local controller's Gaussian state marginal (0: samples only)."""
    sample_on_policy: bool = False
    """On-policy MDGPS: after the first iteration, sample from the global policy (N(π_θ(x), Σ_π)) instead of the
    local controllers; the local dynamics and the policy linearization are then where the global policy goes."""
    precision_weighting: bool = True
    """Weight the S-step's squared error by the local controllers' precision Σ_p⁻¹ (the GPS code); False uses the
    identity (plain regression on the local means), which is robust when a few steps have very high precision."""
    policy_cov: str = "moment"
    """Σ_π of the global policy: 'precision' = inverse mean precision of the targets (GPS code), 'moment' = mean
    target covariance plus the fit's squared errors (stays wide where the network does not fit the teachers)."""
    precision_cap: float = 2.0
    """Cap each S-step target's precision at this multiple of the median precision (GPS code: its sample weights
    at 2× their median); ≤ 0 keeps the precisions as they are."""


Result = ConditionResult


def resolve(cfg: Config) -> Config:
    cfg = fill_preset(cfg, PRESETS.get(cfg.env, {}), DEFAULTS)
    if cfg.cost not in flm.COSTS:
        raise ValueError(f"cost must be one of {sorted(flm.COSTS)}, got {cfg.cost!r}")
    if cfg.policy_cov not in ("moment", "precision"):
        raise ValueError(f"policy_cov must be 'moment' or 'precision', got {cfg.policy_cov!r}")
    check_positive(cfg, "iterations", "samples", "checkpoint_every")
    if not cfg.train_seeds:
        raise ValueError("train_seeds must name at least one initial condition")
    for which in ("train", "test"):
        qpos, seeds = getattr(cfg, f"{which}_qpos"), getattr(cfg, f"{which}_seeds")
        if qpos and len(qpos) != len(seeds):
            raise ValueError(f"{which}_qpos has {len(qpos)} conditions but {which}_seeds has {len(seeds)}: give one "
                             f"seed per qpos")
    return cfg


def conditions(seeds, qpos) -> list[tuple[int, Any]]:
    """(reset seed, joint positions or None) of each initial condition."""
    return [(int(s), tuple(qpos[i]) if qpos else None) for i, s in enumerate(seeds)]


# ---- the global policy: a Gaussian MLP fitted by (precision-weighted) regression -------------------------


class GaussianPolicy(nn.Module):
    """obs B×D -> mean action B×A of a Gaussian policy (the covariance is kept outside, per the GPS code)."""

    hidden: tuple[int, ...]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden, self.act_dim, activation="tanh")(obs)


def init_policy(hidden: tuple[int, ...], obs_dim: int, act_dim: int, key: jax.Array) -> dict:
    net = GaussianPolicy(tuple(hidden), act_dim)
    params = net.init(key, jnp.zeros((1, obs_dim)))
    return dict(params=params, obs_mean=jnp.zeros(obs_dim), obs_std=jnp.ones(obs_dim), cov=jnp.eye(act_dim))


def policy_mean(hidden: tuple[int, ...], act_dim: int, pol: dict, obs: jax.Array) -> jax.Array:
    """The global policy's mean action for obs ...×D."""
    net = GaussianPolicy(tuple(hidden), act_dim)
    return net.apply(pol["params"], (obs - pol["obs_mean"]) / pol["obs_std"])


@partial(jax.jit, static_argnames=("hidden", "act_dim", "epochs", "lr", "weighted", "refit_normalizer", "cov_rule"))
def fit_policy(hidden: tuple[int, ...], act_dim: int, pol: dict, obs: jax.Array, target_mean: jax.Array,
               target_prec: jax.Array, epochs: int, lr: float, weighted: bool = True,
               refit_normalizer: bool = True, cov_rule: str = "precision") -> tuple[dict, jax.Array]:
    """Supervised step: minimize the mean of (π(x) − μ)ᵀ P (π(x) − μ) over P×D states with target means P×A and
    precisions P×A×A. Up to constants and the covariance term this is KL(π(·|x) ‖ N(μ, P⁻¹)), the S-step's
    divergence to the teachers' action distributions. Full-batch Adam. `refit_normalizer` fits the input
    normalizer to `obs`; training does so only at the first S-step and then keeps it (as the GPS code), so that a
    warm-started network's inputs keep their meaning. `weighted=False` uses the identity instead of P in the
    loss. `cov_rule` picks Σ_π: 'precision' or 'moment' (see Config.policy_cov)."""
    if refit_normalizer:
        pol = dict(pol, obs_mean=obs.mean(0), obs_std=obs.std(0) + 1e-3)
    opt = optax.adam(lr)

    def loss(params):
        d = policy_mean(hidden, act_dim, dict(pol, params=params), obs) - target_mean
        if not weighted:
            return jnp.sum(d**2, -1).mean()
        return jnp.einsum("pa,pab,pb->p", d, target_prec, d).mean()

    def step(carry, _):
        params, s = carry
        v, g = jax.value_and_grad(loss)(params)
        up, s = opt.update(g, s)
        return (optax.apply_updates(params, up), s), v

    (params, _), losses = jax.lax.scan(step, (pol["params"], opt.init(pol["params"])), None, length=epochs)
    if cov_rule == "precision":  # the inverse of the targets' mean precision (GPS code; minimizes E KL(π ‖ p))
        cov = jnp.linalg.inv(target_prec.mean(0))
    else:  # "moment": E[Σ_p + (π(x) − μ)(π(x) − μ)ᵀ], which minimizes E KL(p ‖ π) given the fitted means
        d = policy_mean(hidden, act_dim, dict(pol, params=params), obs) - target_mean
        cov = jnp.mean(jnp.linalg.inv(target_prec) + d[:, :, None] * d[:, None, :], 0)
    return dict(pol, params=params, cov=0.5 * (cov + cov.T)), losses[-1]


def cap_precision(prec: jax.Array, cap: float) -> jax.Array:
    """Precisions P×A×A with each one's scale (trace / A) capped at `cap` × the median scale. The GPS code caps
    its per-sample weights at twice their robust median; here the weight is the precision's own scale, which
    grows by orders of magnitude where the cost is sharp (at the target), and would otherwise leave the rest of
    the trajectory (the reaching motion, which is what must generalize) without weight in the S-step and make
    Σ_π, the inverse mean precision, collapse. cap ≤ 0 returns `prec` unchanged."""
    if cap <= 0:
        return prec
    scale = jnp.trace(prec, axis1=-2, axis2=-1) / prec.shape[-1]
    limit = cap * jnp.median(scale)
    return prec * jnp.minimum(1.0, limit / scale)[:, None, None]


_policy_mean_jit = jax.jit(policy_mean, static_argnums=(0, 1))


def mean_policy(hidden: tuple[int, ...], act_dim: int, pol: dict) -> Callable[[np.ndarray], np.ndarray]:
    """`act(obs) -> action`: the policy's mean action for one observation, clipped to the action box."""
    hidden, pol = tuple(hidden), jax.tree.map(jnp.asarray, pol)
    return lambda o: np.clip(np.asarray(_policy_mean_jit(hidden, act_dim, pol, jnp.asarray(o, jnp.float32))), -1, 1)


@partial(jax.jit, static_argnums=(0, 1))
def linearize_policy(hidden: tuple[int, ...], act_dim: int, pol: dict, X: jax.Array) -> il.LinearGaussianPolicy:
    """π̄_t(u|x) = N(K̄_t x + k̄_t, Σ_π): the global policy's Jacobian at the mean state of each step. X N×(T+1)×S."""
    xbar = X[:, :-1].mean(0)  # T×S
    f = lambda x: policy_mean(hidden, act_dim, pol, x)
    K = jax.vmap(jax.jacfwd(f))(xbar)
    k = jax.vmap(f)(xbar) - jnp.einsum("tas,ts->ta", K, xbar)
    T = xbar.shape[0]
    return il.make_policy(K, k, jnp.broadcast_to(pol["cov"], (T, act_dim, act_dim)))


def evaluate_global(env, hidden, act_dim, pol: dict, conds, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic global-policy episodes from each (seed, qpos) condition: (returns, final distances)."""
    hidden = tuple(hidden)
    act = lambda o: _policy_mean_jit(hidden, act_dim, pol, o)  # one compilation for all calls
    rets, dists = [], []
    for s, qpos in conds:
        _, _, r, d = flm.sample_trajectories(env, None, T, 1, np.random.default_rng(0), s, qpos=qpos,
                                             act_fn=lambda o, t: np.asarray(act(jnp.asarray(o, jnp.float32))))
        rets.append(r[0])
        dists.append(d[0])
    return np.array(rets), np.array(dists)


def on_policy_sampler(hidden: tuple[int, ...], pol: dict, rng: np.random.Generator) -> Callable:
    """`act(obs, t)` of the global policy with its covariance, N(π_θ(x), Σ_π), for on-policy MDGPS samples."""
    act_dim = pol["cov"].shape[-1]
    chol = np.linalg.cholesky(np.asarray(pol["cov"], np.float64) + 1e-6 * np.eye(act_dim))
    pol32 = jax.tree.map(jnp.asarray, pol)
    return lambda o, t: (np.asarray(_policy_mean_jit(hidden, act_dim, pol32, jnp.asarray(o, jnp.float32)), np.float64)
                         + chol @ rng.normal(size=act_dim))


def s_step_targets(ls: flm.LocalStep, marginal_states: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The S-step's states, target means and precisions P×S, P×A, P×A×A from the new local controller p_i: the
    sample states, plus `marginal_states` per step drawn from p_i's own Gaussian state marginals (propagated
    through the fitted dynamics: E_{p_i(x_t)} is the S-step's expectation, and the spread teaches the network the
    local feedback gains that a few samples alone do not show)."""
    new = ls.update.policy
    T, A, S = new.K.shape
    Xs = ls.X[:, :-1]
    if marginal_states > 0:
        mu_x, sig_x, _, _ = il.forward_marginals(ls.dyn, new, ls.mu0, ls.sigma0)
        L = jnp.linalg.cholesky(sig_x[:-1] + 1e-9 * jnp.eye(S))
        z = jnp.asarray(rng.normal(size=(marginal_states, T, S)))
        Xs = jnp.concatenate([Xs, mu_x[None, :-1] + jnp.einsum("tij,ntj->nti", L, z)])
    # clipped to the action box: the env applies the clipped action, and a linear controller's unbounded means
    # far from the samples would otherwise dominate the regression
    mean = jnp.clip(jnp.einsum("tas,nts->nta", new.K, Xs) + new.k, -1.0, 1.0)
    prec = jnp.broadcast_to(new.inv_cov, (Xs.shape[0], T, A, A))
    return np.asarray(Xs).reshape(-1, S), np.asarray(mean).reshape(-1, A), np.asarray(prec).reshape(-1, A, A)


def train(cfg: Config) -> Result:
    """MDGPS from several initial conditions; returns the global policy's final evaluation."""
    cfg = resolve(runs.prepare(cfg, "gps", may_change=("iterations",)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    T, S, A = flm._horizon(spec), spec.obs_dim, spec.act_dim
    M = len(cfg.train_seeds)
    train_conds, test_conds = conditions(cfg.train_seeds, cfg.train_qpos), conditions(cfg.test_seeds, cfg.test_qpos)
    hidden = tuple(cfg.policy_hidden)
    costs = flm.cost_fns(cfg.cost, cfg.w_dist, cfg.w_ctrl, cfg.final_weight)
    fitter = flm.DynamicsFitter(cfg.regression, cfg.gmm_components, cfg.prior_strength, cfg.max_prior_points, cfg.seed,
                                model_epochs=cfg.prior_model_epochs)
    per_iter = M * cfg.samples * T  # environment steps per iteration

    with env, runs.Run(cfg, "gps", f"gps-{cfg.env.replace('/', '_')}-s{cfg.seed}", cfg.iterations * per_iter) as run:
        st: dict[str, Any] = dict(it=0, rng=np.random.default_rng(cfg.seed), fitter=fitter.state_dict(),
                                  pol=runs.to_host(init_policy(hidden, S, A, jax.random.key(cfg.seed))),
                                  step_mult=[1.0] * M, prev=[None] * M)
        with jax.enable_x64(True):
            local0 = flm.policy_to_host(il.init_policy(T, S, A, cfg.init_var, dtype=jnp.float64))
            st["local"] = [local0] * M  # entries are replaced, never changed in place
        if run.resumed:
            st = {k: run.resumed[k] for k in st}
            fitter.load_state_dict(st["fitter"])
        rng = st["rng"]
        while st["it"] < cfg.iterations:
            data, row = [], {}
            on_policy = cfg.sample_on_policy and st["it"] > 0
            with jax.enable_x64(True):
                for i, (seed, qpos) in enumerate(train_conds):
                    local = flm.policy_from_host(st["local"][i])
                    # 1. samples of condition i: from its local controller, or (on-policy MDGPS, after the first
                    #    iteration) from the global policy with its covariance Σ_π
                    with run.timer("samples"):
                        X, U, rets, _ = flm.sample_trajectories(
                            env, None if on_policy else local, T, cfg.samples, rng, seed, qpos=qpos,
                            act_fn=on_policy_sampler(hidden, st["pol"], rng) if on_policy else None)
                    with run.timer("c_step"):
                        # 3. the global policy linearized around these samples (iteration 1: the old local controller)
                        if st["it"] == 0:
                            anchor = local
                        else:
                            pol64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), st["pol"])
                            anchor = linearize_policy(hidden, A, pol64, jnp.asarray(X, jnp.float64))
                        # 2. local dynamics (the GMM prior pools all conditions' data), 6. the step size of
                        # condition i, 4. C-step: KL-constrained LQR towards the (linearized) global policy
                        ls = flm.local_step(cfg, fitter, costs, T, X, U, anchor, anchor if on_policy else local,
                                            st["prev"][i], st["step_mult"][i])
                        st["prev"][i], st["step_mult"][i] = ls.memory, ls.step_mult
                        st["local"][i] = flm.policy_to_host(ls.update.policy)
                        # the S-step's targets: the new local controller's action distribution
                        data.append(s_step_targets(ls, cfg.marginal_states, rng))
                    row.update({f"gps/cost_c{i}": float(-rets.mean()), f"gps/kl_c{i}": ls.update.kl,
                                f"gps/eps_c{i}": ls.epsilon})
            # 5. S-step: fit the global policy to all conditions' local controllers
            with run.timer("s_step"):
                obs, tm, tp = (jnp.asarray(np.concatenate(d), jnp.float32) for d in zip(*data, strict=True))
                pol, loss = fit_policy(hidden, A, jax.tree.map(jnp.asarray, st["pol"]), obs, tm,
                                       cap_precision(tp, cfg.precision_cap), cfg.policy_epochs, cfg.policy_lr,
                                       cfg.precision_weighting, refit_normalizer=st["it"] == 0, cov_rule=cfg.policy_cov)
            st.update(it=st["it"] + 1, pol=runs.to_host(pol), fitter=fitter.state_dict())
            step = st["it"] * per_iter
            # evaluate the global policy alone (no local controllers) on training and unseen conditions
            with run.timer("eval"):
                r_tr, d_tr = evaluate_global(env, hidden, A, pol, train_conds, T)
                r_te, d_te = evaluate_global(env, hidden, A, pol, test_conds, T)
            row.update({
                "gps/policy_loss": float(loss),
                "gps/local_cost": float(np.mean([row[f"gps/cost_c{i}"] for i in range(M)])),
                "eval/train_success": float((d_tr < cfg.success_dist).mean()),
                "eval/train_distance": float(d_tr.mean()), "eval/test_return_mean": float(r_te.mean()),
                "eval/test_success": float((d_te < cfg.success_dist).mean()), "eval/test_distance": float(d_te.mean()),
            })
            run.record_eval(step, float(r_tr.mean()), float(r_tr.std()), extra=row)
            if run.due(st["it"], cfg.checkpoint_every, cfg.iterations):
                run.save(step, st)
            run.progress(step, status=f"local {row['gps/local_cost']:.2f}  global train "
                                      f"{row['eval/train_success']:.2f}  test {row['eval/test_success']:.2f}")
        return condition_result(run, st["it"] * per_iter)


def load_policy(run_dir: str | Path):
    """The global policy's mean action as `act(obs) -> action` (it needs no local controller)."""
    cfg = resolve(runs.config_from_dict(Config, runs.load_config(run_dir)))
    pol = runs.load_checkpoint(run_dir)["pol"]
    return mean_policy(cfg.policy_hidden, pol["cov"].shape[-1], pol), cfg
