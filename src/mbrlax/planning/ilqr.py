"""LQR, iLQR and the KL-constrained LQR of LQR-FLM / guided policy search, in JAX linear algebra.

Notation (T steps, S state dims, A action dims; xu = [x; u] is S+A):
- dynamics  x_{t+1} = F_t xu_t + f_t (+ noise N(0, dyn_cov_t))           `LinearDynamics`  F: T×S×(S+A)
- cost      l_t(xu) = ½ xuᵀ C_t xu + c_tᵀ xu + c0_t ,  final ½ xᵀ Cf x + cfᵀ x + cf0      `QuadCost`
- controller p(u_t | x_t) = N(K_t x_t + k_t, cov_t)                        `LinearGaussianPolicy`

`backward_pass` is the Riccati recursion that everything shares: exact LQR (absolute coordinates), one iLQR
iteration (deviation coordinates around a nominal trajectory, Tassa et al. 2012 regularization μ on Q_uu), and
the maximum-entropy solution whose controller covariance is Σ_t = Q_uu⁻¹ (Levine & Abbeel 2014).

`kl_constrained_update` solves  min_p E_p[l(τ)]  s.t.  D_KL(p(τ) ‖ p_old(τ)) ≤ ε  through its Lagrangian:
for a multiplier η the optimum is the max-entropy LQR solution of the cost l/η − log p_old(u|x), and η is found
by a dual search (the dual's derivative in η is ε − KL) so that the KL lands within `tol` of ε.

All functions are pure and work in the dtype of their inputs (call them under `jax.enable_x64(True)` with
float64 arrays where exact analytics are needed).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class LinearDynamics(NamedTuple):
    """x' = F xu + f + N(0, cov). F: T×S×(S+A), f: T×S, cov: T×S×S."""

    F: jax.Array
    f: jax.Array
    cov: jax.Array


class QuadCost(NamedTuple):
    """Running costs ½ xuᵀC xu + cᵀxu + c0 (C: T×(S+A)×(S+A), c: T×(S+A), c0: T) and a final cost on x_T
    (Cf: S×S, cf: S, cf0: scalar)."""

    C: jax.Array
    c: jax.Array
    c0: jax.Array
    Cf: jax.Array
    cf: jax.Array
    cf0: jax.Array


class LinearGaussianPolicy(NamedTuple):
    """u_t ~ N(K_t x_t + k_t, cov_t). K: T×A×S, k: T×A, cov: T×A×A, chol = cholesky(cov), inv_cov = cov⁻¹."""

    K: jax.Array
    k: jax.Array
    cov: jax.Array
    chol: jax.Array
    inv_cov: jax.Array


def make_policy(K: jax.Array, k: jax.Array, cov: jax.Array) -> LinearGaussianPolicy:
    """A `LinearGaussianPolicy` with its Cholesky factor and precision precomputed."""
    cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2))
    chol = jnp.linalg.cholesky(cov)
    eye = jnp.broadcast_to(jnp.eye(cov.shape[-1], dtype=cov.dtype), cov.shape)
    inv = jax.scipy.linalg.cho_solve((chol, True), eye)
    return LinearGaussianPolicy(K, k, cov, chol, inv)


def init_policy(T: int, state_dim: int, act_dim: int, variance: float, mean: jax.Array | None = None,
                dtype=jnp.float32) -> LinearGaussianPolicy:
    """The zero-gain controller N(mean, variance·I) used to start LQR-FLM (mean defaults to 0)."""
    k = jnp.zeros((T, act_dim), dtype) if mean is None else jnp.broadcast_to(jnp.asarray(mean, dtype), (T, act_dim))
    cov = jnp.broadcast_to(variance * jnp.eye(act_dim, dtype=dtype), (T, act_dim, act_dim))
    return make_policy(jnp.zeros((T, act_dim, state_dim), dtype), k, cov)


def policy_sample(pol: LinearGaussianPolicy, t: int | jax.Array, x: jax.Array, key: jax.Array | None) -> jax.Array:
    """One action from p(u|x) at time t (the mean when key is None). x: ...×S -> ...×A."""
    mean = jnp.einsum("as,...s->...a", pol.K[t], x) + pol.k[t]
    if key is None:
        return mean
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.einsum("ab,...b->...a", pol.chol[t], eps)


