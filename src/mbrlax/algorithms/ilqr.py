"""iLQR with model-predictive control on a *known* differentiable model (the pure-JAX `mbrlax/...`
environments): the lecture's trajectory optimization with LQR on linearized dynamics.

    x̂_0 ← the current state                                                  # 1. observe the state
    plan: iLQR over horizon H from x̂_0, warm-started with the shifted plan     # 2. plan (planning/ilqr.py)
        linearize f (jax.jacfwd), quadratize c (jax.hessian); backward Riccati pass with regularization μ;
        forward pass with line search over α; repeat
    execute u_t = U_t + K_t (x_t − X_t) for `replan_every` steps               # 3. act with feedback
    (replan_every = 0: plan once over the whole episode and follow the time-varying feedback controller)

Nothing is learned: `train` runs the planner for `eval_episodes` episodes and reports their returns, so that
`mbrlax train ilqr --env mbrlax/PendulumSwingUp-v0` gives a number comparable with the learning algorithms.

Actions: the planner optimizes unclipped u with a stiff penalty on |u| > 1 on dynamics extended linearly in u
beyond the box (exact for these control-affine systems): a hard clip would zero the gradient exactly where the
optimal controls sit (bang-bang swing-ups), and tanh squashing traps iLQR in the same way. The executed action
is clipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mbrlax import runs
from mbrlax.algorithms import lqr_flm as flm
from mbrlax.algorithms.common import Result, RunOptions, check_positive, fill_preset
from mbrlax.algorithms.local_common import CostOptions
from mbrlax.envs import jax_envs
from mbrlax.envs.make import make
from mbrlax.planning import ilqr as il

DEFAULTS: dict[str, Any] = dict(cost="reward", w_dist=1.0, w_ctrl=0.1, final_weight=1.0, horizon=50, replan_every=5,
                                first_iters=100, iters=10)

PRESETS: dict[str, dict[str, Any]] = {
    # Smooth swing-up cost (1 − cos θ); one 100-step plan (5 s) then MPC; Tassa et al. 2012 use 5 s horizons.
    "mbrlax/PendulumSwingUp-v0": dict(cost="pendulum", w_ctrl=0.01, final_weight=100.0, horizon=100, replan_every=10),
    "mbrlax/Pendulum-v0": dict(cost="pendulum", w_ctrl=0.01, final_weight=100.0, horizon=100, replan_every=10),
    "mbrlax/Arm2-v0": dict(cost="reach", horizon=50, replan_every=5),
    "mbrlax/PointMass-v0": dict(cost="reach", horizon=50, replan_every=5),
    "mbrlax/LinearQuadratic-v0": dict(cost="reward", horizon=100, replan_every=0),
}


@dataclass
class Config(CostOptions, RunOptions):
    """iLQR / MPC on a pure-JAX environment's true dynamics. None fields take the preset (PRESETS), else DEFAULTS."""

    env: str = "mbrlax/PendulumSwingUp-v0"
    """A pure-JAX environment id (`mbrlax/...`): iLQR needs the known differentiable dynamics."""
    seed: int = 0
    """Seed of the evaluation episodes' initial states and the first plan's initial guess."""
    horizon: int | None = None
    """H: planning horizon (steps)."""
    replan_every: int | None = None
    """Replan after this many steps (MPC); 0 plans once for the whole episode and follows the feedback gains."""
    first_iters: int | None = None
    """iLQR iterations of the first plan of an episode."""
    iters: int | None = None
    """iLQR iterations of each warm-started replan."""
    convexify: bool = False
    """PSD-project the cost Hessians (robust with non-convex costs such as 1 − cos θ)."""
    action_penalty: float = 100.0
    """Weight of the penalty relu(|u| − 1)² that keeps plans inside the action box."""
    eval_episodes: int = 3
    """Episodes to run (the reported return is their mean)."""
    checkpoint_every: int = 1
    """Checkpoint every this many episodes (and after the last)."""


