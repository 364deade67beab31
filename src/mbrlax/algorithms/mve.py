"""MVE-SAC: model-based value expansion (Feinberg, Wan, Stoica, Jordan, Gonzalez & Levine 2018) on SAC.

The paper's Algorithm 1 (MVE-DDPG), with SAC as the model-free learner, and where each line lives below:

    Initialize Q_θ, π_φ, model f̂, replay buffer β
    for each environment step do
        act with π_φ, add the transition to β                                    # 1. collect real data
        every `model_train_freq` steps: fit f̂ on β                               # 2. fit the model
        for G gradient updates do                                                # 3. MVE updates
            sample (s_0, a_0, r_0, s_1) from β
            imagine s_t, a_t ~ π(s_t), r̂_t, ŝ_{t+1} = f̂(s_t, a_t) for t = 1..H    (`imagine`)
            TD-k targets for every t = 0..H:                                      (`mve_targets`)
                Q̂_t = Σ_{k=t}^{H} γ^{k−t} r_k + γ^{H+1−t} V̄(ŝ_{H+1})
            critic: minimize 1/(H+1) Σ_t (Q(s_t, a_t) − Q̂_t)²   — all H+1 states, the "TD-k trick"
            actor and temperature: SAC's updates on the real states s_0
            target critic: Polyak averaging

With SAC the values are soft: every imagined step after the first subtracts α log π(a_k | s_k), and
V̄(s) = min_i Q̄_i(s, a) − α log π(a | s) with a ~ π(s), exactly as in SAC's own target. The expansion is
computed backwards, G_t = r_t + γ (1 − d_t) (G_{t+1} − α log π(a_{t+1} | s_{t+1})), which is the sum above
with termination handled: a known termination function (or the learned termination head) stops both the
sum and the bootstrap, and imagined states after a termination get weight 0 in the critic loss. With H = 0
it is SAC, update for update (tests/algorithms/test_mve.py).

"Generalized Dyna" (the lecture's version, `dyna_steps > 0`): instead of expanding the target, simulate
`dyna_steps` model steps from states sampled from β with the current policy and add those simulated
transitions to each SAC batch (`dyna_ratio` of it). With `horizon=0, dyna_steps=0` this file is SAC.

The run loop (runs.py, with runs.EnvLoop for the real steps) keeps the run directory, metrics, checkpoints
and an exact resume; `--resume RUN --steps N` continues a run to N environment steps.

Deviations: the model is MBPO's probabilistic ensemble rather than the paper's single deterministic network;
each imagined sample uses one random elite member's mean (or a draw from its Gaussian with `model_noise=True`;
see `model_step_fn`); the learner is SAC, not DDPG; the actor is trained on the real states only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrlax import runs
from mbrlax.agents.nets import tanh_gaussian_sample
from mbrlax.agents.sac import SAC, SACState, guarded
from mbrlax.algorithms import common, mbpo
from mbrlax.data.replay import ReplayBuffer
from mbrlax.envs.make import make
from mbrlax.models.ensemble import EnsembleModel, ModelState
from mbrlax.types import Transition

# step_fn(obs B×D, action B×A, key) -> (next_obs B×D, reward B, terminated B float 0/1)
StepFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]

# ---------------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------------


def imagine(sac: SAC, actor_params: Any, step_fn: StepFn, start: jax.Array, key: jax.Array, horizon: int):
    """H imagined steps from `start` (B×D) with the current policy. Step t (1..H) uses the keys
    split(fold_in(key, t)) = (policy, model). Returns obs H×B×D, actions H×B×A, log π H×B, rewards H×B,
    terminated H×B and the last next-obs B×D."""

    def step(obs, t):
        k_pi, k_model = jax.random.split(jax.random.fold_in(key, t))
        mean, log_std = sac.actor_net.apply(actor_params, obs)
        action, logp = tanh_gaussian_sample(mean, log_std, k_pi)
        next_obs, reward, term = step_fn(obs, action, k_model)
        return next_obs, (obs, action, logp, reward, term.astype(jnp.float32))

    last, (obs, action, logp, reward, term) = jax.lax.scan(step, start, jnp.arange(1, horizon + 1))
    return obs, action, logp, reward, term, last


def mve_targets(sac: SAC, state: SACState, batch: Transition, step_fn: StepFn, key: jax.Array, horizon: int):
    """TD-k targets of MVE for a real batch (B). Returns (obs (H+1)×B×D, actions (H+1)×B×A,
    targets (H+1)×B, weights (H+1)×B): row t is the imagined state s_t (row 0 the real s_0, a_0) with its
    H+1−t step target; weight 0 marks states imagined after a termination. With H = 0 the target is
    `sac.critic_target(state, batch, key)`."""
    if horizon == 0:
        target = sac.critic_target(state, batch, key)
        return batch.obs[None], batch.action[None], target[None], jnp.ones_like(target)[None]
    k_roll, k_boot = jax.random.split(key)
    obs, act, logp, rew, term, last = imagine(sac, state.actor, step_fn, batch.next_obs, k_roll, horizon)
    alpha = jnp.exp(state.log_alpha)
    # G_H = r_H + γ (1 − d_H) V̄(s_{H+1}): SAC's own target on the last imagined transition
    g_last = sac.critic_target(state, Transition(obs[-1], act[-1], rew[-1], last, term[-1]), k_boot)
    all_r = jnp.concatenate([batch.reward[None], rew], 0)  # (H+1)×B: r_0 real, r_1..r_H imagined
    all_d = jnp.concatenate([batch.terminated[None], term], 0)

    def back(g_next, t):  # G_t = r_t + γ (1 − d_t)(G_{t+1} − α log π(a_{t+1} | s_{t+1})), t = H−1..0
        g = all_r[t] + sac.gamma * (1.0 - all_d[t]) * (g_next - alpha * logp[t])
        return g, g

    _, g = jax.lax.scan(back, g_last, jnp.arange(horizon - 1, -1, -1))
    targets = jnp.concatenate([g[::-1], g_last[None]], 0)
    alive = jnp.cumprod(1.0 - all_d, 0)  # alive[t] = no termination in steps 0..t
    weights = jnp.concatenate([jnp.ones_like(alive[:1]), alive[:-1]], 0)
    return (jnp.concatenate([batch.obs[None], obs], 0), jnp.concatenate([batch.action[None], act], 0),
            targets, weights)


def model_step_fn(model: EnsembleModel, model_state: ModelState, term_fn, noise: bool = True) -> StepFn:
    """One model step for a batch B: `EnsembleModel.elite_step` (a random elite per row, one network pass
    per sample; `noise=False`: the member's mean, like the paper's deterministic model). Termination from
    the known function, else the learned head (p > 0.5), else never."""

    def step(obs, action, key):
        next_obs, reward, term_prob = model.elite_step(model_state, obs, action, key, sample=noise)
        if term_fn is not None:
            term = term_fn(obs, action, next_obs)
        elif term_prob is not None:
            term = term_prob > 0.5
        else:
            term = jnp.zeros(obs.shape[:-1], bool)
        return next_obs, reward, term.astype(jnp.float32)

    return step


def mve_update(sac: SAC, state: SACState, batch: Transition, step_fn: StepFn, key: jax.Array,
               horizon: int) -> tuple[SACState, dict]:
    """One MVE-SAC update: the critic on the H+1 TD-k targets of each real transition; actor, temperature
    and target critic as SAC (`SAC.update`, whose key use this mirrors: with H = 0 the two are equal)."""
    k_target, k_actor = jax.random.split(key)
    obs, act, target, w = jax.lax.stop_gradient(mve_targets(sac, state, batch, step_fn, k_target, horizon))

    def critic_loss(critic):
        q = jax.vmap(lambda o, a: sac.critic_net.apply(critic, o, a), out_axes=1)(obs, act)  # 2×(H+1)×B
        err = w * (q - target) ** 2
        return 0.5 * (err.sum((1, 2)) / w.sum()).sum(), q[:, 0].mean()

    (c_loss, q_mean), c_grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic)
    c_upd, critic_opt = sac.critic_tx.update(c_grads, state.critic_opt, state.critic)
    critic = optax.apply_updates(state.critic, c_upd)
    new, info = sac.policy_step(state, critic, critic_opt, batch.obs, k_actor)  # actor on the real s_0
    return new, {"sac/critic_loss": c_loss, "sac/q_mean": q_mean, **info, "mve/target_mean": target[0].mean(),
                 "mve/alive_fraction": w[-1].mean()}


@partial(jax.jit, static_argnames=("sac", "model", "term_fn", "horizon", "dyna_steps", "n_dyna", "noise"))
def updates(sac: SAC, model: EnsembleModel, term_fn, sac_state: SACState, model_state: ModelState,
            batches: Transition, key: jax.Array, horizon: int, dyna_steps: int = 0,
            n_dyna: int = 0, noise: bool = True) -> tuple[SACState, dict]:
    """G updates on real batches G×B, fused in one `lax.scan`. With `dyna_steps > 0` (generalized Dyna), the
    last `n_dyna` rows of each batch are replaced by transitions simulated `dyna_steps` model steps ahead of
    the batch's own states with the current policy. info["guard/rejected"] is the fraction of rejected updates."""
    step_fn = model_step_fn(model, model_state, term_fn, noise)

    def one(state, batch, k):
        if dyna_steps > 0:
            k, k_dyna = jax.random.split(k)
            batch = dyna_batch(sac, state.actor, step_fn, batch, k_dyna, dyna_steps, n_dyna)
        return mve_update(sac, state, batch, step_fn, k, horizon)

    keys = jax.random.split(key, batches.obs.shape[0])
    # a non-finite update is rejected (the previous state kept), as SAC.update_many does
    state, infos = jax.lax.scan(lambda s, xs: guarded(one)(s, *xs), sac_state, (batches, keys))
    return state, jax.tree.map(jnp.mean, infos)


