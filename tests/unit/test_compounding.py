"""Compounding model error against the analytic derivation (diagnostics/compounding.py module doc).

The system: x' = A x + B u and a model with a constant one-step error d, ‖d‖ = ε. The error e_t = x̂_t − x_t
obeys e_{t+1} = M e_t + d with M = A for a fixed plan (open loop) and M = A + BK for the feedback u = K x
(closed loop), so e_t = Σ_{j<t} M^j d. What is checked:
- A = B = I, open loop: ‖e_k‖ = εk exactly, Σ_{t≤k} ‖e_t‖ = εk(k+1)/2 (growth exponent → 2: the εT²);
- the same system, closed loop with K = −κI: ‖e_k‖ = ε(1 − (1−κ)^k)/κ (bounded, exponent → 0) and its sum
  grows with exponent → 1 (the εT);
- a linear reward r = wᵀx: the return error is |wᵀd| k(k−1)/2 open loop;
- a non-trivial A (the double integrator) and a stabilizing K: the measured curves equal Σ M^j d for both M.
"""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.diagnostics import compounding as c
from mbrlax.envs import jax_envs

EPS, KAPPA, H = 0.01, 0.5, 256


@pytest.fixture(scope="module")
def lq():
    return c.lq_experiment(EPS, KAPPA, H, starts=4, key=jax.random.key(0))


def test_open_loop_error_grows_linearly_and_its_sum_quadratically(lq):
    o = lq["open_loop"]
    k = np.arange(1, H + 1)
    np.testing.assert_allclose(o["curves"]["state_error"], EPS * k, rtol=1e-4)
    np.testing.assert_allclose(o["curves"]["cumulative_error"], EPS * k * (k + 1) / 2, rtol=1e-4)
    hs = o["horizons"]
    fit_h = [h for h in hs if h >= o["exponent_fitted_from"]]
    # the fitted exponent is that of the derived curve over the same horizons, and that is ≈ 2 (≈ 1 for ‖e_k‖)
    expected = c.growth_exponent(fit_h, [EPS * h * (h + 1) / 2 for h in fit_h])
    assert o["cumulative_error_exponent"] == pytest.approx(expected, abs=1e-3)
    assert o["cumulative_error_exponent"] == pytest.approx(2.0, abs=0.05)
    assert o["state_error_exponent"] == pytest.approx(1.0, abs=1e-3)


def test_closed_loop_feedback_keeps_the_error_bounded_and_its_sum_linear(lq):
    cl = lq["closed_loop"]
    k = np.arange(1, H + 1)
    expected = EPS * (1 - (1 - KAPPA) ** k) / KAPPA
    np.testing.assert_allclose(cl["curves"]["state_error"], expected, rtol=1e-4)
    np.testing.assert_allclose(cl["curves"]["cumulative_error"], np.cumsum(expected), rtol=1e-4)
    assert cl["cumulative_error_exponent"] == pytest.approx(1.0, abs=0.05)
    assert abs(cl["state_error_exponent"]) < 0.02
    # the analytic curves the command writes are the same derivation
    np.testing.assert_allclose(lq["analytic"]["closed_loop"]["state_error"], expected, rtol=1e-6)
    np.testing.assert_allclose(lq["analytic"]["open_loop"]["cumulative_error"], EPS * k * (k + 1) / 2, rtol=1e-6)


def test_return_error_of_a_linear_reward_is_the_summed_state_error():
    env = jax_envs.LinearQuadratic(A=np.eye(2), B=np.eye(2), action_scale=1.0, init_std=0.1)
    w = jnp.array([0.6, 0.8])
    reward = lambda o, a, o2: o @ w  # noqa: E731
    d = jnp.array([EPS, 0.0])
    policy = lambda o: -KAPPA * o  # noqa: E731
    s0 = jax.vmap(env.init_state)(jax.random.split(jax.random.key(1), 3))
    obs, act, rew = c.system_rollout(env.dynamics, env.observe, reward, s0, 64, policy)
    t = c.compare(obs, act, rew, c.biased_step(env.dynamics, env.observe, reward, d), policy, horizons=[1, 8, 64])
    k = np.arange(1, 65)
    # r̂_t − r_t = wᵀe_t with e_t = t d: Σ_{t<k} = wᵀd k(k−1)/2
    np.testing.assert_allclose(t["open_loop"]["curves"]["return_error"], 0.6 * EPS * k * (k - 1) / 2,
                               rtol=1e-5, atol=1e-7)


