"""Making Gymnasium environments for mbrlax, and capturing their state for exact resume.

`make(env_id)` accepts any Gymnasium id with a Box observation and a Box action space. Agents act in
[-1, 1]; the environment's own bounds are restored by `RescaleAction`. Bad ids and unsupported spaces get
an error that names the problem and what to do instead.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np


class EnvError(ValueError):
    """An environment that mbrlax cannot use, with the reason and the fix."""


@dataclass(frozen=True)
class EnvSpec:
    env_id: str
    obs_dim: int
    act_dim: int
    max_episode_steps: int | None


def make(env_id: str, **kwargs: Any) -> tuple[gym.Env, EnvSpec]:
    """A Gymnasium env whose actions are in [-1, 1]^A, plus its sizes. Raises `EnvError` for an unknown
    id (with close matches) or a non-Box observation/action space."""
    if env_id not in gym.registry:
        close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise EnvError(
            f"unknown environment id '{env_id}'.{hint} Any registered Gymnasium id works "
            f"(MuJoCo tasks need gymnasium[mujoco]; see `gymnasium.pprint_registry()`)."
        )
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.DependencyNotInstalled as e:  # e.g. Box2D for LunarLander: one line, not a traceback
        raise EnvError(f"'{env_id}' needs a package that is not installed: {e}") from None
    except TypeError as e:  # a keyword the env does not take
        raise EnvError(f"'{env_id}' does not accept the keyword arguments {kwargs}: {e}") from None
    act_space, obs_space = env.action_space, env.observation_space
    if not isinstance(act_space, gym.spaces.Box):
        env.close()
        raise EnvError(
            f"'{env_id}' has a {type(act_space).__name__} action space; MBPO and the other continuous-control "
            f"algorithms need a Box (continuous) action space. For discrete tabular tasks use `dyna_q`."
        )
    if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
        env.close()
        raise EnvError(
            f"'{env_id}' has observation space {obs_space}; mbrlax models need a flat Box observation "
            f"(wrap it with gymnasium.wrappers.FlattenObservation first)."
        )
    if not (np.all(np.isfinite(act_space.low)) and np.all(np.isfinite(act_space.high))):
        env.close()
        raise EnvError(f"'{env_id}' has an unbounded action space {act_space}; a bounded Box is required.")
    ones = np.ones(act_space.shape, np.float32)
    env = gym.wrappers.RescaleAction(env, -ones, ones)
    spec = EnvSpec(env_id, int(obs_space.shape[0]), int(act_space.shape[0]), env.spec.max_episode_steps)
    return env, spec


def reset_to(env: gym.Env, seed: int, qpos=None) -> np.ndarray:
    """env.reset(seed=seed); with `qpos`, a MuJoCo env is then put at those joint positions at rest: a fixed,
    chosen initial condition (GPS-style), independent of the env's own reset distribution. Returns the obs."""
    obs, _ = env.reset(seed=seed)
    if qpos is None:
        return obs
    base = env.unwrapped
    if not (hasattr(base, "set_state") and hasattr(base, "_get_obs") and hasattr(base, "model")):
        raise EnvError(f"initial conditions given as qpos need a MuJoCo environment, not {type(base).__name__}; "
                       f"give reset seeds instead")
    qpos = np.asarray(qpos, np.float64)
    if qpos.shape != (base.model.nq,):
        raise EnvError(f"a qpos initial condition needs {base.model.nq} numbers for this environment, got {qpos.shape}")
    base.set_state(qpos, np.zeros(base.model.nv))  # set_state runs mj_forward, so _get_obs sees the new state
    return base._get_obs()


# ---- state capture, so that a resumed run continues the same episode -----------------------------


def _find(env: gym.Env, attr: str):
    while True:
        if attr in vars(env):
            return env
        if not hasattr(env, "env"):
            return None
        env = env.env


def get_env_state(env: gym.Env) -> dict | None:
    """The simulator state, the env's RNG and the time-limit counter, or None where mbrlax cannot capture
    it (then a resumed run starts a new episode instead)."""
    base = env.unwrapped
    state: dict[str, Any] = {"np_random": base.np_random.bit_generator.state}
    tl = _find(env, "_elapsed_steps")
    state["elapsed_steps"] = tl._elapsed_steps if tl is not None else None
    if hasattr(base, "data") and hasattr(base, "model"):  # MuJoCo
        import mujoco

        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(mujoco.mj_stateSize(base.model, spec))
        mujoco.mj_getState(base.model, base.data, buf, spec)
        state["mujoco"] = buf
    elif hasattr(base, "state"):  # classic control
        state["state"] = np.array(base.state, copy=True)
        if hasattr(base, "last_u"):
            state["last_u"] = base.last_u
    else:
        return None
    return state


def set_env_state(env: gym.Env, state: dict) -> None:
    base = env.unwrapped
    base.np_random.bit_generator.state = state["np_random"]
    tl = _find(env, "_elapsed_steps")
    if tl is not None and state["elapsed_steps"] is not None:
        tl._elapsed_steps = state["elapsed_steps"]
    if "mujoco" in state:
        import mujoco

        # No mj_forward here: the next mj_step recomputes everything from this exact integration state.
        mujoco.mj_setState(base.model, base.data, state["mujoco"], mujoco.mjtState.mjSTATE_INTEGRATION)
    else:
        base.state = np.array(state["state"], copy=True)
        if "last_u" in state:
            base.last_u = state["last_u"]
