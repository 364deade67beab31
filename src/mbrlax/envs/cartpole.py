"""Continuous cart-pole swing-up of the PETS paper (Chua, Calandra, McAllister & Levine 2018), in JAX.

Source: kchua/handful-of-trials, `dmbrl/env/cartpole.py` (the environment), `dmbrl/env/assets/cartpole.xml`
(the MuJoCo model) and `dmbrl/config/cartpole.py` (the cost); mbrl-lib ships the same environment as
`mbrl/env/pets_cartpole.py`. What the XML specifies and how it is used here:

* cart: a capsule of radius 0.1 and half-length 0.1, density 1000 → mass M = 10.47197551 kg, on a slider
  joint along x; pole: a capsule of radius 0.049 from the hinge to 0.6 m below it (hanging down at θ = 0)
  → mass m = 5.01858536 kg, centre of mass at l_c = 0.3 m, inertia about its centre I_c = 0.18874907 kg m²
  (the masses and inertia are what MuJoCo computes from those geoms, `inertiafromgeom="true"`);
* both joints have damping 1 (generalized force −1·q̇), armature 0; gravity 9.81;
* one motor on the slider, gear 100, control range [−3, 3] (so the force is 100·u, u ∈ [−3, 3]);
* RK4 integration with timestep 0.02 s and frame skip 2: one environment step is 0.04 s with the control
  held constant; an episode is 200 steps (TASK_HORIZON = 200);
* start: qpos, qvel ~ N(0, 0.1²) each (pole hanging down, near rest);
* reward after the step: exp(−‖p_tip − (0, 0.6)‖² / 0.6²) − 0.01·u², with the pole tip
  p_tip = (x − 0.6 sin θ, −0.6 cos θ); the goal is the tip upright above the rail's origin (θ = π, x = 0).

The equations of motion are the Lagrangian ones of a cart with a rigid pendulum:
    (M + m) ẍ − m l_c cos θ θ̈ + m l_c sin θ θ̇² = F − ẋ
    −m l_c cos θ ẍ + (m l_c² + I_c) θ̈ + m g l_c sin θ = −θ̇
tests/unit/test_cartpole.py checks them against MuJoCo itself on a model with these constants.

Deviations, each deliberate: the XML's pole ends at x = 0.001 instead of 0 (a 0.1 % tilt of the pole's axis,
ignored); the slider's joint limit at ±2.5 m (a soft MuJoCo constraint) is not modelled; the observation is
what PETS's model sees, i.e. PETS's `obs_preproc` applied to its (x, θ, ẋ, θ̇) observation:
obs = (sin θ, cos θ, x, ẋ, θ̇). The state is PETS's observation (x, θ, ẋ, θ̇).

Actions follow the `JaxEnv` convention: a ∈ [−1, 1] is the control u = 3a.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mbrlax.envs.jax_envs import JaxEnv

# Constants of handful-of-trials' cartpole.xml (masses and inertia as MuJoCo derives them from the geoms).
CART_MASS = 10.47197551
POLE_MASS = 5.01858536
POLE_COM = 0.3  # hinge to the pole's centre of mass
POLE_INERTIA = 0.18874907  # about the centre of mass, around the hinge axis
POLE_LENGTH = 0.6  # PENDULUM_LENGTH: hinge to tip, also the cost's length scale
DAMPING = 1.0
GEAR = 100.0
CTRL_LIMIT = 3.0
GRAVITY = 9.81
TIMESTEP = 0.02
FRAME_SKIP = 2
ACTION_COST = 0.01


class CartPoleSwingUp(JaxEnv):
    """PETS cart-pole swing-up. state = (x, θ, ẋ, θ̇) with θ = 0 hanging down; obs = (sin θ, cos θ, x, ẋ, θ̇);
    action a ∈ [-1, 1] is the motor control 3a (force 300a N)."""

    obs_dim, act_dim, state_dim = 5, 1, 4

    def __init__(self, init_std: float = 0.1):
        self.init_std = float(init_std)

    def init_state(self, key: jax.Array) -> jax.Array:
        return self.init_std * jax.random.normal(key, (4,), jnp.float32)

    @staticmethod
    def _accel(q: jax.Array, qd: jax.Array, force: jax.Array) -> jax.Array:
        """(x, θ), (ẋ, θ̇), F -> (ẍ, θ̈) by solving the 2×2 mass-matrix system in closed form."""
        th, xd, thd = q[..., 1], qd[..., 0], qd[..., 1]
        s, c = jnp.sin(th), jnp.cos(th)
        ml = POLE_MASS * POLE_COM
        m11, m12, m22 = CART_MASS + POLE_MASS, -ml * c, POLE_MASS * POLE_COM**2 + POLE_INERTIA
        f1 = force - DAMPING * xd - ml * s * thd**2
        f2 = -DAMPING * thd - ml * GRAVITY * s
        det = m11 * m22 - m12 * m12
        return jnp.stack([(m22 * f1 - m12 * f2) / det, (m11 * f2 - m12 * f1) / det], -1)

    def dynamics(self, state: jax.Array, action: jax.Array) -> jax.Array:
        force = GEAR * CTRL_LIMIT * jnp.clip(action, -1.0, 1.0)[..., 0]

        def deriv(y):
            return jnp.concatenate([y[..., 2:], self._accel(y[..., :2], y[..., 2:], force)], -1)

        def rk4(y, _):  # MuJoCo's RK4: classic 4-stage Runge-Kutta on (q, q̇), control held constant
            k1 = deriv(y)
            k2 = deriv(y + 0.5 * TIMESTEP * k1)
            k3 = deriv(y + 0.5 * TIMESTEP * k2)
            k4 = deriv(y + TIMESTEP * k3)
            return y + TIMESTEP / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), None

        y, _ = jax.lax.scan(rk4, state, None, length=FRAME_SKIP)
        return y

    def observe(self, state: jax.Array) -> jax.Array:
        th = state[..., 1]
        return jnp.stack([jnp.sin(th), jnp.cos(th), state[..., 0], state[..., 2], state[..., 3]], -1)

    @staticmethod
    def tip(obs: jax.Array) -> jax.Array:
        """Pole tip (x, z) from an observation ...×5 (PETS `_get_ee_pos`)."""
        return jnp.stack([obs[..., 2] - POLE_LENGTH * obs[..., 0], -POLE_LENGTH * obs[..., 1]], -1)

    def reward(self, obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
        goal = jnp.array([0.0, POLE_LENGTH], next_obs.dtype)
        dist2 = jnp.sum((self.tip(next_obs) - goal) ** 2, -1)
        u = CTRL_LIMIT * jnp.clip(action, -1.0, 1.0)
        return jnp.exp(-dist2 / POLE_LENGTH**2) - ACTION_COST * jnp.sum(u**2, -1)
