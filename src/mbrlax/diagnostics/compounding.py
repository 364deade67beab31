"""Compounding model error: the k-step error of a model against the horizon, open loop vs closed loop.

The lecture (CS285 lecture 12 part 2, "v2.5" → "v3.0") argues that a model's one-step error ε compounds:
run for T steps, the model's states drift further from the real ones and the summed cost error grows like
εT² — the behaviour-cloning argument, with the model in the role of the cloned policy — which is why MBPO
uses short rollouts. With a *closed-loop* feedback that corrects deviations (a stabilizing policy, or MPC
replanning), the deviation stays O(ε) and the summed error grows only like εT.

What is measured, for N start states s_0 and horizons k = 1..H (all in observation space):
- the real trajectory o_0..o_H: the policy π (deterministic, its mean) acting on the real system;
- **open loop**: the model replays the real trajectory's actions a_0..a_{H-1} from o_0 (a fixed plan);
- **closed loop**: the model runs π on its own predicted states (the policy reacts to the model's drift);
- `state_error[k]` = E‖ô_k − o_k‖, `cumulative_error[k]` = E Σ_{t=1..k} ‖ô_t − o_t‖ (the summed error of any
  cost that is 1-Lipschitz in the state, the quantity of the εT² argument) and `return_error[k]` =
  E|Σ_{t<k} r̂_t − r_t| (the model's own reward, or a known reward on its states);
- the growth exponent p of each curve: the least-squares slope of log(error) against log(k).

The derivation that `tests/unit/test_compounding.py` checks: a linear system x' = A x + B u and a model with
a constant one-step error d (x̂' = A x̂ + B u + d). With actions that do not depend on the state (open loop)
the error e_t = x̂_t − x_t obeys e_{t+1} = A e_t + d; with a linear feedback u = K x (closed loop) it obeys
e_{t+1} = (A + BK) e_t + d. So e_t = Σ_{j<t} M^j d with M = A (open) or A + BK (closed). For A = I (errors
neither grow nor decay by themselves): open loop e_t = t d, ‖e_t‖ = εt (exponent 1) and Σ_{t≤T} ‖e_t‖ =
εT(T+1)/2 (exponent → 2: the εT²); closed loop with A + BK = (1−κ)I, e_t = d(1−(1−κ)^t)/κ is bounded
(exponent → 0) and its sum grows like εT/κ (exponent → 1: the εT).

`mbrlax diagnose compounding` runs it on that linear system (`--system lq`), on the pure-JAX pendulum with a
model fitted on random data (`--system pendulum`), or on an MBPO run's model and policy against the real
environment reset to states from the run's replay buffer (`--run RUN_DIR`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# model_step(obs B×D, action B×A) -> (next_obs B×D, reward B)
ModelStep = Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
# policy(obs B×D) -> action B×A (deterministic)
Feedback = Callable[[jax.Array], jax.Array]

DEFAULT_HORIZONS = (1, 2, 4, 8, 16, 32, 64, 128)
FIT_FROM = 8  # growth exponents are fitted over horizons ≥ this


# ---- the curves -------------------------------------------------------------------------------------


def error_curves(real_obs: np.ndarray, model_obs: np.ndarray, real_reward: np.ndarray, model_reward: np.ndarray,
                 alive: np.ndarray | None = None) -> dict[str, list[float]]:
    """Per-horizon errors from N trajectories: obs N×(H+1)×D, rewards N×H, `alive` N×(H+1) (both systems still
    running at that step; None: all). Entry k−1 of each list is horizon k: `state_error` averages ‖ô_k − o_k‖
    over the trajectories alive at k; `cumulative_error` and `return_error` over those alive through k."""
    real_obs, model_obs = np.asarray(real_obs, np.float64), np.asarray(model_obs, np.float64)
    n, h1, _ = real_obs.shape
    alive = np.ones((n, h1), bool) if alive is None else np.asarray(alive, bool)
    through = np.cumprod(alive, axis=1).astype(bool)  # alive at every step up to k
    dist = np.linalg.norm(model_obs - real_obs, axis=-1)[:, 1:]  # N×H, step k = 1..H
    cum = np.cumsum(np.where(through[:, 1:], dist, 0.0), axis=1)
    ret = np.abs(np.cumsum(np.asarray(model_reward, np.float64) - np.asarray(real_reward, np.float64), axis=1))

    def mean(x: np.ndarray, mask: np.ndarray) -> list[float]:
        cnt = mask.sum(0)
        return [float(v) for v in np.where(cnt > 0, (x * mask).sum(0) / np.maximum(cnt, 1), np.nan)]

    return {
        "state_error": mean(dist, alive[:, 1:] & through[:, 1:]),
        "cumulative_error": mean(cum, through[:, 1:]),
        "return_error": mean(ret, through[:, 1:]),
        "alive_fraction": [float(v) for v in through[:, 1:].mean(0)],
    }


def growth_exponent(horizons: list[int] | np.ndarray, values: list[float] | np.ndarray) -> float:
    """The least-squares slope p of log(value) against log(horizon) (value ≈ c·k^p); non-positive or
    non-finite values are left out. NaN with fewer than two usable points."""
    h, v = np.asarray(horizons, np.float64), np.asarray(values, np.float64)
    ok = np.isfinite(v) & (v > 0) & (h > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(h[ok]), np.log(v[ok]), 1)[0])


def summarize(curves: dict[str, list[float]], horizons: list[int], fit_from: int = FIT_FROM) -> dict[str, Any]:
    """The curves at `horizons` (1-based steps) and each curve's growth exponent, fitted over the horizons
    ≥ `fit_from` (the asymptotic rate: e.g. T(T+1)/2 has local slope 2 − 1/(T+1), not 2, at small T)."""
    fit_h = [h for h in horizons if h >= fit_from]
    fit_h = fit_h if len(fit_h) >= 2 else list(horizons)
    out: dict[str, Any] = {"horizons": list(horizons), "exponent_fitted_from": fit_h[0]}
    for name in ("state_error", "cumulative_error", "return_error", "alive_fraction"):
        out[name] = [curves[name][h - 1] for h in horizons]
        if name != "alive_fraction":
            out[f"{name}_exponent"] = growth_exponent(fit_h, [curves[name][h - 1] for h in fit_h])
    return out


def analytic_bias_errors(M: np.ndarray, d: np.ndarray, horizon: int) -> dict[str, list[float]]:
    """The derivation above in float64: e_t = Σ_{j<t} M^j d for t = 1..H; returns ‖e_t‖ and Σ_{τ≤t} ‖e_τ‖."""
    M, d = np.asarray(M, np.float64), np.asarray(d, np.float64)
    e, norms = np.zeros_like(d), []
    for _ in range(horizon):
        e = M @ e + d
        norms.append(float(np.linalg.norm(e)))
    return {"state_error": norms, "cumulative_error": [float(v) for v in np.cumsum(norms)]}


# ---- rollouts ---------------------------------------------------------------------------------------


def model_rollout(model_step: ModelStep, obs0: jax.Array, horizon: int, *, actions: jax.Array | None = None,
                  policy: Feedback | None = None, term_fn: Callable | None = None):
    """Roll the model H steps from obs0 N×D: replaying `actions` N×H×A (open loop) or running `policy` on its
    own states (closed loop). Returns obs N×(H+1)×D, rewards N×H and alive N×(H+1) (from `term_fn`)."""
    if (actions is None) == (policy is None):
        raise ValueError("give either actions (open loop) or policy (closed loop)")
    xs = jnp.swapaxes(actions, 0, 1) if actions is not None else None

    def body(carry, a):
        obs, alive = carry
        a = policy(obs) if a is None else a
        nxt, r = model_step(obs, a)
        if term_fn is not None:
            alive = alive & ~term_fn(obs, a, nxt)
        return (nxt, alive), (nxt, r, alive)

    (_, _), (obs, rew, alive) = jax.lax.scan(body, (obs0, jnp.ones(obs0.shape[:1], bool)), xs, length=horizon)
    obs = jnp.concatenate([obs0[None], obs])
    alive = jnp.concatenate([jnp.ones((1, obs0.shape[0]), bool), alive])
    return (np.asarray(jnp.swapaxes(obs, 0, 1)), np.asarray(jnp.swapaxes(rew, 0, 1)),
            np.asarray(jnp.swapaxes(alive, 0, 1)))


def system_rollout(step: Callable, observe: Callable, reward: Callable, s0: jax.Array, horizon: int,
                   policy: Feedback):
    """The real trajectories of a pure-JAX system (batched step/observe/reward) under the feedback `policy`:
    obs N×(H+1)×D, actions N×H×A, rewards N×H."""

    def body(s, _):
        o = observe(s)
        a = policy(o)
        s2 = step(s, a)
        return s2, (o, a, reward(o, a, observe(s2)))

    s_last, (obs, act, rew) = jax.lax.scan(body, s0, None, length=horizon)
    obs = jnp.concatenate([obs, observe(s_last)[None]])
    return tuple(np.asarray(jnp.swapaxes(x, 0, 1)) for x in (obs, act, rew))


def set_state_from_obs(env: Any, obs: np.ndarray) -> np.ndarray:
    """Put a Gymnasium env (after reset) in the state whose observation is `obs`; returns the env's obs.
    Supports MuJoCo envs whose obs is (qpos without the x position, qvel) — Hopper, Walker2d, HalfCheetah —
    the classic Pendulum, and mbrlax's pure-JAX envs whose obs is their state."""
    base = env.unwrapped
    obs = np.asarray(obs, np.float64)
    if hasattr(base, "set_state") and hasattr(base, "model"):
        nq, nv = base.model.nq, base.model.nv
        if not getattr(base, "_exclude_current_positions_from_observation", False) or obs.shape[-1] != nq - 1 + nv:
            raise ValueError(f"{type(base).__name__}: cannot rebuild the MuJoCo state from a {obs.shape[-1]}-d "
                             f"observation (needs qpos minus the x position plus qvel, {nq - 1 + nv} numbers)")
        base.set_state(np.concatenate([[0.0], obs[: nq - 1]]), obs[nq - 1:])
        return np.asarray(base._get_obs())
    if type(base).__name__ == "PendulumEnv":
        base.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]])
        return np.asarray(base._get_obs())
    if hasattr(base, "jax_env") and base.jax_env.obs_dim == base.jax_env.state_dim:
        base.state = obs.astype(np.float32)
        return obs.astype(np.float32)
    raise ValueError(f"closed-loop comparison needs to reset {type(base).__name__} to a given observation; "
                     f"supported: MuJoCo locomotion, Pendulum, mbrlax envs whose observation is the state")