# ---- the Riccati recursion ------------------------------------------------------------------------


class BackwardResult(NamedTuple):
    K: jax.Array  # T×A×S
    k: jax.Array  # T×A
    Quu: jax.Array  # T×A×A (regularized)
    V: jax.Array  # (T+1)×S×S value Hessians
    v: jax.Array  # (T+1)×S value gradients
    ok: jax.Array  # bool: every Q_uu was positive definite
    dJ: jax.Array  # 2: expected cost change of a full step is dJ[0]·α + dJ[1]·α²


def backward_pass(F: jax.Array, f: jax.Array, cost: QuadCost, mu: float | jax.Array = 0.0) -> BackwardResult:
    """Dynamic programming for x' = F xu + f with quadratic cost: Q_t = C_t + F_tᵀ V_{t+1} F_t, u = K x + k.

    `mu` regularizes Q_uu ← Q_uu + μI (Levenberg-Marquardt; μ=0 is exact LQR). The value recursion uses the
    regularized gains with Tassa's formulas V = Q_xx + KᵀQ_uu K + KᵀQ_ux + Q_xu K so it stays consistent
    with the controller actually returned."""
    S = F.shape[1]

    def step(carry, inp):
        V, v, ok = carry
        F_t, f_t, C_t, c_t = inp
        Q = C_t + F_t.T @ V @ F_t
        q = c_t + F_t.T @ (V @ f_t + v)
        Qxx, Qxu, Qux, Quu = Q[:S, :S], Q[:S, S:], Q[S:, :S], Q[S:, S:]
        Quu = 0.5 * (Quu + Quu.T) + mu * jnp.eye(Quu.shape[0], dtype=Q.dtype)
        qx, qu = q[:S], q[S:]
        L = jnp.linalg.cholesky(Quu)
        ok_t = jnp.all(jnp.isfinite(L))
        K = -jax.scipy.linalg.cho_solve((L, True), Qux)
        k = -jax.scipy.linalg.cho_solve((L, True), qu)
        V_new = Qxx + K.T @ Quu @ K + K.T @ Qux + Qxu @ K
        V_new = 0.5 * (V_new + V_new.T)
        v_new = qx + K.T @ Quu @ k + K.T @ qu + Qxu @ k
        dJ = jnp.stack([k @ qu, 0.5 * k @ Quu @ k])
        return (V_new, v_new, ok & ok_t), (K, k, Quu, V_new, v_new, dJ)

    init = (cost.Cf, cost.cf, jnp.array(True))
    (_, _, ok), (K, k, Quu, V, v, dJ) = jax.lax.scan(step, init, (F, f, cost.C, cost.c), reverse=True)
    V = jnp.concatenate([V, cost.Cf[None]])
    v = jnp.concatenate([v, cost.cf[None]])
    return BackwardResult(K, k, Quu, V, v, ok, dJ.sum(0))


def lqr(A: jax.Array, B: jax.Array, Q: jax.Array, R: jax.Array, T: int, Qf: jax.Array | None = None) -> jax.Array:
    """Finite-horizon LQR gains for x' = A x + B u, cost Σ ½xᵀQx + ½uᵀRu + ½x_TᵀQf x_T: K T×A×S, u_t = K_t x_t."""
    S, A_ = B.shape
    F = jnp.broadcast_to(jnp.concatenate([A, B], 1), (T, S, S + A_))
    C = jnp.zeros((S + A_, S + A_), A.dtype).at[:S, :S].set(Q).at[S:, S:].set(R)
    cost = QuadCost(jnp.broadcast_to(C, (T, S + A_, S + A_)), jnp.zeros((T, S + A_), A.dtype), jnp.zeros(T, A.dtype),
                    Q if Qf is None else Qf, jnp.zeros(S, A.dtype), jnp.zeros((), A.dtype))
    return backward_pass(F, jnp.zeros((T, S), A.dtype), cost).K


# ---- iLQR on known differentiable dynamics --------------------------------------------------------

Dynamics = Callable[[jax.Array, jax.Array], jax.Array]  # (x S, u A) -> x' S
RunningCost = Callable[[jax.Array, jax.Array], jax.Array]  # (x S, u A) -> scalar
FinalCost = Callable[[jax.Array], jax.Array]  # x S -> scalar


