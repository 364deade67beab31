"""Helpers shared by the benchmark scripts: machine facts, JSON output, resumable runs."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(__file__).resolve().parent / "runs"  # run directories (git-ignored; keeps checkpoints for resume)
CARRY = Path(__file__).resolve().parent / "carry"  # committed slim copies of RUNS entries, for a fresh machine


def machine() -> dict[str, Any]:
    import jax

    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "python": platform.python_version(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_avg_1min_at_start": os.getloadavg()[0],
    }


def restore_carried(path: Path, marker: str | None = None) -> bool:
    """Copy RUNS/<rel> from CARRY/<rel> when `path` (under RUNS) lacks `marker` and the carried copy has it; with no
    marker, `path` is one file restored when missing. Returns whether it copied. Long runs, generated datasets and
    finished results continue on a fresh machine this way."""
    import shutil

    carried = CARRY / path.relative_to(RUNS)
    have, want = (path / marker, carried / marker) if marker else (path, carried)
    if have.exists() or not want.exists():
        return False
    if carried.is_dir():
        shutil.copytree(carried, path, dirs_exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(carried, path)
    return True


def carry(path: Path) -> Path:
    """Copy `path` (a file or a directory under RUNS) to its place under CARRY, the inverse of restore_carried."""
    import shutil

    dst = CARRY / path.relative_to(RUNS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.copytree(path, dst, dirs_exist_ok=True)
    else:
        shutil.copyfile(path, dst)
    return dst


def train_or_resume(algo, run_dir: Path, steps: int, new: dict, resume: dict | None = None) -> None:
    """Train `algo` (an mbrlax.algorithms module) into run_dir with Config(**new), or, when run_dir holds a checkpoint
    short of `steps`, continue it with Config(resume=run_dir, **resume). A checkpoint at `steps` is left alone."""
    from mbrlax import checkpoint, runs

    if checkpoint.exists(run_dir):
        if runs.load_checkpoint(run_dir)["t"] < steps:
            algo.train(algo.Config(resume=str(run_dir), **(resume or {})))
    else:
        algo.train(algo.Config(run_dir=str(run_dir), **new))


def xla_flops(fn, *args) -> float:
    """FLOPs of one call of `fn(*args)`, from XLA's cost analysis of the compiled function."""
    import jax

    cost = jax.jit(fn).lower(*args).compile().cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def zero_batch(shape: tuple[int, ...], obs_dim: int, act_dim: int):
    """A Transition of zeros with leading dims `shape` (B, or E×B for per-member model batches): an xla_flops input."""
    import jax.numpy as jnp

    from mbrlax.types import Transition

    return Transition(jnp.zeros((*shape, obs_dim)), jnp.zeros((*shape, act_dim)), jnp.zeros(shape),
                      jnp.zeros((*shape, obs_dim)), jnp.zeros(shape))


def sac_update_flops(sac, state, obs_dim: int, act_dim: int, batch_size: int) -> float:
    """FLOPs of one SAC update on a batch of `batch_size`."""
    import jax

    return xla_flops(sac.update, state, zero_batch((batch_size,), obs_dim, act_dim), jax.random.key(0))


def model_minibatch_flops(model, state, obs_dim: int, act_dim: int, batch_size: int) -> float:
    """FLOPs of one ensemble training minibatch: the loss's forward and backward pass, batch_size rows per member."""
    import jax

    batch = zero_batch((model.ensemble_size, batch_size), obs_dim, act_dim)
    return xla_flops(lambda p: jax.grad(lambda q: model.loss(q, state.in_norm, state.out_norm, batch)[0])(p),
                     state.params)


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path


def eval_curve(run_dir: str | Path, key: str = "eval/return_mean") -> tuple[list[int], list[float]]:
    """A run's evaluation curve from its metrics.jsonl: (steps, values of `key`, by default the mean return)."""
    from mbrlax.runs import read_metrics

    rows = [r for r in read_metrics(run_dir) if key in r]
    return [r["step"] for r in rows], [float(r[key]) for r in rows]