def env_rollouts(make_env: Callable[[], Any], obs0: np.ndarray, horizon: int, policy: Feedback, seed: int = 0):
    """Real trajectories from the start observations obs0 N×D: N envs in lockstep, each reset to its start
    state, the policy batched over them. Returns obs N×(H+1)×D, actions N×H×A, rewards N×H, alive N×(H+1)
    (false after a termination; a terminated env stops moving)."""
    n = len(obs0)
    envs = [make_env() for _ in range(n)]
    obs = np.zeros((n, horizon + 1, obs0.shape[1]), np.float32)
    act_dim = envs[0].action_space.shape[0]
    acts = np.zeros((n, horizon, act_dim), np.float32)
    rews: np.ndarray = np.zeros((n, horizon), np.float32)
    alive: np.ndarray = np.ones((n, horizon + 1), bool)
    for i, e in enumerate(envs):
        e.reset(seed=seed + i)
        obs[i, 0] = set_state_from_obs(e, obs0[i])
    for t in range(horizon):
        a = np.asarray(policy(jnp.asarray(obs[:, t])))
        acts[:, t] = a
        for i, e in enumerate(envs):
            if not alive[i, t]:
                obs[i, t + 1], alive[i, t + 1] = obs[i, t], False
                continue
            o, r, term, _, _ = e.step(a[i])
            obs[i, t + 1], rews[i, t], alive[i, t + 1] = o, r, not term
    for e in envs:
        e.close()
    return obs, acts, rews, alive


