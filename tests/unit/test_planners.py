"""Planners with analytic answers: CEM and MPPI find the finite-horizon LQR actions of a known linear system
(solved here by the Riccati recursion), random shooting returns the best sequence it sampled, a diverged
(NaN/inf) sample ranks last, warm starts shift, and everything is deterministic under a key."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.envs.jax_envs import LinearQuadratic
from mbrlax.planning import propagation, shooting

H = 10
ENV = LinearQuadratic(R=[[0.01]])  # double integrator, u = 10a, reward -(xᵀx + 0.01 uᵀu)
X0 = np.array([1.0, 0.5])


def lqr_actions(env: LinearQuadratic, x0: np.ndarray, horizon: int) -> np.ndarray:
    """Optimal open-loop actions (agent units) for Σ_{t<H} xₜᵀQxₜ + uₜᵀRuₜ, no terminal cost (P_H = 0)."""
    A, B = env.A, env.B * env.action_scale  # dynamics in terms of the agent's action a
    Q, R = env.Q, env.R * env.action_scale**2
    P, gains = np.zeros_like(A), []
    for _ in range(horizon):
        K = np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)
        gains.append(K)
        P = Q + A.T @ P @ (A - B @ K)
    x, acts = x0.copy(), []
    for K in reversed(gains):
        a = -K @ x
        acts.append(a)
        x = A @ x + B @ a
    return np.array(acts)


@pytest.fixture(scope="module")
def lqr():
    a_opt = lqr_actions(ENV, X0, H)
    assert np.all(np.abs(a_opt) < 1)  # the unconstrained optimum is inside the box: it is the answer
    return a_opt, propagation.known_return_fn(ENV.dynamics, ENV.reward, jnp.asarray(X0, jnp.float32))


def test_cem_converges_to_the_lqr_actions(lqr):
    a_opt, return_fn = lqr
    sol, _, info = jax.jit(lambda s, k: shooting.CEM(population=300, elites=30, iterations=15)(return_fn, s, k))(
        shooting.init_state(H, 1), jax.random.key(0))
    np.testing.assert_allclose(sol, a_opt, atol=0.01)
    opt = float(return_fn(jnp.asarray(a_opt[None], jnp.float32), None)[0])
    assert float(return_fn(sol[None], None)[0]) == pytest.approx(opt, rel=1e-4)


def test_mppi_converges_to_the_lqr_actions(lqr):
    a_opt, return_fn = lqr
    planner = shooting.MPPI(population=500, iterations=20, temperature=0.1, noise_std=0.1, smoothing=1.0)
    sol, _, _ = jax.jit(lambda s, k: planner(return_fn, s, k))(shooting.init_state(H, 1), jax.random.key(0))
    assert abs(float(sol[0, 0]) - a_opt[0, 0]) < 0.02  # the action MPC executes
    np.testing.assert_allclose(sol, a_opt, atol=0.05)


def test_random_shooting_returns_the_best_sample_and_nan_ranks_last():
    target = jnp.linspace(-0.5, 0.5, 6).reshape(3, 2)

    def return_fn(actions, key):
        r = -jnp.sum((actions - target) ** 2, axis=(1, 2))
        # samples whose first action is positive "diverge": NaN and +inf returns that would otherwise win
        bad = actions[:, 0, 0] > 0
        return jnp.where(bad, jnp.where(actions[:, 0, 1] > 0, jnp.nan, jnp.inf), r)

    planner = shooting.RandomShooting(population=256)
    key = jax.random.key(3)
    sol, _, info = jax.jit(lambda s, k: planner(return_fn, s, k))(shooting.init_state(3, 2), key)
    # the same samples, drawn as the planner draws them
    samples = jax.random.uniform(jax.random.split(key)[0], (256, 3, 2), minval=-1.0, maxval=1.0)
    r = return_fn(samples, None)
    finite = np.isfinite(np.asarray(r))
    assert (~finite).sum() > 50  # plenty of diverged samples were there to be (wrongly) picked
    best = int(np.argmax(np.where(finite, np.asarray(r), -np.inf)))
    np.testing.assert_array_equal(sol, samples[best])
    assert float(sol[0, 0]) <= 0 and float(info["plan/return"]) == pytest.approx(float(r[best]))


def test_nan_ranks_last_in_cem_and_mppi():
    # return = first action, but every sample with first action > 0.2 diverges (NaN): the best finite is 0.2
    def return_fn(actions, key):
        x = actions[:, 0, 0]
        return jnp.where(x > 0.2, jnp.nan, x)

    for planner in (shooting.CEM(population=200, elites=20, iterations=8), shooting.MPPI(population=200, iterations=8,
                                                                                      temperature=0.05)):
        sol, _, info = jax.jit(functools.partial(planner, return_fn))(shooting.init_state(4, 1), jax.random.key(0))
        assert np.all(np.isfinite(sol))
        assert 0.0 < float(sol[0, 0]) <= 0.2 + 1e-6, planner
    # nothing finite at all: the planner keeps a finite solution instead of producing NaN
    all_nan = lambda actions, key: jnp.full(actions.shape[0], jnp.nan)
    for planner in (shooting.CEM(population=50, elites=5, iterations=2), shooting.MPPI(population=50),
                    shooting.RandomShooting(population=50)):
        sol, _, _ = jax.jit(functools.partial(planner, all_nan))(shooting.init_state(4, 1), jax.random.key(0))
        assert np.all(np.isfinite(sol)), planner


def test_determinism_warm_start_and_kept_elites(lqr):
    _, return_fn = lqr
    planner = shooting.CEM(population=64, elites=8, iterations=3, keep_elites=0.5, noise_beta=2.0)
    assert planner.n_keep == 4
    plan = jax.jit(lambda s, k: planner(return_fn, s, k))
    s0 = shooting.init_state(H, 1, keep=planner.n_keep)
    a1, st1, _ = plan(s0, jax.random.key(7))
    a2, st2, _ = plan(s0, jax.random.key(7))
    np.testing.assert_array_equal(a1, a2)
    a3, _, _ = plan(s0, jax.random.key(8))
    assert not np.array_equal(a1, a3)
    assert st1.elites.shape == (4, H, 1) and np.abs(np.asarray(st1.elites)).sum() > 0
    # warm start: the solution moves one step forward, a zero is appended (elites too)
    sh = shooting.shift(st1, 1)
    np.testing.assert_array_equal(sh.mean[:-1], st1.mean[1:])
    np.testing.assert_array_equal(sh.mean[-1], 0.0)
    np.testing.assert_array_equal(sh.elites[:, :-1], st1.elites[:, 1:])
    with pytest.raises(ValueError, match="keep_elites"):
        planner(return_fn, shooting.init_state(H, 1), jax.random.key(0))
    with pytest.raises(ValueError, match="unknown planner"):
        shooting.make_planner("ilqr", population=10)


def test_colored_noise_has_unit_variance_and_beta_correlates_in_time():
    white = shooting.colored_noise(jax.random.key(0), 0.0, (4000, 32, 1))
    for beta, h in ((2.0, 32), (1.0, 7)):
        red = shooting.colored_noise(jax.random.key(0), beta, (4000, h, 1))
        assert float(red.std()) == pytest.approx(1.0, abs=0.03)
    red = shooting.colored_noise(jax.random.key(0), 2.0, (4000, 32, 1))

    def lag1(x):
        x = np.asarray(x)[..., 0]
        return np.mean(x[:, 1:] * x[:, :-1]) / np.mean(x * x)

    assert abs(lag1(white)) < 0.05 and lag1(red) > 0.7
