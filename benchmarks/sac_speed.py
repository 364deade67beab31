"""SAC gradient steps per second: mbrlax against the compute floor, Stable-Baselines3 and sbx, in one run.

The floor of one update is its FLOPs (XLA's cost analysis of the compiled update, cross-checked by an
analytic count of the matmuls) divided by the machine's matmul rate, measured here on GEMMs of the update's
own shapes (batch × width × width) and on a large square GEMM. Peers run in their own virtual
environments (benchmarks/peers/setup.sh sb3|sbx) and are interleaved with ours, round by round, so that all
see the same machine load.

    python benchmarks/sac_speed.py [--widths 256 512] [--rounds 3] [--no-peers]

Writes benchmarks/results/sac_speed.json and sac_speed.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_json  # noqa: E402

from mbrlax.agents.sac import SAC  # noqa: E402
from mbrlax.types import Transition  # noqa: E402

PEERS = Path(__file__).resolve().parent / "peers"
OBS, ACT, BATCH, G = 17, 6, 256, 20  # HalfCheetah sizes; G updates per call as in MBPO


def gemm_rate(m: int, k: int, n: int, reps: int = 50) -> float:
    """Sustained GFLOP/s of an m×k @ k×n matmul chained `reps` times inside one jitted loop."""
    a = jax.random.normal(jax.random.key(0), (m, k))
    b = jax.random.normal(jax.random.key(1), (k, n)) / np.sqrt(k)
    if k != n:
        return float("nan")

    @jax.jit
    def f(a, b):
        return jax.lax.fori_loop(0, reps, lambda i, x: x @ b, a)

    f(a, b).block_until_ready()
    ts = []
    for _ in range(7):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        ts.append(time.perf_counter() - t)
    return 2 * m * k * n * reps / min(ts) / 1e9


def analytic_flops(width: int) -> float:
    """Matmul FLOPs of one SAC update (2-layer MLPs, twin critics): forward = 1, backward = 2 units
    (weight and input gradients), input-only backward = 1 unit."""
    actor = OBS * width + width * width + width * 2 * ACT
    critic = 2 * ((OBS + ACT) * width + width * width + width)  # twin
    macs = (
        actor + critic  # target: actor(s'), target critic(s', a')
        + 3 * critic  # critic loss: forward + backward (weights, inputs)
        + 3 * actor + 2 * critic  # actor loss: actor fwd+bwd, critic fwd + input-grad backward
    )
    return 2.0 * macs * BATCH


def ours(width: int, calls: int = 10) -> dict:
    sac = SAC(OBS, ACT, hidden=(width, width))
    state = sac.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    b = Transition(
        jnp.asarray(rng.normal(size=(G, BATCH, OBS)), jnp.float32),
        jnp.asarray(rng.uniform(-1, 1, (G, BATCH, ACT)), jnp.float32),
        jnp.asarray(rng.normal(size=(G, BATCH)), jnp.float32),
        jnp.asarray(rng.normal(size=(G, BATCH, OBS)), jnp.float32),
        jnp.zeros((G, BATCH), jnp.float32),
    )
    state, _ = sac.update_many(state, b, jax.random.key(0))
    jax.block_until_ready(state)
    t = time.perf_counter()
    for i in range(calls):
        state, _ = sac.update_many(state, b, jax.random.key(i))
    jax.block_until_ready(state)
    dt = time.perf_counter() - t
    return {"steps_per_sec": calls * G / dt}


def xla_flops(width: int) -> float:
    sac = SAC(OBS, ACT, hidden=(width, width))
    state = sac.init(jax.random.key(0))
    one = Transition(jnp.zeros((BATCH, OBS)), jnp.zeros((BATCH, ACT)), jnp.zeros(BATCH), jnp.zeros((BATCH, OBS)),
                     jnp.zeros(BATCH))
    cost = jax.jit(sac.update).lower(state, one, jax.random.key(0)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost["flops"])


def peer(impl: str, width: int, steps: int) -> dict | None:
    py = PEERS / ".venvs" / impl / "bin" / "python"
    if not py.exists():
        return None
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [str(py), str(PEERS / "sac_speed.py"), "--impl", impl, "--hidden", str(width), "--batch", str(BATCH),
               "--obs-dim", str(OBS), "--act-dim", str(ACT), "--steps", str(steps), "--repeats", "3", "--out", f.name]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            return {"error": r.stderr[-2000:]}
        return json.loads(Path(f.name).read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--widths", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-peers", action="store_true")
    args = ap.parse_args()
    out: dict = {"machine": machine(), "obs_dim": OBS, "act_dim": ACT, "batch": BATCH, "updates_per_call": G,
                 "widths": {}}
    for width in args.widths:
        rates = {"update_shapes": gemm_rate(BATCH, width, width), "square_1024": gemm_rate(1024, 1024, 1024, 10)}
        flops = xla_flops(width)
        rec: dict = {"flops_per_update_xla": flops, "flops_per_update_analytic": analytic_flops(width),
                     "gemm_gflops": rates, "rounds": []}
        for _ in range(args.rounds):
            row = {"mbrlax": ours(width)["steps_per_sec"]}
            if not args.no_peers:
                for impl in ("sb3", "sbx"):
                    res = peer(impl, width, steps=200 if impl == "sb3" else 1000)
                    if res is not None:
                        row[impl] = res.get("steps_per_sec_median", res.get("error"))
            rec["rounds"].append(row)
            print(width, row, flush=True)
        med = {k: statistics.median(r[k] for r in rec["rounds"] if isinstance(r.get(k), float))
               for k in rec["rounds"][0] if isinstance(rec["rounds"][0][k], float)}
        rate = max(rates.values())
        floor_ms = flops / (rate * 1e9) * 1e3
        rec["median_steps_per_sec"] = med
        rec["ms_per_update"] = {k: 1e3 / v for k, v in med.items()}
        rec["floor_ms_per_update"] = floor_ms
        rec["floor_ms_at_update_shapes"] = flops / (rates["update_shapes"] * 1e9) * 1e3
        rec["fraction_of_floor"] = floor_ms / rec["ms_per_update"]["mbrlax"]
        for k in ("sb3", "sbx"):
            if k in med:
                rec[f"speedup_vs_{k}"] = med["mbrlax"] / med[k]
        out["widths"][str(width)] = rec
        write_json("sac_speed.json", out)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.widths), figsize=(5 * len(args.widths), 4), squeeze=False)
    for ax, width in zip(axes[0], args.widths):
        rec = out["widths"][str(width)]
        names = list(rec["ms_per_update"]) + ["compute floor"]
        vals = list(rec["ms_per_update"].values()) + [rec["floor_ms_per_update"]]
        ax.bar(names, vals, color=["tab:blue", "tab:orange", "tab:green", "gray"][: len(vals)])
        for i, v in enumerate(vals):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom")
        ax.set_title(f"SAC update, {width}-wide MLPs, batch {BATCH}")
        ax.set_ylabel("ms per gradient step (lower is better)")
    fig.tight_layout()
    fig.savefig(RESULTS / "sac_speed.png", dpi=110)
    print(json.dumps({w: {k: r[k] for k in r if k != "rounds"} for w, r in out["widths"].items()}, indent=1))


if __name__ == "__main__":
    main()
