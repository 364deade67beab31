"""The pure-JAX environments: Pendulum matches Gymnasium's Pendulum-v1 step for step, the linear-quadratic
system is what it says, and both work as Gymnasium environments through `envs.make`."""

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.envs import jax_envs
from mbrlax.envs.known_fns import pendulum_reward
from mbrlax.envs.make import get_env_state, make, set_env_state


def test_pendulum_matches_gymnasium_pendulum_v1():
    ref = gym.make("Pendulum-v1")
    obs_ref, _ = ref.reset(seed=3)
    env = jax_envs.Pendulum()
    th = np.arctan2(obs_ref[1], obs_ref[0])
    state = jnp.array([th, obs_ref[2]], jnp.float32)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.uniform(-1, 1, 1).astype(np.float32)
        obs_ref, r_ref, *_ = ref.step(2.0 * a)  # gymnasium's torque is 2a
        obs = env.observe(state)
        state, r, term = env.step(state, jnp.asarray(a))
        np.testing.assert_allclose(env.observe(state), obs_ref, atol=1e-4)
        assert float(r) == pytest.approx(r_ref, abs=1e-4)
        # and the known reward function of Pendulum-v1 agrees, given the env's own torque
        assert float(pendulum_reward(obs, 2.0 * jnp.asarray(a), None)) == pytest.approx(float(r), abs=1e-5)
        assert not bool(term)


def test_pendulum_swing_up_starts_hanging_at_rest():
    env = jax_envs.load("mbrlax/PendulumSwingUp-v0")
    s = env.init_state(jax.random.key(0))
    np.testing.assert_allclose(env.observe(s), [-1.0, 0.0, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="start"):
        jax_envs.Pendulum(start="up")


def test_linear_quadratic_dynamics_reward_and_spectral_radius():
    env = jax_envs.LinearQuadratic(A=[[1.1, 0.0], [0.3, 0.5]], B=[[1.0], [0.0]], action_scale=2.0)
    x, a = jnp.array([1.0, -2.0]), jnp.array([0.25])
    np.testing.assert_allclose(env.dynamics(x, a), [1.1 + 0.5, 0.3 - 1.0], rtol=1e-6)
    # -(xᵀQx + uᵀRu) with Q = I, R = 0.1 I, u = 2·0.25
    assert float(env.reward(x, a, None)) == pytest.approx(-(1 + 4 + 0.1 * 0.25))
    scaled = jax_envs.LinearQuadratic(A=[[2.0, 1.0], [0.0, 0.5]], spectral_radius=0.9)
    assert np.max(np.abs(np.linalg.eigvals(scaled.A))) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="square A"):
        jax_envs.LinearQuadratic(A=[[1.0, 0.0]])


def test_rollout_equals_repeated_steps():
    env = jax_envs.Pendulum()
    s0 = env.init_state(jax.random.key(1))
    actions = jnp.linspace(-1, 1, 7)[:, None]
    states, rewards = env.rollout(s0, actions)
    s = s0
    for t in range(7):
        s, r, _ = env.step(s, actions[t])
        np.testing.assert_allclose(states[t + 1], s, rtol=1e-6)
        assert float(rewards[t]) == pytest.approx(float(r), rel=1e-6)


def test_registered_as_gymnasium_envs_with_resume_state():
    env, spec = make("mbrlax/Pendulum-v0")
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (3, 1, 200)
    env.reset(seed=0)
    for _ in range(5):
        env.step(np.array([0.3], np.float32))
    saved = get_env_state(env)
    after = [env.step(np.array([0.1], np.float32))[0] for _ in range(3)]
    env2, _ = make("mbrlax/Pendulum-v0")
    env2.reset(seed=1)
    set_env_state(env2, saved)
    again = [env2.step(np.array([0.1], np.float32))[0] for _ in range(3)]
    np.testing.assert_allclose(after, again)
    with pytest.raises(KeyError, match="not a pure-JAX environment"):
        jax_envs.load("Pendulum-v1")
