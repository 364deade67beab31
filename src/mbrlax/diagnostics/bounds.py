"""MBPO's return bounds made measurable: model error ε_m, policy shift ε_π, the branched-rollout bound, and a
rollout-length advisor (Janner et al. 2019, §4; the notes' chapter 20.1).

The bounds, with r_max the largest |reward| and γ the discount:
- Theorem 4.1 (the model used for whole rollouts): η[π] ≥ η̂[π] − C with
      C(ε_m, ε_π) = 2γ r_max (ε_m + 2ε_π)/(1−γ)² + 4 r_max ε_π/(1−γ)                          `mbpo_bound`
- Theorem 4.3 (k-step rollouts branched from the data-collecting policy's states):
      η[π] ≥ η^branch[π] − 2 r_max [γ^{k+1} ε_π/(1−γ)² + γ^k ε_π/(1−γ) + k ε_m'/(1−γ)]           `branched_bound`
  where ε_m' is the model error under the *current* policy's distribution, linearized around no shift as
      ε_m'(ε_π) ≈ ε_m + ε_π · dε_m'/dε_π                                                       (the paper's Fig. 3).

The rollout length k* that minimizes the branched bound has a closed form: the bound's step from k to k+1 is
      C(k+1) − C(k) = 2 r_max (ε_m' − γ^k ε_π)/(1−γ),
so it falls while γ^k ε_π > ε_m' and k* is the smallest k ≥ 0 with γ^k ε_π ≤ ε_m', i.e.
      k* = ⌈log(ε_m'/ε_π)/log γ⌉  if ε_m' < ε_π,  else 0.
Model rollouts pay (k* > 0) exactly when ε_m/ε_π + dε_m'/dε_π < 1: a small growth of the model error with
policy shift (the notes: 10⁻⁴…10⁻² on MuJoCo) is necessary, and the model error must also be below the shift.
`advise` returns k*, the bound at every k and that break-even slope 1 − ε_m/ε_π.

What `measure_run` measures on an MBPO run, and why it is the quantity in the bound:
- **the policy shift.** The bound compares the data-collecting policy π_D with the policy π being optimized on
  model data (one iteration of the paper's Algorithm 1). π_D = the run's policy at its checkpoint (it collected
  the newest real data); π_j = that policy after j more SAC updates of the run's own MBPO loop (the same
  real/model batch mix, D_model refilled with branched rollouts of the current policy every
  model_train_freq · updates_per_step updates, as the run does), for j up to one epoch
  (epoch_length · updates_per_step updates: the shift before the next epoch's data). ε_π(π_j) =
  E_s D_TV(π_j(·|s) ‖ π_D(·|s)) over the newest real states, by Monte Carlo on the pre-tanh Gaussians (TV is
  unchanged by the bijection tanh). The theorem's max over states is replaced by this mean: the max of a
  sample estimate measures its noise. KL(π_D ‖ π_j) (closed form) is reported beside it.
- **the model error.** ε_m'(π_j) = E D_TV(p̂(·|s,a) ‖ p(·|s,a)) over fresh real transitions (s, a, s') that π_j
  collects (held-out data the model never saw). The simulator is deterministic, and the TV between a
  continuous model and a point mass is always 1, so the true next state is smoothed at the model's own
  resolution: the TV between each elite's Gaussian N(μ̂, Σ̂) and N(s', Σ̂), which is 2Φ(δ/2) − 1 exactly, with
  δ the Mahalanobis distance ‖Σ̂^{-½}(s' − μ̂)‖ (averaged over the elites). It is 0 for an exact mean and
  approaches 1 as the error leaves the predicted spread; note that a calibrated model in D dimensions has
  δ ≈ √D, so this TV is large for any honest Gaussian model of a deterministic simulator (≈0.9 at D = 11).
  ε_m = ε_m'(π_D); dε_m'/dε_π = the least-squares slope of ε_m'(π_j) against ε_π(π_j). The normalized mean
  squared error of the elites' mean is reported too, with its slope against the KL (the paper's units).

`mbrlax diagnose bounds --run RUN_DIR` measures all that and compares k* with the run's preset schedule;
`mbrlax diagnose bounds --eps-m … --slope … --eps-pi …` only evaluates the bounds and the advice.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from mbrlax.types import Transition

# ---- the bounds and the advice ----------------------------------------------------------------------


def _check(gamma: float, **nonneg: float) -> None:
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"the bounds need a discount 0 ≤ γ < 1, got γ = {gamma}")
    for name, v in nonneg.items():
        if v < 0:
            raise ValueError(f"{name} must be ≥ 0, got {v}")


def mbpo_bound(eps_m: float, eps_pi: float, gamma: float, r_max: float) -> float:
    """Theorem 4.1's C(ε_m, ε_π) = 2γ r_max (ε_m + 2ε_π)/(1−γ)² + 4 r_max ε_π/(1−γ)."""
    _check(gamma, eps_m=eps_m, eps_pi=eps_pi, r_max=r_max)
    return 2 * gamma * r_max * (eps_m + 2 * eps_pi) / (1 - gamma) ** 2 + 4 * r_max * eps_pi / (1 - gamma)