def resolve(cfg: Config) -> Config:
    if cfg.env not in jax_envs.JAX_ENVS:
        raise ValueError(f"ilqr needs known differentiable dynamics: '{cfg.env}' is not a pure-JAX env (one of "
                         f"{', '.join(sorted(jax_envs.JAX_ENVS))}); for Reacher-v5 use lqr_flm or gps, which fit "
                         f"local models from samples")
    cfg = fill_preset(cfg, PRESETS.get(cfg.env, {}), DEFAULTS)
    if cfg.cost not in ("reward", *flm.COSTS):
        raise ValueError(f"cost must be 'reward' or one of {sorted(flm.COSTS)}, got {cfg.cost!r}")
    check_positive(cfg, "eval_episodes", "checkpoint_every")
    if cfg.horizon < 1 or cfg.replan_every < 0:
        raise ValueError(f"need horizon ≥ 1 and replan_every ≥ 0, got {cfg.horizon} and {cfg.replan_every}")
    return cfg


def state_from_obs(env: jax_envs.JaxEnv, obs: np.ndarray) -> np.ndarray:
    """Invert `observe` for the pure-JAX environments (iLQR plans in the simulator's state)."""
    from mbrlax.envs.arm import PointMass, TwoLinkArm

    o = np.asarray(obs, np.float32)
    if isinstance(env, jax_envs.Pendulum):
        return np.array([np.arctan2(o[1], o[0]), o[2]], np.float32)
    if isinstance(env, TwoLinkArm):
        return np.concatenate([np.arctan2(o[2:4], o[0:2]), o[6:8], o[4:6]]).astype(np.float32)
    if isinstance(env, PointMass):
        return o[:6]
    if env.obs_dim == env.state_dim:
        return o
    raise ValueError(f"ilqr cannot recover the state of {type(env).__name__} from its observation")


def angle_dims(env: jax_envs.JaxEnv) -> list[int]:
    """State entries that are angles (2π-periodic): observations give them in [-π, π), plans may wind past it."""
    from mbrlax.envs.arm import TwoLinkArm

    return [0] if isinstance(env, jax_envs.Pendulum) else [0, 1] if isinstance(env, TwoLinkArm) else []


def align(x: jax.Array, ref: jax.Array, dims: list[int]) -> jax.Array:
    """x with its angles shifted by multiples of 2π to lie within π of ref's (so x − ref is the true deviation)."""
    if not dims:
        return x
    d = jnp.asarray(dims)
    return x.at[d].set(ref[d] + jax_envs.angle_normalize(x[d] - ref[d]))


def planner_fns(env: jax_envs.JaxEnv, cost: str, w_dist: float, w_ctrl: float, final_weight: float,
                action_penalty: float) -> tuple[Callable, Callable, Callable]:
    """(dynamics, running cost, final cost) on the simulator state for iLQR."""

    def dyn(x, u):
        # Inside the box: the true dynamics. Outside: their first-order extension in u (exact for the
        # control-affine environments here), so the gradient does not vanish where the clip would cut it.
        uc = jnp.clip(u, -1.0 + 1e-6, 1.0 - 1e-6)
        f, df = jax.jvp(lambda v: env.dynamics(x, v), (uc,), (u - uc,))
        return f + df
    barrier = lambda u: action_penalty * jnp.sum(jax.nn.relu(jnp.abs(u) - 1.0) ** 2)
    if cost == "reward":
        run = lambda x, u: -env.reward(env.observe(x), u, env.observe(dyn(x, u))) + barrier(u)
        final = lambda x: final_weight * -env.reward(env.observe(x), jnp.zeros(env.act_dim, x.dtype), env.observe(x))
    else:
        fn = flm.COSTS[cost]
        run = lambda x, u: fn(env.observe(x), u, w_dist, w_ctrl) + barrier(u)
        final = lambda x: final_weight * fn(env.observe(x), jnp.zeros(0, x.dtype), w_dist, 0.0)
    return dyn, run, final