def compare(real_obs: np.ndarray, real_actions: np.ndarray, real_reward: np.ndarray, model_step: ModelStep,
            policy: Feedback, *, real_alive: np.ndarray | None = None, term_fn: Callable | None = None,
            horizons: list[int] | None = None) -> dict[str, Any]:
    """Open- and closed-loop error curves of the model against given real trajectories (see the module doc)."""
    horizon = real_actions.shape[1]
    horizons = [h for h in (horizons or DEFAULT_HORIZONS) if h <= horizon]
    obs0 = jnp.asarray(real_obs[:, 0])
    real_alive = np.ones(real_obs.shape[:2], bool) if real_alive is None else real_alive
    out: dict[str, Any] = {"starts": int(real_obs.shape[0]), "horizon": horizon}
    for name, kw in (("open_loop", {"actions": jnp.asarray(real_actions)}), ("closed_loop", {"policy": policy})):
        m_obs, m_rew, m_alive = model_rollout(model_step, obs0, horizon, term_fn=term_fn, **kw)
        curves = error_curves(real_obs, m_obs, real_reward, m_rew, real_alive & m_alive)
        out[name] = {**summarize(curves, horizons), "curves": curves}
    return out


# ---- models -----------------------------------------------------------------------------------------


def ensemble_mean_step(model: Any, state: Any, reward_fn: Callable | None = None) -> ModelStep:
    """An `EnsembleModel` as a deterministic step: the mean over its elites of each member's mean prediction.
    The reward is the model's own, or `reward_fn` on the model's states (then the return error measures only
    what the state error does to the return)."""

    def step(obs: jax.Array, action: jax.Array):
        action = jnp.clip(action, -1.0, 1.0)
        pred = model.predict(state, obs, action)
        nxt = pred.next_obs_mean[state.elites].mean(0)
        if reward_fn is not None:
            return nxt, reward_fn(obs, action, nxt)
        return nxt, pred.reward_mean[state.elites].mean(0)

    return step


