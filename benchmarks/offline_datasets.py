"""Generate the offline datasets the MOPO benchmarks use (resumable; run it in the background).

    nice -n 10 .venv/bin/python benchmarks/offline_datasets.py                # all of them
    nice -n 10 .venv/bin/python benchmarks/offline_datasets.py --env Hopper-v5

Datasets: halfcheetah random / medium / medium-replay / expert (for the reference return) and hopper
medium-replay (+ random, medium), written to benchmarks/runs/datasets/mbrlax/<env>-<kind>-v0 in the Minari
format. The SAC run behind each environment is cached under benchmarks/runs/datasets/policies (killing and
re-running continues it). Budgets: DATA_PRESETS in src/mbrlax/datasets.py (120,000 SAC steps for
HalfCheetah and Hopper, ~30 min each on 2 cores), or --sac-steps (see docs/datasets.md). Writes
benchmarks/results/offline_datasets.json with each dataset's summary.

Every finished dataset is also copied to benchmarks/carry/datasets/ (committed, a few MB each), and a dataset
missing from benchmarks/runs/ is restored from there instead of regenerated: a fresh machine has them at once.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CARRY as CARRY_ROOT  # noqa: E402
from common import RESULTS, RUNS, carry, machine, restore_carried, write_json

from mbrlax import datasets  # noqa: E402
from mbrlax.data import offline  # noqa: E402

ROOT = RUNS / "datasets"
CARRY = CARRY_ROOT / "datasets"
PLAN = {
    "HalfCheetah-v5": ("random", "medium", "medium-replay"),
    "Hopper-v5": ("medium-replay", "random", "medium"),
}


def path_of(env: str, kind: str) -> Path:
    return ROOT / "mbrlax" / f"{offline.env_slug(env)}-{kind}-v0"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", action="append", help="only these envs (default: all of PLAN)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--sac-steps", type=int, default=None, help="SAC budget (default: DATA_PRESETS)")
    args = ap.parse_args()
    envs = args.env or list(PLAN)
    for env in envs:
        for kind in PLAN[env]:
            p = path_of(env, kind)
            carried = CARRY / p.relative_to(ROOT)
            if restore_carried(p, "data/metadata.json"):
                print(f"{p} restored from {carried}", flush=True)
            if (p / "data" / "metadata.json").exists():
                print(f"{p} exists", flush=True)
            else:
                tic = time.time()
                datasets.make_dataset(env, kind, out=p, root=ROOT, progress=args.progress, sac_steps=args.sac_steps)
                print(f"{env} {kind}: {time.time() - tic:.0f} s -> {p}", flush=True)
            if not (carried / "data" / "metadata.json").exists():
                carry(p)
    # the summary keeps the entries of datasets not on this machine (made elsewhere, not carried)
    old = RESULTS / "offline_datasets.json"
    summary = json.loads(old.read_text())["datasets"] if old.exists() else {}
    for env, kinds in PLAN.items():
        for kind in kinds:
            p = path_of(env, kind)
            if (p / "data" / "metadata.json").exists():
                s = offline.info(p)
                s.pop("snapshots", None)
                s["carried"] = (CARRY / p.relative_to(ROOT) / "data" / "metadata.json").exists()
                summary[f"{offline.env_slug(env)}-{kind}"] = s
    write_json("offline_datasets.json", {"machine": machine(), "root": str(ROOT), "datasets": summary})


if __name__ == "__main__":
    main()
