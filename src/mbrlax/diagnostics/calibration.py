"""Ensemble calibration: negative log-likelihood and interval coverage on held-out data.

A probabilistic model is calibrated when its predicted Gaussians describe its own errors: the held-out
targets fall inside the central p-interval μ ± z_p σ (z_p = Φ⁻¹((1+p)/2)) a fraction p of the time, and the
mean squared standardized error E[(y−μ)²/σ²] is 1. The Gaussian negative log-likelihood
    NLL = ½ log(2πσ²) + (y−μ)²/(2σ²)
then averages to the entropy ½ log(2πeσ²) of the true noise; an over-confident model (σ too small) has
coverage below p and a larger NLL, an under-confident one coverage above p.

For an `EnsembleModel` the targets are (next_obs, reward), divided by the model's output normalizer std so
that features of different scales weigh alike (NLL per feature, in normalized units). Two predictive
distributions are scored: each elite member's own Gaussian (averaged over the elites), and the elites'
mixture (1/K)Σ_e N(μ_e, σ_e²) — its exact NLL, and its moment-matched Gaussian (mean μ̄, variance
mean σ_e² + var μ_e: aleatoric plus epistemic) for the intervals.

`mbrlax diagnose calibration --run RUN_DIR` scores an MBPO run's model on fresh transitions of its policy
in the real environment (data the model has never seen).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LEVELS = (0.5, 0.6827, 0.9, 0.9545, 0.99)


def z_value(level: float) -> float:
    """z_p with P(|Z| ≤ z_p) = p for a standard normal Z."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"a coverage level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf((1.0 + level) / 2.0)


def gaussian_entropy(var: np.ndarray | float) -> np.ndarray:
    """½ log(2πe σ²): the NLL a calibrated Gaussian prediction averages to."""
    return 0.5 * np.log(2 * np.pi * np.e * np.asarray(var, np.float64))


