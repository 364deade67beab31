"""Replay buffers.

- `ReplayBuffer`: host-side (NumPy) ring buffer for real environment data. One transition arrives per
  environment step, so it stays on the host; batches cross to the device once per call of the learner.
- `DeviceBuffer`: a ring buffer that lives on the device as a pure value, for model-generated data. Model
  rollouts write into it and the learner samples from it inside the same jitted computation, with no
  host↔device copies.

Only `terminated` is stored: a time-limit truncation is an ordinary transition (the learner bootstraps).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbrlax.types import Transition


class ReplayBuffer:
    """Host ring buffer of `Transition`s; the oldest data is overwritten once `capacity` is reached."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.data = Transition(
            obs=np.zeros((capacity, obs_dim), np.float32),
            action=np.zeros((capacity, act_dim), np.float32),
            reward=np.zeros((capacity,), np.float32),
            next_obs=np.zeros((capacity, obs_dim), np.float32),
            terminated=np.zeros((capacity,), np.float32),
        )
        self.ptr = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward, next_obs, terminated) -> None:
        """Add one transition, or a batch (leading axis) of them."""
        batch = Transition(obs, action, reward, next_obs, terminated)
        batch = Transition(*(np.asarray(x, np.float32) for x in batch))
        if batch.reward.ndim == 0:
            batch = Transition(*(x[None] for x in batch))
        n = len(batch.reward)
        idx: np.ndarray = (self.ptr + np.arange(n)) % self.capacity
        for dst, src in zip(self.data, batch):
            dst[idx] = src
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = int(min(self.size + n, self.capacity))

    def sample(self, rng: np.random.Generator, batch_size: int | tuple[int, ...]) -> Transition:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        return Transition(*(x[idx] for x in self.data))

    def all(self) -> Transition:
        """The stored transitions, oldest first."""
        if self.size < self.capacity:
            return Transition(*(x[: self.size] for x in self.data))
        order: np.ndarray = (self.ptr + np.arange(self.capacity)) % self.capacity
        return Transition(*(x[order] for x in self.data))

    def state_dict(self) -> dict:
        """The filled slots in storage order with the write pointer: a checkpoint's size follows the data, not
        the capacity, and a restored buffer samples exactly as this one (also after it has wrapped)."""
        return {"data": {k: v[: self.size] for k, v in self.data._asdict().items()}, "capacity": self.capacity,
                "ptr": self.ptr, "size": self.size}

    def load_state_dict(self, d: dict) -> None:
        for name, arr in d["data"].items():
            mine = getattr(self.data, name)
            if mine.shape[1:] != np.shape(arr)[1:]:
                raise ValueError(
                    f"replay buffer field '{name}' has rows of shape {np.shape(arr)[1:]}, expected {mine.shape[1:]}"
                )
        n = len(d["data"]["reward"])
        if n > self.capacity:
            raise ValueError(f"saved replay buffer holds {n} transitions but capacity is {self.capacity}")
        if "ptr" not in d:  # format-1 checkpoints stored the transitions oldest first
            self.ptr, self.size = 0, 0
            self.add(**d["data"])
            return
        if int(d["capacity"]) != self.capacity:
            raise ValueError(f"saved replay buffer has capacity {d['capacity']}, this run {self.capacity} "
                             f"(replay_size must not change on a resume)")
        for name, arr in d["data"].items():
            getattr(self.data, name)[:n] = arr
        self.ptr, self.size = int(d["ptr"]), int(d["size"])


class DeviceBuffer(NamedTuple):
    """Ring buffer as a pure value: `data` holds `capacity` slots; it wraps at `limit` (≤ capacity, a
    traced value, so MBPO can grow its model buffer with the rollout length without re-compiling), and
    `size` slots from index 0 are valid."""

    data: Transition
    ptr: jax.Array
    size: jax.Array
    limit: jax.Array

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[0]


