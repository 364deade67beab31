"""Why backprop through time is fragile and the likelihood-ratio gradient is not: measured.

For a dynamics s_{t+1} = f(s_t, a_t) (a fitted model, or a pure-JAX system with known dynamics), a policy
a_t = μ_θ(o_t) + σ ε_t and the H-step return R_H = Σ_{t<H} γ^t r_t, this module measures

- the **pathwise** estimator g_i = ∇_θ R_H(ε_i) (backpropagation through the H steps, per sample i) and the
  **likelihood-ratio** (REINFORCE) estimator g_i = (R_H(ε_i) − b_i) Σ_t ∇_θ log π_θ(a_t|o_t) with a
  leave-one-out baseline b_i, both on the same N sampled trajectories: the norm of their mean, the
  per-sample variance tr Cov(g), and the variance of the n-sample mean for several n (empirically, from
  disjoint groups), as functions of H;
- the largest singular value of the Jacobian product ∏_{t<H} ∂s_{t+1}/∂s_t along a trajectory (jax.jacfwd),
  both closed-loop (through the policy, what BPTT multiplies) and open-loop (∂f/∂s at fixed actions). The
  running product is renormalized at every step and its scale kept in logs, so ρ^200 does not overflow.
  On `LinearQuadratic(spectral_radius=ρ)` the open-loop value is exactly σ_max(A^H) (tests check it).

`mbrlax diagnose gradients` runs it on a run directory of bptt / mbpg / metrpo (its fitted model and policy)
or on a toy system (`--system lq --spectral-radius 1.05`, `--system pendulum`), and writes a PNG and a JSON
table.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tyro


class System(NamedTuple):
    """A differentiable system in its own state space: step(state S, action A) -> state S, observe(state) ->
    obs D, reward(obs, action, next_obs) -> scalar, and sample_state(key) -> S. Actions are the agent's
    (the system clips them). All functions take one unbatched state."""

    step: Callable[[jax.Array, jax.Array], jax.Array]
    observe: Callable[[jax.Array], jax.Array]
    reward: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]
    sample_state: Callable[[jax.Array], jax.Array]
    name: str


class Policy(NamedTuple):
    """mean(params, obs D) -> action A; the Gaussian policy is mean + sigma·ε."""

    mean: Callable[[Any, jax.Array], jax.Array]
    params: Any
    sigma: float


def jax_env_system(env: Any, name: str) -> System:
    """A `mbrlax.envs.jax_envs.JaxEnv` with its true dynamics."""
    return System(env.dynamics, env.observe, env.reward, env.init_state, name)


def linear_policy(obs_dim: int, act_dim: int, key: jax.Array | None = None, scale: float = 0.0,
                  sigma: float = 0.3) -> Policy:
    """a = K o (+ σ ε), K = scale · N(0, 1/obs_dim) (scale 0: the zero policy, closed loop = open loop)."""
    k = (jnp.zeros((act_dim, obs_dim)) if key is None
         else scale * jax.random.normal(key, (act_dim, obs_dim)) / np.sqrt(obs_dim))
    return Policy(lambda p, o: o @ p["K"].T, {"K": k}, sigma)


# ---- Jacobian products ------------------------------------------------------------------------------


def trajectory(system: System, policy: Policy, s0: jax.Array, horizon: int) -> tuple[jax.Array, jax.Array]:
    """States (H+1)×S and mean actions H×A of the deterministic (mean) policy from s0."""

    def body(s, _):
        a = policy.mean(policy.params, system.observe(s))
        return system.step(s, a), (s, a)

    s_last, (states, actions) = jax.lax.scan(body, s0, None, length=horizon)
    return jnp.concatenate([states, s_last[None]]), actions


def jacobian_product_growth(system: System, policy: Policy, s0: jax.Array, horizon: int) -> dict[str, np.ndarray]:
    """log10 σ_max(∏_{t<H} J_t) for H = 1..horizon along the mean-policy trajectory from s0, with
    J_t = ∂s_{t+1}/∂s_t closed-loop (d/ds f(s, μ(o(s)))) and open-loop (∂f/∂s at the taken action)."""
    states, actions = trajectory(system, policy, s0, horizon)
    closed = jax.vmap(jax.jacfwd(lambda s: system.step(s, policy.mean(policy.params, system.observe(s)))))(states[:-1])
    opened = jax.vmap(jax.jacfwd(system.step, argnums=0))(states[:-1], actions)

    def growth(jacs: jax.Array) -> jax.Array:
        n = jacs.shape[-1]

        def body(carry, j):
            p, log_scale = carry
            p = j @ p
            s = jnp.maximum(jnp.linalg.norm(p), 1e-30)  # renormalize: keep the scale in logs
            p, log_scale = p / s, log_scale + jnp.log10(s)
            smax = jnp.linalg.svd(p, compute_uv=False)[0]
            return (p, log_scale), log_scale + jnp.log10(jnp.maximum(smax, 1e-30))

        _, out = jax.lax.scan(body, (jnp.eye(n, dtype=jacs.dtype), jnp.zeros((), jacs.dtype)), jacs)
        return out

    return {"closed_loop": np.asarray(jax.jit(growth)(closed)), "open_loop": np.asarray(jax.jit(growth)(opened))}


def analytic_lq_growth(A: np.ndarray, horizons: list[int]) -> list[float]:
    """log10 σ_max(A^H) in float64, for the linear system x' = A x + B u."""
    out = []
    for h in horizons:
        m = np.linalg.matrix_power(np.asarray(A, np.float64), h)
        out.append(float(np.log10(np.linalg.svd(m, compute_uv=False)[0])))
    return out


