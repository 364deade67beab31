"""How MBPO's costs grow with data: model training time per epoch vs dataset size, per-step policy-update
time vs replay size (10k → 1M transitions), and branched-rollout time vs rollout batch size.

HalfCheetah sizes (obs 17, act 6), the paper's model (7 members, 4×200, batch 256) and SAC (256 wide,
batch 256, 20 updates per step, 5 % real data).

    python benchmarks/mbpo_scale.py [--sizes 10000 30000 100000 300000 1000000]

Writes benchmarks/results/mbpo_scale.json and mbpo_scale.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, machine, write_json  # noqa: E402

from mbrlax.agents.sac import SAC  # noqa: E402
from mbrlax.algorithms.mbpo import policy_updates  # noqa: E402
from mbrlax.data.replay import ReplayBuffer, device_buffer, device_buffer_add  # noqa: E402
from mbrlax.models.ensemble import EnsembleModel, Normalizer  # noqa: E402
from mbrlax.models.fit import _pad, _train_epoch  # noqa: E402
from mbrlax.rollout import branched_rollout  # noqa: E402
from mbrlax.types import Transition  # noqa: E402

OBS, ACT = 17, 6


def data(n: int, seed: int = 0) -> Transition:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, ACT)).astype(np.float32)
    return Transition(obs, act, rng.normal(size=n).astype(np.float32),
                      (obs + 0.1 * rng.normal(size=(n, OBS))).astype(np.float32), np.zeros(n, np.float32))


def timed(f, reps: int) -> float:
    f()  # compile / warm up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def model_epoch_seconds(model: EnsembleModel, n: int) -> float:
    d = data(n)
    state = model.init(jax.random.key(0))
    state = state._replace(in_norm=Normalizer.fit(np.concatenate([d.obs, d.action], -1)),
                           out_norm=Normalizer.fit(np.concatenate([d.next_obs - d.obs, d.reward[:, None]], -1)))
    bucket = 1 << int(np.ceil(np.log2(n)))
    padded = Transition(*(_pad(x, bucket) for x in d))

    def run():
        out = _train_epoch(model, state.params, state.opt_state, state.in_norm, state.out_norm, padded, n,
                           jax.random.key(1), 256)
        jax.block_until_ready(out)

    return timed(run, reps=2 if n >= 300_000 else 3)


def update_step_seconds(sac: SAC, state, n: int) -> float:
    """One environment step's policy work: sample G×B_real from a host buffer of n transitions, G updates."""
    buf = ReplayBuffer(n, OBS, ACT)
    buf.add(*data(n))
    fake = device_buffer_add(device_buffer(100_000, OBS, ACT), Transition(*map(jnp.asarray, data(100_000, 1))))
    rng = np.random.default_rng(0)
    key = jax.random.key(0)

    def run():
        nonlocal state, key
        real = buf.sample(rng, (20, 13))
        state, _, key = policy_updates(sac, state, real, fake, key, 243)
        jax.block_until_ready(state)

    return timed(run, reps=20)


def rollout_seconds(model: EnsembleModel, sac: SAC, sac_state, batch: int, k: int) -> float:
    state = model.init(jax.random.key(0))
    buf = device_buffer(batch * k, OBS, ACT)
    start = jnp.asarray(data(batch).obs)

    def run():
        out = branched_rollout(model, state, sac.sample_action, sac_state.actor, start, k, buf, jax.random.key(0))
        jax.block_until_ready(out)

    return timed(run, reps=3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000, 300_000, 1_000_000])
    ap.add_argument("--rollout-batches", type=int, nargs="+", default=[1_000, 10_000, 50_000, 100_000, 400_000])
    args = ap.parse_args()
    model = EnsembleModel(OBS, ACT)
    sac = SAC(OBS, ACT)
    sac_state = sac.init(jax.random.key(0))
    out: dict = {"machine": machine(), "model_epoch": [], "update_step": [], "rollout": []}
    for n in args.sizes:
        s = model_epoch_seconds(model, n)
        out["model_epoch"].append({"transitions": n, "seconds": s, "us_per_transition": 1e6 * s / n})
        u = update_step_seconds(sac, sac_state, n)
        out["update_step"].append({"replay_size": n, "ms_per_env_step": 1e3 * u})
        print(n, f"model epoch {s:.2f}s ({1e6 * s / n:.1f} us/transition); policy step {1e3 * u:.1f} ms", flush=True)
        write_json("mbpo_scale.json", out)
    for b in args.rollout_batches:
        for k in (1, 5):
            s = rollout_seconds(model, sac, sac_state, b, k)
            out["rollout"].append({"batch": b, "length": k, "seconds": s, "us_per_transition": 1e6 * s / (b * k)})
            print("rollout", b, k, f"{s:.3f}s", flush=True)
            write_json("mbpo_scale.json", out)
    me = out["model_epoch"]
    out["model_epoch_linearity"] = {
        "us_per_transition_smallest": me[0]["us_per_transition"],
        "us_per_transition_largest": me[-1]["us_per_transition"],
        "ratio_largest_over_smallest": me[-1]["us_per_transition"] / me[0]["us_per_transition"],
        "loglog_slope": float(np.polyfit(np.log([r["transitions"] for r in me]), np.log([r["seconds"] for r in me]),
                                         1)[0]),
    }
    write_json("mbpo_scale.json", out)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    x = [r["transitions"] for r in me]
    ax[0].loglog(x, [r["seconds"] for r in me], "o-", label="measured")
    ax[0].loglog(x, [me[0]["seconds"] * v / x[0] for v in x], "k--", lw=1, label="linear")
    ax[0].set(xlabel="transitions in D_env", ylabel="seconds per model epoch",
              title=f"model training (slope {out['model_epoch_linearity']['loglog_slope']:.2f})")
    ax[0].legend()
    ax[1].semilogx([r["replay_size"] for r in out["update_step"]], [r["ms_per_env_step"] for r in out["update_step"]],
                   "o-")
    ax[1].set(xlabel="replay size", ylabel="ms per env step (20 SAC updates)", title="policy updates vs replay size")
    ax[1].set_ylim(bottom=0)
    for k in (1, 5):
        rows = [r for r in out["rollout"] if r["length"] == k]
        ax[2].loglog([r["batch"] for r in rows], [r["us_per_transition"] for r in rows], "o-", label=f"k={k}")
    ax[2].set(xlabel="rollout batch size", ylabel="µs per model transition", title="branched rollouts")
    ax[2].legend()
    for a in ax:
        a.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(RESULTS / "mbpo_scale.png", dpi=110)


if __name__ == "__main__":
    main()
