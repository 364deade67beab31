"""MOPO vs the behaviour policy and vs behaviour cloning, D4RL normalized scores, on our own datasets.

For each dataset (halfcheetah random / medium / medium-replay, hopper medium-replay, made by
benchmarks/offline_datasets.py) and each seed: MOPO with the paper's h and λ for that dataset (the presets of
mbrlax.algorithms.mopo, penalty max_aleatoric) and behaviour cloning on the same data. The behaviour
policy's score is the dataset's own average episode return. Scores: 100·(R − R_random)/(R_expert − R_random)
with the dataset's reference returns. Medians (and all values) over seeds.

The training budget is far below the paper's (1000 epochs × 1000 SAC steps, 50,000 rollouts per batch):
BUDGET below, chosen to fit a 2-core CPU shared with other jobs. Runs are resumable and finished runs are
skipped, so re-running the script continues where it stopped; the JSON is rewritten from what exists.
`--carry` copies the metrics of finished runs (and the IQL results) to benchmarks/carry/mopo/, which is committed:
on a fresh machine they count as finished, and only the missing runs are trained.

    python benchmarks/mopo_scores.py [--seeds 0 1 2] [--datasets halfcheetah-medium-replay ...] [--epochs N]
                                     [--methods bc mopo iql]

`iql` is the model-free offline reference: d3rlpy's IQL (benchmarks/peers/d3rlpy_offline.py, in its own venv
made by `bash benchmarks/peers/setup.sh d3rlpy`; skipped with a message when that venv is missing), given as many
gradient steps as MOPO's SAC gets. Each method can run in its own process (e.g. `--methods bc mopo` beside
`--methods iql` on a 2-core machine); both rewrite the JSON from everything that exists.

Writes benchmarks/results/mopo_scores.json and mopo_scores.png.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, RUNS, carry, eval_curve, machine, restore_carried, train_or_resume, write_json  # noqa: E402

HERE = Path(__file__).resolve().parent
D3RLPY = HERE / "peers" / ".venvs" / "d3rlpy" / "bin" / "python"

DATA = RUNS / "datasets" / "mbrlax"
# D4RL's reference returns (d4rl/infos.py REF_MIN_SCORE / REF_MAX_SCORE: random policy, 1M-step SAC expert),
# to put our returns on the paper's scale too; our own datasets' references are in the JSON beside them.
D4RL_REF = {"halfcheetah": (-280.178953, 12135.0), "hopper": (-20.272305, 3234.3), "walker2d": (1.629008, 4592.3)}
DATASETS = ["halfcheetah-medium-replay", "halfcheetah-random", "hopper-medium-replay", "halfcheetah-medium"]
# MOPO budget per run (gradient steps = epochs × epoch_length); the paper: 1000 × 1000, 50,000 rollouts.
# The model is fitted to MOPO's default cap of 200 epochs: capped at 50 it was under-fitted (halfcheetah-medium-
# replay: holdout MSE 0.030 vs 0.015, mean penalty 2.9 vs 2.3) and MOPO scored -0.3 there instead of 73
# (benchmarks/results/mopo_scores_cap50.json, docs/mopo.md).
BUDGET = dict(epochs=40, epoch_length=1000, rollout_freq=1000, rollout_batch_size=10_000, model_retain_epochs=5,
              eval_every=5000, eval_episodes=5, model_max_epochs=200, updates_per_call=250)
BC_BUDGET = dict(steps=10_000, updates_per_call=1000, eval_every=5000, eval_episodes=5)


def finished(run_dir: Path, at: int) -> bool:
    """A run finished here or on an earlier machine (a carried copy holds its metrics, no checkpoint)."""
    restore_carried(run_dir, "metrics.jsonl")
    return final_score(run_dir, at) is not None


def carry_metrics(run_dir: Path) -> None:
    """Copy a finished run's metrics and config (not its checkpoints) to benchmarks/carry."""
    for f in ("metrics.jsonl", "config.json", "run.json"):
        if (run_dir / f).exists():
            carry(run_dir / f)


def carry_finished(names: list[str], seeds: list[int], epochs: int) -> None:
    """Copy the metrics (not the checkpoints) of every finished run, and the IQL results, to benchmarks/carry."""
    for name in names:
        for seed in seeds:
            for run_dir, at in ((RUNS / "mopo" / f"mopo-{name}-s{seed}", epochs * BUDGET["epoch_length"]),
                                (RUNS / "mopo" / f"bc-{name}-s{seed}", BC_BUDGET["steps"])):
                if final_score(run_dir, at) is not None:
                    carry_metrics(run_dir)
            if reference_path(name, seed).exists():
                carry(reference_path(name, seed))


