"""Is MOPO's weak dataset a budget question? Continue finished mopo_scores.py runs to more epochs.

mopo_scores.py trains MOPO for 40 epochs (4 % of the paper's 1000). On halfcheetah-medium-replay one seed of three
took off within that budget. This script copies those runs (checkpoint included) to benchmarks/runs/mopo_longer/,
continues each from its 40-epoch checkpoint to `--epochs` (same run, same seed: only the budget grows), and
reports every seed's score at 40 epochs and at the end, against the behaviour policy's score. The 40-epoch runs of
mopo_scores.py are left untouched.

    python benchmarks/mopo_longer.py [--dataset halfcheetah-medium-replay] [--seeds 0 1 2] [--epochs 80] [--carry]

Writes benchmarks/results/mopo_longer_<dataset>.json and .png; `--carry` keeps the finished runs' metrics in
benchmarks/carry/mopo_longer/ (no checkpoints: a fresh machine without the 40-epoch checkpoints cannot continue).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, machine, train_or_resume, write_json  # noqa: E402
from mopo_scores import BUDGET, DATA, carry_metrics, eval_scores, final_score, finished  # noqa: E402

from mbrlax import checkpoint  # noqa: E402

OUT = RUNS / "mopo_longer"


def extend(name: str, seed: int, epochs: int) -> Path | None:
    """The run continued to `epochs`; None when the 40-epoch run's checkpoint is not on this machine."""
    from mbrlax.algorithms import mopo

    src, dst = RUNS / "mopo" / f"mopo-{name}-s{seed}", OUT / f"mopo-{name}-s{seed}"
    total = epochs * BUDGET["epoch_length"]
    if finished(dst, total):  # here, or carried from an earlier machine
        return dst
    if not checkpoint.exists(dst):
        if not checkpoint.exists(src):
            print(f"skipping {name} seed {seed}: no checkpoint in {src} (run benchmarks/mopo_scores.py first)")
            return None
        shutil.copytree(src, dst, dirs_exist_ok=True)
    train_or_resume(mopo, dst, total, new={}, resume=dict(epochs=epochs, progress=False, tensorboard=False))
    return dst


def main() -> None:
    from mbrlax.data import offline

    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="halfcheetah-medium-replay")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=80)
    ap.add_argument("--carry", action="store_true")
    args = ap.parse_args()
    name, base = args.dataset, BUDGET["epochs"] * BUDGET["epoch_length"]
    total = args.epochs * BUDGET["epoch_length"]
    runs = {s: extend(name, s, args.epochs) for s in args.seeds}
    ds = offline.load(DATA / f"{name}-v0", check_env=False)
    behaviour = float(ds.normalized_score(ds.episode_returns().mean()))
    per_seed = {s: {"at_40_epochs": final_score(d, base), f"at_{args.epochs}_epochs": final_score(d, total),
                    "curve": eval_scores(d)} for s, d in runs.items() if d is not None}
    end = [r[f"at_{args.epochs}_epochs"] for r in per_seed.values() if r[f"at_{args.epochs}_epochs"] is not None]
    mid = [r["at_40_epochs"] for r in per_seed.values() if r["at_40_epochs"] is not None]
    result = {"machine": machine(), "dataset": name, "epochs": args.epochs, "budget": BUDGET,
              "behaviour_score": behaviour, "per_seed": per_seed,
              "median_at_40_epochs": float(np.median(mid)) if mid else None,
              f"median_at_{args.epochs}_epochs": float(np.median(end)) if end else None,
              "seeds_done": len(end)}
    write_json(f"mopo_longer_{name}.json", result)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for s, r in per_seed.items():
        if r["curve"]:
            x, y = zip(*r["curve"])
            ax.plot(np.asarray(x) / 1000, y, marker=".", label=f"MOPO seed {s}")
    ax.axhline(behaviour, color="k", ls="--", label=f"behaviour policy ({behaviour:.1f})")
    ax.axvline(base / 1000, color="gray", ls=":", label="mopo_scores.py budget (40 epochs)")
    ax.set_xlabel("SAC gradient steps (k)")
    ax.set_ylabel("normalized score")
    ax.set_title(f"MOPO on {name}, continued to {args.epochs} epochs", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"mopo_longer_{name}.png", dpi=110)
    plt.close(fig)
    print({k: v for k, v in result.items() if k not in ("machine", "per_seed", "budget")})
    if args.carry:
        for d in runs.values():
            if d is not None and final_score(d, total) is not None:
                carry_metrics(d)


if __name__ == "__main__":
    main()
