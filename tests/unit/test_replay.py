import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.data.replay import (
    ReplayBuffer,
    device_buffer,
    device_buffer_add,
    device_buffer_from_host,
    device_buffer_sample,
    device_buffer_set_limit,
    device_buffer_to_host,
)
from mbrlax.types import Transition


def rows(start, n, obs_dim=2, act_dim=1):
    i = np.arange(start, start + n, dtype=np.float32)
    return Transition(
        np.stack([i] * obs_dim, -1), np.stack([i] * act_dim, -1), i, np.stack([i + 0.5] * obs_dim, -1),
        (i % 2).astype(np.float32),
    )


def test_host_buffer_wraps_and_keeps_order():
    buf = ReplayBuffer(5, 2, 1)
    for i in range(7):
        buf.add(*(x[i] for x in rows(0, 7)))
    assert len(buf) == 5 and buf.ptr == 2
    np.testing.assert_array_equal(buf.all().reward, [2, 3, 4, 5, 6])  # oldest first
    np.testing.assert_array_equal(buf.all().next_obs[:, 0], np.array([2, 3, 4, 5, 6]) + 0.5)
    buf.add(*rows(7, 4))  # a batch across the wrap point
    np.testing.assert_array_equal(buf.all().reward, [6, 7, 8, 9, 10])
    s = buf.sample(np.random.default_rng(0), (3, 4))
    assert s.obs.shape == (3, 4, 2) and set(np.unique(s.reward)) <= {6, 7, 8, 9, 10}


def test_host_buffer_state_round_trip_and_errors():
    buf = ReplayBuffer(4, 2, 1)
    buf.add(*rows(0, 6))
    other = ReplayBuffer(4, 2, 1)
    other.load_state_dict(buf.state_dict())
    for a, b in zip(buf.all(), other.all()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="obs"):
        ReplayBuffer(4, 3, 1).load_state_dict(buf.state_dict())
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(4, 2, 1).sample(np.random.default_rng(0), 2)


def test_terminated_is_stored_truncated_is_not():
    buf = ReplayBuffer(3, 1, 1)
    buf.add(np.zeros(1), np.zeros(1), 1.0, np.ones(1), 1.0)  # terminated
    buf.add(np.zeros(1), np.zeros(1), 1.0, np.ones(1), 0.0)  # truncated: stored as an ordinary step
    np.testing.assert_array_equal(buf.all().terminated, [1.0, 0.0])


def test_device_buffer_masked_add_and_wrap():
    buf = device_buffer(8, 2, 1)
    batch = Transition(*(jnp.asarray(x) for x in rows(0, 5)))
    buf = device_buffer_add(buf, batch, jnp.array([True, False, True, True, False]))
    assert int(buf.size) == 3 and int(buf.ptr) == 3
    np.testing.assert_array_equal(np.asarray(buf.data.reward[:3]), [0, 2, 3])  # packed, order kept
    buf = device_buffer_add(buf, Transition(*(jnp.asarray(x) for x in rows(10, 7))))
    assert int(buf.size) == 8 and int(buf.ptr) == 2
    np.testing.assert_array_equal(np.asarray(buf.data.reward), [15, 16, 3, 10, 11, 12, 13, 14])


def test_device_buffer_limit_change_keeps_newest_oldest_first():
    buf = device_buffer(10, 2, 1, limit=4)
    buf = device_buffer_add(buf, Transition(*(jnp.asarray(x) for x in rows(0, 6))))  # wraps at 4
    np.testing.assert_array_equal(np.asarray(buf.data.reward[:4]), [4, 5, 2, 3])
    grown = device_buffer_set_limit(buf, 6)
    np.testing.assert_array_equal(np.asarray(grown.data.reward[:4]), [2, 3, 4, 5])
    assert int(grown.size) == 4 and int(grown.ptr) == 4 and int(grown.limit) == 6
    grown = device_buffer_add(grown, Transition(*(jnp.asarray(x) for x in rows(6, 3))))
    np.testing.assert_array_equal(np.asarray(grown.data.reward[:6]), [8, 3, 4, 5, 6, 7])
    shrunk = device_buffer_set_limit(grown, 3)  # keeps the newest 3
    np.testing.assert_array_equal(np.asarray(shrunk.data.reward[:3]), [6, 7, 8])
    assert int(shrunk.size) == 3 and int(shrunk.ptr) == 0


def test_device_buffer_sample_and_host_round_trip():
    buf = device_buffer_add(device_buffer(16, 2, 1), Transition(*(jnp.asarray(x) for x in rows(0, 5))))
    s = device_buffer_sample(buf, jax.random.key(0), (3, 7))
    assert s.obs.shape == (3, 7, 2)
    assert set(np.unique(np.asarray(s.reward))) <= {0, 1, 2, 3, 4}
    back = device_buffer_from_host(device_buffer_to_host(buf), device_buffer(16, 2, 1))
    for a, b in zip(jax.tree.leaves(buf), jax.tree.leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
