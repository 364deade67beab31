"""Known reward/termination functions reproduce the real Gymnasium environments exactly."""

from __future__ import annotations

import functools
import warnings

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.envs import known_fns as K

TERMINATING = [
    "Hopper-v5",
    "Walker2d-v5",
    "Ant-v5",
    "Humanoid-v5",
    "InvertedPendulum-v5",
    "InvertedDoublePendulum-v5",
]
TERMINATING_V4 = [env_id.replace("-v5", "-v4") for env_id in TERMINATING]
NEVER = ["HalfCheetah-v5", "Swimmer-v5", "Reacher-v5", "Pusher-v5", "Pendulum-v1"]


def _make(env_id: str) -> gym.Env:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # v4 deprecation notices
        return gym.make(env_id)


@functools.cache
def rollout(env_id: str, steps: int = 300, seed: int = 0):
    """Random-action rollout, resetting on termination/truncation.

    Returns float64 numpy arrays obs, action, next_obs, terminated, reward and, for the double
    pendulum, the source's tip height ``site_xpos[0][2]`` (NaN otherwise)."""
    env = _make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out = {k: [] for k in ("obs", "action", "next_obs", "terminated", "reward", "tip_y")}
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        tip_y = env.unwrapped.data.site_xpos[0][2] if "DoublePendulum" in env_id else np.nan
        for k, v in zip(out, (obs, action, next_obs, terminated, reward, tip_y)):
            out[k].append(v)
        obs = env.reset()[0] if (terminated or truncated) else next_obs
    env.close()
    return {k: np.asarray(v) for k, v in out.items()}


def _apply(fn, data):
    o, a, o2 = (jnp.asarray(data[k]) for k in ("obs", "action", "next_obs"))
    return np.asarray(fn(o, a, o2))


# --------------------------------------------------------------------------------------------------
# Terminations on real rollouts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", TERMINATING + TERMINATING_V4)
def test_termination_matches_real_rollout(env_id):
    data = rollout(env_id)
    terminated = data["terminated"]
    assert terminated.any() and (~terminated).any(), "rollout must contain both outcomes"
    pred = _apply(K.termination_fn(env_id), data)
    assert pred.dtype == bool and pred.shape == terminated.shape
    if "DoublePendulum" in env_id:
        # the source's site_xpos is from the last RK4 stage (see docstring): exclude a 1e-3 band
        # around the y <= 1 boundary, and check the reconstructed tip height is within 2e-4.
        _, y = K.inverted_double_pendulum_tip(jnp.asarray(data["next_obs"]))
        np.testing.assert_allclose(np.asarray(y), data["tip_y"], atol=2e-4)
        clear = np.abs(data["tip_y"] - 1.0) > 1e-3
        assert clear.mean() > 0.95
        np.testing.assert_array_equal(pred[clear], terminated[clear])
    else:
        np.testing.assert_array_equal(pred, terminated)


def _obs_after_set_state(env_id: str, qpos_updates: dict[int, float]):
    """Set the real env to init_qpos with some entries changed; return (obs, not is_healthy)."""
    env = _make(env_id)
    env.reset(seed=0)
    u = env.unwrapped
    qpos = u.init_qpos.copy()
    for i, v in qpos_updates.items():
        qpos[i] = v
    u.set_state(qpos, u.init_qvel.copy())
    obs, unhealthy = u._get_obs(), not u.is_healthy
    env.close()
    return obs, unhealthy


@pytest.mark.parametrize(
    "env_id, qpos_updates, expected",
    [
        ("Hopper-v5", {1: 1.25, 2: 0.0}, False),
        ("Hopper-v5", {1: 0.5}, True),
        ("Hopper-v5", {1: 1.25, 2: 0.3}, True),
        ("Hopper-v5", {1: 1.25, 3: 150.0}, True),  # healthy_state_range on a joint angle
        ("Walker2d-v5", {1: 1.25, 2: 0.0}, False),
        ("Walker2d-v5", {1: 0.7}, True),
        ("Walker2d-v5", {1: 2.1}, True),
        ("Walker2d-v5", {1: 1.25, 2: -1.1}, True),
        ("Ant-v5", {2: 0.75}, False),
        ("Ant-v5", {2: 0.1}, True),
        ("Ant-v5", {2: 1.1}, True),
        ("Humanoid-v5", {2: 1.4}, False),
        ("Humanoid-v5", {2: 0.9}, True),
        ("Humanoid-v5", {2: 2.1}, True),
    ],
)
def test_termination_known_states_agree_with_is_healthy(env_id, qpos_updates, expected):
    obs, unhealthy = _obs_after_set_state(env_id, qpos_updates)
    assert unhealthy == expected
    o = jnp.asarray(obs)[None]
    pred = K.termination_fn(env_id)(o, jnp.zeros((1, 1)), o)
    assert bool(pred[0]) == expected