def test_a_general_linear_system_follows_the_error_recursion():
    env = jax_envs.LinearQuadratic(action_scale=1.0, init_std=0.05)  # double integrator: A^t grows like t
    K = np.array([[-2.0, -3.0]])  # A + BK has spectral radius < 1
    M_closed = env.A + env.B @ K
    assert np.max(np.abs(np.linalg.eigvals(M_closed))) < 1
    d = np.array([0.002, 0.001])
    policy = lambda o: o @ jnp.asarray(K.T, o.dtype)  # noqa: E731
    s0 = jax.vmap(env.init_state)(jax.random.split(jax.random.key(2), 3))
    obs, act, rew = c.system_rollout(env.dynamics, env.observe, env.reward, s0, 40, policy)
    assert np.abs(act).max() < 1  # no clipping: the system stays linear
    t = c.compare(obs, act, rew, c.biased_step(env.dynamics, env.observe, env.reward, jnp.asarray(d, jnp.float32)),
                  policy)
    for loop, M in (("open_loop", env.A), ("closed_loop", M_closed)):
        expected = c.analytic_bias_errors(M, d, 40)
        np.testing.assert_allclose(t[loop]["curves"]["state_error"], expected["state_error"], rtol=2e-3)
    # open loop through A: e_t = (t d₀ + 0.1 d₁ t(t−1)/2, t d₁): the state error grows faster than t
    o = t["open_loop"]
    fit_h = [h for h in o["horizons"] if h >= o["exponent_fitted_from"]]
    expected = c.analytic_bias_errors(env.A, d, 40)["state_error"]
    assert o["state_error_exponent"] == pytest.approx(c.growth_exponent(fit_h, [expected[h - 1] for h in fit_h]),
                                                      abs=1e-3)
    assert o["state_error_exponent"] > 1.2


def test_error_curves_average_over_the_trajectories_still_alive():
    real = np.zeros((2, 4, 1))
    model = np.array([[[0.0], [1.0], [2.0], [3.0]], [[0.0], [3.0], [5.0], [7.0]]])
    alive = np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool)  # the second stops after step 1
    zeros = np.zeros((2, 3))
    cur = c.error_curves(real, model, zeros, zeros, alive)
    assert cur["state_error"] == [2.0, 2.0, 3.0]  # step 1 averages both, later steps only the first
    assert cur["cumulative_error"] == [2.0, 3.0, 6.0]
    assert cur["alive_fraction"] == [1.0, 0.5, 0.5]


def test_growth_exponent_recovers_a_power_law():
    h = np.array([2, 4, 8, 16, 32])
    assert c.growth_exponent(h, 3.0 * h**1.7) == pytest.approx(1.7, abs=1e-9)
    assert np.isnan(c.growth_exponent([1, 2], [0.0, 0.0]))


def test_model_rollout_needs_exactly_one_of_plan_and_policy():
    step = lambda o, a: (o, o[:, 0])  # noqa: E731
    with pytest.raises(ValueError, match="either actions"):
        c.model_rollout(step, jnp.zeros((1, 2)), 3)


def test_an_env_reset_to_an_observation_steps_like_the_original():
    """The closed-loop comparison on a real env resets it to a replay-buffer observation: the reset copy must
    then move exactly like the env the observation came from (Hopper: x position is not observed, and does
    not enter the dynamics)."""
    for env_id in ("Hopper-v5", "Pendulum-v1"):
        a, b = gym.make(env_id), gym.make(env_id)
        a.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(5):
            obs, *_ = a.step(rng.uniform(-0.5, 0.5, a.action_space.shape).astype(np.float32))
        b.reset(seed=1)
        np.testing.assert_allclose(c.set_state_from_obs(b, obs), obs, atol=1e-6)
        act = rng.uniform(-0.5, 0.5, a.action_space.shape).astype(np.float32)
        np.testing.assert_allclose(b.step(act)[0], a.step(act)[0], atol=1e-5)
        a.close(), b.close()
    with pytest.raises(ValueError, match="closed-loop comparison"):
        env = gym.make("CartPole-v1")
        env.reset(seed=0)
        c.set_state_from_obs(env, np.zeros(4))
