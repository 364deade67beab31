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

import dataclasses
import time
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
from mbrlax.algorithms.common import Result as BaseResult
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
class Config:
    """MDGPS. Fields left as None take the preset of the environment (PRESETS), else DEFAULTS."""

    env: str = "Reacher-v5"
    """Gymnasium id with a fixed horizon and the reach observation layout (last 2 entries: fingertip − target)."""
    seed: int = 0
    """Seed of controller noise, GMM and policy initialization."""
    iterations: int | None = None
    """MDGPS iterations."""
    samples: int | None = None
    """Trajectories per condition per iteration."""
    kl_step: float | None = None
    """Base KL bound per time step of the C-step (ε = kl_step × multiplier × T)."""
    init_var: float | None = None
    """Variance of the initial local controllers."""
    cost: str | None = None
    """Differentiable cost (see lqr_flm.COSTS)."""
    w_dist: float | None = None
    """Weight of the distance term of the cost."""
    w_ctrl: float | None = None
    """Weight of the control term of the cost."""
    final_weight: float | None = None
    """Multiplier of the distance term at the final state."""
    success_dist: float | None = None
    """Success: the global policy's final distance to the target is below this."""
    train_seeds: tuple[int, ...] | None = None
    """Reset seeds of the training conditions."""
    test_seeds: tuple[int, ...] | None = None
    """Reset seeds of the unseen conditions used only for evaluation."""
    train_qpos: Annotated[tuple[tuple[float, ...], ...] | None, tyro.conf.Suppress] = None
    """MuJoCo only: the training conditions' joint positions (one per train seed), set at rest after the reset;
    () keeps the env's own reset of each seed (None: the preset's). Python API and presets only."""
    test_qpos: Annotated[tuple[tuple[float, ...], ...] | None, tyro.conf.Suppress] = None
    """MuJoCo only: the unseen conditions' joint positions (one per test seed)."""
    regression: str = "bayes"
    """Local dynamics fit: 'plain' or 'bayes' (GMM prior shared by all conditions)."""
    gmm_components: int = 8
    """Components of the GMM dynamics prior."""
    prior_strength: float = 1.0
    """Pseudo-count of the GMM prior."""
    max_prior_points: int = 20_000
    """Cap on the (x, u, x') points kept for the GMM (oldest dropped)."""
    min_step_mult: float = 0.01
    """Lower bound of the adaptive multiplier of kl_step."""
    max_step_mult: float | None = None
    """Upper bound of the adaptive multiplier of kl_step."""
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
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make; Python API and presets only."""
    run_root: str = "runs"
    """Where run directories are created."""
    run_dir: str | None = None
    """Use exactly this run directory instead of a new one under run_root."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint (one per iteration)."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True


@dataclass
class Result(BaseResult):
    train_success: float = 0.0
    test_success: float = 0.0


def resolve(cfg: Config) -> Config:
    preset = DEFAULTS | PRESETS.get(cfg.env, {})
    cfg = dataclasses.replace(cfg, **{k: (preset[k] if getattr(cfg, k) is None else getattr(cfg, k)) for k in DEFAULTS})
    if cfg.cost not in flm.COSTS:
        raise ValueError(f"cost must be one of {sorted(flm.COSTS)}, got {cfg.cost!r}")
    if cfg.policy_cov not in ("moment", "precision"):
        raise ValueError(f"policy_cov must be 'moment' or 'precision', got {cfg.policy_cov!r}")
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


def _host(tree):
    return jax.tree.map(np.asarray, tree)


