"""What a new machine sees: the README's two commands on a fresh clone, with nothing cached.

Each repeat clones the committed HEAD into a temporary directory and times `make test` and `make demo` there:
a new venv, pip with no cache (PIP_NO_CACHE_DIR=1, so every wheel is downloaded again) and an empty XLA
compilation cache for the tests. Recorded per repeat: the whole command's wall clock, pytest's own seconds, the
demo's final return and its time/* counters, the load average; once, the machine's float32 GEMM rate (the
suite is compile-bound, the demo update-bound: both scale with the machine, so compare runs by this rate too).
Run it on a quiet machine (`uptime` first); about 6 minutes a repeat on 2 cores.

    python benchmarks/cold_start.py [--repeats 3] [--only test|demo]

Writes benchmarks/results/cold_start.json and .png.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, eval_curve, machine, write_json  # noqa: E402
from sac_speed import gemm_rate  # noqa: E402

from mbrlax.runs import read_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 360  # the run-loop issue's bound for each command


def timed(cmd: list[str], cwd: Path, env: dict, log: Path) -> tuple[int, float]:
    tic = time.perf_counter()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - tic


def one_repeat(what: list[str], logs: Path, i: int) -> dict:
    out: dict = {"load_avg_1min_before": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(prefix="mbrlax-cold-") as tmp:
        clone = Path(tmp) / "mbrlax"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "XLA_", "JAX_"))}
        env.update(PIP_NO_CACHE_DIR="1", JAX_COMPILATION_CACHE_DIR=str(Path(tmp) / "xla-cache"))
        for target in what:
            # each command sets up its own venv, as on a fresh machine
            subprocess.run(["rm", "-rf", str(clone / ".venv")], check=True)
            log = logs / f"{target}-{i}.log"
            rc, secs = timed(["make", target], clone, env, log)
            r: dict = {"rc": rc, "seconds": secs, "log": str(log)}
            text = log.read_text(errors="replace")
            m = re.search(r"(\d+) passed.* in ([\d.]+)s", text)
            if target == "test" and m:
                r.update(passed=int(m.group(1)), pytest_seconds=float(m.group(2)))
            if target == "demo":
                run = next((clone / "runs").glob("*/metrics.jsonl"), None)
                if run is not None:
                    steps, returns = eval_curve(run.parent)
                    last = read_metrics(run.parent)[-1]
                    r.update(eval_steps=steps, eval_returns=returns,
                             timers={k: v for k, v in last.items() if k.startswith("time/")})
            out[target] = r
            print(f"repeat {i} {target}: rc {rc}, {secs:.0f} s", flush=True)
    return out


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for j, target in enumerate(("test", "demo")):
        secs = [r[target]["seconds"] for r in res["repeats"] if target in r]
        if secs:
            ax.scatter([j] * len(secs), secs, color=f"C{j}", zorder=3)
            ax.hlines(np.median(secs), j - 0.25, j + 0.25, color=f"C{j}", lw=2, label=f"make {target}: median "
                      f"{np.median(secs):.0f} s of {len(secs)}")
    ax.axhline(TARGET_SECONDS, color="k", ls="--", lw=1, label=f"bound {TARGET_SECONDS} s")
    ax.set_xticks([0, 1], ["make test (cold)", "make demo (cold)"])
    ax.set_ylabel("wall clock, s (fresh clone, venv, no pip or XLA cache)")
    ax.set_ylim(0, max(TARGET_SECONDS * 1.2, ax.get_ylim()[1]))
    ax.set_title(f"the README's two commands on a new machine ({res['gemm_gflops']:.0f} GFLOP/s GEMM)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["test", "demo"], default=None)
    args = ap.parse_args()
    what = [args.only] if args.only else ["test", "demo"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    logs = Path(tempfile.mkdtemp(prefix="mbrlax-cold-logs-"))
    res: dict = {"commit": commit, "machine": machine(), "gemm_gflops": gemm_rate(1024, 1024, 1024, 10),
                 "target_seconds": TARGET_SECONDS,
                 "repeats": []}
    for i in range(args.repeats):
        res["repeats"].append(one_repeat(what, logs, i))
        for target in what:
            secs = [r[target]["seconds"] for r in res["repeats"]]
            res[f"{target}_median_seconds"] = float(np.median(secs))
        write_json("cold_start.json", res)
        plot(res, RESULTS / "cold_start.png")
    print({k: v for k, v in res.items() if k.endswith("median_seconds")})


if __name__ == "__main__":
    main()