def rollout_cost(dynamics: Dynamics, cost: RunningCost, final_cost: FinalCost, x0: jax.Array, U: jax.Array):
    """Open-loop rollout: (states (T+1)×S, total cost)."""

    def body(x, u):
        return dynamics(x, u), (x, cost(x, u))

    xT, (X, c) = jax.lax.scan(body, x0, U)
    return jnp.concatenate([X, xT[None]]), c.sum() + final_cost(xT)


def _psd(H: jax.Array) -> jax.Array:
    """The nearest positive semi-definite matrix (negative eigenvalues set to 0), batched."""
    w, V = jnp.linalg.eigh(H)
    return jnp.einsum("...ij,...j,...kj->...ik", V, jnp.maximum(w, 0.0), V)


def quadratize(
    cost: RunningCost, final_cost: FinalCost, X: jax.Array, U: jax.Array, convexify: bool = False
) -> QuadCost:
    """Second-order expansion of the cost around (X, U) in deviation coordinates (c0 = cost at the nominal).
    `convexify` projects each Hessian onto the PSD cone: a non-convex cost (1 − cos θ at the bottom) otherwise
    makes the value Hessians indefinite, growing through unstable dynamics until no regularization helps."""
    S = X.shape[-1]

    def l_xu(xu):
        return cost(xu[:S], xu[S:])

    XU = jnp.concatenate([X[:-1], U], -1)
    C = jax.vmap(jax.hessian(l_xu))(XU)
    c = jax.vmap(jax.grad(l_xu))(XU)
    c0 = jax.vmap(l_xu)(XU)
    C = 0.5 * (C + jnp.swapaxes(C, -1, -2))
    Cf = jax.hessian(final_cost)(X[-1])
    Cf = 0.5 * (Cf + Cf.T)
    if convexify:
        C, Cf = _psd(C), _psd(Cf)
    return QuadCost(C, c, c0, Cf, jax.grad(final_cost)(X[-1]), final_cost(X[-1]))


def linearize(dynamics: Dynamics, X: jax.Array, U: jax.Array) -> jax.Array:
    """Jacobians F_t = ∂f/∂[x;u] at the nominal trajectory: T×S×(S+A) (jax.jacfwd)."""
    S = X.shape[-1]
    XU = jnp.concatenate([X[:-1], U], -1)
    return jax.vmap(jax.jacfwd(lambda xu: dynamics(xu[:S], xu[S:])))(XU)


def forward_pass(dynamics: Dynamics, cost: RunningCost, final_cost: FinalCost, X: jax.Array, U: jax.Array,
                 K: jax.Array, k: jax.Array, alpha: jax.Array):
    """The closed-loop line-search rollout u_t = U_t + α k_t + K_t (x_t − X_t): (X', U', cost)."""

    def body(x, inp):
        x_nom, u_nom, K_t, k_t = inp
        u = u_nom + alpha * k_t + K_t @ (x - x_nom)
        return dynamics(x, u), (x, u, cost(x, u))

    xT, (Xn, Un, c) = jax.lax.scan(body, X[0], (X[:-1], U, K, k))
    return jnp.concatenate([Xn, xT[None]]), Un, c.sum() + final_cost(xT)


@partial(jax.jit, static_argnames=("dynamics",))
def closed_loop_rollout(dynamics: Dynamics, x0: jax.Array, X: jax.Array, U: jax.Array, K: jax.Array):
    """Run u_t = U_t + K_t (x_t − X_t) from x0 (which may differ from X_0): (states T×S visited, actions T×A).
    X needs at least T rows. Used to warm-start a replan from where the system actually is."""

    def body(x, inp):
        x_nom, u_nom, K_t = inp
        u = u_nom + K_t @ (x - x_nom)
        return dynamics(x, u), (x, u)

    _, (Xs, Us) = jax.lax.scan(body, x0, (X[: U.shape[0]], U, K))
    return Xs, Us


# Line-search step sizes 1 … 10⁻³, log-spaced, largest first (a module constant: mypy cannot analyse a
# comprehension in a default argument).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(10.0 ** -x) for x in np.linspace(0, 3, 11))


