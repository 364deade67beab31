"""The lecture's theory made measurable (issue 17 part 2): compounding error, MBPO's bounds with a
rollout-length advisor, and ensemble calibration.

(a) compounding error, open vs closed loop, with the growth exponent of k-step and summed errors:
    the derivation's linear system with a biased model (exact), a pendulum ensemble fitted on random data
    against the true pendulum, and the carried Hopper MBPO run's model and policy against MuJoCo.
(b) on the Hopper run (50,000 steps): policies after 0 … 20,000 further SAC updates of its own MBPO loop
    (one epoch), their shift ε_π from the checkpoint policy, the model error ε_m' on fresh real data of each,
    dε_m'/dε_π, the branched bound and the advised k*, against the preset schedule's k.
(c) the ensembles' NLL and interval coverage on held-out data: Hopper on the fresh data of every policy of (b),
    the pendulum model on held-out random transitions and on the (shifted) damping-policy trajectories.

    nice -n 10 python benchmarks/theory_diagnostics.py [--run benchmarks/carry/hopper-mbpo-s0]
    python benchmarks/theory_diagnostics.py --quick --env-steps 300    # smoke test, writes to a temporary dir

The carried run is copied to a temporary directory first (carry/ is read-only). Writes
benchmarks/results/theory_diagnostics.json and theory_diagnostics.png, and the per-part tables and plots in
benchmarks/results/theory_diagnostics/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CARRY, RESULTS, machine  # noqa: E402

SNAPSHOTS = [0, 20, 100, 400, 1200, 2500, 5000, 10000, 20000]  # SAC updates; 20,000 = one Hopper epoch


def pendulum_calibration(fitted: tuple, seed: int) -> dict:
    """The pendulum ensemble of the compounding part on held-out random transitions (its training distribution),
    and on the damping feedback's trajectories (states the random data covers less densely)."""
    import jax.numpy as jnp

    from mbrlax.diagnostics import compounding as c
    from mbrlax.diagnostics.calibration import ensemble_calibration
    from mbrlax.types import Transition

    env, model, state, _ = fitted
    k = jax.random.key(seed + 100)
    s = jax.vmap(env.init_state)(jax.random.split(k, 5000)) * jnp.array([1.0, 6.0])
    a = jax.random.uniform(jax.random.fold_in(k, 1), (5000, 1), minval=-1.0, maxval=1.0)
    s2 = env.dynamics(s, a)

    def transitions(s, a, s2):
        o, o2 = env.observe(s), env.observe(s2)
        return Transition(np.asarray(o), np.asarray(a), np.asarray(env.reward(o, a, o2)), np.asarray(o2),
                          np.zeros(len(o), np.float32))

    s0 = jax.vmap(env.init_state)(jax.random.split(jax.random.fold_in(k, 2), 64))
    # the damping feedback of pendulum_experiment, here on the state (θ, θ̇): its trajectories as transitions
    policy = lambda s: jnp.clip(-0.5 * s[..., 1:2], -1.0, 1.0)  # noqa: E731
    obs, act, _ = c.system_rollout(env.dynamics, lambda x: x, lambda o, a, o2: o[..., 0], s0, 100, policy)
    traj = transitions(obs[:, :-1].reshape(-1, 2), act.reshape(-1, 1), obs[:, 1:].reshape(-1, 2))
    return {"random_holdout": ensemble_calibration(model, state, transitions(s, a, s2)),
            "damping_trajectories": ensemble_calibration(model, state, traj)}