def run_mopo(name: str, seed: int, epochs: int) -> Path:
    from mbrlax.algorithms import mopo

    run_dir = RUNS / "mopo" / f"mopo-{name}-s{seed}"
    total = epochs * BUDGET["epoch_length"]
    if not finished(run_dir, total):
        train_or_resume(mopo, run_dir, total,
                        new=dict(dataset=str(DATA / f"{name}-v0"), seed=seed, progress=False, tensorboard=False,
                                 checkpoint_every=2 * BUDGET["epoch_length"], **{**BUDGET, "epochs": epochs}),
                        resume=dict(epochs=epochs, progress=False, tensorboard=False))
    return run_dir


def run_bc(name: str, seed: int) -> Path:
    from mbrlax.algorithms import bc

    run_dir = RUNS / "mopo" / f"bc-{name}-s{seed}"
    if not finished(run_dir, BC_BUDGET["steps"]):
        train_or_resume(bc, run_dir, BC_BUDGET["steps"],
                        new=dict(dataset=str(DATA / f"{name}-v0"), seed=seed, progress=False, tensorboard=False,
                                 **BC_BUDGET),
                        resume=dict(progress=False, tensorboard=False))
    return run_dir


def reference_path(name: str, seed: int, algo: str = "iql") -> Path:
    return RUNS / "mopo" / f"{algo}-{name}-s{seed}.json"


def run_reference(name: str, seed: int, steps: int, algo: str = "iql") -> Path | None:
    """d3rlpy's IQL on the same dataset, in the peer venv; the result is one JSON file per run."""
    out = reference_path(name, seed, algo)
    if out.exists() or restore_carried(out):
        return out
    if not D3RLPY.exists():
        print(f"skipping {algo}: no d3rlpy venv (bash benchmarks/peers/setup.sh d3rlpy)", flush=True)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(D3RLPY), str(HERE / "peers" / "d3rlpy_offline.py"), "--dataset", str(DATA / f"{name}-v0"),
                    "--algo", algo, "--steps", str(steps), "--seed", str(seed), "--out", str(out)], check=True)
    return out


def reference_result(name: str, seed: int, algo: str = "iql") -> dict | None:
    p = reference_path(name, seed, algo)
    restore_carried(p)
    return json.loads(p.read_text()) if p.exists() else None


def final_score(run_dir: Path, at: int, key: str = "eval/normalized_score") -> float | None:
    from mbrlax import runs

    if not (run_dir / "metrics.jsonl").exists():
        return None
    rows = [r for r in runs.read_metrics(run_dir) if key in r and r["step"] == at]
    return float(rows[-1][key]) if rows else None


def eval_scores(run_dir: Path) -> list[tuple[int, float]]:
    """(step, normalized score) of every evaluation of a run: the learning curve."""
    if not (run_dir / "metrics.jsonl").exists():
        return []
    return list(zip(*eval_curve(run_dir, "eval/normalized_score")))


def d4rl_score(name: str, ret: float | None) -> float | None:
    lo, hi = D4RL_REF[name.split("-")[0]]
    return None if ret is None else 100.0 * (ret - lo) / (hi - lo)


