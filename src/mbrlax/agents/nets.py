"""Networks shared by the agents: MLPs, a tanh-Gaussian actor and a twin (vmapped) Q critic."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class MLP(nn.Module):
    hidden: Sequence[int]
    out_dim: int
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = getattr(nn, self.activation)
        for h in self.hidden:
            x = act(nn.Dense(h)(x))
        return nn.Dense(self.out_dim)(x)


class TanhGaussianActor(nn.Module):
    """obs B×D -> (mean B×A, log_std B×A) of the pre-tanh Gaussian."""

    hidden: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array):
        out = MLP(self.hidden, 2 * self.act_dim)(obs)
        mean, log_std = jnp.split(out, 2, -1)
        # Smoothly squash log_std into [LOG_STD_MIN, LOG_STD_MAX] (keeps gradients alive at the edges).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


def tanh_gaussian_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array):
    """Reparameterized a = tanh(u), u ~ N(mean, std); returns (a, log π(a)) with the tanh correction
    log π(a) = log N(u) - Σ log(1 - tanh(u)²), computed stably as 2(log 2 - u - softplus(-2u))."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    log_n = -0.5 * (((u - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), (log_n - log_det).sum(-1)


class TwinQ(nn.Module):
    """(obs B×D, action B×A) -> Q-values n×B from n independent critics (one batched matmul)."""

    hidden: Sequence[int]
    n: int = 2

    @nn.compact
    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        critics = nn.vmap(
            MLP,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.n,
        )(self.hidden, 1)
        return critics(jnp.concatenate([obs, action], -1))[..., 0]