def main() -> None:
    from mbrlax.diagnostics import bounds, calibration, compounding

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(CARRY / "hopper-mbpo-s0"), help="an MBPO Hopper run (copied first)")
    ap.add_argument("--env-steps", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smoke test: tiny sizes, results to a temporary dir")
    args = ap.parse_args()
    snapshots, starts, horizon = (([0, 20, 100], 8, 20) if args.quick else (SNAPSHOTS, 128, 100))
    results = Path(tempfile.mkdtemp(prefix="theory_quick_")) if args.quick else RESULTS
    out_dir = results / "theory_diagnostics"
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine(), "run": args.run}
    times: dict[str, float] = {}
    tmp = Path(tempfile.mkdtemp(prefix="theory_diagnostics_"))
    run_dir = tmp / Path(args.run).name
    shutil.copytree(args.run, run_dir)  # never read a carried run in place
    try:
        # (a) compounding error
        t0 = time.perf_counter()
        key = jax.random.key(args.seed)
        pendulum = compounding.fit_pendulum_model(2000, jax.random.split(key)[0])  # pendulum_experiment's key
        comp = {
            "lq": compounding.lq_experiment(0.01, 0.5, 256, 16, key),
            "pendulum": compounding.pendulum_experiment(2000, 256, 64, key, fitted=pendulum),
            "hopper": compounding.run_experiment(run_dir, horizon, starts, args.seed),
        }
        comp["hopper"]["system"] = comp["hopper"]["system"].replace(str(run_dir), Path(args.run).name)
        for name, table in comp.items():
            compounding.print_table(table)
            compounding.write(table, str(out_dir / f"compounding_{name}"), lambda p, t=table: compounding.plot([t], p))
        compounding.plot(list(comp.values()), out_dir / "compounding.png")
        times["compounding"] = time.perf_counter() - t0

        # (b) bounds and the advisor on the Hopper run
        t0 = time.perf_counter()
        table, datasets, run = bounds.measure_run(run_dir, snapshots=snapshots, env_steps=args.env_steps,
                                                  rollout_batch=1000 if args.quick else None, seed=args.seed)
        table["run"] = Path(args.run).name
        a = table["advice"]
        # the notes' reading: only the growth of the error with shift counts (ε_m taken as 0)
        table["advice_without_eps_m"] = bounds.advise(0.0, a["slope"], a["eps_pi"], a["gamma"], a["r_max"])
        del table["advice_without_eps_m"]["bound_by_k"]
        bounds.print_table(table)
        compounding.write(table, str(out_dir / "bounds"), lambda p: bounds.plot(table, p))
        times["bounds"] = time.perf_counter() - t0

        # (c) calibration on held-out data
        t0 = time.perf_counter()
        cal = {"hopper": [{"updates": r["updates"], "eps_pi": r["eps_pi"],
                           **calibration.ensemble_calibration(run.model, run.model_state, d)}
                          for r, d in zip(table["rows"], datasets)],
               "pendulum": pendulum_calibration(pendulum, args.seed)}
        for name, t in (("hopper π_0", cal["hopper"][0]), ("pendulum random", cal["pendulum"]["random_holdout"]),
                        ("pendulum damping", cal["pendulum"]["damping_trajectories"])):
            print(name, end=": ")
            calibration.print_table(t)
        calibration.plot({"Hopper, π_0's fresh data": cal["hopper"][0],
                          f"Hopper, after {snapshots[-1]} updates": cal["hopper"][-1],
                          "Pendulum, random holdout": cal["pendulum"]["random_holdout"],
                          "Pendulum, damping trajectories": cal["pendulum"]["damping_trajectories"]},
                         out_dir / "calibration.png")
        times["calibration"] = time.perf_counter() - t0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    for t in comp.values():  # the full per-step curves stay in the per-system files
        for loop in ("open_loop", "closed_loop"):
            t[loop].pop("curves")
        t.pop("analytic", None)
    result.update(compounding=comp, bounds=table, calibration=cal, seconds=times)
    (results / "theory_diagnostics.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    summary_plot(comp, table, cal, results / "theory_diagnostics.png")
    print(f"wrote {results / 'theory_diagnostics.json'} and .png")
    print({k: round(v) for k, v in times.items()})


def summary_plot(comp: dict, table: dict, cal: dict, out: Path) -> None:
    from mbrlax.diagnostics.compounding import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (name, t) in zip(axes[0], comp.items()):
        for loop, c in (("open_loop", "C3"), ("closed_loop", "C0")):
            s = t[loop]
            ax.plot(s["horizons"], s["cumulative_error"], "-o", c=c, ms=4,
                    label=f"{loop.replace('_', ' ')} Σ‖e‖: p = {s['cumulative_error_exponent']:.2f}")
            ax.plot(s["horizons"], s["state_error"], "--", c=c, lw=1,
                    label=f"{loop.replace('_', ' ')} ‖e_k‖: p = {s['state_error_exponent']:.2f}")
        ax.set(xscale="log", yscale="log", xlabel="horizon k", title=f"(a) {name}: compounding error")
        ax.legend(fontsize=7)
    ax = axes[1, 0]
    x = [r["eps_pi"] for r in table["rows"]]
    ax.errorbar(x, [r["eps_m_prime"] for r in table["rows"]], [2 * r["eps_m_prime_se"] for r in table["rows"]],
                fmt="o")
    f = table["fit_tv"]
    xs = np.linspace(0, max(x) * 1.05, 20)
    ax.plot(xs, f["intercept"] + f["slope"] * xs, "k--", label=f"dε_m'/dε_π = {f['slope']:.3g} ± {f['slope_se']:.2g}")
    ax.set(xlabel="policy shift ε_π (TV)", ylabel="model error ε_m' (TV)", title="(b) Hopper: model error vs shift")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    a = table["advice"]
    ax.plot(range(len(a["bound_by_k"])), a["bound_by_k"])
    ax.axvline(a["k_best"], c="C2", ls="--", label=f"advised k* = {a['k_best']}")
    ax.axvline(table["k_preset"], c="C3", ls=":", label=f"preset k = {table['k_preset']} (epoch {table['epoch']})")
    ax.set(xlabel="rollout length k", ylabel="branched bound", yscale="log", title="(b) Hopper: branched bound")
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    for i, (name, t) in enumerate((("Hopper π_0", cal["hopper"][0]),
                                   ("Pendulum random", cal["pendulum"]["random_holdout"]),
                                   ("Pendulum damping", cal["pendulum"]["damping_trajectories"]))):
        for kind, ls in (("members", "--"), ("mixture", "-")):
            s = t[kind]
            ax.plot(s["levels"], s["coverage"], ls + "o", c=f"C{i}", ms=3, label=f"{name} {kind} NLL {s['nll']:.2f}")
    ax.set(xlabel="nominal coverage", ylabel="observed coverage", xlim=(0.4, 1), ylim=(0, 1),
           title="(c) calibration on held-out data")
    ax.legend(fontsize=6)
    save_figure(fig, out)


if __name__ == "__main__":
    main()
