"""The MOPO of the `offlinerl` PyPI package (polixir OfflineRL), timed on an mbrlax dataset.

Run inside its own venv (benchmarks/peers/setup.sh offlinerl):

    benchmarks/peers/.venvs/offlinerl/bin/python benchmarks/peers/offlinerl_mopo.py \
        --npz /tmp/halfcheetah-medium-replay.npz --task HalfCheetah-v5 --epochs 2 --out result.json

The dataset arrives as an .npz exported by benchmarks/mopo_speed.py (obs, act, rew, obs_next, done), the same
transitions mbrlax trains on. Settings are set to match mbrlax's run: 7 members / 5 elites of 200×4, SAC
256×256, batch 256, real ratio 0.05, horizon and λ as given, rollout_batch_size as given.

offlinerl 0.0.2 (the only release on PyPI) ships without the `offlinerl.outside_utils` package that
`offlinerl.algo.modelbase.model_base` imports, so its MOPO cannot be imported from the published package;
this harness then writes the import error into the JSON instead of timings (nothing is faked).
"""

from __future__ import annotations

import argparse
import json
import time
import traceback


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--npz", required=True)
    ap.add_argument("--task", default="HalfCheetah-v5")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps-per-epoch", type=int, default=1000)
    ap.add_argument("--rollout-batch-size", type=int, default=50_000)
    ap.add_argument("--horizon", type=int, default=5)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out: dict = {"peer": "offlinerl", "settings": vars(args)}
    try:
        import importlib.metadata as md

        out["offlinerl_version"] = md.version("offlinerl")
        # Check the installed files first (importing offlinerl pulls in aim, ray, ... before MOPO's own modules).
        files = [str(f) for f in (md.files("offlinerl") or [])]
        out["offlinerl_files"] = len(files)
        out["outside_utils_installed"] = any(f.startswith("offlinerl/outside_utils/") for f in files)
        if not out["outside_utils_installed"]:
            raise ImportError("offlinerl 0.0.2 as published on PyPI has no offlinerl/outside_utils/ package, but "
                              "offlinerl/algo/modelbase/model_base.py (MOPO's trainer) imports "
                              "offlinerl.outside_utils.{nets,modules,dynamics,buffer,utils}: its MOPO cannot run")
        import numpy as np
        import torch

        torch.set_num_threads(args.threads)
        out["torch"] = torch.__version__
        from offlinerl.algo import algo_select  # imports every algorithm module, MOPO's included

        data = dict(np.load(args.npz))
        algo_init_fn, algo_trainer, cfg = algo_select({"algo_name": "mopo", "task": args.task})
        cfg.update(device="cpu", max_epoch=args.epochs, steps_per_epoch=args.steps_per_epoch,
                   rollout_batch_size=args.rollout_batch_size, horizon=args.horizon, penalty_coef=args.lam,
                   obs_shape=data["obs"].shape[1], action_shape=data["act"].shape[1])
        trainer = algo_trainer(algo_init_fn(cfg), cfg)
        buffer = {"observations": data["obs"], "actions": data["act"], "rewards": data["rew"][:, None],
                  "next_observations": data["obs_next"], "terminals": data["done"][:, None]}
        tic = time.perf_counter()
        trainer.train(buffer, None, callback_fn=None)
        out["total_seconds"] = time.perf_counter() - tic
        out["gradient_steps"] = args.epochs * args.steps_per_epoch
    except Exception as e:  # noqa: BLE001 — the failure itself is the result
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc()
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)
    print(json.dumps({k: v for k, v in out.items() if k != "traceback"}, indent=2))


if __name__ == "__main__":
    main()