def branched_bound(eps_m_prime: float, eps_pi: float, gamma: float, k: int, r_max: float) -> float:
    """Theorem 4.3's 2 r_max [γ^{k+1} ε_π/(1−γ)² + γ^k ε_π/(1−γ) + k ε_m'/(1−γ)] for rollouts of length k."""
    _check(gamma, eps_m_prime=eps_m_prime, eps_pi=eps_pi, r_max=r_max, k=k)
    return 2 * r_max * (gamma ** (k + 1) * eps_pi / (1 - gamma) ** 2 + gamma**k * eps_pi / (1 - gamma)
                        + k * eps_m_prime / (1 - gamma))


def linearized_model_error(eps_m: float, slope: float, eps_pi: float) -> float:
    """ε_m'(ε_π) ≈ ε_m + ε_π · dε_m'/dε_π."""
    return eps_m + eps_pi * slope


def best_rollout_length(eps_m_prime: float, eps_pi: float, gamma: float, k_max: int) -> int:
    """The closed form k* = smallest k ≥ 0 with γ^k ε_π ≤ ε_m' (capped at k_max); see the module doc."""
    if eps_m_prime >= eps_pi or eps_pi <= 0:
        return 0
    if gamma == 0:  # γ^1 ε_π = 0 ≤ ε_m'
        return min(1, k_max)
    if eps_m_prime <= 0:  # γ^k ε_π > 0 = ε_m' for every k: the bound falls all the way
        return k_max
    k = math.ceil(math.log(eps_m_prime / eps_pi) / math.log(gamma) - 1e-9)  # float slack at an exact integer
    return int(min(max(k, 0), k_max))


def advise(eps_m: float, slope: float, eps_pi: float, gamma: float, r_max: float, k_max: int = 100) -> dict[str, Any]:
    """The branched bound at k = 0..k_max for ε_m' = ε_m + ε_π·slope, its minimizer (numerically and in
    closed form, which agree), the break-even slope 1 − ε_m/ε_π below which k > 0 pays, and Theorem 4.1's C."""
    eps_mp = linearized_model_error(eps_m, slope, eps_pi)
    bound = [branched_bound(eps_mp, eps_pi, gamma, k, r_max) for k in range(k_max + 1)]
    return {
        "eps_m": eps_m, "slope": slope, "eps_pi": eps_pi, "gamma": gamma, "r_max": r_max,
        "eps_m_prime": eps_mp,
        "bound_by_k": bound,
        "k_best": int(np.argmin(bound)),  # argmin returns the first minimizer: ties go to the shorter rollout
        "k_closed_form": best_rollout_length(eps_mp, eps_pi, gamma, k_max),
        "break_even_slope": 1.0 - eps_m / eps_pi if eps_pi > 0 else float("-inf"),
        "theorem_4_1_bound": mbpo_bound(eps_m, eps_pi, gamma, r_max),
    }


