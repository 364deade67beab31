"""Known, batched reward and termination functions for Gymnasium environments.

Every function has the signature ``fn(obs, action, next_obs) -> array`` with ``obs``/``next_obs``
of shape ``...×D`` and ``action`` of shape ``...×A`` (any leading batch axes, e.g. B or E×B), and
returns a ``...``-shaped bool array (terminations) or float array (rewards). They are pure
``jax.numpy`` and work under ``jit``/``vmap``, so model rollouts can use them in place of learned
reward/termination heads.

Conventions mirrored from the Gymnasium source (gymnasium 1.x, ``envs/mujoco/*_v5.py``):

* Observations are the environments' defaults, i.e. ``exclude_current_positions_from_observation=True``
  and the default healthy ranges. Terminations are evaluated on ``next_obs`` (the state after the step).
* ``action`` is the action in the environment's own action space (as passed to ``env.step``), not a
  policy's normalized ``[-1, 1]`` action if the env is wrapped with ``RescaleAction``.
* Comparisons are written with the same strictness as the source; a NaN makes every comparison false,
  which therefore reads as "unhealthy" wherever the source tests ``min < x < max``.

``termination_fn(env_id)`` / ``reward_fn(env_id)`` look functions up by exact id (e.g. ``"Hopper-v5"``).
``termination_fn`` returns :func:`no_termination` for tasks that never terminate and ``None`` for ids it
does not know, so the caller can fall back to a learned termination head. ``reward_fn`` returns ``None``
unless the reward is an *exact* function of ``(obs, action, next_obs)``; the locomotion rewards are not
(their forward velocity is a finite difference of the excluded x position), nor is
InvertedDoublePendulum's (it uses unclipped joint velocities, the observation clips them to ±10).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mbrlax.types import RewardFn, TermFn

__all__ = [
    "no_termination",
    "hopper_termination",
    "walker2d_termination",
    "ant_termination",
    "humanoid_termination",
    "inverted_pendulum_termination",
    "inverted_double_pendulum_termination",
    "inverted_double_pendulum_tip",
    "pendulum_reward",
    "inverted_pendulum_v5_reward",
    "inverted_pendulum_v4_reward",
    "reacher_v5_reward",
    "reacher_v4_reward",
    "pusher_v5_reward",
    "termination_fn",
    "reward_fn",
    "NEVER_TERMINATING",
]


def _in_open(x: jax.Array, low: float, high: float) -> jax.Array:
    """``low < x < high`` elementwise (False for NaN), as in ``min_z < z < max_z``."""
    return jnp.logical_and(low < x, x < high)


# ---------------------------------------------------------------------------------------------------
# Terminations
# ---------------------------------------------------------------------------------------------------


def no_termination(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Never terminates: HalfCheetah, Swimmer, Reacher, Pusher and Pendulum always return
    ``terminated=False``."""
    del action, next_obs
    return jnp.zeros(jnp.shape(obs)[:-1], dtype=bool)


