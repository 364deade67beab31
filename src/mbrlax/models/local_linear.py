"""Time-varying linear-Gaussian dynamics p(x_{t+1} | x_t, u_t) = N(A_t x_t + B_t u_t + c_t, Σ_t) fitted from
N trajectories (Levine & Abbeel 2014, "Learning neural network policies with guided policy search under unknown
dynamics"; the GPS code's `DynamicsLRPrior`).

Three fits, all returning `planning.ilqr.LinearDynamics` (F_t = [A_t B_t], f_t = c_t, cov_t = Σ_t):
- `fit_linear_gaussian`: per-step least squares on the N samples of time t (exact on noiseless linear data
  once N ≥ S + A + 1).
- `fit_linear_gaussian_bayes`: the same regression with a normal-inverse-Wishart prior on the joint Gaussian of
  [x_t; u_t; x_{t+1}]; the posterior (MAP) joint is conditioned on [x; u]. A prior lets N be far smaller than
  S + A + 1.
- priors: `fit_gmm` + `gmm_prior` (a Gaussian mixture over *all* (x, u, x') tuples of all steps and
  iterations; at each t the prior is the mixture's moment-matched Gaussian under the responsibilities of that
  step's points), or `model_prior` (the linearization of a global model, e.g. a neural ensemble's mean).

Shapes: X N×(T+1)×S states, U N×T×A actions; D = 2S + A for joint points.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mbrlax.planning.ilqr import LinearDynamics


def _check(X: jax.Array, U: jax.Array) -> None:
    if X.ndim != 3 or U.ndim != 3 or X.shape[0] != U.shape[0] or X.shape[1] != U.shape[1] + 1:
        raise ValueError(f"need states X N×(T+1)×S and actions U N×T×A with the same N, got {X.shape} and {U.shape}")


def joint_points(X: jax.Array, U: jax.Array) -> jax.Array:
    """[x_t, u_t, x_{t+1}] for every sample and step: T×N×D."""
    return jnp.swapaxes(jnp.concatenate([X[:, :-1], U, X[:, 1:]], -1), 0, 1)


def _condition(mu: jax.Array, sigma: jax.Array, n_in: int, reg: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Condition a joint Gaussian over [xu; x'] on xu: (F, f, cov) of x' = F xu + f + N(0, cov)."""
    s_in = sigma[:n_in, :n_in] + reg * jnp.eye(n_in, dtype=sigma.dtype)
    F = jnp.linalg.solve(s_in, sigma[:n_in, n_in:]).T
    f = mu[n_in:] - F @ mu[:n_in]
    cov = sigma[n_in:, n_in:] - F @ s_in @ F.T
    return F, f, 0.5 * (cov + cov.T)


@partial(jax.jit, static_argnames=())
def fit_linear_gaussian(X: jax.Array, U: jax.Array, reg: float = 1e-6) -> LinearDynamics:
    """Per-step linear regression x_{t+1} ≈ A_t x_t + B_t u_t + c_t with Σ_t the residual covariance (maximum
    likelihood, divisor N). `reg` is a ridge on the input covariance (keeps N < S+A+1 solvable, biased)."""
    _check(X, U)
    S = X.shape[-1]
    pts = joint_points(X, U)
    n_in = pts.shape[-1] - S

    def one(p):
        mu = p.mean(0)
        d = p - mu
        sigma = d.T @ d / p.shape[0]
        return _condition(mu, sigma, n_in, reg)

    F, f, cov = jax.vmap(one)(pts)
    return LinearDynamics(F, f, cov + 1e-8 * jnp.eye(S, dtype=cov.dtype))


class NIWPrior(NamedTuple):
    """Normal-inverse-Wishart prior per step over joint points: mean mu0 T×D, scale Phi T×D×D, and the strengths
    m (pseudo-count of the mean) and n0 (pseudo-count of the covariance), each T."""

    mu0: jax.Array
    Phi: jax.Array
    m: jax.Array
    n0: jax.Array


@jax.jit
def fit_linear_gaussian_bayes(X: jax.Array, U: jax.Array, prior: NIWPrior, reg: float = 1e-6) -> LinearDynamics:
    """Bayesian per-step regression: the NIW posterior of the joint Gaussian of [x_t; u_t; x_{t+1}],
        μ = (N μ̂ + m μ0) / (N + m),   Σ = (Φ + N Σ̂ + N m/(N + m) (μ̂ − μ0)(μ̂ − μ0)ᵀ) / (N + n0),
    conditioned on [x; u]. With m, n0 → ∞ this returns the prior's regression (Φ/n0, μ0); with m = n0 = 0 the
    plain least-squares fit. (The GPS code keeps μ = μ̂; the posterior mean used here is what makes a strong prior
    return the prior exactly.)"""
    _check(X, U)
    S = X.shape[-1]
    pts = joint_points(X, U)
    n_in = pts.shape[-1] - S
    N = pts.shape[1]

    def one(p, mu0, Phi, m, n0):
        mu_hat = p.mean(0)
        d = p - mu_hat
        emp = d.T @ d / N
        dm = mu_hat - mu0
        mu = (N * mu_hat + m * mu0) / (N + m)
        sigma = (Phi + N * emp + (N * m / (N + m)) * jnp.outer(dm, dm)) / (N + n0)
        return _condition(mu, 0.5 * (sigma + sigma.T), n_in, reg)

    F, f, cov = jax.vmap(one)(pts, prior.mu0, prior.Phi, prior.m, prior.n0)
    return LinearDynamics(F, f, cov + 1e-8 * jnp.eye(S, dtype=cov.dtype))


# ---- a Gaussian mixture prior -----------------------------------------------------------------------


class GMM(NamedTuple):
    """K components over D-dim points: log_weights K, means K×D, covs K×D×D."""

    log_weights: jax.Array
    means: jax.Array
    covs: jax.Array