def train(cfg: Config) -> Result:
    """MDGPS from several initial conditions; returns the global policy's final evaluation."""
    if cfg.resume is not None:
        saved = runs.load_config(cfg.resume)
        keep = {k: getattr(cfg, k) for k in ("progress", "tensorboard")}
        if cfg.iterations is not None:
            keep["iterations"] = cfg.iterations
        saved.update(run_dir=cfg.resume, resume=cfg.resume, **keep)
        cfg = Config(**flm._plain(saved))
    cfg = resolve(cfg)
    env, spec = make(cfg.env, **cfg.env_kwargs)
    T, S, A = flm._horizon(spec), spec.obs_dim, spec.act_dim
    M = len(cfg.train_seeds)
    train_conds, test_conds = conditions(cfg.train_seeds, cfg.train_qpos), conditions(cfg.test_seeds, cfg.test_qpos)
    hidden = tuple(cfg.policy_hidden)
    run, final = flm.cost_fns(cfg.cost, cfg.w_dist, cfg.w_ctrl, cfg.final_weight)
    fitter = flm.DynamicsFitter(cfg.regression, cfg.gmm_components, cfg.prior_strength, cfg.max_prior_points, cfg.seed)

    st = dict(it=0, rng=np.random.default_rng(cfg.seed).bit_generator.state, fitter=None,
              pol=_host(init_policy(hidden, S, A, jax.random.key(cfg.seed))), step_mult=[1.0] * M, prev=[None] * M)
    with jax.enable_x64(True):
        st["local"] = [flm.policy_to_host(il.init_policy(T, S, A, cfg.init_var, dtype=jnp.float64)) for _ in range(M)]
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        payload = runs.load_checkpoint(run_dir)
        st.update({k: payload[k] for k in st})
        if st["fitter"] is not None:
            fitter.load_state_dict(st["fitter"])
    else:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else runs.new_run_dir(cfg.run_root, f"gps-{cfg.env.replace('/', '_')}-s{cfg.seed}")
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.save_config(run_dir, cfg, algorithm="gps")
    logger = runs.MetricsLogger(run_dir, tensorboard=cfg.tensorboard)
    logger.truncate_after(st["it"] * M * cfg.samples * T)
    rng = np.random.default_rng()
    rng.bit_generator.state = st["rng"]
    bar = runs.ProgressBar(cfg.iterations, f"gps {cfg.env}", cfg.progress, st["it"])
    try:
        while st["it"] < cfg.iterations:
            tic = time.perf_counter()
            data, row = [], {}
            with jax.enable_x64(True):
                for i, (seed, qpos) in enumerate(train_conds):
                    local = flm.policy_from_host(st["local"][i])
                    # 1. samples of condition i: from its local controller, or (on-policy MDGPS, after the first
                    #    iteration) from the global policy with its covariance Σ_π
                    on_policy = cfg.sample_on_policy and st["it"] > 0
                    if on_policy:
                        pol32 = jax.tree.map(jnp.asarray, st["pol"])
                        chol = np.linalg.cholesky(np.asarray(st["pol"]["cov"], np.float64) + 1e-6 * np.eye(A))
                        act_fn = lambda o, t: (np.asarray(_policy_mean_jit(hidden, A, pol32, jnp.asarray(o, jnp.float32)),
                                                          np.float64) + chol @ rng.normal(size=A))
                        X, U, rets, dists = flm.sample_trajectories(env, None, T, cfg.samples, rng, seed, act_fn=act_fn,
                                                                    qpos=qpos)
                    else:
                        X, U, rets, dists = flm.sample_trajectories(env, local, T, cfg.samples, rng, seed, qpos=qpos)
                    # 2. local dynamics (the GMM prior pools all conditions' data)
                    dyn = fitter.fit(X, U)
                    Xj, Uj = jnp.asarray(X, jnp.float64), jnp.asarray(U, jnp.float64)
                    mu0, sigma0 = flm.initial_state(Xj)
                    qcost = flm.expand_cost(run, final, Xj, Uj)
                    # 6. step size of condition i from the last C-step's predicted vs actual improvement
                    # 3. the global policy linearized around these samples (iteration 1: the old local controller)
                    if st["it"] == 0:
                        anchor = local
                    else:
                        pol64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), st["pol"])
                        anchor = linearize_policy(hidden, A, pol64, Xj)
                    sampler = anchor if on_policy else local  # the controller that produced these samples
                    if st["prev"][i] is not None:
                        prev = dict(st["prev"][i], pol=flm.policy_from_host(st["prev"][i]["pol"]))
                        st["step_mult"][i], _, _ = flm.step_multiplier(
                            prev, dyn, qcost, sampler, mu0, sigma0, st["step_mult"][i], cfg.min_step_mult, cfg.max_step_mult)
                    epsilon = cfg.kl_step * st["step_mult"][i] * T
                    # 4. C-step: KL-constrained LQR towards the (linearized) global policy
                    up = il.kl_constrained_update(dyn, qcost, anchor, mu0, sigma0, epsilon)
                    st["prev"][i] = jax.tree.map(np.asarray, dict(dyn=dyn, cost=qcost, pol=flm.policy_to_host(sampler), mu0=mu0,
                                                                  sigma0=sigma0))
                    st["local"][i] = flm.policy_to_host(up.policy)
                    new = up.policy
                    # targets of the S-step: the new local controller's action distribution at the sample states
                    Xs = Xj[:, :-1]
                    if cfg.marginal_states > 0:
                        # S-step states drawn from p_i's own state marginals (Gaussian, propagated through the fitted
                        # dynamics): E_{p_i(x_t)} is the S-step's expectation, and the spread teaches the network the
                        # local feedback gains that 5 samples alone do not show
                        mu_x, sig_x, _, _ = il.forward_marginals(dyn, new, mu0, sigma0)
                        L = jnp.linalg.cholesky(sig_x[:-1] + 1e-9 * jnp.eye(S))
                        z = jnp.asarray(rng.normal(size=(cfg.marginal_states, T, S)))
                        Xs = jnp.concatenate([Xs, mu_x[None, :-1] + jnp.einsum("tij,ntj->nti", L, z)])
                    # clipped to the action box: the env applies the clipped action, and a linear controller's
                    # unbounded means far from the samples would otherwise dominate the regression
                    mean = jnp.clip(jnp.einsum("tas,nts->nta", new.K, Xs) + new.k, -1.0, 1.0)
                    prec = jnp.broadcast_to(new.inv_cov, (Xs.shape[0], T, A, A))
                    data.append((np.asarray(Xs).reshape(-1, S), np.asarray(mean).reshape(-1, A), np.asarray(prec).reshape(-1, A, A)))
                    row.update({f"gps/cost_c{i}": float(-rets.mean()), f"gps/kl_c{i}": up.kl, f"gps/eps_c{i}": epsilon})
            # 5. S-step: fit the global policy to all conditions' local controllers
            obs = jnp.asarray(np.concatenate([d[0] for d in data]), jnp.float32)
            tm = jnp.asarray(np.concatenate([d[1] for d in data]), jnp.float32)
            tp = cap_precision(jnp.asarray(np.concatenate([d[2] for d in data]), jnp.float32), cfg.precision_cap)
            pol = jax.tree.map(jnp.asarray, st["pol"])
            pol, loss = fit_policy(hidden, A, pol, obs, tm, tp, cfg.policy_epochs, cfg.policy_lr, cfg.precision_weighting,
                                   refit_normalizer=st["it"] == 0, cov_rule=cfg.policy_cov)
            st["pol"] = _host(pol)
            st["it"] += 1
            st["rng"] = rng.bit_generator.state
            st["fitter"] = fitter.state_dict()
            # evaluate the global policy alone (no local controllers) on training and unseen conditions
            r_tr, d_tr = evaluate_global(env, hidden, A, pol, train_conds, T)
            r_te, d_te = evaluate_global(env, hidden, A, pol, test_conds, T)
            step = st["it"] * M * cfg.samples * T
            row.update({
                "gps/policy_loss": float(loss), "gps/local_cost": float(np.mean([row[f"gps/cost_c{i}"] for i in range(M)])),
                "eval/return_mean": float(r_tr.mean()), "eval/return_std": float(r_tr.std()),
                "eval/train_success": float((d_tr < cfg.success_dist).mean()), "eval/train_distance": float(d_tr.mean()),
                "eval/test_return_mean": float(r_te.mean()), "eval/test_success": float((d_te < cfg.success_dist).mean()),
                "eval/test_distance": float(d_te.mean()), "time/iteration": time.perf_counter() - tic,
            })
            logger.log(step, row)
            runs.save_checkpoint(run_dir, dict(st))
            runs.plot_runs([run_dir], run_dir / "curve.png", title=run_dir.name)
            bar.update(st["it"], f"local {row['gps/local_cost']:.2f}  global train {row['eval/train_success']:.2f} "
                                 f"test {row['eval/test_success']:.2f}")
    finally:
        bar.close()
        logger.close()
        env.close()
    rows = [r for r in runs.read_metrics(run_dir) if "eval/return_mean" in r]
    last = rows[-1]
    return Result(run_dir, st["it"] * M * cfg.samples * T, last["eval/return_mean"], last["eval/return_std"],
                  [(r["step"], r["eval/return_mean"]) for r in rows], last["eval/train_success"], last["eval/test_success"])


def load_policy(run_dir: str | Path):
    """The global policy's mean action as `act(obs) -> action` (it needs no local controller)."""
    cfg = resolve(Config(**flm._plain(runs.load_config(run_dir))))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    env.close()
    pol = jax.tree.map(jnp.asarray, runs.load_checkpoint(run_dir)["pol"])
    act = jax.jit(lambda o: policy_mean(tuple(cfg.policy_hidden), spec.act_dim, pol, o))
    return (lambda o: np.clip(np.asarray(act(jnp.asarray(o, jnp.float32))), -1, 1)), cfg