class ILQRResult(NamedTuple):
    X: jax.Array  # (T+1)×S optimized states
    U: jax.Array  # T×A optimized actions
    K: jax.Array  # T×A×S feedback gains around (X, U): u = U_t + K_t (x − X_t)
    cost: jax.Array  # final total cost
    Quu: jax.Array  # T×A×A at the solution (Σ_t = Q_uu⁻¹ for a linear-Gaussian controller)
    iterations: int
    costs: list  # total cost after each accepted iteration (index 0: the initial guess)


@partial(jax.jit, static_argnames=("dynamics", "cost", "final_cost", "convexify"))
def ilqr_iteration(dynamics: Dynamics, cost: RunningCost, final_cost: FinalCost, X: jax.Array, U: jax.Array,
                   mu: jax.Array, alphas: jax.Array, convexify: bool = False):
    """One backward pass at regularization μ and a parallel line search over `alphas` (vmapped rollouts).
    Returns (backward result, candidate X α×(T+1)×S, U α×T×A, costs α)."""
    F = linearize(dynamics, X, U)
    q = quadratize(cost, final_cost, X, U, convexify)
    back = backward_pass(F, jnp.zeros(F.shape[:2], F.dtype), q, mu)
    Xs, Us, Js = jax.vmap(lambda a: forward_pass(dynamics, cost, final_cost, X, U, back.K, back.k, a))(alphas)
    return back, Xs, Us, Js


def ilqr(
    dynamics: Dynamics,
    cost: RunningCost,
    final_cost: FinalCost,
    x0: jax.Array,
    U0: jax.Array,
    *,
    max_iters: int = 100,
    tol: float = 1e-8,
    mu_init: float = 1e-6,
    mu_min: float = 1e-6,
    mu_max: float = 1e10,
    mu_factor: float = 2.0,
    alphas: tuple[float, ...] = DEFAULT_ALPHAS,
    armijo: float = 1e-4,
    convexify: bool = False,
) -> ILQRResult:
    """iLQR (Li & Todorov 2004, regularization and line search of Tassa, Erez & Todorov 2012).

    Each iteration: linearize the dynamics (jacfwd) and quadratize the cost (hessian) around (X, U); a
    backward pass at regularization μ (if some Q_uu is not positive definite, μ grows by the factor Δ and the
    pass is repeated); a forward pass for every α in `alphas` at once; accept the largest α whose actual
    reduction is at least `armijo` × the expected one (then μ shrinks), else grow μ. Stops when the relative
    improvement is below `tol` or μ exceeds `mu_max`. `convexify` uses PSD-projected cost Hessians (a
    Gauss-Newton-like step, robust for non-convex costs). x0: S, U0: T×A."""
    if U0.ndim != 2 or x0.ndim != 1:
        raise ValueError(f"ilqr needs x0 of shape S and U0 of shape T×A, got {x0.shape} and {U0.shape}")
    alphas_arr = jnp.asarray(alphas, x0.dtype)
    X, J = jax.jit(rollout_cost, static_argnums=(0, 1, 2))(dynamics, cost, final_cost, x0, U0)
    U = U0
    mu, delta = mu_init, 1.0
    costs = [float(J)]
    back = None
    it = 0
    for _ in range(max_iters):
        it += 1
        accepted = False
        while mu <= mu_max:
            back, Xs, Us, Js = ilqr_iteration(dynamics, cost, final_cost, X, U, jnp.asarray(mu, x0.dtype), alphas_arr,
                                              convexify)
            if bool(back.ok):
                expected = -(alphas_arr * back.dJ[0] + alphas_arr**2 * back.dJ[1])  # ≥ 0
                if float(expected[0]) <= tol * (abs(float(J)) + 1e-12):
                    break  # converged: no step can improve by more than the tolerance
                actual = J - Js
                good = np.asarray((actual > armijo * expected) & jnp.isfinite(Js) & (actual > 0))
                if good.any():
                    i = int(np.argmax(good))  # alphas are in decreasing order: the largest good step
                    X, U, J_new = Xs[i], Us[i], Js[i]
                    accepted = True
                    break
            delta = max(mu_factor, delta * mu_factor)  # grow μ (Tassa's schedule)
            mu = max(mu_min, mu * delta)
        if not accepted:
            break
        rel = float((J - J_new) / (abs(J) + 1e-12))
        J = J_new
        costs.append(float(J))
        delta = min(1.0 / mu_factor, delta / mu_factor)  # shrink μ
        mu = mu * delta if mu * delta > mu_min else 0.0
        if rel < tol:
            break
    # Gains and Q_uu at the final trajectory (unregularized where possible).
    while True:  # (raising μ until every Q_uu is positive definite: a non-convex problem may need it)
        back, *_ = ilqr_iteration(dynamics, cost, final_cost, X, U, jnp.asarray(mu, x0.dtype), alphas_arr[:1],
                                  convexify)
        if bool(back.ok):
            break
        if mu > mu_max:  # no usable feedback: fall back to the open-loop plan
            back = back._replace(K=jnp.zeros_like(back.K), Quu=jnp.full_like(back.Quu, jnp.nan))
            break
        mu = max(mu_min, mu * 10.0)
    return ILQRResult(X, U, back.K, J, back.Quu, it, costs)


