"""`mbrlax diagnose gradients` on the linear-quadratic system for several spectral radii, on the true pendulum,
and on a fitted Pendulum-v1 model with its learned policy (a bptt run of benchmarks/policy_through_model.py).

For each system: the norm of the mean and the per-sample variance of the pathwise (BPTT) and
likelihood-ratio (REINFORCE) gradient estimators for H = 1 … 200, the variance of the n-sample mean, and
log10 σ_max of the Jacobian product ∏ ∂s_{t+1}/∂s_t; on the LQ systems also the analytic log10 σ_max(A^H)
and the largest deviation from it.

    nice -n 10 python benchmarks/gradient_diagnostics.py [--samples 128] [--run benchmarks/runs/ptm-bptt-s0]

Writes benchmarks/results/gradient_diagnostics.json and gradient_diagnostics.png (the per-system tables and
plots go to benchmarks/results/gradient_diagnostics/).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, machine, write_json  # noqa: E402

from mbrlax import checkpoint  # noqa: E402

RADII = (0.8, 0.95, 1.0, 1.05, 1.1)
HORIZONS = (1, 2, 5, 10, 20, 50, 100, 200)


def main() -> None:
    from mbrlax.diagnostics.gradients import GradientArgs, run_gradients

    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--run", default=str(RUNS / "ptm-bptt-s0"), help="a bptt/mbpg/metrpo run on Pendulum-v1")
    args = ap.parse_args()
    out_dir = RESULTS / "gradient_diagnostics"
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {"machine": machine(), "samples": args.samples, "horizons": list(HORIZONS), "systems": {}}
    common = dict(horizons=HORIZONS, samples=args.samples, sample_sizes=(1, 2, 4, 8, 16, 32, 64))

    for rho in RADII:
        table, _, _ = run_gradients(GradientArgs(system="lq", spectral_radius=rho, out=str(out_dir / f"lq_rho{rho}"),
                                                 **common))
        j = table["jacobian"]
        dev = float(np.max(np.abs(np.subtract(j["log10_sigma_max_open_loop"],
                                              j["analytic_log10_sigma_max_A_power_H"]))))
        table["max_abs_deviation_log10_from_analytic"] = dev
        result["systems"][f"lq_rho{rho}"] = table
        print(f"LQ ρ={rho}: max |log10 σ_max − analytic| = {dev:.2e}", flush=True)

    table, _, _ = run_gradients(GradientArgs(system="pendulum", out=str(out_dir / "pendulum_true"), **common))
    result["systems"]["pendulum_true_dynamics_zero_policy"] = table
    if checkpoint.exists(args.run):
        table, _, _ = run_gradients(GradientArgs(run=args.run, out=str(out_dir / "pendulum_model"), **common))
        result["systems"]["pendulum_fitted_model"] = table
    else:
        print(f"no checkpoint in {args.run}: run benchmarks/policy_through_model.py first for the fitted-model case")
    write_json("gradient_diagnostics.json", result)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    ax = axes[0]
    for i, rho in enumerate(RADII):
        j = result["systems"][f"lq_rho{rho}"]["jacobian"]
        ax.plot(HORIZONS, j["log10_sigma_max_open_loop"], "o", c=f"C{i}", label=f"ρ={rho} measured")
        ax.plot(HORIZONS, j["analytic_log10_sigma_max_A_power_H"], "-", c=f"C{i}", lw=1)
    ax.set(xscale="log", xlabel="horizon H", ylabel="log10 σ_max(∏ ∂s_{t+1}/∂s_t)",
           title="LQ: Jacobian product (dots) vs analytic σ_max(A^H) (lines)")
    ax.legend(fontsize=7)
    for ax, est in ((axes[1], "pathwise"), (axes[2], "likelihood_ratio")):
        for i, (name, tab) in enumerate(result["systems"].items()):
            ax.plot(HORIZONS, [max(r[est]["variance"], 1e-30) for r in tab["rows"]], "-o", ms=3, c=f"C{i}", label=name)
        ax.set(xscale="log", yscale="log", xlabel="horizon H", ylabel="per-sample tr Cov(g)",
               title=f"{est} gradient variance vs H")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(RESULTS / "gradient_diagnostics.png", dpi=110)


if __name__ == "__main__":
    main()
