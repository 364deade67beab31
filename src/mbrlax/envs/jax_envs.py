"""Pure-JAX environments: dynamics, observation, reward and termination as `jnp` functions.

They serve three purposes at once:
- fully jitted loops (a planner or iLQR can use the *true* dynamics, `jax.jacfwd` gives exact Jacobians,
  thousands of rollouts run under `vmap`);
- analytic tests (a linear-quadratic system has a closed-form answer);
- ordinary Gymnasium environments: each is registered under an `mbrlax/...` id, so every algorithm that takes
  `--env ID` runs on them unchanged (e.g. `mbrlax train mbpo --env mbrlax/Pendulum-v0`).

Conventions (shared by every environment here):
- Actions live in [-1, 1]^A, the agents' convention; each environment scales them to its own torque/force
  internally, so `reward(obs, action, next_obs)` takes the same [-1, 1] action the agent produced.
- `state` is the minimal simulator state (e.g. θ, θ̇), `observe(state)` the observation the agent and the
  learned models see (e.g. cos θ, sin θ, θ̇). Both are flat float32 vectors.
- `reward` and `terminated` have the `RewardFn`/`TermFn` signature of `mbrlax.types` and work on any leading
  batch axes, so planners can use them as known reward functions.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np


class JaxEnv:
    """A pure-JAX environment. Subclasses set `obs_dim`, `act_dim`, `state_dim` and
    implement `init_state`, `dynamics`, `observe` and `reward` (and `terminated` if episodes can end early).
    All methods are pure functions of their arguments; instances are immutable (settings only)."""

    obs_dim: int
    act_dim: int
    state_dim: int

    def init_state(self, key: jax.Array) -> jax.Array:
        """The initial state distribution: key -> state S."""
        raise NotImplementedError

    def dynamics(self, state: jax.Array, action: jax.Array) -> jax.Array:
        """state S, action A in [-1, 1] (clipped here) -> next state S. Batched over leading axes."""
        raise NotImplementedError

    def observe(self, state: jax.Array) -> jax.Array:
        """state ...×S -> observation ...×D (identity unless overridden)."""
        return state

    def reward(self, obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
        """The known reward, `RewardFn` signature, action in [-1, 1]."""
        raise NotImplementedError

    def terminated(self, obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
        """The known termination, `TermFn` signature (default: never)."""
        return jnp.zeros(obs.shape[:-1], bool)

    # ---- derived helpers ---------------------------------------------------------------------------
    def step(self, state: jax.Array, action: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(state, action) -> (next_state, reward, terminated), all pure and batched."""
        next_state = self.dynamics(state, action)
        obs, next_obs = self.observe(state), self.observe(next_state)
        return next_state, self.reward(obs, action, next_obs), self.terminated(obs, action, next_obs)

    def rollout(self, state: jax.Array, actions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Open-loop rollout of actions T×A from one state: returns (states (T+1)×S, rewards T)."""

        def body(s, a):
            s2, r, _ = self.step(s, a)
            return s2, (s2, r)

        _, (states, rewards) = jax.lax.scan(body, state, actions)
        return jnp.concatenate([state[None], states]), rewards


def _clip(action: jax.Array) -> jax.Array:
    return jnp.clip(action, -1.0, 1.0)


def angle_normalize(x: jax.Array) -> jax.Array:
    """Wrap an angle to [-π, π)."""
    return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


class Pendulum(JaxEnv):
    """Gymnasium's Pendulum-v1 in JAX (same constants, integration, clipping and reward), with a choice of
    start: 'random' (Gymnasium's θ ~ U[-π, π], θ̇ ~ U[-1, 1]) or 'down' (hanging at rest, θ = π, the
    swing-up task). θ = 0 is upright. state = (θ, θ̇), obs = (cos θ, sin θ, θ̇), action a ∈ [-1, 1]
    is a torque of 2a."""

    obs_dim, act_dim, state_dim = 3, 1, 2
    max_speed, max_torque, dt, g, m, l = 8.0, 2.0, 0.05, 10.0, 1.0, 1.0

    def __init__(self, start: str = "random"):
        if start not in ("random", "down"):
            raise ValueError(f"Pendulum start must be 'random' or 'down', got {start!r}")
        self.start = start

    def init_state(self, key: jax.Array) -> jax.Array:
        if self.start == "down":
            return jnp.array([jnp.pi, 0.0], jnp.float32)
        return jax.random.uniform(key, (2,), jnp.float32, jnp.array([-jnp.pi, -1.0]), jnp.array([jnp.pi, 1.0]))

    def dynamics(self, state: jax.Array, action: jax.Array) -> jax.Array:
        th, thdot = state[..., 0], state[..., 1]
        u = self.max_torque * _clip(action)[..., 0]
        thdot = thdot + (3 * self.g / (2 * self.l) * jnp.sin(th) + 3.0 / (self.m * self.l**2) * u) * self.dt
        thdot = jnp.clip(thdot, -self.max_speed, self.max_speed)
        return jnp.stack([th + thdot * self.dt, thdot], -1)

    def observe(self, state: jax.Array) -> jax.Array:
        return jnp.stack([jnp.cos(state[..., 0]), jnp.sin(state[..., 0]), state[..., 1]], -1)

    def reward(self, obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
        th = jnp.arctan2(obs[..., 1], obs[..., 0])
        u = self.max_torque * _clip(action)[..., 0]
        return -(angle_normalize(th) ** 2 + 0.1 * obs[..., 2] ** 2 + 0.001 * u**2)


class LinearQuadratic(JaxEnv):
    """x' = A x + B u with reward -(xᵀQx + uᵀRu), u = action_scale · clip(a, -1, 1): the system whose
    optimal controller is known in closed form (LQR), and whose Jacobian product ∏ ∂x_{t+1}/∂x_t = A^T
    has a known spectrum. Default: a 2-D double integrator. `spectral_radius` rescales A so that its
    largest |eigenvalue| is that value (for the gradient-explosion diagnostics)."""

    def __init__(
        self,
        A: Any = ((1.0, 0.1), (0.0, 1.0)),
        B: Any = ((0.0,), (0.1,)),
        Q: Any = None,
        R: Any = None,
        action_scale: float = 10.0,
        init_std: float = 1.0,
        spectral_radius: float | None = None,
    ):
        A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
        if A.ndim != 2 or A.shape[0] != A.shape[1] or B.ndim != 2 or B.shape[0] != A.shape[0]:
            raise ValueError(f"need square A (n×n) and B (n×m), got {A.shape} and {B.shape}")
        if spectral_radius is not None:
            A = A * (spectral_radius / np.max(np.abs(np.linalg.eigvals(A))))
        n, m = B.shape
        self.A, self.B = A, B
        self.Q = np.eye(n) if Q is None else np.asarray(Q, np.float64)
        self.R = 0.1 * np.eye(m) if R is None else np.asarray(R, np.float64)
        self.action_scale, self.init_std = float(action_scale), float(init_std)
        self.obs_dim = self.state_dim = n
        self.act_dim = m

    def init_state(self, key: jax.Array) -> jax.Array:
        return self.init_std * jax.random.normal(key, (self.state_dim,), jnp.float32)

    def dynamics(self, state: jax.Array, action: jax.Array) -> jax.Array:
        u = self.action_scale * _clip(action)
        return state @ jnp.asarray(self.A.T, state.dtype) + u @ jnp.asarray(self.B.T, state.dtype)

    def reward(self, obs: jax.Array, action: jax.Array, next_obs: jax.Array) -> jax.Array:
        u = self.action_scale * _clip(action)
        q = jnp.einsum("...i,ij,...j->...", obs, jnp.asarray(self.Q, obs.dtype), obs)
        r = jnp.einsum("...i,ij,...j->...", u, jnp.asarray(self.R, u.dtype), u)
        return -(q + r)


# id -> ("module:Class", constructor kwargs, episode length). Classes in other modules are imported on first use.
JAX_ENVS: dict[str, tuple[str, dict, int]] = {
    "mbrlax/Pendulum-v0": ("mbrlax.envs.jax_envs:Pendulum", {"start": "random"}, 200),
    "mbrlax/PendulumSwingUp-v0": ("mbrlax.envs.jax_envs:Pendulum", {"start": "down"}, 200),
    "mbrlax/LinearQuadratic-v0": ("mbrlax.envs.jax_envs:LinearQuadratic", {}, 100),
    "mbrlax/CartPoleSwingUp-v0": ("mbrlax.envs.cartpole:CartPoleSwingUp", {}, 200),
    "mbrlax/PointMass-v0": ("mbrlax.envs.arm:PointMass", {}, 100),
    "mbrlax/Arm2-v0": ("mbrlax.envs.arm:TwoLinkArm", {}, 100),
}


def load(env_id: str, **kwargs: Any) -> JaxEnv:
    """The `JaxEnv` behind an `mbrlax/...` id (constructor kwargs override the registered ones)."""
    if env_id not in JAX_ENVS:
        raise KeyError(f"'{env_id}' is not a pure-JAX environment; known: {', '.join(sorted(JAX_ENVS))}")
    target, defaults, _ = JAX_ENVS[env_id]
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)(**{**defaults, **kwargs})


class GymJaxEnv(gym.Env):
    """A `JaxEnv` as a Gymnasium environment (NumPy in and out; Box actions in [-1, 1]). The simulator state
    is the attribute `state`, which `envs.make.get_env_state` captures for exact resume."""

    metadata: dict = {"render_modes": []}

    def __init__(self, env_id: str, **kwargs: Any):
        self.jax_env = load(env_id, **kwargs)
        e = self.jax_env
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (e.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (e.act_dim,), np.float32)
        self._step = jax.jit(e.step)
        self._observe = jax.jit(e.observe)
        self._init = jax.jit(e.init_state)
        self.state: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        key = jax.random.key(int(self.np_random.integers(2**31)))
        self.state = np.asarray(self._init(key))
        return np.asarray(self._observe(self.state), np.float32), {}

    def step(self, action):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, np.float32).reshape(self.jax_env.act_dim)
        state, reward, terminated = self._step(jnp.asarray(self.state), jnp.asarray(a))
        self.state = np.asarray(state)
        obs = np.asarray(self._observe(state), np.float32)
        return obs, float(reward), bool(terminated), False, {}


def register_all() -> None:
    """Register every id of JAX_ENVS with Gymnasium (idempotent; nothing is imported until `gym.make`)."""
    for env_id, (_, _, steps) in JAX_ENVS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="mbrlax.envs.jax_envs:GymJaxEnv", kwargs={"env_id": env_id},
                         max_episode_steps=steps)