def hopper_termination(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Hopper-v5/v4 ``not is_healthy`` on the 11-dim observation ``[qpos[1:], clip(qvel, ±10)]``.

    Source: ``z, angle = qpos[1:3]``; healthy iff ``0.7 < z < inf``, ``-0.2 < angle < 0.2`` and
    every element of ``state_vector()[2:]`` (= ``qpos[2:]`` and the *unclipped* ``qvel``) is in
    ``(-100, 100)``.
    Here ``z = next_obs[0]``, ``angle = next_obs[1]`` and the state check is on ``next_obs[1:]``. The
    velocity part of the state check cannot fire from the observation (the velocities are clipped to
    ±10), except through NaN; a true joint speed above 100 is the only case this can miss.
    """
    del obs, action
    z = next_obs[..., 0]
    angle = next_obs[..., 1]
    healthy_state = jnp.all(_in_open(next_obs[..., 1:], -100.0, 100.0), axis=-1)
    healthy_z = _in_open(z, 0.7, float("inf"))
    healthy_angle = _in_open(angle, -0.2, 0.2)
    return ~(healthy_state & healthy_z & healthy_angle)


def walker2d_termination(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Walker2d-v5/v4 ``not is_healthy``: ``z, angle = qpos[1:3]``, healthy iff ``0.8 < z < 2.0`` and
    ``-1 < angle < 1`` (no state-range or finiteness check; NaN still reads unhealthy).
    On the 17-dim observation ``z = next_obs[0]``, ``angle = next_obs[1]``.
    """
    del obs, action
    return ~(_in_open(next_obs[..., 0], 0.8, 2.0) & _in_open(next_obs[..., 1], -1.0, 1.0))


ANT_STATE_DIM = 27  # qpos[2:] (13) + qvel (14); v5 appends 78 contact forces by default, v4 none.


def ant_termination(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Ant-v5/v4 ``not is_healthy``: healthy iff ``isfinite(state_vector()).all()`` and
    ``0.2 <= qpos[2] <= 1.0`` (inclusive bounds, unlike the other tasks).

    On the observation ``[qpos[2:], qvel, (cfrc_ext)]``: ``z = next_obs[0]`` and the finiteness check is
    on the first 27 entries (the state without the excluded x, y; the contact forces are not part of
    ``state_vector()``). Works for the 105-dim v5 default and the 27-dim v4 default.
    """
    del obs, action
    z = next_obs[..., 0]
    finite = jnp.all(jnp.isfinite(next_obs[..., :ANT_STATE_DIM]), axis=-1)
    return ~(finite & (0.2 <= z) & (z <= 1.0))


def humanoid_termination(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Humanoid-v5/v4 ``not is_healthy``: healthy iff ``1.0 < qpos[2] < 2.0`` (strict);
    ``qpos[2] = next_obs[0]``."""
    del obs, action
    return ~_in_open(next_obs[..., 0], 1.0, 2.0)


def inverted_pendulum_termination(
    obs: jax.Array, action: jax.Array, next_obs: jax.Array
) -> jax.Array:
    """InvertedPendulum-v5/v4: ``terminated = not isfinite(obs).all() or abs(obs[1]) > 0.2``
    on the 4-dim observation ``[cart x, pole angle, cart v, pole angular v]``.
    """
    del obs, action
    finite = jnp.all(jnp.isfinite(next_obs), axis=-1)
    return ~finite | (jnp.abs(next_obs[..., 1]) > 0.2)


# inverted_double_pendulum.xml: the hinge of pole 1 sits at the cart, pole2's hinge at (0, 0, 0.6) in
# pole 1's frame, the "tip" site at (0, 0, 0.6) in pole 2's frame; both hinges rotate about +y.
IDP_POLE_LENGTH = 0.6


def inverted_double_pendulum_tip(next_obs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """World ``(x, z)`` of the ``tip`` site from the observation
    ``[x, sin q1, sin q2, cos q1, cos q2, qvel(3), qfrc_constraint[0]]``:
    ``x = x_cart + 0.6 sin q1 + 0.6 sin(q1+q2)``, ``z = 0.6 cos q1 + 0.6 cos(q1+q2)``.
    """
    x_cart = next_obs[..., 0]
    s1, s2, c1, c2 = (next_obs[..., i] for i in range(1, 5))
    sin12 = s1 * c2 + c1 * s2
    cos12 = c1 * c2 - s1 * s2
    x = x_cart + IDP_POLE_LENGTH * (s1 + sin12)
    z = IDP_POLE_LENGTH * (c1 + cos12)
    return x, z


def inverted_double_pendulum_termination(
    obs: jax.Array, action: jax.Array, next_obs: jax.Array
) -> jax.Array:
    """InvertedDoublePendulum-v5/v4: ``x, _, y = site_xpos[0]; terminated = y <= 1``.

    ``y`` (the tip height) is rebuilt from the sin/cos entries, see :func:`inverted_double_pendulum_tip`.
    Two subtleties: a NaN tip height does *not* terminate (``NaN <= 1`` is False in the source
    too); and MuJoCo's ``site_xpos`` after an RK4 ``mj_step`` holds the kinematics of the last
    Runge-Kutta stage, not of the final ``qpos``, so the source's ``y`` differs from the observed
    state's tip height by up to ~1e-4. The decisions can differ only when the tip is that close to 1.
    """
    del obs, action
    _, y = inverted_double_pendulum_tip(next_obs)
    return y <= 1.0


# ---------------------------------------------------------------------------------------------------
# Rewards (only where exact)
# ---------------------------------------------------------------------------------------------------

PENDULUM_MAX_TORQUE = 2.0


def _angle_normalize(x: jax.Array) -> jax.Array:
    """``((x + pi) % (2 pi)) - pi`` as in gymnasium's classic_control/pendulum.py."""
    return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


def pendulum_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Pendulum-v1: ``-(angle_normalize(th)**2 + 0.1 thdot**2 + 0.001 u**2)`` with ``th, thdot`` the
    state *before* the step (``obs = [cos th, sin th, thdot]``) and ``u = clip(action, -2, 2)``.
    """
    del next_obs
    th = jnp.arctan2(obs[..., 1], obs[..., 0])
    thdot = obs[..., 2]
    u = jnp.clip(action[..., 0], -PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)
    return -(_angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2)


def inverted_pendulum_v5_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """InvertedPendulum-v5: ``reward = int(not terminated)`` (v5 gives 0 on the terminating step)."""
    terminated = inverted_pendulum_termination(obs, action, next_obs)
    return jnp.where(terminated, 0.0, 1.0)


def inverted_pendulum_v4_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """InvertedPendulum-v4: ``reward = 1.0`` on every step, including the terminating one."""
    del action, next_obs
    return jnp.ones(jnp.shape(obs)[:-1], dtype=jnp.result_type(float))


def reacher_v5_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Reacher-v5: ``-||fingertip - target|| - sum(action**2)`` computed *after* the step.

    ``next_obs[8:10]`` is ``(fingertip - target)[:2]``; the dropped z component is 0 (both bodies sit
    at z = 0.01 in reacher.xml). The action is the raw one passed to ``step`` (not clipped).
    """
    del obs
    dist = jnp.linalg.norm(next_obs[..., 8:10], axis=-1)
    return -dist - jnp.sum(jnp.square(action), axis=-1)


def reacher_v4_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Reacher-v4: ``-||fingertip - target|| - sum(action**2)`` computed *before* the step, i.e. from
    ``obs[8:11]`` (v4's observation keeps all three components of ``fingertip - target``).
    """
    del next_obs
    dist = jnp.linalg.norm(obs[..., 8:11], axis=-1)
    return -dist - jnp.sum(jnp.square(action), axis=-1)


def _pusher_reward(o: jax.Array, action: jax.Array) -> jax.Array:
    """``-||object - goal|| - 0.1 sum(a**2) - 0.5 ||object - tips_arm||`` from ``o[14:17]`` (tips_arm),
    ``o[17:20]`` (object), ``o[20:23]`` (goal)."""
    tips_arm, obj, goal = o[..., 14:17], o[..., 17:20], o[..., 20:23]
    reward_near = -jnp.linalg.norm(obj - tips_arm, axis=-1)
    reward_dist = -jnp.linalg.norm(obj - goal, axis=-1)
    reward_ctrl = -jnp.sum(jnp.square(action), axis=-1)
    return reward_dist + 0.1 * reward_ctrl + 0.5 * reward_near


def pusher_v5_reward(obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
    """Pusher-v5: ``reward_dist + 0.1 reward_ctrl + 0.5 reward_near`` on the body positions *after* the
    step (read from ``next_obs``); raw action. (Pusher-v4 computes the same terms *before* the step, but
    it only runs on ``mujoco<3``, so it is not provided.)"""
    del obs
    return _pusher_reward(next_obs, action)


# ---------------------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------------------

NEVER_TERMINATING: frozenset[str] = frozenset(
    f"{name}-{v}"
    for name in ("HalfCheetah", "Swimmer", "Reacher", "Pusher")
    for v in ("v4", "v5")
) | {"Pendulum-v1"}

# v4 maps to the same termination: gymnasium's *_v4.py has identical is_healthy / terminated logic,
# the same default ranges and the same observation layout for the entries used.
_TERMINATIONS: dict[str, TermFn] = {
    **{f"Hopper-{v}": hopper_termination for v in ("v4", "v5")},
    **{f"Walker2d-{v}": walker2d_termination for v in ("v4", "v5")},
    **{f"Ant-{v}": ant_termination for v in ("v4", "v5")},
    **{f"Humanoid-{v}": humanoid_termination for v in ("v4", "v5")},
    **{f"InvertedPendulum-{v}": inverted_pendulum_termination for v in ("v4", "v5")},
    **{f"InvertedDoublePendulum-{v}": inverted_double_pendulum_termination for v in ("v4", "v5")},
    **{env_id: no_termination for env_id in NEVER_TERMINATING},
}

_REWARDS: dict[str, RewardFn] = {
    "Pendulum-v1": pendulum_reward,
    "InvertedPendulum-v5": inverted_pendulum_v5_reward,
    "InvertedPendulum-v4": inverted_pendulum_v4_reward,
    "Reacher-v5": reacher_v5_reward,
    "Reacher-v4": reacher_v4_reward,
    "Pusher-v5": pusher_v5_reward,
}


def termination_fn(env_id: str) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None:
    """The known termination function for ``env_id`` (exact id such as ``"Hopper-v5"``), the
    all-False :func:`no_termination` for never-terminating tasks, or ``None`` if unknown."""
    return _TERMINATIONS.get(env_id)


def reward_fn(env_id: str) -> Callable[[jax.Array, jax.Array, jax.Array], jax.Array] | None:
    """The exact reward function for ``env_id``, or ``None`` if the reward is not an exact function
    of ``(obs, action, next_obs)`` (or the id is unknown): learn it instead."""
    return _REWARDS.get(env_id)
