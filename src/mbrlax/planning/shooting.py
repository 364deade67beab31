"""Sampling-based trajectory optimizers for MPC: random shooting, CEM (with iCEM's options) and MPPI.

The seam between a planner and everything else is one function,

    return_fn(actions P×H×A, key) -> returns P

the (expected) return of P open-loop action sequences of horizon H from the current state. Whatever
produces it — a known `JaxEnv`, a deterministic network, a probabilistic ensemble with TS1/TS∞ particles
(`planning.propagation`), a known or a learned reward — pairs with any planner here. Actions live in the
agents' box [-1, 1]^A.

A planner is a small frozen dataclass of settings (hashable, so it can be a static argument of `jax.jit`)
whose `__call__(return_fn, state, key) -> (actions H×A, state, info)` is a pure function. `state` is a
`PlanState`: the previous solution (and kept elites), which `shift` moves one (or n) steps forward to warm
start the next call, as PETS's MPC does. Every loop (CEM iterations, MPPI iterations) is a `lax.scan`, so a
whole plan is one compiled call.

A NaN or ±inf return (a diverged sample) is replaced by −inf before ranking: such a sample is ranked last
and gets zero weight, never first (`rank_safe`).

References: CEM as in PETS (Chua et al. 2018; handful-of-trials `cem.py`: truncated normal at ±2σ with the
variance shrunk near the bounds, α-smoothing of mean and variance, initial variance (ub − lb)²/16, the
solution is the final mean); iCEM (Pinneri et al. 2020): colored noise with power spectrum 1/f^β along time,
a fraction of the elites kept into the next iteration and, shifted, into the next plan; MPPI (Williams et al.
2017, in the form of Nagabandi et al. 2019's PDDM: exponentiated-return weights, temporally filtered noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp

ReturnFn = Callable[[jax.Array, jax.Array], jax.Array]  # (actions P×H×A, key) -> returns P


class PlanState(NamedTuple):
    """Warm-start state of a planner: the previous solution H×A and the kept elites K×H×A (K may be 0)."""

    mean: jax.Array
    elites: jax.Array


def init_state(horizon: int, act_dim: int, keep: int = 0) -> PlanState:
    """The cold start: a zero mean (the middle of [-1, 1]) and `keep` zero elites."""
    return PlanState(jnp.zeros((horizon, act_dim), jnp.float32), jnp.zeros((keep, horizon, act_dim), jnp.float32))


def shift(state: PlanState, n: int = 1) -> PlanState:
    """Warm start after executing n actions: drop the first n steps of the solution (and of the kept elites)
    and append zeros (PETS: `prev_sol = concat(soln[per:], zeros)`)."""
    if n <= 0:
        return state

    def sh(x):
        h = x.shape[-2]
        n_ = min(n, h)
        pad = jnp.zeros(x.shape[:-2] + (n_, x.shape[-1]), x.dtype)
        return jnp.concatenate([x[..., n_:, :], pad], -2)

    return PlanState(sh(state.mean), sh(state.elites))


def rank_safe(returns: jax.Array) -> jax.Array:
    """Non-finite returns (NaN, ±inf) become −inf, so that sorting ranks them last."""
    return jnp.where(jnp.isfinite(returns), returns, -jnp.inf)


def colored_noise(key: jax.Array, beta: float, shape: tuple[int, ...]) -> jax.Array:
    """Gaussian noise of unit variance with power spectrum ∝ 1/f^β along axis −2 (time), shape …×H×A.
    β = 0 is white noise, β = 1 pink, β = 2 red (iCEM uses β ≈ 2–2.5 for smooth action sequences).
    (Timmer & König 1995's construction, as in the `colorednoise` package, but normalized by the exact
    variance, DC term included.)"""
    h = shape[-2]
    if beta == 0 or h < 2:
        return jax.random.normal(key, shape)
    f = jnp.fft.rfftfreq(h)
    f = f.at[0].set(1.0 / h)  # low-frequency cutoff: the lowest frequency gets the DC weight
    w = f ** (-beta / 2.0)
    # the exact variance the irfft below produces: Var y = Σ_k c_k w_k² / h², c = 2 for the real DC (and
    # Nyquist, h even) terms whose real part is scaled by √2, 4 for the complex ones
    c = jnp.full(f.shape, 4.0).at[0].set(2.0)
    if h % 2 == 0:
        c = c.at[-1].set(2.0)
    sigma = jnp.sqrt(jnp.sum(c * w**2)) / h
    spec_shape = shape[:-2] + (shape[-1], f.shape[0])
    k1, k2 = jax.random.split(key)
    sr = jax.random.normal(k1, spec_shape) * w
    si = jax.random.normal(k2, spec_shape) * w
    si = si.at[..., 0].set(0.0)  # DC is real
    sr = sr.at[..., 0].multiply(jnp.sqrt(2.0))
    if h % 2 == 0:  # Nyquist is real
        si = si.at[..., -1].set(0.0)
        sr = sr.at[..., -1].multiply(jnp.sqrt(2.0))
    y = jnp.fft.irfft(sr + 1j * si, n=h, axis=-1) / sigma
    return jnp.swapaxes(y, -1, -2)


# ---- random shooting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomShooting:
    """Sample `population` sequences uniformly in [-1, 1]^(H×A) and return the best one."""

    population: int = 1000

    def __call__(self, return_fn: ReturnFn, state: PlanState, key: jax.Array):
        k_sample, k_eval = jax.random.split(key)
        h, a = state.mean.shape
        samples = jax.random.uniform(k_sample, (self.population, h, a), minval=-1.0, maxval=1.0)
        returns = rank_safe(return_fn(samples, k_eval))
        best = jnp.argmax(returns)
        return samples[best], state._replace(mean=samples[best]), {"plan/return": returns[best]}


# ---- CEM (and iCEM) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CEM:
    """Cross-entropy method over action sequences (PETS), optionally with iCEM's colored noise and kept
    elites. `iterations` rounds of: sample `population` sequences from N(mean, std²) (truncated at ±2σ and
    at the bounds for white noise; clipped for colored noise), keep the `elites` best, move mean and
    variance toward theirs by (1 − alpha)."""

    population: int = 500
    """Candidate action sequences sampled per iteration (PETS: 500)."""
    elites: int = 50
    """Best sequences whose statistics the sampling distribution moves toward (PETS: 50)."""
    iterations: int = 5
    """Refinement rounds per plan (PETS: 5)."""
    alpha: float = 0.1
    """Smoothing: new = alpha·old + (1 − alpha)·elite statistic (PETS: 0.1)."""
    init_std: float = 0.5
    """Initial std of every action: (ub − lb)/4 = 0.5 on [-1, 1] (PETS: variance (ub − lb)²/16)."""
    noise_beta: float = 0.0
    """iCEM colored-noise exponent β (0: PETS's white truncated-normal noise)."""
    keep_elites: float = 0.0
    """iCEM: fraction of the elites carried into the next iteration and (shifted) into the next plan."""
    return_best: bool = False
    """Return the best sequence ever evaluated instead of the final mean (iCEM does; PETS returns the mean)."""

    @property
    def n_keep(self) -> int:
        return int(round(self.keep_elites * self.elites))

    def __call__(self, return_fn: ReturnFn, state: PlanState, key: jax.Array):
        if self.elites > self.population + self.n_keep:
            raise ValueError(f"CEM elites={self.elites} exceeds population={self.population}")
        h, a = state.mean.shape
        n_keep = self.n_keep
        if state.elites.shape[0] != n_keep:
            raise ValueError(f"PlanState holds {state.elites.shape[0]} elites but keep_elites gives {n_keep}; "
                             f"create it with shooting.init_state(H, A, keep=planner.n_keep)")

        def iteration(carry, k):
            mean, var, kept, best_x, best_r = carry
            k_noise, k_eval = jax.random.split(k)
            if self.noise_beta == 0:
                # PETS: shrink the variance so that ±2σ stays inside [-1, 1], then truncate at ±2σ
                var_c = jnp.minimum(jnp.minimum(((mean + 1) / 2) ** 2, ((1 - mean) / 2) ** 2), var)
                eps = jax.random.truncated_normal(k_noise, -2.0, 2.0, (self.population, h, a))
                samples = mean + jnp.sqrt(var_c) * eps
            else:
                eps = colored_noise(k_noise, self.noise_beta, (self.population, h, a))
                samples = jnp.clip(mean + jnp.sqrt(var) * eps, -1.0, 1.0)
            if n_keep:
                samples = jnp.concatenate([samples, kept], 0)
            returns = rank_safe(return_fn(samples, k_eval))
            top_r, top_i = jax.lax.top_k(returns, self.elites)
            elite = samples[top_i]
            mean = self.alpha * mean + (1 - self.alpha) * elite.mean(0)
            var = self.alpha * var + (1 - self.alpha) * elite.var(0)
            better = top_r[0] > best_r
            best_x = jnp.where(better, elite[0], best_x)
            best_r = jnp.where(better, top_r[0], best_r)
            return (mean, var, elite[:n_keep], best_x, best_r), top_r[0]

        var0 = jnp.full((h, a), self.init_std**2, jnp.float32)
        init = (state.mean, var0, state.elites, state.mean, jnp.array(-jnp.inf, jnp.float32))
        (mean, var, kept, best_x, best_r), iter_best = jax.lax.scan(
            iteration, init, jax.random.split(key, self.iterations)
        )
        # if every sample diverged, best_x is still the warm start: a finite, harmless fallback
        sol = best_x if self.return_best else mean
        info = {"plan/return": best_r, "plan/std": jnp.sqrt(var).mean(), "plan/iter_best": iter_best}
        return sol, PlanState(sol, kept), info


# ---- MPPI -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MPPI:
    """Model-predictive path integral control (PDDM form): sample `population` sequences around the mean with
    noise ε_t filtered as n_t = β ε_t + (1 − β) n_{t−1}, weight them by exp((R − max R)/temperature) and
    set the mean to the weighted average; `iterations` times."""

    population: int = 500
    iterations: int = 1
    temperature: float = 1.0
    """λ: smaller concentrates the weights on the best samples (λ → 0 is "take the best")."""
    noise_std: float = 0.5
    smoothing: float = 0.6
    """β of the noise filter (1: white noise)."""

    def __call__(self, return_fn: ReturnFn, state: PlanState, key: jax.Array):
        h, a = state.mean.shape

        def iteration(mean, k):
            k_noise, k_eval = jax.random.split(k)
            eps = self.noise_std * jax.random.normal(k_noise, (h, self.population, a))

            def filt(prev, e):
                n = self.smoothing * e + (1 - self.smoothing) * prev
                return n, n

            _, noise = jax.lax.scan(filt, jnp.zeros((self.population, a)), eps)
            samples = jnp.clip(mean + jnp.swapaxes(noise, 0, 1), -1.0, 1.0)
            returns = rank_safe(return_fn(samples, k_eval))
            ok = jnp.isfinite(returns)
            top = jnp.max(returns)
            w = jnp.where(ok, jnp.exp((returns - jnp.where(jnp.isfinite(top), top, 0.0)) / self.temperature), 0.0)
            new = jnp.einsum("p,pha->ha", w, samples) / jnp.maximum(w.sum(), 1e-30)
            # no finite sample at all: keep the previous mean rather than divide 0 by 0
            return jnp.where(ok.any(), new, mean), top

        mean, iter_best = jax.lax.scan(iteration, state.mean, jax.random.split(key, self.iterations))
        return mean, state._replace(mean=mean), {"plan/return": iter_best[-1], "plan/iter_best": iter_best}


Planner = RandomShooting | CEM | MPPI


def make_planner(name: str, *, population: int, iterations: int = 5, elites: int | None = None,
                 alpha: float = 0.1, noise_beta: float = 0.0, keep_elites: float = 0.0,
                 temperature: float = 1.0, noise_std: float = 0.5, smoothing: float = 0.6) -> Planner:
    """A planner by name: 'random', 'cem' or 'mppi' (keyword arguments not used by it are ignored)."""
    if name == "random":
        return RandomShooting(population=population)
    if name == "cem":
        return CEM(population=population, elites=elites or max(1, population // 10), iterations=iterations,
                   alpha=alpha, noise_beta=noise_beta, keep_elites=keep_elites)
    if name == "mppi":
        return MPPI(population=population, iterations=iterations, temperature=temperature, noise_std=noise_std,
                    smoothing=smoothing)
    raise ValueError(f"unknown planner '{name}'; use 'cem', 'mppi' or 'random'")


def n_keep(planner: Planner) -> int:
    """How many elites the planner's `PlanState` carries."""
    return planner.n_keep if isinstance(planner, CEM) else 0
