"""MOPO speed: SAC gradient steps per second and total wall-clock, mbrlax vs the `offlinerl` package's MOPO.

Same dataset, same settings for both, run one after the other in this script (the peer in its own venv,
benchmarks/peers/setup.sh offlinerl): the paper's MOPO settings (7 members / 5 elites of 200×4, rollout batch
50,000 every 1000 steps, h=5, λ=1, SAC 256×256 with batch 256 and real ratio 0.05), for `--epochs` epochs of
1000 gradient steps. mbrlax's numbers come from its run's own timers (time/model, time/rollout, time/policy).

    python benchmarks/mopo_speed.py [--dataset PATH] [--epochs 2] [--model-max-epochs 20]

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
from common import RESULTS, RUNS, machine, write_json  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default=str(RUNS / "datasets" / "mbrlax" / "halfcheetah-medium-replay-v0"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rollout-batch-size", type=int, default=50_000)
    ap.add_argument("--model-max-epochs", type=int, default=20)
    ap.add_argument("--peer-only", action="store_true", help="re-run only the peer and update the existing JSON")
    args = ap.parse_args()
    if args.peer_only:
        from mbrlax.data import offline

        prev = json.loads((RESULTS / "mopo_speed.json").read_text())
        peer = run_peer(offline.load(prev["dataset"]), prev["settings"]["epochs"], prev["settings"]["rollout_batch_size"])
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
    run_dir = RUNS / "mopo_speed" / f"mbrlax-{time.strftime('%Y%m%d-%H%M%S')}"
    tic = time.perf_counter()
    mopo.train(mopo.Config(dataset=args.dataset, run_dir=str(run_dir), progress=False, tensorboard=False,
                           checkpoint_every=1000 * args.epochs, **settings))
    total = time.perf_counter() - tic
    rows = runs.read_metrics(run_dir)
    last = [r for r in rows if "time/policy" in r][-1]
    fit = [r for r in rows if "model/epochs" in r][0]
    steps = args.epochs * 1000
    ours = {
        "total_seconds": total, "model_fit_seconds": last["time/model"], "model_fit_epochs": fit["model/epochs"],
        "rollout_seconds": last["time/rollout"], "sac_seconds": last["time/policy"], "eval_seconds": last["time/eval"],
        "gradient_steps": steps, "gradient_steps_per_second": steps / last["time/policy"],
        "gradient_steps_per_second_incl_rollouts": steps / (last["time/policy"] + last["time/rollout"]),
    }
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

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    parts = [("model fit", ours["model_fit_seconds"]), ("rollouts", ours["rollout_seconds"]),
             ("SAC", ours["sac_seconds"]), ("eval", ours["eval_seconds"])]
    left = 0.0
    for name, v in parts:
        ax.barh(["mbrlax"], [v], left=left, label=name)
        left += v
    if "total_seconds" in peer:
        ax.barh(["offlinerl"], [peer["total_seconds"]], color="tab:gray", label="offlinerl (total)")
    else:
        ax.text(0.02, -0.6, "offlinerl: " + peer.get("error", "")[:90], fontsize=7, transform=ax.get_yaxis_transform())
    ax.set_xlabel("seconds")
    ax.set_title(f"MOPO wall-clock, {ds.env_id}, {steps} gradient steps ({ours['gradient_steps_per_second']:.0f} steps/s SAC)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "mopo_speed.png", dpi=100)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1, default=float))


if __name__ == "__main__":
    main()
