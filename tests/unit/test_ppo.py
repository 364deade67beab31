"""Likelihood-ratio policy gradients: PPO's clipped objective and GAE against hand computations, TRPO's step
within its KL bound, conjugate gradient, and REINFORCE moving a Gaussian toward the reward's maximum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.agents.ppo import (
    PGBatch,
    PolicyGradient,
    conjugate_gradient,
    gae,
    gaussian_kl,
    gaussian_log_prob,
    ppo_clip_objective,
    trpo_step,
)


def test_ppo_clipped_objective_by_hand():
    adv = jnp.array([1.0, 1.0, -1.0, -1.0, 2.0])
    ratio = jnp.array([1.5, 0.5, 1.5, 0.5, 1.1])
    old = jnp.zeros(5)
    # min(ρA, clip(ρ, .8, 1.2)A): 1.2, 0.5, -1.5, -0.8, 2.2  -> mean 1.6/5
    expected = (1.2 + 0.5 - 1.5 - 0.8 + 2.2) / 5
    assert float(ppo_clip_objective(jnp.log(ratio), old, adv, 0.2)) == pytest.approx(expected, rel=1e-6)
    # its gradient w.r.t. log π is zero exactly where clipping is active (samples 0 and 3)
    g = jax.grad(lambda lp: ppo_clip_objective(lp, old, adv, 0.2))(jnp.log(ratio))
    np.testing.assert_allclose(g, np.array([0.0, 0.5, -1.5, 0.0, 2.2]) / 5, rtol=1e-6)


def test_gae_by_hand():
    gamma, lam = 0.9, 0.8
    r = np.array([1.0, 0.0, 2.0])
    v = np.array([0.5, 1.0, -1.0])
    last = 3.0
    d = [r[0] + gamma * v[1] - v[0], r[1] + gamma * v[2] - v[1], r[2] + gamma * last - v[2]]
    a2 = d[2]
    a1 = d[1] + gamma * lam * a2
    a0 = d[0] + gamma * lam * a1
    adv, ret = gae(jnp.asarray(r)[:, None], jnp.asarray(v)[:, None], jnp.array([last]), jnp.ones((3, 1)),
                   jnp.ones(1), gamma, lam)
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2], rtol=1e-5)
    np.testing.assert_allclose(ret[:, 0], np.array([a0, a1, a2]) + v, rtol=1e-5)
    # a termination after step 1: no bootstrap from step 2 on, and the dead step has zero advantage
    adv, _ = gae(jnp.asarray(r)[:, None], jnp.asarray(v)[:, None], jnp.array([last]),
                 jnp.array([[1.0], [1.0], [0.0]]), jnp.zeros(1), gamma, lam)
    b1 = r[1] - v[1]
    np.testing.assert_allclose(adv[:, 0], [r[0] + gamma * v[1] - v[0] + gamma * lam * b1, b1, 0.0], rtol=1e-5)


def test_gaussian_log_prob_and_kl_closed_forms():
    m0, s0, m1, s1 = jnp.array([0.3]), jnp.log(jnp.array([0.5])), jnp.array([-0.2]), jnp.log(jnp.array([0.8]))
    x = jnp.array([0.1])
    assert float(gaussian_log_prob(m0, s0, x)) == pytest.approx(
        float(jax.scipy.stats.norm.logpdf(0.1, 0.3, 0.5)), rel=1e-6)
    kl = np.log(0.8 / 0.5) + (0.25 + 0.25) / (2 * 0.64) - 0.5
    assert float(gaussian_kl(m0, s0, m1, s1)) == pytest.approx(kl, rel=1e-6)


def test_conjugate_gradient_solves_spd_system():
    a = jax.random.normal(jax.random.key(0), (6, 6))
    spd = a @ a.T + 0.5 * jnp.eye(6)
    b = jax.random.normal(jax.random.key(1), (6,))
    x = conjugate_gradient(lambda v: spd @ v, b, iters=30)
    np.testing.assert_allclose(spd @ x, b, atol=1e-3)


def _batch(agent, st, n=512, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    obs = jax.random.normal(k1, (n, agent.obs_dim))
    a, logp = agent.sample(st.policy, obs, k2)
    adv = -((a - 0.5) ** 2).sum(-1)  # prefers actions near 0.5
    return PGBatch(obs, a, logp, adv - adv.mean(), adv, jnp.ones(n))


@pytest.mark.parametrize("max_kl", [0.001, 0.01])
def test_trpo_step_respects_the_kl_bound_and_improves_the_surrogate(max_kl):
    agent = PolicyGradient(3, 2, method="trpo", hidden=(16,), max_kl=max_kl)
    st = agent.init(jax.random.key(0))
    batch = _batch(agent, st)
    new, info = trpo_step(agent.policy_net, st.policy, batch, max_kl=max_kl)
    m0, s0 = agent.policy_net.apply(st.policy, batch.obs)
    m1, s1 = agent.policy_net.apply(new, batch.obs)
    kl = float(gaussian_kl(m0, jnp.broadcast_to(s0, m0.shape), m1, jnp.broadcast_to(s1, m1.shape)).mean())
    assert float(info["pg/step_accepted"]) == 1.0
    assert 0.0 < kl <= max_kl * (1 + 1e-4)
    # the quadratic model puts the full step on the boundary, so the accepted KL is a sizable part of δ
    assert kl > 0.2 * max_kl
    assert float(info["pg/improvement"]) > 0


@pytest.mark.parametrize("method", ["reinforce", "ppo", "trpo"])
def test_updates_move_the_policy_toward_higher_reward(method):
    agent = PolicyGradient(3, 2, method=method, hidden=(16,), lr=1e-2, epochs=4, minibatches=4, value_epochs=2,
                           pg_steps=4, max_kl=0.05)
    st = agent.init(jax.random.key(0))
    mean0 = float(agent.policy_net.apply(st.policy, jnp.zeros((1, 3)))[0].mean())
    for i in range(5):
        st, info = agent.update(st, _batch(agent, st, seed=i), jax.random.key(100 + i))
    mean1 = float(agent.policy_net.apply(st.policy, jnp.zeros((1, 3)))[0].mean())
    assert abs(mean1 - 0.5) < abs(mean0 - 0.5) - 0.05
    assert np.isfinite(float(info["pg/value_loss"]))


def test_bad_method_is_a_clear_error():
    with pytest.raises(ValueError, match="reinforce"):
        PolicyGradient(3, 1, method="a2c")
