"""LQR-FLM: LQR with fitted local models (Levine & Abbeel 2014, "Learning neural network policies with guided
policy search under unknown dynamics"; the trajectory-optimization half of GPS, `AlgorithmTrajOpt` in the
GPS code). The lecture's "local models" recipe:

    p(u_t|x_t) = N(K_t x_t + k_t, Σ_t)                                        # 0. initial controller
    repeat
        run p(u_t|x_t) on the robot from a fixed start, N trajectories        # 1. collect samples
        fit p(x_{t+1}|x_t,u_t) = N(A_t x_t + B_t u_t + c_t, Σ_t)              # 2. fit local dynamics
            (linear regression, or Bayesian with a prior from all data: a GMM or a global neural model)
        adapt ε from predicted vs actual improvement                           # 3. step size
        expand the cost to second order around the samples                    # 4. cost expansion
        p ← argmin E_p[c(τ)]  s.t. D_KL(p(τ) ‖ p_old(τ)) ≤ ε                   # 5. KL-constrained LQR
            (dual descent on η; new covariance Σ_t = Q_uu⁻¹)

The state x is the environment's observation (Reacher-v5: 10-d), the cost a differentiable function of
(x, u) chosen per environment (`COSTS`; the reach cost is a smoothed distance plus the control cost, as the GPS
code's l1/l2 cost). The reported `real cost` is −(the environment's return) of the samples.

Deviations: costs are per-environment smooth surrogates of −reward; the NIW posterior mean is used in the
Bayesian fit (the GPS code keeps the empirical mean); the dual search is a bracketed step in log η.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbrlax import runs
from mbrlax.algorithms.common import Result as BaseResult
from mbrlax.algorithms.common import RunOptions, check_positive, fill_preset
from mbrlax.algorithms.local_common import CostOptions, LocalStepOptions
from mbrlax.envs.make import make, reset_to
from mbrlax.models import local_linear as ll
from mbrlax.planning import ilqr as il

# ---- costs on (observation, action), smooth so that their Hessians exist --------------------------------


def reach_cost(x: jax.Array, u: jax.Array, w_dist: float = 1.0, w_ctrl: float = 1.0, alpha: float = 1e-3) -> jax.Array:
    """w_dist·√(‖d‖² + α) + w_ctrl·‖u‖² with d = x[-2:] = fingertip − target (Reacher-v5, Arm2, PointMass)."""
    d = x[..., -2:]
    return w_dist * jnp.sqrt(jnp.sum(d**2, -1) + alpha) + w_ctrl * jnp.sum(u**2, -1)


def pendulum_cost(x: jax.Array, u: jax.Array, w_dist: float = 1.0, w_ctrl: float = 0.001,
                  alpha: float = 0.0) -> jax.Array:
    """On obs (cos θ, sin θ, θ̇): 2(1 − cos θ) + 0.1 θ̇² + w_ctrl (2u)² (Pendulum-v1's reward, made smooth)."""
    del alpha
    return w_dist * (2 * (1 - x[..., 0]) + 0.1 * x[..., 2] ** 2) + w_ctrl * jnp.sum((2 * u) ** 2, -1)


COSTS: dict[str, Callable] = {"reach": reach_cost, "pendulum": pendulum_cost}

DEFAULTS: dict[str, Any] = dict(
    iterations=20, samples=5, kl_step=1.0, init_var=0.1, cost="reach", w_dist=1.0, w_ctrl=1.0, final_weight=1.0,
    env_kwargs={},
)

PRESETS: dict[str, dict[str, Any]] = {
    # Levine & Abbeel 2014 use 5 samples per iteration and a per-step KL bound; the GPS code's default
    # kl_step is 0.2 for its 7-DoF arm. Reacher-v5 has 50 steps of [-1, 1] torques.
    "Reacher-v5": dict(iterations=20, samples=5, kl_step=0.5, init_var=0.1, w_dist=1.0, w_ctrl=0.1),
    "mbrlax/Arm2-v0": dict(iterations=20, samples=5, kl_step=0.2, init_var=0.1, w_dist=1.0, w_ctrl=0.1),
    "mbrlax/PointMass-v0": dict(iterations=15, samples=5, kl_step=0.2, init_var=0.1, w_dist=1.0, w_ctrl=0.1),
    "mbrlax/PendulumSwingUp-v0": dict(iterations=30, samples=10, kl_step=2.0, init_var=0.5, cost="pendulum",
                                      w_dist=1.0, w_ctrl=0.001, final_weight=10.0),
}


@dataclass
class Config(LocalStepOptions, CostOptions, RunOptions):
    """LQR-FLM. Fields left as None take the preset of the environment (PRESETS), else DEFAULTS."""

    env: str = "Reacher-v5"
    """Gymnasium id (its observation is the state x of the local models)."""
    seed: int = 0
    """Seed of the controller noise and the GMM; the start state is fixed by `start_seed`."""
    start_seed: int = 0
    """Every trajectory starts from env.reset(seed=start_seed): the fixed initial condition."""


@dataclass
class Result(BaseResult):
    costs: list[float] = field(default_factory=list)
    """Mean real cost (−return) of each iteration's samples."""


def resolve(cfg: Config) -> Config:
    cfg = fill_preset(cfg, PRESETS.get(cfg.env, {}), DEFAULTS)
    if cfg.cost not in COSTS:
        raise ValueError(f"cost must be one of {sorted(COSTS)}, got {cfg.cost!r}")
    if cfg.regression not in REGRESSIONS:
        raise ValueError(f"regression must be one of {', '.join(REGRESSIONS)}, got {cfg.regression!r}")
    if cfg.samples < 2:
        raise ValueError(f"samples must be ≥ 2 to fit dynamics (got {cfg.samples}); use 'bayes' with few samples")
    check_positive(cfg, "iterations", "checkpoint_every")
    return cfg


# ---- shared pieces (also used by gps.py) ----------------------------------------------------------------


def cost_fns(cost: str, w_dist: float, w_ctrl: float, final_weight: float):
    """(running cost l(x, u), final cost l_f(x)) for one-sample x S, u A."""
    fn = COSTS[cost]
    run = lambda x, u: fn(x, u, w_dist, w_ctrl)
    final = lambda x: final_weight * fn(x, jnp.zeros(0, x.dtype), w_dist, 0.0)
    return run, final


def sample_trajectories(env, pol: il.LinearGaussianPolicy | None, T: int, n: int, rng: np.random.Generator,
                        reset_seed: int | None, act_fn: Callable | None = None, noise: bool = True, qpos=None):
    """Run a time-varying linear-Gaussian controller (or `act_fn(obs, t)`) for n episodes of T steps, each from
    env.reset(seed=reset_seed) (a random seed if None), then put at joint positions `qpos` if given (MuJoCo).
    Returns X n×(T+1)×S, U n×T×A (the clipped actions actually applied), returns n, final distance n."""
    K = k = chol = None
    if pol is not None:
        K, k, chol = (np.asarray(a, np.float64) for a in (pol.K, pol.k, pol.chol))
    Xs, Us, rets, dists = [], [], [], []
    for _ in range(n):
        obs = reset_to(env, reset_seed if reset_seed is not None else int(rng.integers(2**31)), qpos)
        X, U, ret = [obs], [], 0.0
        for t in range(T):
            if act_fn is not None:
                u = np.asarray(act_fn(obs, t), np.float64)
            else:
                u = K[t] @ obs + k[t]
                if noise:
                    u = u + chol[t] @ rng.normal(size=u.shape)
            u = np.clip(u, -1.0, 1.0)
            obs, r, term, trunc, _ = env.step(u.astype(np.float32))
            X.append(obs)
            U.append(u)
            ret += float(r)
            if term:
                raise RuntimeError("LQR-FLM/GPS need fixed-length episodes; this environment terminated early")
        Xs.append(np.stack(X))
        Us.append(np.stack(U))
        rets.append(ret)
        dists.append(float(np.linalg.norm(obs[-2:])))
    return np.stack(Xs), np.stack(Us), np.array(rets), np.array(dists)


@partial(jax.jit, static_argnums=(0, 1))
def expand_cost(run: Callable, final: Callable, X: jax.Array, U: jax.Array) -> il.QuadCost:
    """The cost's second-order expansion around each sample, in absolute coordinates, averaged over samples
    (as the GPS code does): C = H, c = g − H z̄, c0 = l − gᵀz̄ + ½ z̄ᵀ H z̄."""

    def absolute(q: il.QuadCost, X1, U1) -> il.QuadCost:
        Z = jnp.concatenate([X1[:-1], U1], -1)
        Hz = jnp.einsum("tij,tj->ti", q.C, Z)
        c = q.c - Hz
        c0 = q.c0 - jnp.einsum("ti,ti->t", q.c, Z) + 0.5 * jnp.einsum("ti,ti->t", Z, Hz)
        xf = X1[-1]
        cf = q.cf - q.Cf @ xf
        cf0 = q.cf0 - q.cf @ xf + 0.5 * xf @ q.Cf @ xf
        return il.QuadCost(q.C, c, c0, q.Cf, cf, cf0)

    qs = jax.vmap(lambda X1, U1: absolute(il.quadratize(run, final, X1, U1), X1, U1))(X, U)
    return jax.tree.map(lambda a: a.mean(0), qs)


def initial_state(X: jax.Array, reg: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Gaussian of x_0 from the samples (regularized: a fixed start has zero spread)."""
    x0 = X[:, 0]
    mu = x0.mean(0)
    d = x0 - mu
    return mu, d.T @ d / x0.shape[0] + reg * jnp.eye(x0.shape[-1], dtype=X.dtype)


REGRESSIONS = ("plain", "bayes", "model")


class DynamicsFitter:
    """Fits the time-varying linear-Gaussian dynamics: plain, or Bayesian with a prior from all data seen so
    far, either a GMM over the (x, u, x') points ('bayes') or a global neural model fitted on them ('model':
    a deterministic MLP ensemble, MSE, warm-started every iteration; its mean is linearized at each step)."""

    def __init__(self, regression: str, components: int, strength: float, max_points: int, seed: int,
                 model_hidden: tuple[int, ...] = (64, 64), model_epochs: int = 50):
        if regression not in REGRESSIONS:
            raise ValueError(f"unknown regression '{regression}'; use one of {', '.join(REGRESSIONS)}")
        self.regression, self.components, self.strength = regression, components, strength
        self.max_points, self.key = max_points, jax.random.key(seed)
        self.points: np.ndarray | None = None
        self.gmm_points = 2048
        self.model_hidden, self.model_epochs = tuple(model_hidden), model_epochs
        self.model: Any = None  # the global model of the 'model' prior, made at its first fit
        self.model_state: Any = None
        self._saved_model: Any = None  # a checkpointed model state, restored at the next fit

    def state_dict(self) -> dict:
        return dict(points=self.points, key=self.key,
                    model_state=None if self.model_state is None else runs.to_host(self.model_state))

    def load_state_dict(self, d: dict) -> None:
        """What `state_dict` gave; the global model's state is rebuilt on its next fit (it needs the model)."""
        self.points, self.key = d["points"], d["key"]
        self.model_state, self._saved_model = None, d["model_state"]

    def _model_prior(self, Xj: jax.Array, Uj: jax.Array, key: jax.Array) -> ll.NIWPrior:
        from mbrlax.models.ensemble import EnsembleModel
        from mbrlax.models.fit import fit
        from mbrlax.types import Transition

        s, a = Xj.shape[-1], Uj.shape[-1]
        x, u, nxt = self.points[:, :s], self.points[:, s:s + a], self.points[:, s + a:]
        with jax.enable_x64(False):  # the neural model lives in float32, like everywhere else
            if self.model is None:
                self.model = EnsembleModel(s, a, ensemble_size=3, num_elites=3, hidden=self.model_hidden,
                                           probabilistic=False)
            k_init, k_fit = jax.random.split(key)
            state = self.model_state
            if state is None:
                state = self.model.init(k_init)
                if self._saved_model is not None:  # resumed: the checkpointed model, in this structure
                    state, self._saved_model = runs.check_like("dynamics prior model", self._saved_model, state), None
            zeros: np.ndarray = np.zeros(len(x), np.float32)
            self.model_state, _ = fit(self.model, state, Transition(x, u, zeros, nxt, zeros), k_fit,
                                      max_epochs=self.model_epochs, patience=5)
        model, ms = self.model, self.model_state

        def model_fn(xv, uv):  # the members' mean next state, float32 inside, the caller's dtype outside
            pred = model.predict(ms, xv[None].astype(jnp.float32), uv[None].astype(jnp.float32))
            return pred.next_obs_mean.mean(0)[0].astype(xv.dtype)

        return ll.model_prior(model_fn, Xj, Uj, strength=self.strength)

    def fit(self, X: np.ndarray, U: np.ndarray) -> il.LinearDynamics:
        Xj, Uj = jnp.asarray(X, jnp.float64), jnp.asarray(U, jnp.float64)
        if self.regression == "plain":
            return ll.fit_linear_gaussian(Xj, Uj, reg=1e-6)
        pts = np.asarray(ll.joint_points(Xj, Uj)).reshape(-1, 2 * X.shape[-1] + U.shape[-1])
        self.points = pts if self.points is None else np.concatenate([self.points, pts])[-self.max_points:]
        self.key, k, k_sub = jax.random.split(self.key, 3)
        if self.regression == "model":
            return ll.fit_linear_gaussian_bayes(Xj, Uj, self._model_prior(Xj, Uj, k), reg=1e-6)
        # A fixed-size resample of the pool keeps the jitted EM at one shape (one compilation per run).
        sub = self.points[np.asarray(jax.random.randint(k_sub, (self.gmm_points,), 0, len(self.points)))]
        gmm = ll.fit_gmm(jnp.asarray(sub), k, num_components=self.components, iters=30, reg=1e-4)
        prior = ll.gmm_prior(gmm, Xj, Uj, strength=self.strength)
        return ll.fit_linear_gaussian_bayes(Xj, Uj, prior, reg=1e-6)


def step_multiplier(prev: dict, cur_dyn, cur_cost, cur_pol, mu0, sigma0, step_mult: float, lo: float, hi: float):
    """The GPS code's step adaptation: predicted improvement (new controller under the old fit and cost
    expansion) vs actual (under the new ones); mult = predicted / (2 (predicted − actual)), clipped to
    [0.1, 5]. Returns (new multiplier, predicted, actual)."""
    def expected(cost: il.QuadCost, dyn: il.LinearDynamics, pol: il.LinearGaussianPolicy, mu0, sigma0) -> float:
        return float(il.expected_cost(cost, *il.forward_marginals(dyn, pol, mu0, sigma0)))

    old_obj = expected(prev["cost"], prev["dyn"], prev["pol"], prev["mu0"], prev["sigma0"])
    pred_obj = expected(prev["cost"], prev["dyn"], cur_pol, prev["mu0"], prev["sigma0"])
    act_obj = expected(cur_cost, cur_dyn, cur_pol, mu0, sigma0)
    predicted, actual = old_obj - pred_obj, old_obj - act_obj
    mult = predicted / (2.0 * max(1e-4, predicted - actual))
    mult = float(np.clip(mult if np.isfinite(mult) else 1.0, 0.1, 5.0))
    return float(np.clip(step_mult * mult, lo, hi)), predicted, actual


def policy_to_host(pol: il.LinearGaussianPolicy) -> dict:
    return {k: np.asarray(v, np.float64) for k, v in pol._asdict().items()}


def policy_from_host(d: dict) -> il.LinearGaussianPolicy:
    return il.LinearGaussianPolicy(**{k: jnp.asarray(v, jnp.float64) for k, v in d.items()})


def remember(dyn: il.LinearDynamics, cost: il.QuadCost, pol: dict, mu0: jax.Array, sigma0: jax.Array) -> dict:
    """What the next iteration's step adaptation needs of this one, as host arrays (checkpointable as is)."""
    host = lambda nt: {k: np.asarray(v) for k, v in nt._asdict().items()}
    return dict(dyn=host(dyn), cost=host(cost), pol=pol, mu0=np.asarray(mu0), sigma0=np.asarray(sigma0))


def recall(prev: dict) -> dict:
    """`remember`'s dict with its dynamics, cost and controller as the planner's NamedTuples again."""
    return dict(prev, dyn=il.LinearDynamics(**prev["dyn"]), cost=il.QuadCost(**prev["cost"]),
                pol=policy_from_host(prev["pol"]))


class LocalStep(NamedTuple):
    """One local step's outcome: the KL-constrained update and what it was computed from."""

    update: il.KLUpdate
    dyn: il.LinearDynamics
    X: jax.Array  # the samples N×(T+1)×S in float64
    mu0: jax.Array
    sigma0: jax.Array
    step_mult: float
    epsilon: float
    predicted: float
    actual: float
    memory: dict  # `remember` of this step, for the next one's step adaptation


def local_step(cfg: LocalStepOptions, fitter: DynamicsFitter, costs: tuple[Callable, Callable], T: int, X: np.ndarray,
               U: np.ndarray, anchor: il.LinearGaussianPolicy, sampler: il.LinearGaussianPolicy, prev: dict | None,
               step_mult: float) -> LocalStep:
    """Steps 2-5 of LQR-FLM on samples X, U of the controller `sampler`: fit the local dynamics, expand the cost,
    adapt the step multiplier from the last step `prev` (None: keep it), and the KL-constrained LQR update that
    stays within ε of `anchor` (LQR-FLM: the sampler itself; MDGPS: the linearized global policy)."""
    # 2. fit the time-varying linear-Gaussian dynamics (plain, or with the GMM / global-model prior)
    dyn = fitter.fit(X, U)
    Xj, Uj = jnp.asarray(X, jnp.float64), jnp.asarray(U, jnp.float64)
    mu0, sigma0 = initial_state(Xj)
    # 4. the cost's quadratic expansion around the samples
    qcost = expand_cost(*costs, Xj, Uj)
    # 3. step size from the predicted vs actual improvement of the last update
    predicted = actual = float("nan")
    if prev is not None:
        step_mult, predicted, actual = step_multiplier(recall(prev), dyn, qcost, sampler, mu0, sigma0, step_mult,
                                                       cfg.min_step_mult, cfg.max_step_mult)
    epsilon = cfg.kl_step * step_mult * T
    # 5. KL-constrained LQR: dual descent on η, covariance Q_uu⁻¹
    up = il.kl_constrained_update(dyn, qcost, anchor, mu0, sigma0, epsilon)
    return LocalStep(up, dyn, Xj, mu0, sigma0, step_mult, epsilon, predicted, actual,
                     remember(dyn, qcost, policy_to_host(sampler), mu0, sigma0))


def _horizon(spec) -> int:
    if spec.max_episode_steps is None:
        raise ValueError(f"{spec.env_id} has no time limit; LQR-FLM needs a fixed horizon T")
    return int(spec.max_episode_steps)


# ---- the algorithm ----------------------------------------------------------------------------------------


def train(cfg: Config) -> Result:
    """Run LQR-FLM from one fixed start; returns the final controller's return and the run directory."""
    cfg = resolve(runs.prepare(cfg, "lqr_flm", may_change=("iterations",)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    T, S, A = _horizon(spec), spec.obs_dim, spec.act_dim
    costs = cost_fns(cfg.cost, cfg.w_dist, cfg.w_ctrl, cfg.final_weight)
    fitter = DynamicsFitter(cfg.regression, cfg.gmm_components, cfg.prior_strength, cfg.max_prior_points, cfg.seed,
                            model_epochs=cfg.prior_model_epochs)
    per_iter = cfg.samples * T  # environment steps per iteration

    with jax.enable_x64(True), env, runs.Run(cfg, "lqr_flm", f"lqr_flm-{cfg.env.replace('/', '_')}-s{cfg.seed}",
                                             cfg.iterations * per_iter) as run:
        # 0. the initial controller: zero gains, zero mean, variance init_var
        pol0 = policy_to_host(il.init_policy(T, S, A, cfg.init_var, dtype=jnp.float64))
        st: dict[str, Any] = dict(it=0, pol=pol0, step_mult=1.0, prev=None, rng=np.random.default_rng(cfg.seed),
                                  costs=[], fitter=fitter.state_dict())
        if run.resumed:
            st = {k: run.resumed[k] for k in st}
            fitter.load_state_dict(st["fitter"])
        rng = st["rng"]
        while st["it"] < cfg.iterations:
            pol = policy_from_host(st["pol"])
            # 1. run the current controller N times from the fixed start
            with run.timer("samples"):
                X, U, rets, dists = sample_trajectories(env, pol, T, cfg.samples, rng, cfg.start_seed)
            # 2.-5. fit the local dynamics, expand the cost, adapt the step size, KL-constrained LQR
            with run.timer("update"):
                ls = local_step(cfg, fitter, costs, T, X, U, pol, pol, st["prev"], st["step_mult"])
            up = ls.update
            st.update(it=st["it"] + 1, prev=ls.memory, pol=policy_to_host(up.policy), step_mult=ls.step_mult,
                      fitter=fitter.state_dict())
            st["costs"].append(float(-rets.mean()))
            step = st["it"] * per_iter
            # evaluate the new controller's mean from the start (deterministic)
            with run.timer("eval"):
                _, _, eval_ret, eval_dist = sample_trajectories(env, up.policy, T, 1, rng, cfg.start_seed, noise=False)
            run.record_eval(step, float(eval_ret[0]), 0.0, extra={
                "lqr_flm/real_cost": float(-rets.mean()), "lqr_flm/final_distance": float(dists.mean()),
                "lqr_flm/kl": up.kl, "lqr_flm/eta": up.eta, "lqr_flm/epsilon": ls.epsilon,
                "lqr_flm/step_mult": ls.step_mult, "lqr_flm/predicted_improvement": ls.predicted,
                "lqr_flm/actual_improvement": ls.actual, "eval/final_distance": float(eval_dist[0])})
            if run.due(st["it"], cfg.checkpoint_every, cfg.iterations):
                run.save(step, st)
            run.progress(step, cost=f"cost {-rets.mean():.2f}  dist {dists.mean():.3f}  "
                                    f"kl {up.kl:.2f}/{ls.epsilon:.2f}")
        return run.result(Result, steps=st["it"] * per_iter, costs=list(st["costs"]))


def load_policy(run_dir: str | Path):
    """The final controller's mean u_t = K_t x + k_t as `act(obs) -> action`; the time index advances with each
    call and wraps at T (one call per environment step, as `mbrlax eval` does)."""
    cfg = resolve(runs.config_from_dict(Config, runs.load_config(run_dir)))
    pol = runs.load_checkpoint(run_dir)["pol"]
    K, k = pol["K"], pol["k"]
    T = K.shape[0]
    counter = {"t": 0}

    def act(obs: np.ndarray) -> np.ndarray:
        t = counter["t"] % T
        counter["t"] += 1
        return np.clip(K[t] @ np.asarray(obs, np.float64) + k[t], -1, 1).astype(np.float32)

    return act, cfg