# ---- linear-Gaussian trajectory distributions -----------------------------------------------------


def xu_marginals(pol: LinearGaussianPolicy, mu_x: jax.Array, sigma_x: jax.Array):
    """Joint Gaussian of [x; u] given x ~ N(mu_x, sigma_x) and u ~ p(u|x): mean S+A, cov (S+A)×(S+A) per t."""
    mu_u = jnp.einsum("...as,...s->...a", pol.K, mu_x) + pol.k
    KS = jnp.einsum("...as,...sr->...ar", pol.K, sigma_x)
    top = jnp.concatenate([sigma_x, jnp.swapaxes(KS, -1, -2)], -1)
    bot = jnp.concatenate([KS, jnp.einsum("...ar,...br->...ab", KS, pol.K) + pol.cov], -1)
    return jnp.concatenate([mu_x, mu_u], -1), jnp.concatenate([top, bot], -2)


@jax.jit
def forward_marginals(dyn: LinearDynamics, pol: LinearGaussianPolicy, mu0: jax.Array, sigma0: jax.Array):
    """State marginals of the trajectory distribution p(τ) = p(x_0) Π p(u_t|x_t) p(x_{t+1}|x_t,u_t).
    Returns mu_x (T+1)×S, sigma_x (T+1)×S×S, mu_xu T×(S+A), sigma_xu T×(S+A)×(S+A)."""

    def step(carry, inp):
        mu, sig = carry
        F, f, dcov, K, k, cov, chol, inv = inp
        m, s = xu_marginals(LinearGaussianPolicy(K, k, cov, chol, inv), mu, sig)
        mu2 = F @ m + f
        sig2 = F @ s @ F.T + dcov
        return (mu2, 0.5 * (sig2 + sig2.T)), (mu, sig, m, s)

    (muT, sigT), (mu, sig, m, s) = jax.lax.scan(step, (mu0, sigma0), (dyn.F, dyn.f, dyn.cov, *pol))
    return jnp.concatenate([mu, muT[None]]), jnp.concatenate([sig, sigT[None]]), m, s


@jax.jit
def expected_cost(
    cost: QuadCost, mu_x: jax.Array, sigma_x: jax.Array, mu_xu: jax.Array, sigma_xu: jax.Array
) -> jax.Array:
    """E[Σ_t l_t(xu_t) + l_f(x_T)] under Gaussian marginals: ½tr(CΣ) + ½μᵀCμ + cᵀμ + c0 per step."""
    run = (0.5 * jnp.einsum("tij,tji->t", cost.C, sigma_xu) + 0.5 * jnp.einsum("ti,tij,tj->t", mu_xu, cost.C, mu_xu)
           + jnp.einsum("ti,ti->t", cost.c, mu_xu) + cost.c0)
    fin = 0.5 * jnp.trace(cost.Cf @ sigma_x[-1]) + 0.5 * mu_x[-1] @ cost.Cf @ mu_x[-1] + cost.cf @ mu_x[-1] + cost.cf0
    return run.sum() + fin


