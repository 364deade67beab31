"""MBPO wall-clock per environment step, mbrlax against mbrl-lib, side by side in one run.

mbrl-lib runs its own, unmodified MBPO loop in its own virtual environment (benchmarks/peers/setup.sh mbrl;
harness benchmarks/peers/mbrl_mbpo_speed.py) on the MuJoCo v4 task of its preset; mbrlax runs the same
hyperparameters, read from the peer's JSON, on the v5 task (same dynamics). Both are timed over the same
window: from the first model training through `--window` environment steps (whole model-training periods),
so model training, model rollouts, SAC updates and environment steps are all amortized; evaluation and
the initial exploration are excluded. Model training runs a fixed number of epochs in both
(`--model-epochs`, early stopping off) so that both do the same work; the natural early-stopped epoch
counts are reported by the peer harness separately.

    python benchmarks/mbpo_speed.py [--presets inv_pendulum halfcheetah] [--window 1000] [--rounds 1]

Writes benchmarks/results/mbpo_speed.json and mbpo_speed.png.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, machine, model_minibatch_flops, sac_update_flops, write_json, xla_flops  # noqa: E402

PEERS = Path(__file__).resolve().parent / "peers"
ENVS = {"inv_pendulum": "InvertedPendulum-v5", "halfcheetah": "HalfCheetah-v5"}
TARGETS = {"inv_pendulum": 2.5, "halfcheetah": 1.5}


def run_peer(preset: str, window: int, model_epochs: int) -> dict:
    py = PEERS / ".venvs" / "mbrl" / "bin" / "python"
    if not py.exists():
        raise SystemExit("mbrl-lib is not set up: run benchmarks/peers/setup.sh mbrl")
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [str(py), str(PEERS / "mbrl_mbpo_speed.py"), "--preset", preset, "--steps", str(window + 250),
               "--model-epochs", str(model_epochs), "--out", f.name]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=PEERS)
        if r.returncode != 0:
            raise RuntimeError(f"mbrl-lib harness failed:\n{r.stderr[-3000:]}")
        return json.loads(Path(f.name).read_text())


def ours_config(hp: dict, preset: str, window: int, model_epochs: int):
    from mbrlax.algorithms import mbpo

    init = int(hp["initial_exploration_steps"])
    return mbpo.Config(
        env=ENVS[preset], seed=0, steps=init + window, init_steps=init, epoch_length=int(hp["epoch_length"]),
        model_train_freq=int(hp["model_train_freq"]), rollout_batch_size=int(hp["model_rollout_batch_per_training"]),
        rollout_schedule=tuple(int(v) for v in hp["rollout_length_schedule"]),
        model_retain_epochs=int(hp["model_retain_epochs"]), updates_per_step=int(hp["sac_updates_per_env_step"]),
        real_ratio=float(hp["real_data_ratio"]), target_entropy=float(hp["sac_target_entropy"]),
        model_hidden=(int(hp["model_hidden_size"]),) * int(hp["model_num_layers"]),
        ensemble_size=int(hp["ensemble_size"]), num_elites=int(hp["num_elites"]), model_lr=float(hp["model_lr"]),
        model_batch_size=int(hp["model_batch_size"]), holdout_ratio=float(hp["validation_ratio"]),
        model_max_epochs=model_epochs, model_patience=10**6, model_min_epoch_steps=1,  # epochs = passes, as mbrl-lib
        sac_hidden=(int(hp["sac_hidden_size"]),) * 2, sac_lr=float(hp["sac_lr"]),
        sac_batch_size=int(hp["sac_batch_size"]),
        gamma=float(hp["sac_gamma"]), tau=float(hp["sac_tau"]), replay_size=int(hp["real_replay_buffer_capacity"]),
        eval_every=10**9, eval_episodes=1, run_dir=str(RUNS / f"speed-{preset}"), progress=False,
        tensorboard=False, checkpoint_every=10**9,
    )


def run_ours(hp: dict, preset: str, window: int, model_epochs: int) -> dict:
    import shutil

    from mbrlax.algorithms import mbpo
    from mbrlax.runs import read_metrics

    cfg = ours_config(hp, preset, window, model_epochs)
    shutil.rmtree(cfg.run_dir, ignore_errors=True)
    mbpo.train(cfg)
    rows = read_metrics(cfg.run_dir)
    start = next(r for r in rows if r["step"] == cfg.init_steps and "time/env" in r)  # before the first fit
    end = [r for r in rows if "time/env" in r][-1]
    phases = {k[5:]: (end[k] - start[k]) * 1e3 / window for k in start if k.startswith("time/")}
    epochs = [r["model/epochs"] for r in rows if "model/epochs" in r]
    return {"ms_per_env_step": sum(phases.values()), "breakdown_ms_per_env_step": phases,
            "model_epochs_per_training": epochs, "config": json.loads((Path(cfg.run_dir) / "config.json").read_text())}


def compute_floor(cfg: dict, run_dir: Path, window: int) -> dict:
    """The update's FLOPs per environment step (XLA cost analysis of one SAC update, one model minibatch
    step and one rollout step, times how often our run did each in the window) divided by the matmul
    rate measured on the SAC update's GEMM shape (256 × width × width, as benchmarks/sac_speed.py)."""
    import jax
    import jax.numpy as jnp
    from sac_speed import gemm_rate

    from mbrlax.agents.sac import SAC
    from mbrlax.envs.make import make
    from mbrlax.models.ensemble import EnsembleModel
    from mbrlax.runs import read_metrics

    _, spec = make(cfg["env"])
    o, a, b = spec.obs_dim, spec.act_dim, cfg["sac_batch_size"]
    sac = SAC(o, a, hidden=tuple(cfg["sac_hidden"]))
    sst = sac.init(jax.random.key(0))
    f_sac = sac_update_flops(sac, sst, o, a, b)
    model = EnsembleModel(o, a, ensemble_size=cfg["ensemble_size"], num_elites=cfg["num_elites"],
                          hidden=tuple(cfg["model_hidden"]))
    mst = model.init(jax.random.key(0))
    mb = cfg["model_batch_size"]
    f_model = model_minibatch_flops(model, mst, o, a, mb)
    n = 1024
    f_roll = xla_flops(lambda ob, k: model.elite_step(mst, ob, sac.sample_action(sst.actor, ob, k), k)[0],
                        jnp.zeros((n, o)), jax.random.key(0)) / n
    rows = read_metrics(run_dir)
    start = cfg["init_steps"]
    fits = [r for r in rows if "model/epochs" in r and start <= r["step"] < start + window]
    minibatches = sum(r["model/epochs"] * max(-(-r["model/n_train"] // mb), cfg["model_min_epoch_steps"]) for r in fits)
    k = [r["rollout/length"] for r in rows if "rollout/length" in r and start <= r["step"] < start + window]
    per_step = {
        "sac": cfg["updates_per_step"] * f_sac,
        "model": minibatches * f_model / window,
        "rollout": cfg["rollout_batch_size"] * float(sum(k)) * f_roll / window,
    }
    rate = gemm_rate(256, cfg["sac_hidden"][0], cfg["sac_hidden"][0]) * 1e9
    return {"gemm_gflops_at_sac_shape": rate / 1e9, "flops_per_env_step": per_step,
            "floor_ms_per_env_step": {**{k_: v / rate * 1e3 for k_, v in per_step.items()},
                                      "total": sum(per_step.values()) / rate * 1e3},
            "flops_per_sac_update": f_sac, "flops_per_model_minibatch": f_model, "flops_per_rollout_transition": f_roll,
            "model_minibatches_in_window": minibatches}


def plot(out: dict) -> None:
    """Stacked bars per preset: mbrl-lib, mbrlax and the compute floor, split into the loop's phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(out["presets"]), figsize=(6 * len(out["presets"]), 4.2), squeeze=False)
    for ax, (preset, rec) in zip(axes[0], out["presets"].items()):
        r = rec["rounds"][0]
        peer_b = r["mbrl-lib"].get("breakdown_in_window", {})
        ours_b = r["mbrlax"]["breakdown_ms_per_env_step"]
        fl = rec.get("floor", {}).get("floor_ms_per_env_step", {})
        parts = {
            "model training": (peer_b.get("model_train_incl_save", {}).get("ms_per_env_step", 0),
                               ours_b.get("model", 0), fl.get("model", 0)),
            "model rollouts": (peer_b.get("model_rollouts", {}).get("ms_per_env_step", 0), ours_b.get("rollout", 0),
                               fl.get("rollout", 0)),
            "SAC updates": (peer_b.get("sac_update", {}).get("ms_per_env_step", 0), ours_b.get("policy", 0),
                            fl.get("sac", 0)),
        }
        parts["env + rest"] = (rec["mbrl-lib_ms_per_env_step"] - sum(v[0] for v in parts.values()),
                               rec["mbrlax_ms_per_env_step"] - sum(v[1] for v in parts.values()), 0)
        names = ["mbrl-lib", "mbrlax", "compute floor"] if fl else ["mbrl-lib", "mbrlax"]
        bottom = [0.0] * len(names)
        for name, vals in parts.items():
            vals = vals[: len(names)]
            ax.bar(names, vals, bottom=bottom, label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_title(f"{preset}: {rec['speedup']:.2f}× faster (target {rec['target_speedup']}×)")
        ax.set_ylabel("ms per environment step (amortized)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "mbpo_speed.png", dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", nargs="+", default=["inv_pendulum", "halfcheetah"])
    ap.add_argument("--window", type=int, default=1000)
    ap.add_argument("--model-epochs", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--floor-only", action="store_true",
                    help="add the compute floor to the existing JSON from the runs in benchmarks/runs/speed-*")
    args = ap.parse_args()
    if args.floor_only:
        out = json.loads((RESULTS / "mbpo_speed.json").read_text())
        for preset, rec in out["presets"].items():
            rec["floor"] = compute_floor(rec["rounds"][0]["mbrlax"]["config"], RUNS / f"speed-{preset}",
                                         out["window_env_steps"])
            rec["mbrlax_fraction_of_floor"] = (rec["floor"]["floor_ms_per_env_step"]["total"]
                                               / rec["mbrlax_ms_per_env_step"])
            rec["mbrl-lib_fraction_of_floor"] = (rec["floor"]["floor_ms_per_env_step"]["total"]
                                                 / rec["mbrl-lib_ms_per_env_step"])
        write_json("mbpo_speed.json", out)
        plot(out)
        print(json.dumps({p: (r["floor"]["floor_ms_per_env_step"], r["mbrlax_fraction_of_floor"])
                          for p, r in out["presets"].items()}, indent=1))
        return
    out: dict = {"machine": machine(), "window_env_steps": args.window, "model_epochs": args.model_epochs,
                 "presets": {}}
    for preset in args.presets:
        rounds = []
        for _ in range(args.rounds):
            peer = run_peer(preset, args.window, args.model_epochs)
            mine = run_ours(peer["hyperparameters"], preset, args.window, args.model_epochs)
            rounds.append({"mbrl-lib": peer, "mbrlax": mine})
            print(preset, f"mbrl-lib {peer['ms_per_env_step']:.1f} ms/step, "
                          f"mbrlax {mine['ms_per_env_step']:.1f} ms/step", flush=True)
        p = statistics.median(r["mbrl-lib"]["ms_per_env_step"] for r in rounds)
        m = statistics.median(r["mbrlax"]["ms_per_env_step"] for r in rounds)
        floor = compute_floor(rounds[0]["mbrlax"]["config"], RUNS / f"speed-{preset}", args.window)
        out["presets"][preset] = {"mbrl-lib_ms_per_env_step": p, "mbrlax_ms_per_env_step": m, "speedup": p / m,
                                  "target_speedup": TARGETS.get(preset), "floor": floor,
                                  "mbrlax_fraction_of_floor": floor["floor_ms_per_env_step"]["total"] / m,
                                  "mbrl-lib_fraction_of_floor": floor["floor_ms_per_env_step"]["total"] / p,
                                  "rounds": rounds}
        write_json("mbpo_speed.json", out)

    plot(out)


if __name__ == "__main__":
    main()
