"""Pathwise (BPTT) policy gradients through a model: the gradient equals finite differences, the model is
never moved by the policy loss, and the value bootstrap's targets are the hand-computed ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.agents.pathwise import Pathwise, Rollout, discounted_return, model_step, reward_to_go
from mbrlax.models.ensemble import EnsembleModel


def quad_reward(obs, action, next_obs):
    return -(obs**2).sum(-1) - 0.1 * (action**2).sum(-1)


def small(ensemble_size=1, probabilistic=False, **kw):
    model = EnsembleModel(2, 1, ensemble_size=ensemble_size, num_elites=ensemble_size, hidden=(8,),
                          probabilistic=probabilistic)
    ms = model.init(jax.random.key(1))
    # a non-trivial model: bigger weights than the init, so that the dynamics are clearly nonlinear
    ms = ms._replace(params=jax.tree.map(lambda x: 4.0 * x + 0.05, ms.params))
    agent = Pathwise(2, 1, model, reward_fn=quad_reward, hidden=(8,), value_hidden=(8,), **kw)
    return model, ms, agent


def test_pathwise_gradient_matches_finite_differences():
    model, ms, agent = small(horizon=6, action_noise=0.0, value_bootstrap=False, gamma=0.9)
    st = agent.init(jax.random.key(0))
    start = jax.random.normal(jax.random.key(2), (4, 2))
    key = jax.random.key(3)
    flat, unravel = jax.flatten_util.ravel_pytree(st.policy)

    @jax.jit
    def loss(f):
        return agent.policy_loss(unravel(f), st.value, ms, start, key)[0]

    g = jax.jit(jax.grad(loss))(flat)
    assert float(jnp.linalg.norm(g)) > 1e-3
    for i in range(4):
        v = jax.random.normal(jax.random.key(10 + i), flat.shape)
        v = v / jnp.linalg.norm(v)
        eps = 1e-2
        fd = (loss(flat + eps * v) - loss(flat - eps * v)) / (2 * eps)
        assert float(g @ v) == pytest.approx(float(fd), rel=2e-2, abs=2e-4)


def test_reparameterized_noise_gradient_matches_finite_differences():
    """With action noise and a probabilistic model, the pathwise gradient at fixed noise (fixed key) is the
    derivative of that sample's return."""
    model, ms, agent = small(ensemble_size=3, probabilistic=True, horizon=4, action_noise=0.3,
                             value_bootstrap=False, member_mode="sample")
    st = agent.init(jax.random.key(0))
    start = jax.random.normal(jax.random.key(2), (4, 2))
    key = jax.random.key(5)
    flat, unravel = jax.flatten_util.ravel_pytree(st.policy)
    loss = jax.jit(lambda f: agent.policy_loss(unravel(f), st.value, ms, start, key)[0])
    g = jax.jit(jax.grad(loss))(flat)
    v = jax.random.normal(jax.random.key(7), flat.shape)
    v = v / jnp.linalg.norm(v)
    fd = (loss(flat + 1e-2 * v) - loss(flat - 1e-2 * v)) / 2e-2
    assert float(g @ v) == pytest.approx(float(fd), rel=2e-2, abs=2e-4)


def test_policy_loss_does_not_change_the_model():
    model, ms, agent = small(ensemble_size=3, probabilistic=True, horizon=5)
    st = agent.init(jax.random.key(0))
    start = jax.random.normal(jax.random.key(2), (8, 2))
    # the gradient of the policy loss with respect to every model parameter is exactly zero ...
    # (every float leaf: the weights, the log-variance bounds and the normalizers)
    floats = (ms.params, ms.in_norm, ms.out_norm)
    g_model = jax.jit(jax.grad(lambda f: agent.policy_loss(
        st.policy, st.value, ms._replace(params=f[0], in_norm=f[1], out_norm=f[2]), start, jax.random.key(3)
    )[0]))(floats)
    assert len(jax.tree.leaves(g_model)) >= 8
    for leaf in jax.tree.leaves(g_model):
        assert np.all(np.asarray(leaf) == 0.0)
    # ... while the gradient does flow through the model's *states* (so the zero above is not vacuous)
    g_obs = jax.jit(jax.grad(lambda s: agent.policy_loss(st.policy, st.value, ms, s, jax.random.key(3))[0]))(start)
    assert float(jnp.abs(g_obs).sum()) > 1e-3
    # and updates leave the model bit-for-bit unchanged while the policy moves
    before = jax.tree.map(np.array, ms)
    new, info = agent.update_many(st, ms, jnp.stack([start] * 3), jax.random.key(4))
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(ms)):
        np.testing.assert_array_equal(a, np.asarray(b))
    moved = [float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(new.policy), jax.tree.leaves(st.policy))]
    assert max(moved) > 0


def test_reward_to_go_and_bootstrap_by_hand():
    gamma = 0.5
    r = jnp.array([[1.0], [2.0], [4.0]])  # H=3, B=1
    alive = jnp.array([[1.0], [1.0], [1.0]])
    roll = Rollout(jnp.zeros((3, 1, 2)), jnp.zeros((3, 1, 1)), r, alive, jnp.zeros((1, 2)), jnp.ones(1))
    boot = jnp.array([8.0])
    # G_2 = 4 + .5*8 = 8; G_1 = 2 + .5*8 = 6; G_0 = 1 + .5*6 = 4
    np.testing.assert_allclose(reward_to_go(roll, boot, gamma)[:, 0], [4.0, 6.0, 8.0])
    assert float(discounted_return(roll, boot, gamma)[0]) == pytest.approx(1 + 1 + 1 + 1)
    # a rollout that terminated after step 1 gets no later reward and no bootstrap
    dead = roll._replace(alive=jnp.array([[1.0], [1.0], [0.0]]), final_alive=jnp.zeros(1))
    assert float(discounted_return(dead, boot, gamma)[0]) == pytest.approx(1 + 0.5 * 2)


def test_member_modes_and_fixed_member():
    model, ms, _ = small(ensemble_size=3, probabilistic=False)
    obs = jax.random.normal(jax.random.key(0), (5, 2))
    act = jnp.zeros((5, 1))
    pred = model.predict(ms, obs, act)
    for m in range(3):
        nxt, _, _ = model_step(model, ms, obs, act, jax.random.key(1), mode="fixed", member=m)
        np.testing.assert_allclose(nxt, pred.next_obs_mean[m], rtol=1e-5, atol=1e-5)
    nxt, _, _ = model_step(model, ms, obs, act, jax.random.key(1), mode="mean")
    np.testing.assert_allclose(nxt, pred.next_obs_mean.mean(0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="member mode"):
        model_step(model, ms, obs, act, jax.random.key(1), mode="bogus")


def test_update_is_deterministic_under_a_seed_and_improves_the_model_return():
    model, ms, agent = small(horizon=8, action_noise=0.0, lr=1e-2, grad_clip=1.0)
    st = agent.init(jax.random.key(0))
    starts = jax.random.normal(jax.random.key(2), (30, 16, 2))
    a, _ = agent.update_many(st, ms, starts, jax.random.key(4))
    b, _ = agent.update_many(st, ms, starts, jax.random.key(4))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # without the bootstrap the loss is the model H-step return: BPTT must raise it on fixed start states
    ret = jax.jit(lambda p: -agent.policy_loss(p, a.value, ms, starts[0], jax.random.key(9))[0])
    assert float(ret(a.policy)) > float(ret(st.policy))
