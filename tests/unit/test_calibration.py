"""Calibration scores against their analytic values (diagnostics/calibration.py).

For y ~ N(μ, σ²) and a predicted N(μ, s²): E[NLL] = ½ log(2πs²) + σ²/(2s²), which for s = σ is the entropy
½ log(2πeσ²); the central p-interval covers P(|Z| ≤ z_p σ/s) = 2Φ(z_p σ/s) − 1, which is p for s = σ and
below p for an over-confident s < σ.
"""

from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.diagnostics import calibration as cal
from mbrlax.models.ensemble import EnsembleModel, Normalizer
from mbrlax.types import Transition

N, D, SIGMA = 200_000, 3, 0.7


def _data(seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(N, D))
    return mean, mean + SIGMA * rng.normal(size=(N, D))


def test_a_calibrated_gaussian_has_the_entropy_as_nll_and_nominal_coverage():
    mean, y = _data()
    s = cal.score(y, mean, np.full_like(mean, SIGMA**2))
    # NLL = ½log(2πσ²) + z²/2 with z² ~ χ²₁ (variance 2): standard error sqrt(0.5/(N·D))
    assert s["nll"] == pytest.approx(float(cal.gaussian_entropy(SIGMA**2)), abs=4 * np.sqrt(0.5 / (N * D)))
    for p, got in zip(s["levels"], s["coverage"]):
        assert got == pytest.approx(p, abs=4 * np.sqrt(p * (1 - p) / (N * D)))
    assert s["standardized_sq_error"] == pytest.approx(1.0, abs=0.01)


def test_an_over_confident_gaussian_covers_less_than_nominal():
    mean, y = _data(1)
    s_pred = SIGMA / 2
    s = cal.score(y, mean, np.full_like(mean, s_pred**2))
    for p, got in zip(s["levels"], s["coverage"]):
        exact = 2 * NormalDist().cdf(cal.z_value(p) * s_pred / SIGMA) - 1
        assert got == pytest.approx(exact, abs=0.005) and got < p - 0.1
    expected_nll = 0.5 * np.log(2 * np.pi * s_pred**2) + SIGMA**2 / (2 * s_pred**2)
    assert s["nll"] == pytest.approx(expected_nll, abs=0.01)
    assert s["nll"] > float(cal.gaussian_entropy(SIGMA**2))  # the calibrated prediction scores best
    # an under-confident one covers more than nominal
    under = cal.score(y, mean, np.full_like(mean, (2 * SIGMA) ** 2))
    assert all(got > p for p, got in zip(under["levels"], under["coverage"]))


def test_mixture_moments_and_nll():
    means = np.array([[[0.0]], [[2.0]]])
    variances = np.array([[[1.0]], [[3.0]]])
    m, v = cal.mixture_moments(means, variances)
    assert m.item() == 1.0 and v.item() == pytest.approx(2.0 + 1.0)  # mean variance + variance of the means
    y = np.array([[0.5]])
    p = 0.5 * (NormalDist(0, 1).pdf(0.5) + NormalDist(2, np.sqrt(3)).pdf(0.5))
    assert cal.mixture_nll(y, means, variances) == pytest.approx(-np.log(p), rel=1e-9)


def _known_ensemble(logvar_target):
    """An EnsembleModel whose every member predicts Δobs = (0.3, −0.1), reward 0.2 in normalized units and a
    fixed log-variance: all kernels zero, the last layer's bias set. Returns the model, its state and the
    predicted variance in environment units."""
    model = EnsembleModel(2, 1, ensemble_size=3, num_elites=2, hidden=(8,))
    state = model.init(jax.random.key(0))
    params = jax.tree.map(jnp.zeros_like, state.params)
    p = params["params"]
    p["max_logvar"], p["min_logvar"] = jnp.full(3, 0.5), jnp.full(3, -10.0)
    bias = jnp.concatenate([jnp.array([0.3, -0.1, 0.2]), jnp.full(3, logvar_target)])
    last = "EnsembleDense_1"
    p[last]["bias"] = jnp.broadcast_to(bias, p[last]["bias"].shape)
    out_norm = Normalizer(jnp.array([0.0, 1.0, -1.0]), jnp.array([2.0, 0.5, 3.0]))
    state = state._replace(params=params, out_norm=out_norm, in_norm=Normalizer.identity(3))
    obs = jnp.zeros((1, 2))
    pred = model.predict(state, obs, jnp.zeros((1, 1)))
    var = np.concatenate([pred.next_obs_var[0, 0], pred.reward_var[0, :1]])
    mean_env = np.concatenate([pred.next_obs_mean[0, 0], pred.reward_mean[0, :1]])
    return model, state, var, mean_env


def test_ensemble_calibration_of_a_model_whose_variance_is_the_noise_variance():
    model, state, var, _ = _known_ensemble(-1.0)
    rng = np.random.default_rng(2)
    n = 20_000
    obs = rng.normal(size=(n, 2)).astype(np.float32)
    pred = model.predict(state, jnp.asarray(obs), jnp.zeros((n, 1)))
    mean = np.concatenate([pred.next_obs_mean[0], pred.reward_mean[0][:, None]], -1)
    y = mean + np.sqrt(var) * rng.normal(size=mean.shape)  # the true noise has the predicted variance
    data = Transition(obs, np.zeros((n, 1), np.float32), y[:, 2], y[:, :2], np.zeros(n, np.float32))
    t = cal.ensemble_calibration(model, state, data)
    # in normalized units (÷ the output std) the variance is exp(logvar) of the network: entropy per feature
    expected = float(np.mean(cal.gaussian_entropy(var / np.asarray(state.out_norm.std) ** 2)))
    for kind in ("members", "mixture"):  # identical members: the mixture is each member
        assert t[kind]["nll"] == pytest.approx(expected, abs=0.02)
        assert t[kind]["coverage"][1] == pytest.approx(0.6827, abs=0.015)
        assert t[kind]["coverage"][3] == pytest.approx(0.9545, abs=0.008)
    assert t["mixture"]["nll_exact"] == pytest.approx(t["mixture"]["nll"], abs=1e-6)
    # the same data, twice the noise: over-confident
    y2 = mean + 2 * np.sqrt(var) * rng.normal(size=mean.shape)
    t2 = cal.ensemble_calibration(model, state, data._replace(reward=y2[:, 2], next_obs=y2[:, :2]))
    assert t2["mixture"]["coverage"][1] == pytest.approx(2 * NormalDist().cdf(0.5) - 1, abs=0.015)


def test_bad_level_is_refused():
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        cal.z_value(1.0)