def collect(names: list[str], seeds: list[int], epochs: int) -> dict:
    from mbrlax.data import offline

    out = {}
    for name in names:
        path = DATA / f"{name}-v0"
        if not path.exists():
            continue
        ds = offline.load(path, check_env=False)
        rets = ds.episode_returns()
        for s in seeds:  # runs finished on an earlier machine
            for algo in ("mopo", "bc"):
                restore_carried(RUNS / "mopo" / f"{algo}-{name}-s{s}", "metrics.jsonl")
        mopo_s = {s: final_score(RUNS / "mopo" / f"mopo-{name}-s{s}", epochs * BUDGET["epoch_length"]) for s in seeds}
        bc_s = {s: final_score(RUNS / "mopo" / f"bc-{name}-s{s}", BC_BUDGET["steps"]) for s in seeds}
        mopo_v = [v for v in mopo_s.values() if v is not None]
        bc_v = [v for v in bc_s.values() if v is not None]
        behaviour = float(ds.normalized_score(rets.mean())) if len(rets) else None
        med = float(np.median(mopo_v)) if mopo_v else None
        mopo_r = {s: final_score(RUNS / "mopo" / f"mopo-{name}-s{s}", epochs * BUDGET["epoch_length"],
                                 "eval/return_mean") for s in seeds}
        bc_r = {s: final_score(RUNS / "mopo" / f"bc-{name}-s{s}", BC_BUDGET["steps"], "eval/return_mean")
                for s in seeds}
        curves = {s: eval_scores(RUNS / "mopo" / f"mopo-{name}-s{s}") for s in seeds}
        # the mean of the last 3 evaluations of a finished run: less noisy than the final one alone
        last3 = {s: float(np.mean([v for _, v in c[-3:]])) if mopo_s[s] is not None else None
                 for s, c in curves.items()}
        iql = {s: reference_result(name, s) for s in seeds}
        iql_s = {s: (r["normalized_score"] if r else None) for s, r in iql.items()}
        iql_r = {s: (r["return_mean"] if r else None) for s, r in iql.items()}
        med_or_none = lambda d: float(np.median([v for v in d.values() if v is not None])) \
            if any(v is not None for v in d.values()) else None  # noqa: E731
        out[name] = {
            "transitions": len(ds), "ref_min_score": ds.ref_min_score, "ref_max_score": ds.ref_max_score,
            "behaviour_score": behaviour, "behaviour_return_mean": float(rets.mean()) if len(rets) else None,
            "mopo_scores": mopo_s, "mopo_median": med,
            "mopo_last3_mean": last3, "mopo_last3_median": med_or_none(last3), "mopo_curves": curves,
            "bc_scores": bc_s, "bc_median": float(np.median(bc_v)) if bc_v else None,
            "iql_scores": iql_s, "iql_median": med_or_none(iql_s), "iql_returns": iql_r,
            "iql_ms_per_step": med_or_none({s: (r["ms_per_step"] if r else None) for s, r in iql.items()}),
            "seeds_done": {"mopo": len(mopo_v), "bc": len(bc_v), "iql": sum(v is not None for v in iql_s.values())},
            "mopo_beats_behaviour": (med > behaviour) if (med is not None and behaviour is not None) else None,
            "mopo_returns": mopo_r, "bc_returns": bc_r,
            "d4rl_reference_scale": {
                "behaviour": d4rl_score(name, float(rets.mean()) if len(rets) else None),
                "mopo_median": d4rl_score(name, med_or_none(mopo_r)), "bc_median": d4rl_score(name, med_or_none(bc_r)),
                "iql_median": d4rl_score(name, med_or_none(iql_r)),
            },
        }
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(2.4 * max(len(names), 2) + 2, 4.2))
    w = 0.21
    bars = (("behaviour_score", None, "behaviour policy (dataset average)", "tab:gray"),
            ("bc_median", "bc_scores", "BC (median over seeds)", "tab:orange"),
            ("iql_median", "iql_scores", "d3rlpy IQL (median over seeds)", "tab:green"),
            ("mopo_median", "mopo_scores", "MOPO (median over seeds)", "tab:blue"))
    for j, (key, per_seed, label, color) in enumerate(bars):
        off = (j - 1.5) * w
        vals = [results[n].get(key) if results[n].get(key) is not None else np.nan for n in names]
        ax.bar(x + off, vals, w, label=label, color=color)
        for i, n in enumerate(names):
            pts = [v for v in results[n].get(per_seed, {}).values() if v is not None] if per_seed else []
            ax.scatter([i + off] * len(pts), pts, color="k", s=8, zorder=3)
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylabel("normalized score (dataset's own random / SAC references)")
    ax.axhline(0, color="k", lw=0.6)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title("MOPO vs behaviour policy, BC and d3rlpy IQL on mbrlax's own datasets (small budget, see JSON)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--epochs", type=int, default=BUDGET["epochs"])
    ap.add_argument("--methods", nargs="+", choices=["bc", "mopo", "iql"], default=["bc", "mopo", "iql"])
    ap.add_argument("--iql-steps", type=int, default=None, help="default: MOPO's SAC steps (epochs × 1000)")
    ap.add_argument("--collect-only", action="store_true", help="only rewrite the JSON/PNG from existing runs")
    ap.add_argument("--carry", action="store_true", help="copy finished runs' metrics to benchmarks/carry/ at the end")
    args = ap.parse_args()
    if not args.collect_only:
        # seed-major: one seed of every dataset before the next seed, so partial results cover all datasets
        for seed in args.seeds:
            for name in args.datasets:
                restore_carried(DATA / f"{name}-v0", "data/metadata.json")  # datasets carried in the repo
                if not (DATA / f"{name}-v0" / "data").exists():
                    print(f"skipping {name}: dataset not generated yet (benchmarks/offline_datasets.py)", flush=True)
                    continue
                if "bc" in args.methods:
                    run_bc(name, seed)
                if "mopo" in args.methods:
                    run_mopo(name, seed, args.epochs)
                if "iql" in args.methods:
                    run_reference(name, seed, args.iql_steps or args.epochs * BUDGET["epoch_length"])
                results = collect(args.datasets, args.seeds, args.epochs)
                write_json("mopo_scores.json", {"machine": machine(), "budget": {**BUDGET, "epochs": args.epochs},
                                                "bc_budget": BC_BUDGET, "penalty": "max_aleatoric", "results": results})
                plot(results, RESULTS / "mopo_scores.png")
                print(f"{name} seed {seed}: {results.get(name)}", flush=True)
    results = collect(args.datasets, args.seeds, args.epochs)
    write_json("mopo_scores.json", {"machine": machine(), "budget": {**BUDGET, "epochs": args.epochs},
                                    "bc_budget": BC_BUDGET, "penalty": "max_aleatoric", "results": results})
    plot(results, RESULTS / "mopo_scores.png")
    if args.carry:
        carry_finished(args.datasets, args.seeds, args.epochs)


if __name__ == "__main__":
    main()