def fit_line(x: ArrayLike, y: ArrayLike) -> dict[str, float]:
    """Least squares y ≈ a + b x: intercept a, slope b and the slope's standard error."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    dof = max(len(x) - 2, 1)
    sxx = float(((x - x.mean()) ** 2).sum())
    se = float(np.sqrt((resid**2).sum() / dof / sxx)) if sxx > 0 else float("inf")
    return {"intercept": float(a), "slope": float(b), "slope_se": se}


# ---- the measures -----------------------------------------------------------------------------------


def equal_covariance_tv(mahalanobis: jax.Array) -> jax.Array:
    """D_TV(N(μ₁, Σ), N(μ₂, Σ)) = 2Φ(δ/2) − 1 with δ = ‖Σ^{-½}(μ₁ − μ₂)‖ (exact)."""
    return 2.0 * jax.scipy.stats.norm.cdf(mahalanobis / 2.0) - 1.0


def gaussian_policy_tv(mean_p: jax.Array, log_std_p: jax.Array, mean_q: jax.Array, log_std_q: jax.Array,
                       key: jax.Array, samples: int = 256) -> jax.Array:
    """D_TV(p ‖ q) for diagonal Gaussians B×A by Monte Carlo, E_{u~p}[(1 − q(u)/p(u))⁺] (unbiased; B values)."""
    u = mean_p + jnp.exp(log_std_p) * jax.random.normal(key, (samples, *mean_p.shape))

    def logpdf(x, m, ls):
        return (-0.5 * ((x - m) / jnp.exp(ls)) ** 2 - ls).sum(-1)  # the 2π terms cancel in the ratio

    log_ratio = logpdf(u, mean_q, log_std_q) - logpdf(u, mean_p, log_std_p)
    return (1.0 - jnp.exp(jnp.minimum(log_ratio, 0.0))).mean(0)


def gaussian_kl(mean_p: jax.Array, log_std_p: jax.Array, mean_q: jax.Array, log_std_q: jax.Array) -> jax.Array:
    """KL(p ‖ q) of diagonal Gaussians B×A (closed form; B values)."""
    var_p, var_q = jnp.exp(2 * log_std_p), jnp.exp(2 * log_std_q)
    return (log_std_q - log_std_p + (var_p + (mean_p - mean_q) ** 2) / (2 * var_q) - 0.5).sum(-1)


def model_errors(model: Any, state: Any, data: Transition, chunk: int = 8192) -> dict[str, np.ndarray]:
    """Per transition: `tv`, the elites' mean of 2Φ(δ_e/2) − 1 with δ_e the Mahalanobis distance of the true
    next state from elite e's Gaussian (the smoothed TV of the module doc), and `mse`, the squared error of
    the elites' mean Δobs in the model's normalized units, averaged over features."""
    tv, mse = [], []
    elites = state.elites
    std = state.out_norm.std[:-1]
    for i in range(0, len(data.obs), chunk):
        obs, act = jnp.asarray(data.obs[i:i + chunk]), jnp.asarray(data.action[i:i + chunk])
        nxt = jnp.asarray(data.next_obs[i:i + chunk])
        pred = model.predict(state, obs, act)
        mu, var = pred.next_obs_mean[elites], pred.next_obs_var[elites]
        delta = jnp.sqrt((((nxt - mu) ** 2) / var).sum(-1))  # K×B
        tv.append(np.asarray(equal_covariance_tv(delta).mean(0)))
        mse.append(np.asarray((((mu.mean(0) - nxt) / std) ** 2).mean(-1)))
    return {"tv": np.concatenate(tv), "mse": np.concatenate(mse)}


# ---- an MBPO run ------------------------------------------------------------------------------------


class MBPORun(NamedTuple):
    """What the diagnostics need from an MBPO run's newest checkpoint."""

    cfg: Any
    model: Any
    model_state: Any
    sac: Any
    sac_state: Any
    real: Transition  # D_env, oldest first (host arrays)
    term_fn: Callable | None
    step: int
    k: int  # the rollout length the run was using


