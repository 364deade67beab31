"""MOPO's uncertainty penalties u(s, a) on an ensemble prediction (Yu et al. 2020, section 4.3).

Every penalty reads the members' Gaussians over the model's output y = (next_obs, reward): means μ_i and
standard deviations σ_i, E×B×D each (E members, B samples, D = obs_dim + 1), and returns u of shape B.
With μ̄ = (1/E) Σ_i μ_i:

    max_aleatoric      max_i ‖σ_i‖₂                    the paper's default (largest predicted std, Frobenius norm)
    disagreement       max_i ‖μ_i − μ̄‖₂                ensemble disagreement (the paper's "no learned variance" variant)
    mean_gap_max       max_i ‖(μ_i − μ̄) / σ_i‖₂²       the normalized mean gap: disagreement measured in each
    mean_gap_mean      (1/E) Σ_i ‖(μ_i − μ̄) / σ_i‖₂²   member's own std (a Mahalanobis-style spread)
    prediction_error   ‖ŷ − μ̄‖₂                        the sampled output ŷ (what the rollout actually uses)
                                                       against the ensemble mean

The penalty is a *reward correction* for the policy learner, never a training signal for the model: every
input goes through `stop_gradient`, so the gradient of u with respect to the model's parameters is zero
(tests/unit/test_penalties.py checks it).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from mbrlax.models.ensemble import Prediction

PenaltyKind = Literal["max_aleatoric", "disagreement", "mean_gap_max", "mean_gap_mean", "prediction_error"]
PENALTIES: tuple[str, ...] = ("max_aleatoric", "disagreement", "mean_gap_max", "mean_gap_mean", "prediction_error")


def max_aleatoric(mean: jax.Array, std: jax.Array) -> jax.Array:
    """max_i ‖σ_i‖₂ over members; mean, std E×B×D -> B."""
    del mean
    return jnp.max(jnp.linalg.norm(jax.lax.stop_gradient(std), axis=-1), axis=0)


def disagreement(mean: jax.Array, std: jax.Array) -> jax.Array:
    """max_i ‖μ_i − μ̄‖₂; E×B×D -> B."""
    del std
    mean = jax.lax.stop_gradient(mean)
    return jnp.max(jnp.linalg.norm(mean - mean.mean(0), axis=-1), axis=0)


def _normalized_gap(mean: jax.Array, std: jax.Array, min_std: float) -> jax.Array:
    mean, std = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(std)
    # A deterministic model (σ = 0) would divide by zero: `min_std` keeps the ratio finite.
    return jnp.sum(((mean - mean.mean(0)) / jnp.maximum(std, min_std)) ** 2, axis=-1)  # E×B


def mean_gap_max(mean: jax.Array, std: jax.Array, min_std: float = 1e-6) -> jax.Array:
    """max_i ‖(μ_i − μ̄)/σ_i‖₂²; E×B×D -> B."""
    return jnp.max(_normalized_gap(mean, std, min_std), axis=0)


def mean_gap_mean(mean: jax.Array, std: jax.Array, min_std: float = 1e-6) -> jax.Array:
    """(1/E) Σ_i ‖(μ_i − μ̄)/σ_i‖₂²; E×B×D -> B."""
    return jnp.mean(_normalized_gap(mean, std, min_std), axis=0)


def prediction_error(mean: jax.Array, sample: jax.Array) -> jax.Array:
    """‖ŷ − μ̄‖₂ for the sampled output ŷ (B×D) and the members' means (E×B×D) -> B."""
    mean, sample = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(sample)
    return jnp.linalg.norm(sample - mean.mean(0), axis=-1)


def penalty(kind: str, mean: jax.Array, std: jax.Array, sample: jax.Array | None = None) -> jax.Array:
    """The penalty `kind` (one of PENALTIES) for member means/stds E×B×D and, for prediction_error, the
    sampled output B×D. Returns B. `kind` is a Python string: call it with `kind` static under jit."""
    if kind == "max_aleatoric":
        return max_aleatoric(mean, std)
    if kind == "disagreement":
        return disagreement(mean, std)
    if kind == "mean_gap_max":
        return mean_gap_max(mean, std)
    if kind == "mean_gap_mean":
        return mean_gap_mean(mean, std)
    if kind == "prediction_error":
        if sample is None:
            raise ValueError("penalty 'prediction_error' needs the sampled output `sample` (B×D)")
        return prediction_error(mean, sample)
    raise ValueError(f"unknown penalty '{kind}'; choose one of {', '.join(PENALTIES)}")


def outputs(pred: Prediction, members: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """(means, stds) over y = (next_obs, reward), E×B×(obs_dim+1), from an `EnsembleModel.predict`
    result; `members` (K indices, e.g. the elites) selects a subset of the E members."""
    mean = jnp.concatenate([pred.next_obs_mean, pred.reward_mean[..., None]], -1)
    std = jnp.sqrt(jnp.concatenate([pred.next_obs_var, pred.reward_var[..., None]], -1))
    if members is not None:
        mean, std = mean[members], std[members]
    return mean, std


def from_prediction(
    kind: str, pred: Prediction, next_obs: jax.Array | None = None, reward: jax.Array | None = None,
    members: jax.Array | None = None,
) -> jax.Array:
    """u(s, a) of shape B from a model prediction; `next_obs` B×D and `reward` B are the sampled step
    (needed by prediction_error only)."""
    mean, std = outputs(pred, members)
    sample = None if next_obs is None else jnp.concatenate([next_obs, reward[..., None]], -1)
    return penalty(kind, mean, std, sample)
