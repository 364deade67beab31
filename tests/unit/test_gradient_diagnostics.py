"""Gradient diagnostics: the Jacobian-product growth on the linear-quadratic system equals the analytic
σ_max(A^H) (open loop) and σ_max((A + BK)^H) (closed loop); both gradient estimators agree in mean; the
variance of an n-sample mean falls as 1/n; the CLI writes its JSON and PNG."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax import cli
from mbrlax.diagnostics import gradients as gd
from mbrlax.envs.jax_envs import LinearQuadratic

HS = [1, 2, 5, 10, 50, 100, 200]


@pytest.mark.parametrize("rho", [0.9, 1.0, 1.1, 1.5])
def test_jacobian_product_growth_matches_sigma_max_of_A_power_H(rho):
    env = LinearQuadratic(spectral_radius=rho)
    system = gd.jax_env_system(env, "lq")
    growth = gd.jacobian_product_growth(system, gd.linear_policy(2, 1), jnp.array([0.1, -0.2]), max(HS))
    expected = gd.analytic_lq_growth(env.A, HS)
    got = [float(growth["open_loop"][h - 1]) for h in HS]
    np.testing.assert_allclose(got, expected, atol=5e-4)  # log10 units: σ within 0.1 %
    # with the zero policy the closed loop is the open loop
    np.testing.assert_allclose(growth["closed_loop"], growth["open_loop"], atol=1e-6)
    # the growth is ~ H log10 ρ (+ the double integrator's linear factor): ρ=1.5 reaches ~10^35 at H=200
    if rho == 1.5:
        assert got[-1] > 34


def test_closed_loop_jacobian_includes_the_policy():
    env = LinearQuadratic(spectral_radius=0.95, action_scale=1.0)
    k = jnp.array([[-0.3, -0.8]])
    policy = gd.Policy(lambda p, o: o @ p["K"].T, {"K": k}, 0.1)
    s0 = jnp.array([0.3, -0.1])
    states, actions = gd.trajectory(gd.jax_env_system(env, "lq"), policy, s0, 50)
    assert float(jnp.abs(actions).max()) < 1.0  # the clip is inactive: the closed loop is linear
    growth = gd.jacobian_product_growth(gd.jax_env_system(env, "lq"), policy, s0, 50)
    closed = env.A + env.B @ np.asarray(k, np.float64)
    np.testing.assert_allclose([growth["closed_loop"][h - 1] for h in (1, 10, 50)],
                               gd.analytic_lq_growth(closed, [1, 10, 50]), atol=1e-4)


def test_pathwise_and_likelihood_ratio_estimate_the_same_gradient():
    env = LinearQuadratic(spectral_radius=0.9, action_scale=1.0, init_std=0.5)
    system = gd.jax_env_system(env, "lq")
    policy = gd.Policy(lambda p, o: o @ p["K"].T + p["b"], {"K": jnp.array([[-0.2, -0.4]]), "b": jnp.array([0.1])}, 0.3)
    n, h = 4096, 3
    s0 = jax.vmap(env.init_state)(jax.random.split(jax.random.key(0), n))
    eps = jax.random.normal(jax.random.key(1), (n, h, 1))
    g_path, g_lr, _ = jax.jit(gd.per_sample_gradients, static_argnums=(0, 1))(system, gd._hashable(policy), s0, eps)
    m_path, m_lr = np.asarray(g_path).mean(0), np.asarray(g_lr).mean(0)
    se = np.sqrt((np.asarray(g_path).var(0) + np.asarray(g_lr).var(0)) / n)
    assert np.all(np.abs(m_path - m_lr) < 4 * se + 1e-3)
    # on this smooth, stable system the pathwise estimator has far lower variance than the score function
    assert gd.estimator_stats(g_path)["variance"] < 0.2 * gd.estimator_stats(g_lr)["variance"]


def test_variance_of_the_n_sample_mean_falls_as_one_over_n():
    g = 2.0 * np.random.default_rng(0).standard_normal((4096, 5))
    stats = gd.estimator_stats(g, [1, 4, 16])
    assert stats["variance"] == pytest.approx(20.0, rel=0.05)
    np.testing.assert_allclose(stats["mean_variance_vs_samples"], [20.0, 5.0, 1.25], rtol=0.2)


def test_cli_writes_json_and_png(tmp_path, capsys):
    out = tmp_path / "lq_rho1.2"  # a dot in the prefix must survive
    assert cli.main(["diagnose", "gradients", "--system", "lq", "--spectral-radius", "1.2", "--horizons", "1", "5",
                     "--samples", "8", "--sample-sizes", "1", "2", "--out", str(out)]) == 0
    table = json.loads((tmp_path / "lq_rho1.2.json").read_text())
    assert [r["horizon"] for r in table["rows"]] == [1, 5]
    j = table["jacobian"]
    np.testing.assert_allclose(j["log10_sigma_max_open_loop"], j["analytic_log10_sigma_max_A_power_H"], atol=1e-4)
    assert (tmp_path / "lq_rho1.2.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out
    assert cli.main(["diagnose", "nope"]) == 2
    assert cli.main(["diagnose", "gradients", "--system", "cartpole", "--out", str(out)]) == 2
