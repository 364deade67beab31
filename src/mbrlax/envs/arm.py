"""Pure-JAX reaching tasks for the local-model algorithms (iLQR, LQR-FLM, GPS, DnC): a planar point mass and a
2-link planar arm shaped like Gymnasium's Reacher-v5 (same observation layout, same reward form).

Both keep the target inside the state (it never moves), so one initial state is one "condition" of guided
policy search; the constructor's `target` / `init_*` fix it, otherwise `init_state(key)` samples it.
Actions are in [-1, 1] (clipped) and scaled internally. The last two observation entries are always
(fingertip − target), so one reaching cost serves both environments and Reacher-v5.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from mbrlax.envs.jax_envs import JaxEnv, _clip


def _opt(x: Any) -> jax.Array | None:
    return None if x is None else jnp.asarray(x, jnp.float32)


class _Reach(JaxEnv):
    """What both tasks share: a target fixed by the constructor or sampled, an initial configuration `init`
    (init_pos / init_q), the action scale (force / torque), and the reward −‖fingertip' − target‖ − ctrl_cost ‖a‖²
    read off the observation's last two entries (fingertip − target)."""

    def __init__(self, target: Any, init: Any, dt: float, scale: float, damping: float, ctrl_cost: float,
                 init_noise: float):
        self.target, self.init = _opt(target), _opt(init)
        self.dt, self.scale, self.damping = float(dt), float(scale), float(damping)
        self.ctrl_cost, self.init_noise = float(ctrl_cost), float(init_noise)

    def init_state(self, key: jax.Array) -> jax.Array:
        """state (configuration 2, velocity 0 0, target 2); `_start(k1, k2, k3)` draws the configuration and target."""
        config, tgt = self._start(*jax.random.split(key, 3))
        return jnp.concatenate([config, jnp.zeros(2, jnp.float32), tgt])

    def _start(self, k1: jax.Array, k2: jax.Array, k3: jax.Array) -> tuple[jax.Array, jax.Array]:
        raise NotImplementedError

    def reward(self, obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
        return -jnp.linalg.norm(next_obs[..., -2:], axis=-1) - self.ctrl_cost * jnp.sum(_clip(action) ** 2, -1)


class PointMass(_Reach):
    """A damped 2-D point mass pushed by a force: state (p 2, v 2, target 2), obs (p, v, target, p − target).
    v' = v + dt (force_scale·a − damping·v), p' = p + dt v'. reward = −‖p' − target‖ − ctrl_cost ‖a‖².
    Defaults: p0 ~ U[-1, 1]², target ~ U[-1, 1]², v0 = 0."""

    obs_dim, act_dim, state_dim = 8, 2, 6

    def __init__(self, target: Any = None, init_pos: Any = None, dt: float = 0.05, force_scale: float = 2.0,
                 damping: float = 0.5, ctrl_cost: float = 0.1, init_noise: float = 0.0):
        super().__init__(target, init_pos, dt, force_scale, damping, ctrl_cost, init_noise)

    def _start(self, k1: jax.Array, k2: jax.Array, k3: jax.Array) -> tuple[jax.Array, jax.Array]:
        pos = jax.random.uniform(k1, (2,), jnp.float32, -1.0, 1.0) if self.init is None else self.init
        pos = pos + self.init_noise * jax.random.normal(k3, (2,), jnp.float32)
        tgt = jax.random.uniform(k2, (2,), jnp.float32, -1.0, 1.0) if self.target is None else self.target
        return pos, tgt

    def dynamics(self, state: jax.Array, action: jax.Array) -> jax.Array:
        p, v, tgt = state[..., 0:2], state[..., 2:4], state[..., 4:6]
        v = v + self.dt * (self.scale * _clip(action) - self.damping * v)
        return jnp.concatenate([p + self.dt * v, v, tgt], -1)

    def observe(self, state: jax.Array) -> jax.Array:
        return jnp.concatenate([state, state[..., 0:2] - state[..., 4:6]], -1)


class TwoLinkArm(_Reach):
    """A 2-link planar reacher like Reacher-v5: links 0.1 and 0.11, torque = torque_scale·a, joint damping, the
    manipulator equation M(q) q̈ + C(q, q̇) q̇ + b q̇ = τ integrated with semi-implicit Euler (2 substeps of
    dt/2). state (q 2, q̇ 2, target 2); obs (cos q, sin q, target, q̇, fingertip − target) as in Reacher-v5
    (10-d). reward = −‖fingertip' − target‖ − ctrl_cost ‖a‖² (Reacher-v5: weights 1 and 1).
    Defaults as Reacher: q0 ~ U[-0.1, 0.1]², target uniform in the disc of radius 0.2."""

    obs_dim, act_dim, state_dim = 10, 2, 6
    l1, l2 = 0.1, 0.11
    # Normalized inertia: M(q) = [[a + 2b cos q2, d + b cos q2], [d + b cos q2, d]] (positive definite for a > 2b... )
    _a, _b, _d = 2.0, 0.5, 0.6

    def __init__(self, target: Any = None, init_q: Any = None, dt: float = 0.02, torque_scale: float = 6.0,
                 damping: float = 1.0, ctrl_cost: float = 1.0, init_noise: float = 0.1):
        super().__init__(target, init_q, dt, torque_scale, damping, ctrl_cost, init_noise)

    def _start(self, k1: jax.Array, k2: jax.Array, k3: jax.Array) -> tuple[jax.Array, jax.Array]:
        q = jax.random.uniform(k1, (2,), jnp.float32, -self.init_noise, self.init_noise)
        if self.init is not None:
            q = self.init + q
        if self.target is None:  # uniform in the disc of radius 0.2 (Reacher rejects samples outside it)
            r = 0.2 * jnp.sqrt(jax.random.uniform(k2, (), jnp.float32))
            phi = jax.random.uniform(k3, (), jnp.float32, -jnp.pi, jnp.pi)
            tgt = jnp.stack([r * jnp.cos(phi), r * jnp.sin(phi)])
        else:
            tgt = self.target
        return q, tgt

    def fingertip(self, q: jax.Array) -> jax.Array:
        """Forward kinematics: joint angles ...×2 -> fingertip position ...×2."""
        q1, q12 = q[..., 0], q[..., 0] + q[..., 1]
        return jnp.stack([self.l1 * jnp.cos(q1) + self.l2 * jnp.cos(q12),
                          self.l1 * jnp.sin(q1) + self.l2 * jnp.sin(q12)], -1)

    def _accel(self, q: jax.Array, qd: jax.Array, tau: jax.Array) -> jax.Array:
        c2, s2 = jnp.cos(q[..., 1]), jnp.sin(q[..., 1])
        m11, m12, m22 = self._a + 2 * self._b * c2, self._d + self._b * c2, self._d
        h = self._b * s2
        rhs1 = tau[..., 0] + h * (2 * qd[..., 0] * qd[..., 1] + qd[..., 1] ** 2) - self.damping * qd[..., 0]
        rhs2 = tau[..., 1] - h * qd[..., 0] ** 2 - self.damping * qd[..., 1]
        det = m11 * m22 - m12**2
        return jnp.stack([(m22 * rhs1 - m12 * rhs2) / det, (m11 * rhs2 - m12 * rhs1) / det], -1)

    def dynamics(self, state: jax.Array, action: jax.Array) -> jax.Array:
        q, qd, tgt = state[..., 0:2], state[..., 2:4], state[..., 4:6]
        tau = self.scale * _clip(action)
        h = self.dt / 2
        for _ in range(2):
            qd = qd + h * self._accel(q, qd, tau)
            q = q + h * qd
        return jnp.concatenate([q, qd, tgt], -1)

    def observe(self, state: jax.Array) -> jax.Array:
        q, qd, tgt = state[..., 0:2], state[..., 2:4], state[..., 4:6]
        return jnp.concatenate([jnp.cos(q), jnp.sin(q), tgt, qd, self.fingertip(q) - tgt], -1)