def gaussian_nll(y: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Elementwise ½ log(2πσ²) + (y−μ)²/(2σ²)."""
    y, mean, var = (np.asarray(x, np.float64) for x in (y, mean, var))
    return 0.5 * (np.log(2 * np.pi * var) + (y - mean) ** 2 / var)


def coverage(y: np.ndarray, mean: np.ndarray, var: np.ndarray, levels=LEVELS) -> list[float]:
    """For each level p, the fraction of elements inside the central interval μ ± z_p σ."""
    z = np.abs(np.asarray(y, np.float64) - mean) / np.sqrt(np.asarray(var, np.float64))
    return [float(np.mean(z <= z_value(p))) for p in levels]


def score(y: np.ndarray, mean: np.ndarray, var: np.ndarray, levels=LEVELS) -> dict[str, Any]:
    """NLL per feature (mean, and per feature), coverage at `levels`, the mean |coverage − level| and the
    mean squared standardized error, for targets y B×D and a Gaussian prediction (mean, var) B×D."""
    y, mean, var = (np.asarray(x, np.float64) for x in (y, mean, var))
    nll = gaussian_nll(y, mean, var)
    cov = coverage(y, mean, var, levels)
    return {
        "nll": float(nll.mean()),
        "nll_by_feature": [float(v) for v in nll.reshape(-1, nll.shape[-1]).mean(0)],
        "levels": list(levels),
        "coverage": cov,
        "coverage_error": float(np.mean(np.abs(np.asarray(cov) - np.asarray(levels)))),
        "standardized_sq_error": float(np.mean((y - mean) ** 2 / var)),
    }


def mixture_moments(means: np.ndarray, variances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the equal-weight mixture of the Gaussians (means, variances) E×B×D:
    μ̄ = mean_e μ_e, σ̄² = mean_e σ_e² + var_e μ_e (law of total variance)."""
    means, variances = np.asarray(means, np.float64), np.asarray(variances, np.float64)
    return means.mean(0), variances.mean(0) + means.var(0)


def mixture_nll(y: np.ndarray, means: np.ndarray, variances: np.ndarray) -> float:
    """−log (1/E) Σ_e N(y; μ_e, diag σ_e²) averaged over the batch, divided by D (per feature)."""
    logp = -gaussian_nll(y[None], means, variances).sum(-1)  # E×B
    m = logp.max(0)
    lse = m + np.log(np.exp(logp - m).mean(0))
    return float(-lse.mean() / np.shape(y)[-1])


def ensemble_score(means: np.ndarray, variances: np.ndarray, y: np.ndarray, levels=LEVELS) -> dict[str, Any]:
    """The two scores of an ensemble's prediction E×B×D for targets B×D: `members` (each member's own
    Gaussian, averaged over members) and `mixture` (the moment-matched mixture, plus its exact NLL)."""
    per = [score(y, m, v, levels) for m, v in zip(means, variances)]
    members = {k: (float(np.mean([p[k] for p in per])) if np.isscalar(per[0][k]) else
                   [float(x) for x in np.mean([p[k] for p in per], 0)]) for k in per[0]}
    mixture = score(y, *mixture_moments(means, variances), levels)
    mixture["nll_exact"] = mixture_nll(y, means, variances)
    return {"members": members, "mixture": mixture}


def ensemble_calibration(model: Any, state: Any, data: Any, levels=LEVELS, chunk: int = 8192) -> dict[str, Any]:
    """`ensemble_score` of an `EnsembleModel`'s elites on transitions `data` (obs, action, reward, next_obs),
    in the model's normalized target units (each feature divided by its output-normalizer std)."""
    obs, act = np.asarray(data.obs, np.float32), np.asarray(data.action, np.float32)
    means, variances = [], []
    for i in range(0, len(obs), chunk):  # bounded memory: E×chunk×D at a time
        pred = model.predict(state, jnp.asarray(obs[i:i + chunk]), jnp.asarray(act[i:i + chunk]))
        means.append(np.concatenate([pred.next_obs_mean, pred.reward_mean[..., None]], -1))
        variances.append(np.concatenate([pred.next_obs_var, pred.reward_var[..., None]], -1))
    elites = np.asarray(state.elites)
    scale = np.asarray(state.out_norm.std, np.float64)
    means = np.concatenate(means, 1)[elites] / scale
    variances = np.concatenate(variances, 1)[elites] / scale**2
    y = np.concatenate([np.asarray(data.next_obs), np.asarray(data.reward)[:, None]], -1) / scale
    return {"transitions": int(len(obs)), **ensemble_score(means, variances, y, levels)}


# ---- plot and CLI -----------------------------------------------------------------------------------


def plot(tables: dict[str, dict[str, Any]], out: str | Path) -> Path:
    """Reliability diagram: observed against nominal coverage, for each named table (members and mixture)."""
    from mbrlax.diagnostics.compounding import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="calibrated")
    for i, (name, t) in enumerate(tables.items()):
        for kind, ls in (("members", "--"), ("mixture", "-")):
            s = t[kind]
            ax.plot(s["levels"], s["coverage"], ls + "o", c=f"C{i}", ms=4,
                    label=f"{name} {kind} (NLL {s['nll']:.2f})")
    ax.set(xlabel="nominal coverage p", ylabel="observed coverage", xlim=(0.4, 1), ylim=(0, 1),
           title="ensemble calibration on held-out data")
    ax.legend(fontsize=6)
    return save_figure(fig, out)


@dataclass
class CalibrationArgs:
    """`mbrlax diagnose calibration`: an MBPO run's ensemble scored on fresh real transitions."""

    run: str
    """An MBPO run directory."""
    env_steps: int = 5000
    """Fresh transitions collected with the run's (stochastic) policy: the held-out data."""
    levels: tuple[float, ...] = LEVELS
    """Nominal coverage levels p of the central intervals."""
    seed: int = 0
    out: str = "calibration"
    """Output prefix: writes OUT.json and OUT.png."""


def run_calibration(args: CalibrationArgs) -> tuple[dict, Path, Path]:
    from mbrlax.diagnostics.bounds import collect, load_mbpo_run, stochastic_policy
    from mbrlax.diagnostics.compounding import write
    from mbrlax.envs.make import make

    run = load_mbpo_run(args.run)
    env, _ = make(run.cfg.env, **run.cfg.env_kwargs)
    with env:
        data, _ = collect(env, stochastic_policy(run.sac, run.sac_state.actor), args.env_steps,
                          seed=10_000 + args.seed, key=jax.random.key(args.seed))
    table = {"run": str(args.run), "step": run.step,
             **ensemble_calibration(run.model, run.model_state, data, tuple(args.levels))}
    js, png = write(table, args.out, lambda p: plot({Path(args.run).name: table}, p))
    return table, js, png


def print_table(table: dict) -> None:
    print(f"{table.get('run', '')}: {table['transitions']} held-out transitions")
    for kind in ("members", "mixture"):
        s = table[kind]
        cov = ", ".join(f"{p:.1%}→{c:.1%}" for p, c in zip(s["levels"], s["coverage"]))
        print(f"  {kind:>8}: NLL/feature {s['nll']:.3f}, E[z²] {s['standardized_sq_error']:.2f}, coverage {cov}")
