"""Shared data types and the shape conventions of mbrlax.

Shapes are written E×B×D: E ensemble members, B batch, D features. Observations are float32, actions
live in the environment's Box (the agents act in [-1, 1] and `envs.make` rescales), rewards are float32.

`terminated` marks a true end of the MDP (no bootstrap); `truncated` marks a time limit (bootstrap from
next_obs as usual). Buffers store only `terminated`: a truncated transition is an ordinary transition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import jax


class Transition(NamedTuple):
    """A batch of transitions, B×D each (or with extra leading axes)."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array  # B
    next_obs: jax.Array
    terminated: jax.Array  # B, float 0/1: 1 means no bootstrap


# reward(obs, action, next_obs) -> B ; termination(obs, action, next_obs) -> B (bool)
RewardFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
TermFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class Policy(Protocol):
    """A stochastic policy usable inside jitted rollouts: (obs B×D, key) -> action B×A in [-1, 1]."""

    def __call__(self, obs: jax.Array, key: jax.Array) -> jax.Array: ...


class StaticSpec:
    """Equal settings make equal (hashable) objects, so methods jitted with `self` static share compiled code.
    A subclass sets `self._spec`, a hashable tuple of every setting that changes what it computes."""

    _spec: tuple

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._spec == self._spec

    def __hash__(self) -> int:
        return hash(self._spec)