def load_mbpo_run(run_dir: str | Path) -> MBPORun:
    """Config, model, SAC agent and D_env of an `mbrlax train mbpo` run's newest checkpoint."""
    from mbrlax import runs
    from mbrlax.algorithms import common, mbpo
    from mbrlax.envs.make import make

    name = runs.run_algorithm(run_dir)
    if name != "mbpo":
        raise ValueError(f"{run_dir} is a '{name}' run; these diagnostics need an MBPO run (a fitted ensemble, "
                         f"a SAC policy and its replay buffer): train one with `mbrlax train mbpo`")
    cfg = mbpo.resolve(runs.config_from_dict(mbpo.Config, runs.load_config(run_dir)))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    env.close()
    model, sac, term_fn = common.components(cfg, spec.obs_dim, spec.act_dim)
    saved = runs.load_checkpoint(run_dir)
    if not saved.get("model_fitted", False):
        raise ValueError(f"{run_dir}: the checkpoint's model was never fitted (saved during the initial random "
                         f"exploration); continue the run past init_steps={cfg.init_steps} first")
    model_state = runs.check_like("model", saved["model"], model.init(jax.random.key(0)))
    sac_state = runs.check_like("sac", saved["sac"], sac.init(jax.random.key(0)))
    d = saved["real"]
    data = {k: np.asarray(v) for k, v in d["data"].items()}
    if "ptr" in d and int(d["size"]) == int(d["capacity"]):  # a wrapped ring buffer: oldest first
        data = {k: np.roll(v, -int(d["ptr"]), axis=0) for k, v in data.items()}
    return MBPORun(cfg, model, model_state, sac, sac_state, Transition(**data), term_fn, int(saved["t"]),
                   int(saved["k"]))


@partial(jax.jit, static_argnums=0)
def _sample_one(sac: Any, actor: Any, obs: jax.Array, key: jax.Array) -> jax.Array:
    return sac.sample_action(actor, obs[None], key)[0]


def stochastic_policy(sac: Any, actor: Any) -> Callable[[np.ndarray, jax.Array], np.ndarray]:
    """`act(obs D, key) -> action A`: a sample of the SAC policy, as the run collects data (one compiled
    function for every actor of the same SAC)."""
    return lambda o, k: np.asarray(_sample_one(sac, actor, jnp.asarray(o, jnp.float32), k))


def collect(env: Any, act: Callable[[np.ndarray, jax.Array], np.ndarray], steps: int, seed: int,
            key: jax.Array) -> tuple[Transition, list[float]]:
    """`steps` real transitions of `act` (new episodes reset with seeds seed, seed+1, …); returns them and the
    returns of the episodes that finished."""
    cols: dict[str, list] = {k: [] for k in Transition._fields}
    obs, _ = env.reset(seed=seed)
    episodes, ret, returns = 1, 0.0, []
    for t in range(steps):
        a = act(obs, jax.random.fold_in(key, t))
        nxt, r, term, trunc, _ = env.step(a)
        for k, v in zip(Transition._fields, (obs, a, r, nxt, float(term))):
            cols[k].append(v)
        ret += r
        obs = nxt
        if term or trunc:
            returns.append(ret)
            obs, _ = env.reset(seed=seed + episodes)
            episodes, ret = episodes + 1, 0.0
    return Transition(*(np.asarray(cols[k], np.float32) for k in Transition._fields)), returns


def continue_training(run: MBPORun, snapshots: list[int], key: jax.Array, rollout_batch: int | None = None,
                      ) -> list[Any]:
    """The run's MBPO policy loop continued on its data (no new real data, the model kept): SAC updates on
    batches of real_ratio D_env and 1 − real_ratio D_model, D_model refilled with k-step branched rollouts of
    the current policy from D_env states every model_train_freq·updates_per_step updates (and at the start: the
    checkpoint carries none). Returns the actor parameters after each number of updates in `snapshots`."""
    from mbrlax.algorithms import mbpo
    from mbrlax.data.replay import device_buffer
    from mbrlax.rollout import branched_rollout

    cfg, sac = run.cfg, run.sac
    g = cfg.updates_per_step
    if any(s % g for s in snapshots) or sorted(snapshots) != list(snapshots) or snapshots[0] < 0:
        raise ValueError(f"snapshots must be increasing multiples of updates_per_step={g}, got {snapshots}")
    n_real = int(round(cfg.sac_batch_size * cfg.real_ratio))
    n_model = cfg.sac_batch_size - n_real
    refill = cfg.model_train_freq * g
    batch = rollout_batch or cfg.rollout_batch_size
    size = mbpo.model_buffer_size(cfg, run.k)
    fake = device_buffer(size, run.real.obs.shape[1], run.real.action.shape[1], limit=size)
    rng = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1)))
    st, out, done = run.sac_state, [], 0
    for target in snapshots:
        while done < target:
            if done % refill == 0 and n_model > 0:
                key, k_roll = jax.random.split(key)
                start = jnp.asarray(run.real.obs[rng.integers(0, len(run.real.obs), batch)])
                fake, _ = branched_rollout(run.model, run.model_state, sac.sample_action, st.actor, start, run.k,
                                           fake, k_roll, run.term_fn)
            idx = rng.integers(0, len(run.real.obs), (g, n_real))
            real = Transition(*(jnp.asarray(x[idx]) for x in run.real))
            st, _, key = mbpo.policy_updates(sac, st, real, fake, key, n_model)
            done += g
        out.append(jax.block_until_ready(st.actor))
    return out