def dyna_batch(sac: SAC, actor_params: Any, step_fn: StepFn, batch: Transition, key: jax.Array,
               steps: int, n: int) -> Transition:
    """Generalized Dyna: from the first n states of the batch, `steps` model steps with the current policy;
    the last of them (a simulated transition s, a ~ π, r̂, ŝ') replaces the batch's last n rows."""
    obs, act, logp, rew, term, last = imagine(sac, actor_params, step_fn, batch.obs[:n], key, steps)
    fake = Transition(obs[-1], act[-1], rew[-1], last, term[-1])
    return jax.tree.map(lambda r, f: r.at[-n:].set(f), batch, fake)


# ---------------------------------------------------------------------------------------------------
# The algorithm
# ---------------------------------------------------------------------------------------------------

# MVE's own values; the model, exploration and evaluation settings are MBPO's (the same ensemble and loop).
_FROM_MBPO = ("init_steps", "model_train_freq", "target_entropy", "model_hidden", "model_max_epochs", "eval_every",
              "eval_episodes", "env_kwargs")
DEFAULTS: dict[str, Any] = dict(
    {k: mbpo.DEFAULTS[k] for k in _FROM_MBPO}, steps=100_000, horizon=10, updates_per_step=1)

PRESETS: dict[str, dict[str, Any]] = {
    # Not in the paper: sized like MBPO's Pendulum preset (5,000 steps on a laptop CPU). Pendulum's model is
    # accurate far ahead, but the policy changes quickly; H = 3.
    "Pendulum-v1": dict(steps=5000, init_steps=400, horizon=3, model_train_freq=200, updates_per_step=5,
                        model_hidden=(200, 200, 200), model_max_epochs=50, eval_every=200, eval_episodes=5),
    # H = 10: the imagination depth of the paper's MuJoCo experiments. One update per step as in the paper's
    # DDPG; the MBPO paper's H_target = -0.05 for this task.
    "InvertedPendulum-v5": dict(steps=15_000, init_steps=1000, horizon=10, model_train_freq=250,
                                updates_per_step=1, target_entropy=-0.05, eval_every=500, eval_episodes=3),
    "HalfCheetah-v5": dict(steps=200_000, init_steps=5000, horizon=10, model_train_freq=250, updates_per_step=1,
                           target_entropy=-3.0, eval_every=5000, eval_episodes=3),
}