@jax.jit
def policy_kl(new: LinearGaussianPolicy, old: LinearGaussianPolicy, mu_x: jax.Array, sigma_x: jax.Array) -> jax.Array:
    """Per-step E_{x ~ N(mu_x, sigma_x)} KL(new(u|x) ‖ old(u|x)), analytic (T). mu_x T×S, sigma_x T×S×S.

    With δ(x) = (K_new − K_old) x + (k_new − k_old): ½[tr(P_old Σ_new) − A + log|Σ_old| − log|Σ_new|
    + E δᵀ P_old δ], and E δᵀPδ = (δK μ + δk)ᵀ P (δK μ + δk) + tr(δKᵀ P δK Σ_x)."""
    A = new.k.shape[-1]
    dK, dk = new.K - old.K, new.k - old.k
    d_mu = jnp.einsum("tas,ts->ta", dK, mu_x) + dk
    logdet_new = 2 * jnp.log(jnp.diagonal(new.chol, axis1=-2, axis2=-1)).sum(-1)
    logdet_old = 2 * jnp.log(jnp.diagonal(old.chol, axis1=-2, axis2=-1)).sum(-1)
    tr = jnp.einsum("tab,tba->t", old.inv_cov, new.cov)
    quad = jnp.einsum("ta,tab,tb->t", d_mu, old.inv_cov, d_mu)
    quad_x = jnp.einsum("tas,tab,tbr,trs->t", dK, old.inv_cov, dK, sigma_x)
    return 0.5 * (tr - A + logdet_old - logdet_new + quad + quad_x)


@jax.jit
def trajectory_kl(dyn: LinearDynamics, new: LinearGaussianPolicy, old: LinearGaussianPolicy, mu0: jax.Array,
                  sigma0: jax.Array) -> jax.Array:
    """D_KL(p_new(τ) ‖ p_old(τ)) for two controllers under the same dynamics and initial state distribution:
    the dynamics terms cancel, leaving Σ_t E_{p_new(x_t)} KL(p_new(u_t|x_t) ‖ p_old(u_t|x_t))."""
    mu_x, sig_x, _, _ = forward_marginals(dyn, new, mu0, sigma0)
    return policy_kl(new, old, mu_x[:-1], sig_x[:-1]).sum()


def log_prob(pol: LinearGaussianPolicy, X: jax.Array, U: jax.Array) -> jax.Array:
    """Σ_t log p(u_t|x_t) for trajectories X N×(T+1)×S (or N×T×S), U N×T×A -> N."""
    T = U.shape[-2]
    d = U - (jnp.einsum("tas,nts->nta", pol.K, X[:, :T]) + pol.k)
    z = jax.scipy.linalg.solve_triangular(pol.chol, jnp.transpose(d, (1, 2, 0)), lower=True)  # T×A×N
    logdet = 2 * jnp.log(jnp.diagonal(pol.chol, axis1=-2, axis2=-1)).sum(-1)
    lp = -0.5 * (z**2).sum(-2) - 0.5 * logdet[:, None] - 0.5 * U.shape[-1] * jnp.log(2 * jnp.pi)
    return lp.sum(0)


# ---- KL-constrained (maximum-entropy) LQR ----------------------------------------------------------


def kl_augmented_cost(cost: QuadCost, old: LinearGaussianPolicy, eta: jax.Array) -> QuadCost:
    """The cost l/η − log p_old(u|x) (dropping constants independent of x, u): the Lagrangian's integrand.
    −log p_old = ½ (u − Kx − k)ᵀ P (u − Kx − k): quadratic [[KᵀPK, −KᵀP], [−PK, P]], linear [KᵀPk, −Pk]."""
    KtP = jnp.einsum("tas,tab->tsb", old.K, old.inv_cov)
    Cx = jnp.concatenate([jnp.concatenate([KtP @ old.K, -KtP], -1),
                          jnp.concatenate([-jnp.swapaxes(KtP, -1, -2), old.inv_cov], -1)], -2)
    cx = jnp.concatenate([jnp.einsum("tsb,tb->ts", KtP, old.k), -jnp.einsum("tab,tb->ta", old.inv_cov, old.k)], -1)
    return QuadCost(cost.C / eta + Cx, cost.c / eta + cx, cost.c0 / eta, cost.Cf / eta, cost.cf / eta, cost.cf0 / eta)


