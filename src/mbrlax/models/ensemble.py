"""Probabilistic ensemble dynamics model (PETS / MBPO), and its deterministic-MLP variant.

Each of the E members is an MLP from normalized (obs, action) to a Gaussian over the normalized target
(Δobs, reward). The members' weights are stacked on a leading E axis and applied with one batched matmul,
so the ensemble costs one network call, not E. Optionally the network also predicts a termination logit
(a learned termination head for environments with no known termination function).

The predicted log-variance is softly bounded between *learnable* limits (Chua et al. 2018, appendix A.1):
    logvar = max_logvar - softplus(max_logvar - raw);  logvar = min_logvar + softplus(logvar - min_logvar)
with the regularizer 0.01·(Σ max_logvar − Σ min_logvar) pulling the limits tight. Both limits are
parameters seen by the optimizer (tests/unit/test_ensemble.py shows they move).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrlax.types import StaticSpec


class Normalizer(NamedTuple):
    """Per-feature affine normalizer: normalize(x) = (x - mean) / std."""

    mean: jax.Array
    std: jax.Array

    @staticmethod
    def identity(dim: int) -> Normalizer:
        return Normalizer(jnp.zeros(dim, jnp.float32), jnp.ones(dim, jnp.float32))

    @staticmethod
    def fit(x: np.ndarray) -> Normalizer:
        """From data N×D. A constant feature gets std 1 so that it is not blown up."""
        x = np.asarray(x, np.float64)
        std = x.std(0)
        std = np.where(std < 1e-6, 1.0, std)
        return Normalizer(jnp.asarray(x.mean(0), jnp.float32), jnp.asarray(std, jnp.float32))

    def normalize(self, x: jax.Array) -> jax.Array:
        return (x - self.mean) / self.std

    def denormalize(self, x: jax.Array) -> jax.Array:
        return x * self.std + self.mean


class EnsembleDense(nn.Module):
    """E independent dense layers applied to E×B×D in one einsum."""

    ensemble_size: int
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        # MBPO's init: truncated normal with std 1/(2·sqrt(fan_in)).
        init = nn.initializers.truncated_normal(stddev=1.0 / (2.0 * np.sqrt(d)))
        w = self.param("kernel", init, (self.ensemble_size, d, self.features))
        b = self.param("bias", nn.initializers.zeros, (self.ensemble_size, self.features))
        return jnp.einsum("ebd,edf->ebf", x, w) + b[:, None, :]


class EnsembleMLP(nn.Module):
    """E×B×in -> (mean E×B×out, logvar E×B×out or None, termination logit E×B or None)."""

    ensemble_size: int
    out_dim: int
    hidden: Sequence[int] = (200, 200, 200, 200)
    probabilistic: bool = True
    learn_termination: bool = False

    @nn.compact
    def __call__(self, x: jax.Array):
        for h in self.hidden:
            x = nn.silu(EnsembleDense(self.ensemble_size, h)(x))
        n_out = self.out_dim * (2 if self.probabilistic else 1) + int(self.learn_termination)
        y = EnsembleDense(self.ensemble_size, n_out)(x)
        mean = y[..., : self.out_dim]
        term_logit = y[..., -1] if self.learn_termination else None
        if not self.probabilistic:
            return mean, None, term_logit
        raw = y[..., self.out_dim : 2 * self.out_dim]
        max_lv = self.param("max_logvar", nn.initializers.constant(0.5), (self.out_dim,))
        min_lv = self.param("min_logvar", nn.initializers.constant(-10.0), (self.out_dim,))
        logvar = max_lv - nn.softplus(max_lv - raw)
        logvar = min_lv + nn.softplus(logvar - min_lv)
        return mean, logvar, term_logit


class ModelState(NamedTuple):
    params: Any
    opt_state: Any
    in_norm: Normalizer  # over concat(obs, action)
    out_norm: Normalizer  # over concat(Δobs, reward)
    elites: jax.Array  # K int32 member indices, best holdout loss first


class Prediction(NamedTuple):
    """Per-member prediction in environment units, E×B×…"""

    next_obs_mean: jax.Array
    reward_mean: jax.Array  # E×B
    next_obs_var: jax.Array
    reward_var: jax.Array  # E×B
    term_logit: jax.Array | None  # E×B


class EnsembleModel(StaticSpec):
    """The model's static description plus pure functions of a `ModelState`.

    Targets are (next_obs - obs, reward). With `probabilistic=False` it is the deterministic MLP fitted by
    MSE that v0.5–v2.0 use (then the variances are zero); `ensemble_size=1` gives a single network.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        ensemble_size: int = 7,
        num_elites: int = 5,
        hidden: Sequence[int] = (200, 200, 200, 200),
        probabilistic: bool = True,
        learn_termination: bool = False,
        lr: float = 1e-3,
        weight_decay: Sequence[float] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4),
        logvar_bound_coef: float = 0.01,
    ):
        if num_elites > ensemble_size:
            raise ValueError(f"num_elites={num_elites} exceeds ensemble_size={ensemble_size}")
        # Equal settings make equal (hashable) objects, so jitted functions share their compiled code.
        self._spec = (obs_dim, act_dim, ensemble_size, num_elites, tuple(hidden), probabilistic,
                      learn_termination, lr, tuple(weight_decay), logvar_bound_coef)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.ensemble_size, self.num_elites = ensemble_size, num_elites
        self.probabilistic, self.learn_termination = probabilistic, learn_termination
        self.out_dim = obs_dim + 1
        self.net = EnsembleMLP(ensemble_size, self.out_dim, tuple(hidden), probabilistic, learn_termination)
        # The same network over the K elites' slices of the parameters (`elite_step`).
        self.elite_net = EnsembleMLP(num_elites, self.out_dim, tuple(hidden), probabilistic, learn_termination)
        n_layers = len(hidden) + 1
        wd = tuple(weight_decay)
        # One decay per layer (MBPO decays deeper layers more); a single value applies to all.
        self.weight_decay = wd if len(wd) == n_layers else (wd[0],) * n_layers
        self.logvar_bound_coef = logvar_bound_coef
        self.optimizer = optax.adam(lr)

    # ---- state -------------------------------------------------------------------------------
    def init(self, key: jax.Array) -> ModelState:
        x = jnp.zeros((self.ensemble_size, 1, self.obs_dim + self.act_dim), jnp.float32)
        params = jax.jit(self.net.init)(key, x)
        return ModelState(
            params=params,
            opt_state=self.optimizer.init(params),
            in_norm=Normalizer.identity(self.obs_dim + self.act_dim),
            out_norm=Normalizer.identity(self.out_dim),
            elites=jnp.arange(self.num_elites, dtype=jnp.int32),
        )

    # ---- forward -----------------------------------------------------------------------------
    def _forward(self, params, in_norm: Normalizer, obs: jax.Array, action: jax.Array):
        """obs, action: B×D (shared by all members) or E×B×D (one batch per member)."""
        x = in_norm.normalize(jnp.concatenate([obs, action], -1))
        if x.ndim == 2:
            x = jnp.broadcast_to(x, (self.ensemble_size, *x.shape))
        return self.net.apply(params, x)

    def predict(self, state: ModelState, obs: jax.Array, action: jax.Array) -> Prediction:
        """Every member's Gaussian over (next_obs, reward) in environment units, E×B×…"""
        mean_n, logvar_n, term_logit = self._forward(state.params, state.in_norm, obs, action)
        mean = state.out_norm.denormalize(mean_n)
        var = (
            jnp.exp(logvar_n) * state.out_norm.std**2
            if logvar_n is not None
            else jnp.zeros_like(mean)
        )
        return Prediction(
            next_obs_mean=obs + mean[..., :-1],
            reward_mean=mean[..., -1],
            next_obs_var=var[..., :-1],
            reward_var=var[..., -1],
            term_logit=term_logit,
        )

    def sample_step(self, state: ModelState, obs: jax.Array, action: jax.Array, key: jax.Array):
        """One model step for a batch B×D: each sample uses a random elite member and samples its
        Gaussian (MBPO). Returns next_obs B×D, reward B, term_prob B (or None), and the prediction."""
        pred = self.predict(state, obs, action)
        k_member, k_noise = jax.random.split(key)
        b = obs.shape[0]
        member = state.elites[jax.random.randint(k_member, (b,), 0, state.elites.shape[0])]
        rows = jnp.arange(b)

        def pick(x):  # E×B(×D) -> B(×D), each sample's own member
            return x[member, rows]

        mean = jnp.concatenate([pick(pred.next_obs_mean), pick(pred.reward_mean)[:, None]], -1)
        std = jnp.sqrt(jnp.concatenate([pick(pred.next_obs_var), pick(pred.reward_var)[:, None]], -1))
        sample = mean + std * jax.random.normal(k_noise, mean.shape)
        term_prob = None if pred.term_logit is None else jax.nn.sigmoid(pick(pred.term_logit))
        return sample[:, :-1], sample[:, -1], term_prob, pred

    @staticmethod
    def elite_params(state: ModelState):
        """The parameters of the elites only, in `state.elites` order: the per-member leaves (leading E axis,
        ndim >= 2) sliced to K, the shared log-variance bounds (1-D) as they are."""
        return jax.tree.map(lambda p: p[state.elites] if p.ndim >= 2 else p, state.params)

    def elite_step(self, state: ModelState, obs: jax.Array, action: jax.Array, key: jax.Array,
                   sample: bool = True):
        """`sample_step` at one network pass per sample instead of E: the rows are shuffled and split into K
        equal groups, group k goes through elite k. Each sample thus gets a random elite, re-drawn at every
        call (drawn without replacement, so the groups are balanced: mbrl-lib's "random_model" propagation
        does the same). `sample=False` returns the member's mean instead of a draw from its Gaussian.
        Returns next_obs B×D, reward B and the termination probability B (or None)."""
        b, k = obs.shape[0], self.num_elites
        g = -(-b // k)  # rows per elite
        k_perm, k_noise = jax.random.split(key)
        perm = jax.random.permutation(k_perm, b)
        x = state.in_norm.normalize(jnp.concatenate([obs, action], -1))[perm]
        x = jnp.concatenate([x, jnp.zeros((k * g - b, x.shape[-1]), x.dtype)]).reshape(k, g, -1)
        mean_n, logvar_n, term_logit = self.elite_net.apply(self.elite_params(state), x)

        def unshuffle(y):  # K×g(×…) in shuffled order -> B(×…) in the caller's order
            y = y.reshape(k * g, *y.shape[2:])[:b]
            return jnp.zeros_like(y).at[perm].set(y)

        mean = unshuffle(state.out_norm.denormalize(mean_n))
        if sample and logvar_n is not None:
            mean = mean + unshuffle(jnp.exp(0.5 * logvar_n)) * state.out_norm.std * jax.random.normal(
                k_noise, mean.shape)
        term_prob = None if term_logit is None else jax.nn.sigmoid(unshuffle(term_logit))
        return obs + mean[:, :-1], mean[:, -1], term_prob

    # ---- training ----------------------------------------------------------------------------
    def targets(self, obs, next_obs, reward):
        return jnp.concatenate([next_obs - obs, reward[..., None]], -1)

    def loss(self, params, in_norm: Normalizer, out_norm: Normalizer, batch) -> tuple[jax.Array, dict]:
        """Training loss for per-member batches E×B×…: Gaussian NLL (or MSE), summed over members,
        plus the log-variance-bound regularizer, L2 weight decay and, if learned, termination BCE."""
        obs, action, reward, next_obs, terminated = batch
        mean, logvar, term_logit = self._forward(params, in_norm, obs, action)
        y = out_norm.normalize(self.targets(obs, next_obs, reward))
        if logvar is None:
            fit = jnp.mean((mean - y) ** 2, axis=(1, 2))
        else:
            fit = jnp.mean((mean - y) ** 2 * jnp.exp(-logvar) + logvar, axis=(1, 2))
        total = fit.sum()
        if logvar is not None:
            p = params["params"]
            total += self.logvar_bound_coef * (p["max_logvar"].sum() - p["min_logvar"].sum())
        kernels = [params["params"][f"EnsembleDense_{i}"]["kernel"] for i in range(len(self.weight_decay))]
        total += sum(0.5 * wd * jnp.sum(k**2) for wd, k in zip(self.weight_decay, kernels))
        if term_logit is not None:
            total += optax.sigmoid_binary_cross_entropy(term_logit, terminated).mean(1).sum()
        return total, {"train_fit": fit}

    def holdout_mse(self, state: ModelState, batch, mask: jax.Array) -> jax.Array:
        """Per-member MSE of the mean prediction on the normalized targets of a B-batch; masked mean."""
        obs, action, reward, next_obs, _ = batch
        mean, _, _ = self._forward(state.params, state.in_norm, obs, action)
        y = state.out_norm.normalize(self.targets(obs, next_obs, reward))
        err = jnp.mean((mean - y) ** 2, -1)  # E×B
        return (err * mask).sum(-1) / jnp.maximum(mask.sum(), 1.0)