@dataclass
class Config(common.OnlineOptions, common.SACOptions, common.ModelOptions, common.RunOptions):
    """MVE-SAC. Fields left as None take the preset value of the environment (see PRESETS), else DEFAULTS."""

    horizon: int | None = None
    """H: imagined steps in each critic target (0: plain SAC targets)."""
    model_train_freq: int | None = None
    """Refit the model every this many environment steps."""
    updates_per_step: int | None = None
    """G: gradient updates per environment step."""
    eval_every: int | None = None
    """Evaluate the deterministic policy every this many environment steps."""
    dyna_steps: int = 0
    """Generalized Dyna: model steps ahead of the sampled states for the simulated transitions (0: off)."""
    dyna_ratio: float = 0.5
    """Generalized Dyna: fraction of each batch replaced by simulated transitions."""
    model_noise: bool = False
    """Imagine with draws from the members' Gaussians instead of their means. Off by default, like the paper's
    deterministic model: on Pendulum-v1 the means crossed -200 on 3/3 seeds, the draws on 1/3
    (benchmarks/mve_sac.py)."""
    replay_size: int = 1_000_000
    """Capacity of the replay buffer."""
    checkpoint_every: int | None = None
    """Checkpoint every this many steps; None: at every evaluation."""


def resolve(cfg: Config) -> Config:
    """Fill every None from the env's preset, then DEFAULTS; validate ranges."""
    cfg = common.fill_preset(cfg, PRESETS.get(cfg.env, {}), DEFAULTS)
    if cfg.checkpoint_every is None:
        cfg = dataclasses.replace(cfg, checkpoint_every=cfg.eval_every)
    if cfg.horizon < 0 or cfg.dyna_steps < 0:
        raise ValueError(f"horizon and dyna_steps must be ≥ 0, got {cfg.horizon} and {cfg.dyna_steps}")
    if not 0.0 < cfg.dyna_ratio < 1.0:
        raise ValueError(f"dyna_ratio must be in (0, 1), got {cfg.dyna_ratio}")
    common.check_positive(cfg, "steps", "model_train_freq", "updates_per_step", "eval_every", "init_steps",
                          "checkpoint_every")
    return cfg