def biased_step(step: Callable, observe: Callable, reward: Callable, bias: jax.Array) -> ModelStep:
    """The analytic model of the derivation: the true step plus a constant one-step error `bias` (a system whose
    observation is its state); the reward is the known one on the model's states."""

    def model_step(obs: jax.Array, action: jax.Array):
        nxt = step(obs, action) + bias
        return nxt, reward(observe(obs), action, observe(nxt))

    return model_step


def fit_pendulum_model(transitions: int, key: jax.Array, hidden: tuple[int, ...] = (200, 200, 200)):
    """A probabilistic ensemble fitted on `transitions` random-action transitions of the pure-JAX pendulum
    (uniform start states): the 'fitted model' of `--system pendulum`. Returns (env, model, state, info)."""
    from mbrlax.envs import jax_envs
    from mbrlax.models.ensemble import EnsembleModel
    from mbrlax.models.fit import fit
    from mbrlax.types import Transition

    env = jax_envs.Pendulum()
    k_s, k_a, k_init, k_fit = jax.random.split(key, 4)
    s = jax.vmap(env.init_state)(jax.random.split(k_s, transitions))
    s = s * jnp.array([1.0, 6.0])  # speeds up to ±6 rad/s, so that swinging states are in the data
    a = jax.random.uniform(k_a, (transitions, 1), minval=-1.0, maxval=1.0)
    s2 = env.dynamics(s, a)
    o, o2 = env.observe(s), env.observe(s2)
    data = Transition(np.asarray(o), np.asarray(a), np.asarray(env.reward(o, a, o2)), np.asarray(o2),
                      np.zeros(transitions, np.float32))
    model = EnsembleModel(3, 1, ensemble_size=5, num_elites=3, hidden=hidden)
    state, info = fit(model, model.init(k_init), data, k_fit, max_epochs=100)
    return env, model, state, info


# ---- systems ----------------------------------------------------------------------------------------


def lq_experiment(bias: float, feedback: float, horizon: int, starts: int, key: jax.Array) -> dict[str, Any]:
    """The derivation's system: x' = x + u (2-D, A = B = I, u = a), a model with the one-step error
    d = bias·(1, 1)/√2, the closed-loop feedback a = −κx (A + BK = (1−κ)I) and, as the open-loop plan, the
    actions that feedback takes on the real system. States start small (σ 0.1) so that |a| < 1 is never
    clipped and everything stays linear. Also returns the analytic curves."""
    from mbrlax.envs import jax_envs

    env = jax_envs.LinearQuadratic(A=np.eye(2), B=np.eye(2), action_scale=1.0, init_std=0.1)
    d = jnp.full((2,), bias / np.sqrt(2.0), jnp.float32)
    policy = lambda o: -feedback * o  # noqa: E731
    s0 = jax.vmap(env.init_state)(jax.random.split(key, starts))
    obs, act, rew = system_rollout(env.dynamics, env.observe, env.reward, s0, horizon, policy)
    table = compare(obs, act, rew, biased_step(env.dynamics, env.observe, env.reward, d), policy,
                    horizons=default_horizons(horizon))
    table["system"] = f"x' = x + u, model bias ε = {bias}, feedback κ = {feedback}"
    table["analytic"] = {
        "open_loop": analytic_bias_errors(np.eye(2), np.asarray(d), horizon),
        "closed_loop": analytic_bias_errors((1 - feedback) * np.eye(2), np.asarray(d), horizon),
    }
    return table