# ---- gradient estimators ----------------------------------------------------------------------------


def _sample_return(system: System, policy: Policy, params: Any, s0: jax.Array, eps: jax.Array, gamma: float,
                   stop_states: bool):
    """R_H and Σ_t log π(a_t|o_t) of one trajectory with noise eps H×A. `stop_states` cuts the gradient
    through the states (the likelihood-ratio estimator differentiates only log π)."""

    def body(s, e):
        o = system.observe(s)
        mu = policy.mean(params, jax.lax.stop_gradient(o) if stop_states else o)
        a = jax.lax.stop_gradient(mu + policy.sigma * e) if stop_states else mu + policy.sigma * e
        logp = (-0.5 * ((a - mu) / policy.sigma) ** 2).sum()  # up to a θ-independent constant
        s2 = system.step(s, a)
        r = system.reward(o, a, system.observe(s2))
        s2 = jax.lax.stop_gradient(s2) if stop_states else s2
        return s2, (r, logp)

    _, (r, logp) = jax.lax.scan(body, s0, eps)
    disc = gamma ** jnp.arange(r.shape[0], dtype=r.dtype)
    return (disc * r).sum(), logp.sum()


def per_sample_gradients(system: System, policy: Policy, s0: jax.Array, eps: jax.Array, gamma: float = 1.0):
    """Per-sample gradient vectors N×P of both estimators for start states N×S and noise N×H×A:
    (pathwise, likelihood_ratio, returns N)."""
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(policy.params)

    def pathwise(s, e):
        return jax.grad(lambda f: _sample_return(system, policy, unravel(f), s, e, gamma, False)[0])(flat)

    def score(s, e):
        ret, _ = _sample_return(system, policy, policy.params, s, e, gamma, True)
        g = jax.grad(lambda f: _sample_return(system, policy, unravel(f), s, e, gamma, True)[1])(flat)
        return g, ret

    g_path = jax.vmap(pathwise)(s0, eps)
    scores, rets = jax.vmap(score)(s0, eps)
    n = rets.shape[0]
    baseline = (rets.sum() - rets) / jnp.maximum(n - 1, 1)  # leave-one-out: keeps the estimator unbiased
    g_lr = scores * (rets - baseline)[:, None]
    return g_path, g_lr, rets