def _log_resp(gmm: GMM, pts: jax.Array) -> jax.Array:
    """log responsibilities P×K (log p(k | point))."""
    D = pts.shape[-1]
    L = jnp.linalg.cholesky(gmm.covs)  # K×D×D
    d = pts[:, None, :] - gmm.means[None]  # P×K×D
    z = jax.vmap(lambda Lk, dk: jax.scipy.linalg.solve_triangular(Lk, dk.T, lower=True).T, (0, 1), 1)(L, d)
    logdet = 2 * jnp.log(jnp.diagonal(L, axis1=-2, axis2=-1)).sum(-1)
    ll = -0.5 * (z**2).sum(-1) - 0.5 * logdet - 0.5 * D * jnp.log(2 * jnp.pi) + gmm.log_weights
    return ll - jax.scipy.special.logsumexp(ll, axis=1, keepdims=True)


@partial(jax.jit, static_argnames=("num_components", "iters"))
def fit_gmm(pts: jax.Array, key: jax.Array, num_components: int = 8, iters: int = 50, reg: float = 1e-6) -> GMM:
    """EM for a full-covariance Gaussian mixture on points P×D, initialized from a random hard assignment (as
    the GPS code does). `reg` is added to every covariance (relative to the data's scale)."""
    P, D = pts.shape
    scale = jnp.var(pts, 0).mean() + 1e-12
    eye = (reg * scale + 1e-10) * jnp.eye(D, dtype=pts.dtype)
    resp = jax.nn.one_hot(jax.random.randint(key, (P,), 0, num_components), num_components, dtype=pts.dtype)

    def m_step(resp):
        nk = resp.sum(0) + 1e-10
        means = resp.T @ pts / nk[:, None]
        d = pts[None] - means[:, None]  # K×P×D
        covs = jnp.einsum("pk,kpi,kpj->kij", resp, d, d) / nk[:, None, None] + eye
        return GMM(jnp.log(nk / P), means, covs)

    def body(resp, _):
        gmm = m_step(resp)
        return jnp.exp(_log_resp(gmm, pts)), None

    resp, _ = jax.lax.scan(body, resp, None, length=iters)
    return m_step(resp)


@jax.jit
def gmm_prior(gmm: GMM, X: jax.Array, U: jax.Array, strength: float = 1.0) -> NIWPrior:
    """At each step t, the moment-matched Gaussian of the mixture weighted by the mean responsibility of that
    step's N points: μ0 = Σ_k w_k μ_k, Φ/n0 = Σ_k w_k (Σ_k + (μ_k − μ0)(μ_k − μ0)ᵀ). The pseudo-counts are
    m = n0 = `strength` (the GPS code's prior strength, in units of samples); Φ = n0 × that covariance."""
    pts = joint_points(X, U)

    def one(p):
        w = jnp.exp(jax.scipy.special.logsumexp(_log_resp(gmm, p), axis=0) - jnp.log(p.shape[0]))
        mu0 = w @ gmm.means
        d = gmm.means - mu0
        cov = jnp.einsum("k,kij->ij", w, gmm.covs + jnp.einsum("ki,kj->kij", d, d))
        return mu0, cov

    mu0, cov = jax.vmap(one)(pts)
    T = mu0.shape[0]
    s = jnp.full((T,), strength, mu0.dtype)
    return NIWPrior(mu0, s[:, None, None] * cov, s, s)


def model_prior(model_fn: Callable[[jax.Array, jax.Array], jax.Array], X: jax.Array, U: jax.Array,
                strength: float = 1.0, noise: float = 1e-4, input_var: float = 0.1) -> NIWPrior:
    """A prior from a global model x' = model_fn(x, u) (e.g. an ensemble's mean): at each t, linearize it at
    the samples' mean [x̄; ū] (J = ∂f/∂[x;u]) and use the joint Gaussian whose input part is the samples'
    covariance Σ_xu and whose output is J·xu + (f(x̄,ū) − J x̄u) + N(0, noise·I).

    `input_var` (relative to the mean input variance) is added to the diagonal of Σ_xu: with fewer samples
    than inputs Σ_xu is singular, and the prior would then say nothing about J along the directions the
    samples do not span, which is exactly where it is needed. Any full-rank Σ_xu conditions back to J."""
    _check(X, U)
    S = X.shape[-1]
    XU = jnp.concatenate([X[:, :-1], U], -1)  # N×T×(S+A)
    mean = XU.mean(0)
    d = XU - mean
    cov_in = jnp.einsum("nti,ntj->tij", d, d) / XU.shape[0]
    scale = jnp.trace(cov_in, axis1=-2, axis2=-1) / cov_in.shape[-1]  # T
    cov_in = cov_in + (input_var * scale + 1e-8)[:, None, None] * jnp.eye(cov_in.shape[-1], dtype=X.dtype)
    f = jax.vmap(lambda xu: model_fn(xu[:S], xu[S:]))(mean)
    J = jax.vmap(jax.jacfwd(lambda xu: model_fn(xu[:S], xu[S:])))(mean)  # T×S×(S+A)
    cross = jnp.einsum("tij,tkj->tik", cov_in, J)  # T×(S+A)×S
    out = jnp.einsum("tij,tjk->tik", J, cross) + noise * jnp.eye(S, dtype=X.dtype)
    cov = jnp.concatenate([jnp.concatenate([cov_in, cross], -1),
                           jnp.concatenate([jnp.swapaxes(cross, -1, -2), out], -1)], -2)
    mu0 = jnp.concatenate([mean, f], -1)
    T = mu0.shape[0]
    s = jnp.full((T,), strength, X.dtype)
    return NIWPrior(mu0, s[:, None, None] * cov, s, s)