def pendulum_experiment(transitions: int, horizon: int, starts: int, key: jax.Array, damping: float = 0.5,
                        fitted: tuple | None = None) -> dict[str, Any]:
    """A fitted ensemble of the pendulum against its true dynamics. Closed loop: the damping feedback
    a = −c·θ̇ (it brings the pendulum to rest hanging down, a contracting closed loop); open loop: the actions
    that feedback takes on the true pendulum, replayed. Rewards: the known reward, on each system's states.
    `fitted`: the (env, model, state, info) of an earlier `fit_pendulum_model` call, instead of fitting."""
    k_fit, k_s = jax.random.split(key)
    env, model, state, info = fitted or fit_pendulum_model(transitions, k_fit)
    policy = lambda o: jnp.clip(-damping * o[..., 2:3], -1.0, 1.0)  # noqa: E731
    s0 = jax.vmap(env.init_state)(jax.random.split(k_s, starts))
    obs, act, rew = system_rollout(env.dynamics, env.observe, env.reward, s0, horizon, policy)
    table = compare(obs, act, rew, ensemble_mean_step(model, state, env.reward), policy,
                    horizons=default_horizons(horizon))
    table["system"] = f"Pendulum, ensemble fitted on {transitions} random transitions, damping c = {damping}"
    table["model_holdout_mse"] = info["model/holdout_mse"]
    return table