def max_ent_lqr(dyn: LinearDynamics, cost: QuadCost) -> tuple[LinearGaussianPolicy, jax.Array]:
    """argmin_p E_p[l(τ)] − H(p): the linear-Gaussian controller N(Kx + k, Q_uu⁻¹) from the backward pass.
    Returns (policy, ok) where ok is False if some Q_uu was not positive definite."""
    back = backward_pass(dyn.F, dyn.f, cost)
    eye = jnp.broadcast_to(jnp.eye(back.Quu.shape[-1], dtype=back.Quu.dtype), back.Quu.shape)
    L = jnp.linalg.cholesky(back.Quu)
    cov = jax.scipy.linalg.cho_solve((L, True), eye)
    pol = make_policy(back.K, back.k, cov)
    ok = back.ok & jnp.all(jnp.isfinite(pol.chol))
    return pol, ok


@jax.jit
def solve_eta(dyn: LinearDynamics, cost: QuadCost, old: LinearGaussianPolicy, eta: jax.Array, mu0: jax.Array,
              sigma0: jax.Array):
    """The controller for multiplier η and its KL to `old` (inf if the backward pass failed)."""
    pol, ok = max_ent_lqr(dyn, kl_augmented_cost(cost, old, eta))
    kl = trajectory_kl(dyn, pol, old, mu0, sigma0)
    kl = jnp.where(ok & jnp.isfinite(kl), kl, jnp.inf)
    return pol, kl


class KLUpdate(NamedTuple):
    policy: LinearGaussianPolicy
    eta: float
    kl: float
    iterations: int
    converged: bool


def kl_constrained_update(
    dyn: LinearDynamics,
    cost: QuadCost,
    old: LinearGaussianPolicy,
    mu0: jax.Array,
    sigma0: jax.Array,
    epsilon: float,
    *,
    eta_init: float = 1.0,
    eta_min: float = 1e-8,
    eta_max: float = 1e16,
    tol: float = 0.05,
    max_iters: int = 60,
) -> KLUpdate:
    """min_p E_p[l] s.t. D_KL(p(τ) ‖ p_old(τ)) ≤ ε by dual descent on η (Levine & Abbeel 2014, Alg. 1).

    The Lagrangian is minimized in closed form for each η (`solve_eta`); the dual function g(η) is convex
    with g'(η) = ε − KL(η), and KL(η) decreases as η grows. Each dual step moves η toward the side the
    gradient points to inside a bracket [η_lo, η_hi] (a geometric-mean step, i.e. bisection in log η, which
    is robust where a plain gradient step on a scale-free η is not). Stops when |KL − ε| ≤ tol·ε. If even η_min
    gives KL < ε the constraint is inactive and that solution is returned."""
    if epsilon <= 0:
        raise ValueError(f"epsilon (the KL step) must be positive, got {epsilon}")
    lo: float | None = None  # largest η seen with KL > ε
    hi: float | None = None  # smallest η seen with KL ≤ ε
    eta = float(np.clip(eta_init, eta_min, eta_max))
    best = None
    for i in range(1, max_iters + 1):
        pol, kl = solve_eta(dyn, cost, old, jnp.asarray(eta, mu0.dtype), mu0, sigma0)
        kl = float(kl)
        if np.isfinite(kl) and (best is None or abs(kl - epsilon) < abs(best[1] - epsilon)):
            best = (pol, kl, eta)
        if np.isfinite(kl) and abs(kl - epsilon) <= tol * epsilon:
            return KLUpdate(pol, eta, kl, i, True)
        if kl > epsilon:  # g'(η) = ε − KL < 0: the step is too large, raise η
            lo = eta
            if eta >= eta_max:
                break
            eta = min(eta * 10.0, eta_max) if hi is None else float(np.sqrt(lo * hi))
        else:  # the constraint is slack: lower η
            hi = eta
            if eta <= eta_min:  # inactive constraint: the unconstrained optimum is within the trust region
                return KLUpdate(pol, eta, kl, i, True)
            eta = max(eta / 10.0, eta_min) if lo is None else float(np.sqrt(lo * hi))
    if best is None:
        raise RuntimeError("the KL-constrained update failed for every η (Q_uu never positive definite); "
                           "check the cost expansion (is it convex in u?) and the dynamics fit")
    pol, kl, eta = best
    return KLUpdate(pol, eta, kl, max_iters, False)