def measure_run(run_dir: str | Path, *, snapshots: list[int] | None = None, env_steps: int = 5000,
                shift_states: int = 5000, tv_samples: int = 256, rollout_batch: int | None = None,
                k_max: int = 100, seed: int = 0) -> tuple[dict[str, Any], list[Transition], MBPORun]:
    """ε_π, ε_m' and their fit for policies π_j after `snapshots` updates (default: 0 and 1/16 … 1 epoch), the
    branched bound and k* at the one-epoch shift, and the run's preset k. Returns the table, the fresh real
    transitions of every π_j (held-out data, e.g. for calibration) and the loaded run."""
    from mbrlax.algorithms.mbpo import rollout_length
    from mbrlax.envs.make import make

    run = load_mbpo_run(run_dir)
    cfg = run.cfg
    epoch_updates = cfg.epoch_length * cfg.updates_per_step
    if snapshots is None:
        snapshots = [0] + [epoch_updates // 2**i for i in (4, 3, 2, 1, 0)]
        snapshots = sorted({s - s % cfg.updates_per_step for s in snapshots})
    key = jax.random.key(seed)
    k_train, k_tv, k_collect = jax.random.split(key, 3)
    actors = continue_training(run, snapshots, k_train, rollout_batch)

    # 1. policy shift on the newest real states (the data-collecting policy's distribution)
    states = jnp.asarray(run.real.obs[-shift_states:])
    apply = jax.jit(run.sac.actor_net.apply)
    m0, ls0 = apply(actors[0], states)
    # 2. model error on fresh real data of each policy (same reset seeds for all: common random numbers)
    env, _ = make(cfg.env, **cfg.env_kwargs)
    rows, datasets = [], []
    with env:
        for j, (n_upd, actor) in enumerate(zip(snapshots, actors)):
            m, ls = apply(actor, states)
            data, returns = collect(env, stochastic_policy(run.sac, actor), env_steps, seed=10_000 + seed,
                                    key=jax.random.fold_in(k_collect, j))
            err = model_errors(run.model, run.model_state, data)
            datasets.append(data)
            rows.append({
                "updates": n_upd,
                "eps_pi": float(gaussian_policy_tv(m0, ls0, m, ls, jax.random.fold_in(k_tv, j), tv_samples).mean()),
                "kl": float(gaussian_kl(m0, ls0, m, ls).mean()),
                "eps_m_prime": float(err["tv"].mean()),
                "eps_m_prime_se": float(err["tv"].std() / np.sqrt(len(err["tv"]))),
                "model_mse": float(err["mse"].mean()),
                "episode_return_mean": float(np.mean(returns)) if returns else float("nan"),
                "episodes": len(returns),
            })
    eps_pi = np.array([r["eps_pi"] for r in rows])
    fit = fit_line(eps_pi, [r["eps_m_prime"] for r in rows])
    fit_paper = fit_line([r["kl"] for r in rows], [r["model_mse"] for r in rows])
    # 3. the bounds and the advice at the shift one epoch of updates reaches (the last snapshot by default)
    r_max = float(np.max(np.abs(run.real.reward)))
    shift = rows[-1]["eps_pi"]
    advice = advise(rows[0]["eps_m_prime"], fit["slope"], shift, cfg.gamma, r_max, k_max)
    epoch = max(run.step - cfg.init_steps, 0) // cfg.epoch_length
    table = {
        "run": str(run_dir), "env": cfg.env, "step": run.step, "epoch": epoch,
        "settings": {"snapshots": snapshots, "epoch_updates": epoch_updates, "env_steps": env_steps,
                     "shift_states": shift_states, "tv_samples": tv_samples,
                     "rollout_batch": rollout_batch or cfg.rollout_batch_size, "seed": seed},
        "rows": rows,
        "fit_tv": fit,
        "fit_mse_vs_kl": fit_paper,
        "advice": advice,
        "advice_slope_pm_se": [best_rollout_length(linearized_model_error(advice["eps_m"], s, shift), shift,
                                                   cfg.gamma, k_max)
                               for s in (fit["slope"] - fit["slope_se"], fit["slope"] + fit["slope_se"])],
        "k_preset": rollout_length(cfg.rollout_schedule, epoch),
        "k_run": run.k,
        "rollout_schedule": list(cfg.rollout_schedule),
        "k_best_vs_eps_pi": {
            "eps_pi": [float(x) for x in np.linspace(0.0, 1.0, 51)],
            "k": [best_rollout_length(linearized_model_error(advice["eps_m"], fit["slope"], x), x, cfg.gamma, k_max)
                  for x in np.linspace(0.0, 1.0, 51)],
        },
    }
    return table, datasets, run


# ---- plot and CLI -----------------------------------------------------------------------------------


def plot(table: dict[str, Any], out: str | Path) -> Path:
    """Three panels: ε_m' against ε_π with the fitted line (the paper's Fig. 3), the branched bound against k
    with k* and the preset k, and k* against the policy shift."""
    from mbrlax.diagnostics.compounding import pyplot, save_figure

    plt = pyplot()
    adv = table["advice"]
    fig, axes = plt.subplots(1, 3 if "rows" in table else 1, figsize=(14 if "rows" in table else 5, 4), squeeze=False)
    axes = axes[0]
    ax_b = axes[1] if "rows" in table else axes[0]
    if "rows" in table:
        ax = axes[0]
        x = [r["eps_pi"] for r in table["rows"]]
        ax.errorbar(x, [r["eps_m_prime"] for r in table["rows"]], [2 * r["eps_m_prime_se"] for r in table["rows"]],
                    fmt="o", label="measured (± 2 s.e.)")
        f = table["fit_tv"]
        xs = np.linspace(0, max(x) * 1.05 + 1e-9, 20)
        ax.plot(xs, f["intercept"] + f["slope"] * xs, "k--",
                label=f"fit: dε_m'/dε_π = {f['slope']:.3g} ± {f['slope_se']:.2g}")
        for r in table["rows"]:
            ax.annotate(str(r["updates"]), (r["eps_pi"], r["eps_m_prime"]), fontsize=6)
        ax.set(xlabel="policy shift ε_π (TV to the data-collecting policy)", ylabel="model error ε_m' (TV)",
               title="model error against policy shift (updates annotated)")
        ax.legend(fontsize=7)
    ks = np.arange(len(adv["bound_by_k"]))
    ax_b.plot(ks, adv["bound_by_k"], "-")
    ax_b.axvline(adv["k_best"], c="C2", ls="--", label=f"k* = {adv['k_best']}")
    if "k_preset" in table:
        ax_b.axvline(table["k_preset"], c="C3", ls=":", label=f"preset k = {table['k_preset']}")
    ax_b.set(xlabel="rollout length k", ylabel="branched bound (return gap)", yscale="log",
             title=f"ε_m={adv['eps_m']:.3g}, slope={adv['slope']:.3g}, ε_π={adv['eps_pi']:.3g}, γ={adv['gamma']}")
    ax_b.legend(fontsize=7)
    if "rows" in table:
        ax = axes[2]
        c = table["k_best_vs_eps_pi"]
        ax.step(c["eps_pi"], c["k"], where="post")
        ax.axhline(table["k_preset"], c="C3", ls=":", label=f"preset k = {table['k_preset']}")
        ax.axvline(adv["eps_pi"], c="C2", ls="--", label=f"measured one-epoch ε_π = {adv['eps_pi']:.3g}")
        ax.set(xlabel="policy shift ε_π", ylabel="k* of the branched bound", title="advised rollout length")
        ax.legend(fontsize=7)
    return save_figure(fig, out)


@dataclass
class BoundsArgs:
    """`mbrlax diagnose bounds`: MBPO's return bounds and the rollout-length advice."""

    run: str | None = None
    """An MBPO run directory: measure ε_m, ε_π and dε_m'/dε_π on it (else evaluate the given numbers)."""
    k_max: int = 100
    """Longest rollout length considered."""
    snapshots: tuple[int, ...] | None = None
    """--run: SAC update counts at which the continued policy is measured (default 0, 1/16 … 1 epoch)."""
    env_steps: int = 5000
    """--run: fresh real transitions per policy for its model error."""
    rollout_batch: int | None = None
    """--run: branched rollouts per D_model refill (default: the run's rollout_batch_size)."""
    eps_m: float = 0.01
    """Without --run: the model error ε_m (TV) under the data-collecting policy."""
    slope: float = 0.01
    """Without --run: dε_m'/dε_π, the growth of the model error with policy shift."""
    eps_pi: float = 0.1
    """Without --run: the policy shift ε_π (TV)."""
    gamma: float = 0.99
    """Without --run: the discount (a run uses its own)."""
    r_max: float = 1.0
    """Without --run: the largest |reward| (a run uses the largest in its data)."""
    seed: int = 0
    out: str = "bounds"
    """Output prefix: writes OUT.json and OUT.png."""


def run_bounds(args: BoundsArgs) -> tuple[dict, Path, Path]:
    from mbrlax.diagnostics.compounding import write

    if args.run is not None:
        table, _, _ = measure_run(args.run, snapshots=list(args.snapshots) if args.snapshots else None,
                                  env_steps=args.env_steps, rollout_batch=args.rollout_batch, k_max=args.k_max,
                                  seed=args.seed)
    else:
        table = {"advice": advise(args.eps_m, args.slope, args.eps_pi, args.gamma, args.r_max, args.k_max)}
    js, png = write(table, args.out, lambda p: plot(table, p))
    return table, js, png


def print_table(table: dict) -> None:
    if "rows" in table:
        print(f"{table['run']} ({table['env']}, step {table['step']}, epoch {table['epoch']})")
        print(f"{'updates':>8} {'ε_π (TV)':>9} {'KL':>9} {'ε_m′ (TV)':>10} {'model MSE':>10} {'return':>8}")
        for r in table["rows"]:
            print(f"{r['updates']:>8} {r['eps_pi']:>9.4f} {r['kl']:>9.4f} {r['eps_m_prime']:>10.4f} "
                  f"{r['model_mse']:>10.4g} {r['episode_return_mean']:>8.1f}")
        f = table["fit_tv"]
        print(f"dε_m'/dε_π = {f['slope']:.4g} ± {f['slope_se']:.2g} (TV per TV); "
              f"MSE per KL: {table['fit_mse_vs_kl']['slope']:.4g}")
    a = table["advice"]
    print(f"ε_m = {a['eps_m']:.4g}, ε_π = {a['eps_pi']:.4g}, ε_m' = {a['eps_m_prime']:.4g}, γ = {a['gamma']}, "
          f"r_max = {a['r_max']:.3g}")
    print(f"Theorem 4.1 C = {a['theorem_4_1_bound']:.4g}; branched bound at k = 0, 1, k*: {a['bound_by_k'][0]:.4g}, "
          f"{a['bound_by_k'][1]:.4g}, {a['bound_by_k'][a['k_best']]:.4g}")
    print(f"advised k* = {a['k_best']} (closed form {a['k_closed_form']}); k > 0 pays when dε_m'/dε_π < "
          f"{a['break_even_slope']:.4g}" + (f"; the run's preset schedule has k = {table['k_preset']}"
                                           if "k_preset" in table else ""))
