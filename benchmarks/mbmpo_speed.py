"""Where an MB-MPO meta step's time goes, against the compute floor, at the paper's HalfCheetah settings.

One meta step (agents/maml.py `MAML.meta_step`): imagined trajectories of the pre-update policy in every task
(20 tasks × 50 rollouts × 200 steps through the 5 × 512×512 ensemble), the inner step, trajectories of the
adapted policies, one outer TRPO step through the inner step (a gradient, 10 conjugate-gradient iterations of
the Fisher-vector product, a backtracking line search). Each part is jitted alone and timed (median of
`--repeats` calls after a warm-up), and the whole meta step.

The floor of a part is its FLOPs divided by the machine's matmul rate (`sac_speed.gemm_rate`, 1024² chained).
FLOPs come from XLA's cost analysis of loop-free functions: the model step and policy passes once, multiplied
by the trip counts of the scans (XLA counts a loop body once). The model is untrained (the cost does not depend
on its weights; HalfCheetah has no terminations).

    python benchmarks/mbmpo_speed.py [--repeats 5]

Writes benchmarks/results/mbmpo_speed.json and .png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_json, xla_flops  # noqa: E402
from sac_speed import gemm_rate  # noqa: E402

from mbrlax.agents import maml as M  # noqa: E402
from mbrlax.algorithms import mbmpo  # noqa: E402
from mbrlax.envs.make import make  # noqa: E402


def timed(fn, *args, repeats: int) -> float:
    """Median seconds of fn(*args) after one warm-up call (the compilation)."""
    jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cfg = mbmpo.resolve(mbmpo.Config(env="HalfCheetah-v5", env_kwargs={"max_episode_steps": 200}))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    model, agent = mbmpo._components(cfg, env, spec)
    env.close()
    d, a = spec.obs_dim, spec.act_dim
    ms = model.init(jax.random.key(0))
    dyn = (ms, jnp.full((d,), -1e3), jnp.full((d,), 1e3))
    pool = jnp.asarray(np.random.default_rng(0).normal(size=(cfg.start_pool, d)) * 0.1, jnp.float32)
    params = agent.init(jax.random.key(1)).policy
    key = jax.random.key(2)
    starts = agent._starts(pool, key)
    n_steps = agent.tasks * agent.rollouts * agent.horizon  # imagined transitions per sampling

    imagine_pre = jax.jit(lambda p, k: agent.imagine(p, False, dyn, starts, k))
    adapt = jax.jit(lambda p, b: M.adapt_all(agent.policy_net, p, b, agent.inner_lr, agent.inner_type))
    imagine_post = jax.jit(lambda p, k: agent.imagine(p, True, dyn, starts, k))
    pre, _ = imagine_pre(params, key)
    adapted = adapt(params, pre)
    post, _ = imagine_post(adapted, key)
    flat, unravel = ravel_pytree(params)
    margs = (pre, post, agent.inner_lr, agent.inner_type)

    def evaluate(f):
        return M.meta_objective_and_kl(agent.policy_net, unravel(f), *margs)

    def fvp_product(f, v):
        return M.meta_fvp(agent.policy_net, unravel(f), *margs)(v)

    def fvp_twice(f, v):  # one build, two products: the difference to fvp_product is one product
        fvp = M.meta_fvp(agent.policy_net, unravel(f), *margs)
        return fvp(fvp(v))

    value_and_grad = jax.value_and_grad(lambda f: evaluate(f)[0])
    outer = jax.jit(agent.outer_step)
    _, info = outer(params, pre, post)
    backtracks = float(info["outer/backtracks"]) + 1  # evaluations in the line search

    # FLOPs of loop-free pieces, times their trip counts
    group = agent.tasks // model.ensemble_size * agent.rollouts
    obs_k, act_k = jnp.zeros((model.ensemble_size, group, d)), jnp.zeros((model.ensemble_size, group, a))
    f_model_step = xla_flops(lambda s, o, u: model.predict(s, o, u), ms, obs_k, act_k)
    f_policy_fwd = xla_flops(lambda p, o: agent.policy_net.apply(p, o), params, pre.obs)
    f_vg = xla_flops(value_and_grad, flat)
    f_eval = xla_flops(evaluate, flat)
    f_fvp = xla_flops(fvp_product, flat, flat)  # builds both linearizations and applies them once
    f_product = xla_flops(fvp_twice, flat, flat) - f_fvp
    f_outer = f_vg + f_fvp + agent.cg_iters * f_product + backtracks * f_eval
    f_imagine = agent.horizon * f_model_step + f_policy_fwd
    rate = gemm_rate(1024, 1024, 1024, 10) * 1e9

    parts = {
        "imagine pre-update (model steps + policy)": (timed(imagine_pre, params, key, repeats=args.repeats),
                                                      f_imagine),
        "inner step (adapt_all)": (timed(adapt, params, pre, repeats=args.repeats), None),
        "imagine adapted": (timed(imagine_post, adapted, key, repeats=args.repeats), f_imagine),
        "outer TRPO step": (timed(outer, params, pre, post, repeats=args.repeats), f_outer),
    }
    detail = {
        "outer: value_and_grad of M": timed(jax.jit(value_and_grad), flat, repeats=args.repeats),
        "outer: build F + one product": timed(jax.jit(fvp_product), flat, flat, repeats=args.repeats),
        "outer: one evaluation (M, KL)": timed(jax.jit(evaluate), flat, repeats=args.repeats),
        "policy forward on one sampling's states": timed(jax.jit(lambda p, o: agent.policy_net.apply(p, o)[0]),
                                                         params, pre.obs, repeats=args.repeats),
    }
    step = jax.jit(lambda p, k: agent.meta_step(p, dyn, pool, k))
    whole = timed(step, params, key, repeats=args.repeats)

    out = {
        "machine": machine(), "settings": {k: getattr(cfg, k) for k in (
            "ensemble_size", "model_hidden", "meta_batch_size", "rollouts", "horizon", "meta_steps", "cg_iters")},
        "imagined_transitions_per_sampling": n_steps, "gemm_gflops": rate / 1e9,
        "flops": {"model_step": f_model_step, "policy_forward_per_sampling": f_policy_fwd,
                  "value_and_grad": f_vg, "evaluate": f_eval, "fvp_build_and_product": f_fvp,
                  "fvp_product": f_product},
        "parts": {name: {"ms": t * 1e3, "flops": f, "floor_ms": f / rate * 1e3 if f else None,
                         "fraction_of_floor": f / rate / t if f else None} for name, (t, f) in parts.items()},
        "outer_detail_ms": {k: v * 1e3 for k, v in detail.items()},
        "outer_line_search_evaluations": backtracks,
        "meta_step_ms": whole * 1e3, "meta_steps_per_iteration": cfg.meta_steps,
        "note": "The imagination is matmul work (512×512 layers, 200 rows per member per step); the outer step is "
                "many passes of the 17→32→32→6 tanh policy over 200,000 states, whose matmuls are too thin "
                "(k = 17 or 32) to run at the GEMM rate, so its floor by FLOPs is far below what it takes.",
    }
    write_json("mbmpo_speed.json", out)
    for name, r in out["parts"].items():
        print(f"{name:44s} {r['ms']:8.1f} ms   floor {r['floor_ms'] or float('nan'):7.1f} ms")
    print(f"meta step {whole * 1e3:.0f} ms ({cfg.meta_steps} per iteration: {whole * cfg.meta_steps:.0f} s)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    names = list(out["parts"])
    ax.barh(names, [out["parts"][n]["ms"] for n in names], color="tab:blue", label="measured")
    ax.barh(names, [out["parts"][n]["floor_ms"] or 0 for n in names], color="gray", height=0.4,
            label=f"floor (FLOPs / {rate / 1e9:.0f} GFLOP/s)")
    ax.set_xlabel("ms per meta step")
    ax.set_title(f"MB-MPO meta step on HalfCheetah shapes: {whole * 1e3:.0f} ms")
    ax.invert_yaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "mbmpo_speed.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