def run_experiment(run_dir: str | Path, horizon: int, starts: int, seed: int) -> dict[str, Any]:
    """An MBPO run's fitted model (mean of its elites) and its policy (the SAC mean action) against the real
    environment, from `starts` start states drawn from the most recent fifth of its replay buffer (the
    current policy's state distribution)."""
    from mbrlax.diagnostics.bounds import load_mbpo_run
    from mbrlax.envs.make import make

    run = load_mbpo_run(run_dir)
    rng = np.random.default_rng(seed)
    obs_all = np.asarray(run.real.obs)
    recent = obs_all[-max(len(obs_all) // 5, starts):]
    # keep states that MuJoCo can reproduce exactly (its observation clips speeds at ±10)
    recent = recent[np.abs(recent).max(-1) < 9.99]
    obs0 = recent[rng.choice(len(recent), starts, replace=False)]
    policy = jax.jit(lambda o: run.sac.mean_action(run.sac_state.actor, o))
    real_obs, act, rew, alive = env_rollouts(lambda: make(run.cfg.env, **run.cfg.env_kwargs)[0], obs0, horizon,
                                             policy, seed=seed)
    table = compare(real_obs, act, rew, ensemble_mean_step(run.model, run.model_state), policy,
                    real_alive=alive, term_fn=run.term_fn, horizons=default_horizons(horizon))
    table["system"] = f"{run.cfg.env}: model and policy of {run_dir} (step {run.step})"
    return table


def default_horizons(horizon: int) -> list[int]:
    """1, 2, 4, … up to H, and H itself."""
    hs = [h for h in DEFAULT_HORIZONS if h < horizon]
    k = DEFAULT_HORIZONS[-1] * 2
    while k < horizon:
        hs.append(k)
        k *= 2
    return hs + [horizon]


# ---- plot and CLI -----------------------------------------------------------------------------------


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (the diagnostics write PNGs, never show windows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, out: str | Path) -> Path:
    """Lay out, write (110 dpi) and close a figure; returns the path."""
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    pyplot().close(fig)
    return out


def plot(tables: list[dict[str, Any]], out: str | Path) -> Path:
    """One column per system: state error (top) and cumulative error (bottom) against k, log-log, open vs
    closed loop, with the fitted exponent in the legend (and the analytic curves where known)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(tables), figsize=(4.6 * len(tables), 7.5), squeeze=False)
    for col, table in enumerate(tables):
        for row, name in enumerate(("state_error", "cumulative_error")):
            ax = axes[row, col]
            for loop, c in (("open_loop", "C3"), ("closed_loop", "C0")):
                t = table[loop]
                ax.plot(t["horizons"], t[name], "-o", c=c, ms=4,
                        label=f"{loop.replace('_', ' ')}: p = {t[f'{name}_exponent']:.2f}")
                if "analytic" in table:
                    a = table["analytic"][loop][name]
                    ax.plot(t["horizons"], [a[h - 1] for h in t["horizons"]], "k:", lw=1.5)
            ax.set(xscale="log", yscale="log", xlabel="horizon k",
                   ylabel="E‖ô_k − o_k‖" if row == 0 else "E Σ_{t≤k} ‖ô_t − o_t‖")
            ax.legend(fontsize=7)
            if row == 0:
                ax.set_title(table["system"], fontsize=8)
    return save_figure(fig, out)


@dataclass
class CompoundingArgs:
    """`mbrlax diagnose compounding`: k-step model error against the horizon, open vs closed loop."""

    run: str | None = None
    """An MBPO run directory: its model and policy against the real environment (else --system)."""
    system: str = "lq"
    """Without --run: 'lq' (the derivation's linear system with a biased model) or 'pendulum' (a fitted model)."""
    bias: float = 0.01
    """lq: the model's constant one-step error ε."""
    feedback: float = 0.5
    """lq: the closed-loop gain κ (A + BK = (1−κ)I)."""
    transitions: int = 2000
    """pendulum: random transitions the model is fitted on."""
    horizon: int = 128
    """Longest horizon H."""
    starts: int = 64
    """Start states (trajectories) averaged over."""
    seed: int = 0
    out: str = "compounding"
    """Output prefix: writes OUT.json and OUT.png."""


def run_compounding(args: CompoundingArgs) -> tuple[dict, Path, Path]:
    if args.horizon < 2 or args.starts < 1:
        raise ValueError("--horizon must be ≥ 2 and --starts ≥ 1")
    key = jax.random.key(args.seed)
    if args.run is not None:
        table = run_experiment(args.run, args.horizon, args.starts, args.seed)
    elif args.system == "lq":
        table = lq_experiment(args.bias, args.feedback, args.horizon, args.starts, key)
    elif args.system == "pendulum":
        table = pendulum_experiment(args.transitions, args.horizon, args.starts, key)
    else:
        raise ValueError(f"unknown --system {args.system!r}; choose 'lq' or 'pendulum' (or give --run RUN_DIR)")
    return (table, *write(table, args.out, lambda p: plot([table], p)))


def write(table: dict, out: str, plotter: Callable[[Path], Path]) -> tuple[Path, Path]:
    """OUT.json and OUT.png (the suffix appended, so a prefix like 'eps0.01' keeps its '.01')."""
    out_p = Path(out)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    js = out_p.parent / f"{out_p.name}.json"
    js.write_text(json.dumps(table, indent=2) + "\n")
    return js, plotter(out_p.parent / f"{out_p.name}.png")


def print_table(table: dict) -> None:
    print(table["system"])
    o, c = table["open_loop"], table["closed_loop"]
    print(f"{'k':>5} {'open ‖e_k‖':>12} {'closed ‖e_k‖':>13} {'open Σ‖e‖':>11} {'closed Σ‖e‖':>12} {'open |ΔR|':>10} "
          f"{'closed |ΔR|':>11}")
    for i, h in enumerate(o["horizons"]):
        print(f"{h:>5} {o['state_error'][i]:>12.4g} {c['state_error'][i]:>13.4g} {o['cumulative_error'][i]:>11.4g} "
              f"{c['cumulative_error'][i]:>12.4g} {o['return_error'][i]:>10.4g} {c['return_error'][i]:>11.4g}")
    for name in ("state_error", "cumulative_error", "return_error"):
        print(f"exponent of {name}: open loop {o[name + '_exponent']:.3f}, closed loop {c[name + '_exponent']:.3f}")