def estimator_stats(g: np.ndarray, sample_sizes: list[int] | None = None) -> dict[str, Any]:
    """Norm of the mean gradient, per-sample variance tr Cov(g), and the empirical variance of the n-sample
    mean (over disjoint groups of n) for each n in sample_sizes."""
    g = np.asarray(g, np.float64)
    mean = g.mean(0)
    var = float(((g - mean) ** 2).sum(1).mean())
    out: dict[str, Any] = {"mean_norm": float(np.linalg.norm(mean)), "variance": var,
                           "finite": bool(np.all(np.isfinite(g)))}
    if sample_sizes:
        vs = []
        for n in sample_sizes:
            groups = len(g) // n
            if groups < 2:
                vs.append(float("nan"))
                continue
            means = g[: groups * n].reshape(groups, n, -1).mean(1)
            vs.append(float(((means - mean) ** 2).sum(1).mean()))
        out["mean_variance_vs_samples"] = vs
    return out


def diagnose(system: System, policy: Policy, *, horizons: list[int], samples: int, sample_sizes: list[int],
             key: jax.Array, gamma: float = 1.0) -> dict[str, Any]:
    """The full table: for every H the statistics of both estimators (and their variance vs the number of
    samples), and the Jacobian-product growth along the mean trajectory from the first start state."""
    k_s, k_e = jax.random.split(key)
    s0 = jax.vmap(system.sample_state)(jax.random.split(k_s, samples))
    act_dim = np.shape(policy.mean(policy.params, system.observe(s0[0])))[-1]
    grads = jax.jit(per_sample_gradients, static_argnums=(0, 1))
    rows = []
    for h in horizons:
        eps = jax.random.normal(jax.random.fold_in(k_e, h), (samples, h, act_dim))
        g_path, g_lr, rets = grads(system, _hashable(policy), s0, eps, gamma)
        rows.append({
            "horizon": h,
            "return_mean": float(jnp.mean(rets)),
            "pathwise": estimator_stats(g_path, sample_sizes),
            "likelihood_ratio": estimator_stats(g_lr, sample_sizes),
        })
    growth = jacobian_product_growth(system, _hashable(policy), s0[0], max(horizons))
    return {
        "system": system.name,
        "samples": samples,
        "sample_sizes": sample_sizes,
        "sigma": policy.sigma,
        "gamma": gamma,
        "horizons": horizons,
        "rows": rows,
        "jacobian": {
            "horizons": horizons,
            "log10_sigma_max_closed_loop": [float(growth["closed_loop"][h - 1]) for h in horizons],
            "log10_sigma_max_open_loop": [float(growth["open_loop"][h - 1]) for h in horizons],
        },
    }


class _Static:
    """Wrap a policy so jit can treat it as static (hash by identity); params are closed over."""

    def __init__(self, p: Policy):
        self.p = p

    def __getattr__(self, name):
        return getattr(self.p, name)


def _hashable(policy: Policy) -> Any:
    return _Static(policy)


# ---- plotting ---------------------------------------------------------------------------------------