class MPC:
    """Receding-horizon iLQR: `act(obs)` replans every `replan_every` steps and otherwise follows the plan's
    feedback controller. Call `reset()` at the start of an episode."""

    def __init__(self, env: jax_envs.JaxEnv, cfg: Config, seed: int = 0):
        self.env, self.cfg = env, cfg
        self.fns = planner_fns(env, cfg.cost, cfg.w_dist, cfg.w_ctrl, cfg.final_weight, cfg.action_penalty)
        self.key = jax.random.key(seed)
        self.plan: il.ILQRResult | None = None
        self.i = 0
        self.dims = angle_dims(env)

    def reset(self) -> None:
        self.plan, self.i = None, 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        x = jnp.asarray(state_from_obs(self.env, obs))
        if self.plan is not None:  # express x in the plan's angle branch
            x = align(x, self.plan.X[min(self.i, len(self.plan.U))], self.dims)
        cfg, H = self.cfg, self.cfg.horizon
        if self.plan is None or (cfg.replan_every > 0 and self.i % cfg.replan_every == 0) or self.i >= len(self.plan.U):
            if self.plan is None:
                self.key, k = jax.random.split(self.key)
                U0, iters = 0.5 * jax.random.normal(k, (H, self.env.act_dim)), cfg.first_iters
            else:  # warm start: the rest of the last plan run *with its feedback* from x, padded with its last action
                p = self.plan
                _, rest = il.closed_loop_rollout(self.fns[0], x, p.X[self.i:], p.U[self.i:], p.K[self.i:])
                U0 = jnp.concatenate([rest, jnp.repeat(p.U[-1:], H - len(rest), 0)])[:H]
                iters = cfg.iters
            self.plan = il.ilqr(*self.fns, x, U0, max_iters=iters, tol=1e-6, convexify=cfg.convexify)
            self.i = 0
        u = self.plan.U[self.i] + self.plan.K[self.i] @ (x - self.plan.X[self.i])
        self.i += 1
        return np.clip(np.asarray(u), -1.0, 1.0).astype(np.float32)


def train(cfg: Config) -> Result:
    """Run iLQR-MPC for `eval_episodes` episodes on the true model; log each return. A resume continues with the
    next episode (an episode is planned from its own start, so nothing of an interrupted one is kept)."""
    cfg = resolve(runs.prepare(cfg, "ilqr", may_change=("eval_episodes",)))
    env, spec = make(cfg.env)
    mpc = MPC(jax_envs.load(cfg.env), cfg, cfg.seed)
    T = spec.max_episode_steps or 200
    with env, runs.Run(cfg, "ilqr", f"ilqr-{cfg.env.replace('/', '_')}-s{cfg.seed}", cfg.eval_episodes * T) as run:
        returns: list[float] = []
        if run.resumed:
            returns, mpc.key = list(run.resumed["returns"]), run.resumed["key"]
        while len(returns) < cfg.eval_episodes:
            ep = len(returns)
            obs, _ = env.reset(seed=cfg.seed + ep)
            mpc.reset()
            ret, done, t = 0.0, False, 0
            with run.timer("mpc"):
                while not done:
                    # 1. observe the state, 2. plan (or follow the plan), 3. act with its feedback gains
                    obs, r, term, trunc, _ = env.step(mpc.act(obs))
                    ret, done, t = ret + float(r), term or trunc, t + 1
                    run.progress(ep * T + t)
            returns.append(ret)
            step = (ep + 1) * T
            run.record_eval(step, float(np.mean(returns)), float(np.std(returns)), extra={"eval/episode_return": ret})
            if run.due(len(returns), cfg.checkpoint_every, cfg.eval_episodes):
                run.save(step, {"returns": returns, "key": mpc.key})
            run.progress(step, ret=f"return {ret:.1f}")
        # each episode is its own evaluation: `evals` holds the episodes' returns, not their running mean
        return dataclasses.replace(run.result(steps=len(returns) * T),
                                   evals=[((i + 1) * T, r) for i, r in enumerate(returns)])


def load_policy(run_dir: str | Path):
    """iLQR-MPC as `act(obs) -> action` (it plans at run time; the episode restarts when T steps have passed)."""
    cfg = resolve(runs.config_from_dict(Config, runs.load_config(run_dir)))
    mpc = MPC(jax_envs.load(cfg.env), cfg, cfg.seed)
    T = jax_envs.JAX_ENVS[cfg.env][2]
    counter = {"t": 0}

    def act(obs):
        if counter["t"] % T == 0:
            mpc.reset()
        counter["t"] += 1
        return mpc.act(obs)

    return act, cfg