def _prepare(cfg: Config) -> Config:
    """`runs.prepare`, and runs made before `model_noise` existed imagined with draws: they go on doing so."""
    out = runs.prepare(cfg, "mve", may_change=("steps",))
    if cfg.resume is not None and "model_noise" not in runs.load_config(cfg.resume):
        out = dataclasses.replace(out, model_noise=True)
    return out


def _restore(saved: dict, fresh: dict) -> dict:
    st = dict(fresh, t=int(saved["t"]), key=saved["key"], np_rng=saved["np_rng"],
              model_fitted=bool(saved["model_fitted"]), env=saved["env"])
    st["sac"] = runs.check_like("sac", saved["sac"], fresh["sac"])
    st["model"] = runs.check_like("model", saved["model"], fresh["model"])
    try:
        st["real"].load_state_dict(saved["real"])
    except (ValueError, KeyError) as e:
        raise runs.CheckpointError(f"checkpoint replay buffer does not match this run: {e}") from e
    return st


# `mbrlax checkpoint convert`: MVE's format-1 (pickle) checkpoints had MBPO's layout without the model buffer
upgrade_legacy = mbpo.upgrade_legacy


def train(cfg: Config) -> common.Result:
    """Train MVE-SAC; returns the final evaluation and the run directory."""
    cfg = resolve(_prepare(cfg))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    eval_env, _ = make(cfg.env, **cfg.env_kwargs)
    model, sac, term_fn = common.components(cfg, spec.obs_dim, spec.act_dim)
    n_dyna = int(round(cfg.sac_batch_size * cfg.dyna_ratio)) if cfg.dyna_steps > 0 else 0
    mean_act = jax.jit(sac.mean_action)

    def policy(o: np.ndarray) -> np.ndarray:
        return np.asarray(mean_act(st["sac"].actor, jnp.asarray(o[None], jnp.float32)))[0]

    with runs.Run(cfg, "mve", f"mve-{cfg.env}-s{cfg.seed}", cfg.steps) as run, env, eval_env:
        key, k_model, k_sac = jax.random.split(jax.random.key(cfg.seed), 3)
        st = dict(t=0, key=key, np_rng=np.random.default_rng(cfg.seed), sac=sac.init(k_sac), model=model.init(k_model),
                  model_fitted=False, real=ReplayBuffer(cfg.replay_size, spec.obs_dim, spec.act_dim), env=None)
        if run.resumed:
            st = _restore(run.resumed, st)
        loop = runs.EnvLoop(env, cfg.seed, st["env"])
        sinfo: dict = {}

        while st["t"] < cfg.steps:
            t = st["t"]
            learning = t >= cfg.init_steps
            if learning and (t - cfg.init_steps) % cfg.model_train_freq == 0:
                # 2. fit the model on all real data (holdout early stopping, elites)
                st["key"], k_fit = jax.random.split(st["key"])
                st["model"], st["model_fitted"], info = common.fit_or_keep(
                    run, t, model, st["model"], st["real"].all(), k_fit, st["model_fitted"], **common.fit_kwargs(cfg))
                if info:
                    run.progress(t, mse=f"model mse {info['model/holdout_mse']:.3g}")

            # 1. act in the real environment (uniformly random during the initial exploration)
            mbpo.real_step(run, loop, sac, st, t, learning)

            # 3. G MVE updates (critic on H-step expanded targets; actor and temperature as SAC)
            if learning:
                with run.timer("policy"):
                    batches = st["real"].sample(st["np_rng"], (cfg.updates_per_step, cfg.sac_batch_size))
                    st["key"], k = jax.random.split(st["key"])
                    st["sac"], sinfo = updates(sac, model, term_fn, st["sac"], st["model"], batches, k, cfg.horizon,
                                               cfg.dyna_steps, n_dyna, cfg.model_noise)
                    jax.block_until_ready(st["sac"])
                run.rejected(t, float(sinfo["guard/rejected"]))
            st["t"] = t = t + 1

            if run.due(t, cfg.eval_every, cfg.steps):
                run.evaluate(t, eval_env, policy, cfg.eval_episodes, seed=10_000 + cfg.seed,
                             extra={k_: float(v) for k_, v in sinfo.items()})
            if run.due(t, cfg.checkpoint_every, cfg.steps):
                run.save(t, dict(st, real=st["real"].state_dict(), env=loop.state_dict()))
            if t % 50 == 0 or t == cfg.steps:
                run.progress(t)
        return run.result()


def load_policy(run_dir: str | Path):
    """The deterministic policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    return common.load_sac_policy(run_dir, Config, resolve)