def device_buffer(capacity: int, obs_dim: int, act_dim: int, limit: int | None = None) -> DeviceBuffer:
    z = lambda *s: jnp.zeros((capacity, *s), jnp.float32)  # noqa: E731
    data = Transition(z(obs_dim), z(act_dim), z(), z(obs_dim), z())
    lim = capacity if limit is None else min(limit, capacity)
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    return DeviceBuffer(data, i32(0), i32(0), i32(lim))


def device_buffer_add(buf: DeviceBuffer, batch: Transition, mask: jax.Array | None = None) -> DeviceBuffer:
    """Append the rows of `batch` (N×…) where `mask` is true, packed contiguously at the write pointer.
    Static shapes: rows that are masked out are scattered out of bounds and dropped. N must not exceed
    the limit (else a batch would overwrite itself)."""
    n = batch.reward.shape[0]
    if n > buf.capacity:
        raise ValueError(f"batch of {n} rows does not fit a device buffer of capacity {buf.capacity}")
    mask = jnp.ones((n,), bool) if mask is None else mask.astype(bool)
    offset = jnp.cumsum(mask) - 1
    idx = jnp.where(mask, (buf.ptr + offset) % buf.limit, buf.capacity)  # out of bounds: dropped
    data = Transition(*(d.at[idx].set(b, mode="drop") for d, b in zip(buf.data, batch)))
    count = mask.sum().astype(jnp.int32)
    return DeviceBuffer(data, (buf.ptr + count) % buf.limit, jnp.minimum(buf.size + count, buf.limit), buf.limit)


@jax.jit
def device_buffer_set_limit(buf: DeviceBuffer, limit: jax.Array) -> DeviceBuffer:
    """Change where the ring wraps, keeping the newest min(size, limit) transitions, re-ordered oldest
    first from slot 0 (MBPO re-allocates its model buffer like this when the rollout length changes)."""
    limit = jnp.minimum(jnp.asarray(limit, jnp.int32), buf.capacity)
    start = jnp.where(buf.size == buf.limit, buf.ptr, 0)  # oldest slot
    drop = jnp.maximum(buf.size - limit, 0)
    i = jnp.arange(buf.capacity)
    src = (start + drop + i) % jnp.maximum(buf.size, 1)
    src = jnp.where(i < buf.size - drop, src, i)
    data = Transition(*(d[src] for d in buf.data))
    size = buf.size - drop
    return DeviceBuffer(data, size % limit, size, limit)


def device_buffer_to_host(buf: DeviceBuffer) -> dict:
    """The valid part only, as NumPy (for checkpoints)."""
    size = int(buf.size)
    return {
        "data": {k: np.asarray(v[:size]) for k, v in buf.data._asdict().items()},
        "ptr": int(buf.ptr),
        "limit": int(buf.limit),
    }


def device_buffer_from_host(d: dict, like: DeviceBuffer) -> DeviceBuffer:
    """Inverse of `device_buffer_to_host`, into a buffer shaped like `like`."""
    size = len(d["data"]["reward"])
    if size > like.capacity:
        raise ValueError(f"saved model buffer holds {size} rows but capacity is {like.capacity}")
    fields = []
    for name, empty in like.data._asdict().items():
        arr = np.asarray(d["data"][name], np.float32)
        if arr.shape[1:] != empty.shape[1:]:
            raise ValueError(f"saved model buffer field '{name}' has rows {arr.shape[1:]}, expected {empty.shape[1:]}")
        fields.append(empty.at[:size].set(arr))
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    return DeviceBuffer(Transition(*fields), i32(d["ptr"]), i32(size), i32(d["limit"]))


def device_buffer_sample(buf: DeviceBuffer, key: jax.Array, shape: tuple[int, ...]) -> Transition:
    """Uniform samples (with replacement) from the valid part; the buffer must not be empty."""
    idx = jax.random.randint(key, shape, 0, jnp.maximum(buf.size, 1))
    return Transition(*(x[idx] for x in buf.data))
