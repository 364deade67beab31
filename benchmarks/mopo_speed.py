"""MOPO speed: SAC gradient steps per second and total wall-clock, mbrlax vs the `offlinerl` package's MOPO.

Same dataset, same settings for both, run one after the other in this script (the peer in its own venv,
benchmarks/peers/setup.sh offlinerl): the paper's MOPO settings (7 members / 5 elites of 200×4, rollout batch
50,000 every 1000 steps, h=5, λ=1, SAC 256×256 with batch 256 and real ratio 0.05), for `--epochs` epochs of
1000 gradient steps. mbrlax's numbers come from its run's own timers (time/model, time/rollout, time/policy).
Beside them, the compute floor of the same run: each phase's FLOPs (XLA cost analysis of one model minibatch, one
holdout pass, one penalized rollout transition and one SAC update, times how many the run did) divided by the
matmul rate measured here at the SAC update's GEMM shape, as benchmarks/mbpo_speed.py does for MBPO.

    python benchmarks/mopo_speed.py [--dataset PATH] [--epochs 2] [--model-max-epochs 20] [--rounds 3]

Writes benchmarks/results/mopo_speed.json and mopo_speed.png. If the peer cannot run, its error is recorded
and no ratio is claimed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    RESULTS,
    RUNS,
    machine,
    model_minibatch_flops,
    sac_update_flops,
    write_json,
    xla_flops,
    zero_batch,
)

HERE = Path(__file__).resolve().parent
PEER_PY = HERE / "peers" / ".venvs" / "offlinerl" / "bin" / "python"


def run_peer(ds, epochs: int, rollout_batch_size: int) -> dict:
    """Run peers/offlinerl_mopo.py in its venv on the same transitions; its JSON (or the reason it failed)."""
    peer: dict = {"peer": "offlinerl"}
    if not PEER_PY.exists():
        peer["error"] = f"peer venv missing: run `bash benchmarks/peers/setup.sh offlinerl` ({PEER_PY})"
        return peer
    (RUNS / "mopo_speed").mkdir(parents=True, exist_ok=True)
    npz = RUNS / "mopo_speed" / "dataset.npz"
    # MuJoCo locomotion tasks act in [-1, 1] already, so the stored actions are the agents' actions
    t = ds.transitions(np.full(ds.actions.shape[1], -1.0), np.full(ds.actions.shape[1], 1.0))
    np.savez(npz, obs=t.obs, act=t.action, rew=t.reward, obs_next=t.next_obs, done=t.terminated)
    out = RUNS / "mopo_speed" / "offlinerl.json"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    subprocess.run([str(PEER_PY), str(HERE / "peers" / "offlinerl_mopo.py"), "--npz", str(npz), "--task", ds.env_id,
                    "--epochs", str(epochs), "--rollout-batch-size", str(rollout_batch_size), "--out", str(out)],
                   env=env, check=False)
    peer = json.loads(out.read_text()) if out.exists() else {"peer": "offlinerl", "error": "harness wrote nothing"}
    peer.pop("traceback", None)
    return peer


def compute_floor(run_dir: Path) -> dict:
    """Seconds each phase of the run would take at the machine's matmul rate: FLOPs per operation (XLA cost
    analysis, the run's own model and SAC) times the number of operations the run did."""
    import jax
    import jax.numpy as jnp
    from sac_speed import gemm_rate

    from mbrlax import runs
    from mbrlax.algorithms import mopo
    from mbrlax.models import penalties

    cfg = runs.config_from_dict(mopo.Config, runs.load_config(run_dir))
    ds = mopo.load_dataset(cfg)
    cfg = mopo.resolve(cfg, ds)
    o, a = ds.observations.shape[1], ds.actions.shape[1]
    model, sac, _ = mopo._components(cfg, o, a)
    mst, sst = model.init(jax.random.key(0)), sac.init(jax.random.key(1))
    mb = cfg.model_batch_size
    f_sac = sac_update_flops(sac, sst, o, a, cfg.sac_batch_size)
    f_minibatch = model_minibatch_flops(model, mst, o, a, mb)
    holdout = zero_batch((cfg.ensemble_size, 1024), o, a)
    f_holdout_row = xla_flops(lambda p: model.loss(p, mst.in_norm, mst.out_norm, holdout)[0], mst.params) / 1024

    def rollout_step(obs, k):  # what MOPO's branched_rollout does per transition, without the buffer write
        act = sac.sample_action(sst.actor, obs, k)
        nxt, rew, _, pred = model.sample_step(mst, obs, act, k)
        return rew - cfg.lam * penalties.from_prediction(cfg.penalty, pred, nxt, rew)

    f_roll = xla_flops(rollout_step, jnp.zeros((1024, o)), jax.random.key(0)) / 1024
    rows = runs.read_metrics(run_dir)
    fit = next(r for r in rows if "model/epochs" in r)
    n_hold = len(ds) - fit["model/n_train"]
    minibatches = fit["model/epochs"] * max(-(-fit["model/n_train"] // mb), 20)  # fit.py: ≥ 20 minibatches an epoch
    steps = cfg.epochs * cfg.epoch_length
    flops = {
        "model_fit": minibatches * f_minibatch + (fit["model/epochs"] + 1) * n_hold * f_holdout_row,
        "rollouts": (steps // cfg.rollout_freq) * cfg.rollout_batch_size * cfg.horizon * f_roll,
        "sac": steps * f_sac,
    }
    rate = gemm_rate(256, cfg.sac_hidden[0], cfg.sac_hidden[0]) * 1e9
    return {"gemm_gflops_at_sac_shape": rate / 1e9, "flops": flops,
            "floor_seconds": {k: v / rate for k, v in flops.items()},
            "flops_per_sac_update": f_sac, "flops_per_model_minibatch": f_minibatch,
            "flops_per_rollout_transition": f_roll, "model_minibatches": minibatches}


def plot(result: dict) -> None:
    """Horizontal stacked bars of the phases: mbrlax, its compute floor and (when it ran) the peer's total."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, peer = result["mbrlax"], result["offlinerl"]
    fl = ours["floor"]["floor_seconds"]
    fig, ax = plt.subplots(figsize=(7, 3.4))
    parts = [("model fit", ours["model_fit_seconds"], fl["model_fit"]),
             ("rollouts", ours["rollout_seconds"], fl["rollouts"]),
             ("SAC", ours["sac_seconds"], fl["sac"]), ("eval", ours["eval_seconds"], 0.0)]
    left = [0.0, 0.0]
    for i, (name, v, f) in enumerate(parts):
        ax.barh(["compute floor", "mbrlax"], [f, v], left=left, label=name, color=f"C{i}")
        left = [left[0] + f, left[1] + v]
    if "total_seconds" in peer:
        ax.barh(["offlinerl"], [peer["total_seconds"]], color="tab:gray", label="offlinerl (total)")
    else:
        fig.text(0.01, 0.01, "offlinerl did not run: " + peer.get("error", "")[:110], fontsize=6.5)
    ax.set_xlabel("seconds")
    ax.set_title(f"MOPO, {result['env']}, {ours['gradient_steps']} SAC steps: "
                 f"{ours['gradient_steps_per_second']:.0f} steps/s, "
                 f"{100 * ours['fraction_of_floor']['model_fit+rollouts+sac']:.0f} % of the floor", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(RESULTS / "mopo_speed.png", dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default=str(RUNS / "datasets" / "mbrlax" / "halfcheetah-medium-replay-v0"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rollout-batch-size", type=int, default=50_000)
    ap.add_argument("--model-max-epochs", type=int, default=20)
    ap.add_argument("--peer-only", action="store_true", help="re-run only the peer and update the existing JSON")
    ap.add_argument("--rounds", type=int, default=3, help="mbrlax runs; the JSON reports medians over them")
    ap.add_argument("--plot-only", action="store_true", help="redraw the PNG from the existing JSON")
    args = ap.parse_args()
    if args.plot_only:
        plot(json.loads((RESULTS / "mopo_speed.json").read_text()))
        return
    if args.peer_only:
        from mbrlax.data import offline

        prev = json.loads((RESULTS / "mopo_speed.json").read_text())
        peer = run_peer(offline.load(prev["dataset"]), prev["settings"]["epochs"],
                        prev["settings"]["rollout_batch_size"])
        prev["offlinerl"] = peer
        if "total_seconds" in peer:
            prev["speedup_total_wall_clock"] = peer["total_seconds"] / prev["mbrlax"]["total_seconds"]
            prev["target_met"] = prev["speedup_total_wall_clock"] >= 3.0
            prev["note"] = None
        write_json("mopo_speed.json", prev)
        print(json.dumps(peer, indent=1))
        return

    from mbrlax import runs
    from mbrlax.algorithms import mopo
    from mbrlax.data import offline

    ds = offline.load(args.dataset)
    settings = dict(epochs=args.epochs, epoch_length=1000, rollout_freq=1000,
                    rollout_batch_size=args.rollout_batch_size, model_retain_epochs=5, horizon=5, lam=1.0,
                    real_ratio=0.05, eval_every=1000 * args.epochs, eval_episodes=1,
                    model_max_epochs=args.model_max_epochs, updates_per_call=250)
    steps = args.epochs * 1000
    rounds = []
    for i in range(args.rounds):  # same seed each round: the same work, so the rounds differ only in timing
        run_dir = RUNS / "mopo_speed" / f"mbrlax-{time.strftime('%Y%m%d-%H%M%S')}-r{i}"
        tic = time.perf_counter()
        mopo.train(mopo.Config(dataset=args.dataset, run_dir=str(run_dir), progress=False, tensorboard=False,
                               checkpoint_every=1000 * args.epochs, **settings))
        total = time.perf_counter() - tic
        rows = runs.read_metrics(run_dir)
        last = [r for r in rows if "time/policy" in r][-1]
        rounds.append({"total_seconds": total, "model_fit_seconds": last["time/model"],
                       "rollout_seconds": last["time/rollout"], "sac_seconds": last["time/policy"],
                       "eval_seconds": last["time/eval"], "load_avg_1min": os.getloadavg()[0]})
        print(f"round {i}:", rounds[-1], flush=True)
    fit = [r for r in runs.read_metrics(run_dir) if "model/epochs" in r][0]
    ours = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}  # medians over rounds
    ours.update(model_fit_epochs=fit["model/epochs"], gradient_steps=steps, rounds=rounds,
                gradient_steps_per_second=steps / ours["sac_seconds"],
                gradient_steps_per_second_incl_rollouts=steps / (ours["sac_seconds"] + ours["rollout_seconds"]))
    total = ours["total_seconds"]
    floor = compute_floor(run_dir)
    measured = {"model_fit": ours["model_fit_seconds"], "rollouts": ours["rollout_seconds"], "sac": ours["sac_seconds"]}
    ours["floor"] = floor
    ours["fraction_of_floor"] = {k: floor["floor_seconds"][k] / v for k, v in measured.items()}
    ours["fraction_of_floor"]["model_fit+rollouts+sac"] = sum(floor["floor_seconds"].values()) / sum(measured.values())
    print("mbrlax:", json.dumps(ours, indent=1), flush=True)

    peer = run_peer(ds, args.epochs, args.rollout_batch_size)
    ratio = None
    if "total_seconds" in peer:
        ratio = peer["total_seconds"] / total
    result = {
        "machine": machine(), "dataset": args.dataset, "env": ds.env_id, "transitions": len(ds), "settings": settings,
        "mbrlax": ours, "offlinerl": peer, "speedup_total_wall_clock": ratio, "target_speedup": 3.0,
        "target_met": (ratio >= 3.0) if ratio is not None else None,
        "note": None if ratio is not None else "no ratio: the peer did not run (see offlinerl.error)",
    }
    write_json("mopo_speed.json", result)
    plot(result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1, default=float))


if __name__ == "__main__":
    main()