def test_termination_hand_made_edges():
    nan = np.nan
    # Hopper: [z, angle, 3 joints, 6 clipped velocities]
    hop = np.zeros((4, 11), np.float32)
    hop[:, 0] = 1.25
    hop[1, 0] = 0.5
    hop[2, 6] = nan  # finiteness via healthy_state_range comparisons
    hop[3, 0] = np.inf  # healthy_z_range is (0.7, inf): open interval
    h = jnp.asarray(hop)
    np.testing.assert_array_equal(K.hopper_termination(h, None, h), [False, True, True, True])

    # Walker2d without a finiteness check: NaN in z still reads unhealthy, NaN in a velocity does not.
    w = np.zeros((3, 17), np.float32)
    w[:, 0] = 1.25
    w[1, 0] = nan
    w[2, 10] = nan
    w = jnp.asarray(w)
    np.testing.assert_array_equal(K.walker2d_termination(w, None, w), [False, True, False])

    # Ant: inclusive z bounds and isfinite over the 27 state entries, not the contact forces.
    a = np.zeros((5, 105), np.float32)
    a[:, 0] = [0.2, 1.0, 0.5, 0.5, 0.5]
    a[3, 20] = nan
    a[4, 50] = nan  # a contact force
    a = jnp.asarray(a)
    np.testing.assert_array_equal(K.ant_termination(a, None, a), [False, False, False, True, False])

    # Humanoid: strict bounds.
    hu = jnp.zeros((3, 348)).at[:, 0].set(jnp.array([1.0, 2.0, 1.5]))
    np.testing.assert_array_equal(K.humanoid_termination(hu, None, hu), [True, True, False])

    # InvertedPendulum: |angle| > 0.2 (strict) or any non-finite entry.
    ip = jnp.array(
        [[0, 0.2, 0, 0], [0, -0.21, 0, 0], [0, 0, 0, nan], [0.5, 0.1, 3.0, -2.0]], jnp.float32
    )
    ip_term = K.inverted_pendulum_termination(ip, None, ip)
    np.testing.assert_array_equal(ip_term, [False, True, True, False])
    np.testing.assert_array_equal(K.inverted_pendulum_v5_reward(ip, None, ip), [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(K.inverted_pendulum_v4_reward(ip, None, ip), [1.0, 1.0, 1.0, 1.0])

    # InvertedDoublePendulum: upright tip at 1.2; first pole horizontal -> tip at 0 or below;
    # a NaN tip height does not terminate (NaN <= 1 is False in the source as well).
    def idp(q1, q2):
        return [0.0, np.sin(q1), np.sin(q2), np.cos(q1), np.cos(q2), 0, 0, 0, 0]

    d = jnp.asarray(np.array([idp(0, 0), idp(np.pi / 2, 0), idp(0.3, 0.3), [nan] * 9], np.float32))
    _, y = K.inverted_double_pendulum_tip(d)
    expected_y = [1.2, 0.0, 0.6 * (np.cos(0.3) + np.cos(0.6))]
    np.testing.assert_allclose(np.asarray(y)[:3], expected_y, atol=1e-6)
    idp_term = K.inverted_double_pendulum_termination(d, None, d)
    np.testing.assert_array_equal(idp_term, [False, True, False, False])


# --------------------------------------------------------------------------------------------------
# Rewards on real rollouts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "env_id",
    ["Pendulum-v1", "InvertedPendulum-v5", "InvertedPendulum-v4", "Reacher-v5", "Reacher-v4", "Pusher-v5"],
)
def test_reward_matches_real_rollout(env_id):
    data = rollout(env_id, steps=200)
    pred = _apply(K.reward_fn(env_id), data)
    assert pred.shape == data["reward"].shape
    np.testing.assert_allclose(pred, data["reward"], atol=1e-5, rtol=0)


def test_pendulum_reward_clips_action_and_normalizes_angle():
    th = np.array([0.1, np.pi - 1e-3, -np.pi + 1e-3])
    obs = jnp.asarray(np.stack([np.cos(th), np.sin(th), [1.0, -2.0, 8.0]], -1), jnp.float32)
    act = jnp.array([[5.0], [-1.0], [-7.0]])  # clipped to [-2, 2]
    u = np.array([2.0, -1.0, -2.0])
    expected = -(th**2 + 0.1 * np.array([1.0, 4.0, 64.0]) + 0.001 * u**2)
    np.testing.assert_allclose(K.pendulum_reward(obs, act, obs), expected, atol=1e-5)


def test_rewards_unknown_or_inexact_are_none():
    for env_id in ["Hopper-v5", "HalfCheetah-v5", "InvertedDoublePendulum-v5", "CartPole-v1", "Foo-v0"]:
        assert K.reward_fn(env_id) is None


# --------------------------------------------------------------------------------------------------
# jit, extra leading axes, lookup
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", TERMINATING + ["Pendulum-v1", "Reacher-v5"])
def test_jit_and_leading_axes(env_id):
    data = rollout(env_id) if env_id in TERMINATING else rollout(env_id, steps=200)
    n = 200  # E×B = 4×50
    o, a, o2 = (jnp.asarray(data[k][:n]) for k in ("obs", "action", "next_obs"))
    fns = [K.termination_fn(env_id)] + ([K.reward_fn(env_id)] if K.reward_fn(env_id) else [])
    eb_args = (o.reshape(4, 50, -1), a.reshape(4, 50, -1), o2.reshape(4, 50, -1))
    for fn in fns:
        flat = np.asarray(fn(o, a, o2))
        eb = np.asarray(jax.jit(fn)(*eb_args))
        vm = np.asarray(jax.vmap(fn)(*eb_args))  # vmap over the ensemble axis
        assert eb.shape == vm.shape == (4, 50) and eb.dtype == flat.dtype
        if flat.dtype == bool:
            np.testing.assert_array_equal(eb.reshape(-1), flat)
            np.testing.assert_array_equal(vm, eb)
        else:  # XLA may fuse float ops differently under jit: equal up to float32 rounding
            np.testing.assert_allclose(eb.reshape(-1), flat, rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(vm, eb, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("env_id", NEVER + ["HalfCheetah-v4", "Swimmer-v4", "Reacher-v4", "Pusher-v4"])
def test_never_terminating_returns_all_false(env_id):
    fn = K.termination_fn(env_id)
    assert fn is K.no_termination
    o = jnp.ones((3, 7, 17))
    out = jax.jit(fn)(o, jnp.ones((3, 7, 6)), o)
    assert out.shape == (3, 7) and out.dtype == bool and not out.any()


def test_never_terminating_real_envs_do_not_terminate():
    for env_id in NEVER:
        assert not rollout(env_id, steps=50)["terminated"].any()


def test_unknown_env_id_returns_none():
    for env_id in ["CartPole-v1", "Hopper-v3", "hopper-v5", "Hopper", "MyNamespace/Hopper-v5", "Foo-v0"]:
        assert K.termination_fn(env_id) is None


def test_lookup_returns_expected_functions():
    assert K.termination_fn("Hopper-v5") is K.hopper_termination
    assert K.termination_fn("Hopper-v4") is K.hopper_termination
    assert K.termination_fn("InvertedDoublePendulum-v5") is K.inverted_double_pendulum_termination
    assert K.reward_fn("InvertedPendulum-v5") is K.inverted_pendulum_v5_reward
    assert K.reward_fn("InvertedPendulum-v4") is K.inverted_pendulum_v4_reward
    assert K.reward_fn("Pendulum-v1") is K.pendulum_reward