def plot(table: dict[str, Any], out: str | Path, analytic: list[float] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hs = [r["horizon"] for r in table["rows"]]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    for est, c in (("pathwise", "C0"), ("likelihood_ratio", "C1")):
        ax.plot(hs, [max(r[est]["mean_norm"], 1e-30) for r in table["rows"]], "-o", c=c, label=f"{est}: ‖mean‖")
        ax.plot(hs, [max(np.sqrt(r[est]["variance"]), 1e-30) for r in table["rows"]], "--", c=c,
                label=f"{est}: per-sample std")
    ax.set(xscale="log", yscale="log", xlabel="horizon H", title="gradient norm and spread")
    ax.legend(fontsize=7)
    ax = axes[1]
    ns = table["sample_sizes"]
    pick = table["rows"][len(table["rows"]) // 2]
    for est, c in (("pathwise", "C0"), ("likelihood_ratio", "C1")):
        ax.plot(ns, pick[est]["mean_variance_vs_samples"], "-o", c=c, label=est)
    ax.set(xscale="log", yscale="log", xlabel="samples n", title=f"variance of the n-sample mean (H={pick['horizon']})")
    ax.legend(fontsize=7)
    ax = axes[2]
    j = table["jacobian"]
    ax.plot(j["horizons"], j["log10_sigma_max_closed_loop"], "-o", label="closed loop (through π)")
    ax.plot(j["horizons"], j["log10_sigma_max_open_loop"], "-s", label="open loop ∂f/∂s")
    if analytic is not None:
        ax.plot(j["horizons"], analytic, "k:", lw=2, label="analytic σ_max(A^H)")
    ax.set(xscale="log", xlabel="horizon H", ylabel="log10 σ_max(∏ ∂s_{t+1}/∂s_t)", title="Jacobian product")
    ax.legend(fontsize=7)
    fig.suptitle(table["system"])
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---- systems from a run directory ---------------------------------------------------------------------


def run_system(run_dir: str | Path, sigma: float | None = None) -> tuple[System, Policy]:
    """The fitted model (mean of its elites) and the policy (its mean, with Gaussian noise σ) of a bptt,
    mbpg or metrpo run's last checkpoint. Start states are drawn from the run's real data."""
    from mbrlax import runs
    from mbrlax.agents.pathwise import model_step
    from mbrlax.algorithms import registry
    from mbrlax.algorithms.bptt import env_functions, make_model
    from mbrlax.envs.make import make

    name = runs.run_algorithm(run_dir)
    if name not in ("bptt", "mbpg", "metrpo"):
        raise ValueError(f"{run_dir} is a '{name}' run; `diagnose gradients --run` needs a bptt, mbpg or metrpo run "
                         f"(or use --system lq / pendulum)")
    module, _ = registry.get(name)
    saved = runs.load_config(run_dir)
    cfg = module.resolve(module.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    reward_fn, term_fn = env_functions(cfg.env, env, cfg.use_known_reward, cfg.env_kwargs)
    env.close()
    model = make_model(cfg, spec.obs_dim, spec.act_dim, learn_termination=term_fn is None)
    payload = runs.load_checkpoint(run_dir)
    model_state = runs.check_like("model", payload["model"], model.init(jax.random.key(0)))
    if name == "bptt":
        _, agent = module._components(cfg, env, spec.obs_dim, spec.act_dim)
        state = runs.check_like("agent", payload["agent"], agent.init(jax.random.key(0)))
        mean = agent.mean_action
        sig = cfg.action_noise if sigma is None else sigma
    else:
        agent = module.make_agent(cfg, spec.obs_dim, spec.act_dim, cfg.pg) if name == "mbpg" else \
            module.make_agent(cfg, spec.obs_dim, spec.act_dim)
        state = runs.check_like("agent", payload["agent"], agent.init(jax.random.key(0)))
        mean = lambda p, o: agent.policy_net.apply(p, o)[0]  # noqa: E731
        sig = float(np.exp(np.asarray(state.policy["params"]["log_std"])).mean()) if sigma is None else sigma
    starts = jnp.asarray(payload["buffer"]["data"]["obs"])

    def step(s, a):
        nxt, _, _ = model_step(model, model_state, s[None], jnp.clip(a, -1, 1)[None], jax.random.key(0), mode="mean")
        return nxt[0]

    def reward(o, a, o2):
        if reward_fn is not None:
            return reward_fn(o[None], a[None], o2[None])[0]
        _, r, _ = model_step(model, model_state, o[None], jnp.clip(a, -1, 1)[None], jax.random.key(0), mode="mean")
        return r[0]

    system = System(step, lambda s: s, reward, lambda k: starts[jax.random.randint(k, (), 0, starts.shape[0])],
                    f"{name} model of {cfg.env} ({run_dir})")
    return system, Policy(lambda p, o: mean(p, o[None])[0], state.policy, sig)


# ---- CLI -------------------------------------------------------------------------------------------------


@dataclass
class GradientArgs:
    """`mbrlax diagnose gradients`: pathwise vs likelihood-ratio gradients and Jacobian-product growth."""

    run: str | None = None
    """A bptt / mbpg / metrpo run directory: diagnose its fitted model and policy (else --system)."""
    system: str = "lq"
    """Toy system with known dynamics when no --run: 'lq' (LinearQuadratic) or 'pendulum'."""
    spectral_radius: float = 1.05
    """ρ of the LQ system's A (its largest |eigenvalue|)."""
    policy_scale: float = 0.0
    """Toy systems: the linear policy K = scale·N(0, 1/D) (0: the zero policy)."""
    sigma: float | None = None
    """Policy noise σ (default: 0.3 for toy systems, the run's own σ for a run)."""
    horizons: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200)
    """Horizons H at which to measure."""
    samples: int = 256
    """Sampled trajectories per horizon."""
    sample_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    """n for the variance of the n-sample mean."""
    gamma: float = 1.0
    """Discount of the H-step return."""
    seed: int = 0
    out: str = "gradient_diagnostics"
    """Output prefix: writes OUT.json and OUT.png."""


def toy_system(name: str, spectral_radius: float) -> tuple[System, Any]:
    from mbrlax.envs import jax_envs

    env: jax_envs.JaxEnv
    if name == "lq":
        env = jax_envs.LinearQuadratic(spectral_radius=spectral_radius)
        return jax_env_system(env, f"LinearQuadratic(spectral_radius={spectral_radius})"), env
    if name == "pendulum":
        env = jax_envs.Pendulum()
        return jax_env_system(env, "Pendulum (true dynamics)"), env
    raise ValueError(f"unknown --system {name!r}; choose 'lq' or 'pendulum' (or give --run RUN_DIR)")


def run_gradients(args: GradientArgs) -> tuple[dict, Path, Path]:
    if any(h < 1 for h in args.horizons) or args.samples < 2:
        raise ValueError("horizons must be ≥ 1 and samples ≥ 2")
    analytic = None
    if args.run is not None:
        system, policy = run_system(args.run, args.sigma)
    else:
        system, env = toy_system(args.system, args.spectral_radius)
        policy = linear_policy(env.obs_dim, env.act_dim, jax.random.key(args.seed + 1), args.policy_scale,
                               0.3 if args.sigma is None else args.sigma)
        if args.system == "lq":
            analytic = analytic_lq_growth(env.A, list(args.horizons))
    table = diagnose(system, policy, horizons=list(args.horizons), samples=args.samples,
                     sample_sizes=list(args.sample_sizes), key=jax.random.key(args.seed), gamma=args.gamma)
    if analytic is not None:
        table["jacobian"]["analytic_log10_sigma_max_A_power_H"] = analytic
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Appended, not with_suffix: a prefix like "lq_rho1.05" must not lose its ".05".
    js = out.parent / f"{out.name}.json"
    js.write_text(json.dumps(table, indent=2) + "\n")
    png = plot(table, out.parent / f"{out.name}.png", analytic)
    return table, js, png


def print_table(table: dict) -> None:
    print(f"{table['system']}: σ={table['sigma']}, {table['samples']} samples")
    print(f"{'H':>5} {'path ‖ḡ‖':>11} {'path var':>11} {'LR ‖ḡ‖':>11} {'LR var':>11} {'log10 σmax J':>13}")
    for r, j in zip(table["rows"], table["jacobian"]["log10_sigma_max_closed_loop"]):
        p, l = r["pathwise"], r["likelihood_ratio"]
        print(f"{r['horizon']:>5} {p['mean_norm']:>11.3g} {p['variance']:>11.3g} {l['mean_norm']:>11.3g} "
              f"{l['variance']:>11.3g} {j:>13.3f}")


def diagnose_command(argv: list[str]) -> int:
    """`mbrlax diagnose gradients|compounding|bounds|calibration [options]`."""
    import importlib

    # subcommand -> (module, its tyro Args dataclass, the function that runs it)
    commands = {
        "gradients": ("mbrlax.diagnostics.gradients", "GradientArgs", "run_gradients"),
        "compounding": ("mbrlax.diagnostics.compounding", "CompoundingArgs", "run_compounding"),
        "bounds": ("mbrlax.diagnostics.bounds", "BoundsArgs", "run_bounds"),
        "calibration": ("mbrlax.diagnostics.calibration", "CalibrationArgs", "run_calibration"),
    }
    if not argv or argv[0] not in commands:
        print(f"usage: mbrlax diagnose {{{'|'.join(commands)}}} [options]; "
              f"`mbrlax diagnose SUBCOMMAND --help` lists its options", file=sys.stderr)
        return 2
    module, args_cls, run = commands[argv[0]]
    mod = importlib.import_module(module)
    args = tyro.cli(getattr(mod, args_cls), args=argv[1:], prog=f"mbrlax diagnose {argv[0]}")
    table, js, png = getattr(mod, run)(args)
    mod.print_table(table)
    print(f"wrote {js} and {png}")
    return 0
