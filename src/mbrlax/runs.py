"""Run directories: resolved config, metrics (metrics.jsonl + TensorBoard), learning-curve PNG, checkpoints,
and the progress bar.

A run directory looks like
    runs/mbpo-Pendulum-v1-s0-20261122-051500/
        config.json        the resolved config (every preset value filled in)
        metrics.jsonl      one JSON object per logging event, each with "step"
        events.out.tfevents.*   the same scalars for TensorBoard
        curve.png          evaluation return vs environment steps, refreshed at every evaluation
        checkpoint.pkl     the latest checkpoint; checkpoint.prev.pkl the one before
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import time
from pathlib import Path
from typing import Any, Iterable

import jax
import numpy as np

CHECKPOINT_FORMAT = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt or made by a different config."""


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    i = 1
    while path.exists():
        path = Path(root) / f"{name}-{stamp}-{i}"
        i += 1
    path.mkdir(parents=True)
    return path


def save_config(run_dir: Path, cfg: Any, algorithm: str | None = None) -> None:
    """config.json (the resolved config) and, given `algorithm` (its `mbrlax train` name), run.json, from
    which `mbrlax eval` learns which algorithm made the run (and so how to load its policy)."""
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    (run_dir / "config.json").write_text(json.dumps(d, indent=2, default=list) + "\n")
    if algorithm is not None:
        (run_dir / "run.json").write_text(json.dumps({"algorithm": algorithm}) + "\n")


def run_algorithm(run_dir: str | os.PathLike) -> str:
    """The algorithm name recorded in run.json ('mbpo' for runs made before run.json existed)."""
    path = Path(run_dir) / "run.json"
    if not path.exists():
        load_config(run_dir)  # a clear error if this is no run directory at all
        return "mbpo"
    return json.loads(path.read_text())["algorithm"]


def load_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run directory: it has no config.json")
    return json.loads(path.read_text())


# ---- metrics -------------------------------------------------------------------------------------


def _scalar(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


class MetricsLogger:
    """Appends `{"step": s, **scalars}` to metrics.jsonl and the same scalars to TensorBoard."""

    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(run_dir), flush_secs=30)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        row: dict[str, Any] = {"step": int(step)}
        for k, v in metrics.items():
            if isinstance(v, (list, tuple)):
                row[k] = list(v)
                continue
            f = _scalar(v)
            if f is None:
                continue
            row[k] = f if math.isfinite(f) else str(f)
            if self.tb is not None and math.isfinite(f):
                self.tb.add_scalar(k, f, int(step))
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop the rows logged after `step` (a resumed run re-does them)."""
        if not self.path.exists():
            return
        rows = [r for r in self.path.read_text().splitlines() if r.strip() and json.loads(r)["step"] <= step]
        self.path.write_text("".join(r + "\n" for r in rows))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl (is it a run directory?)")
    return [json.loads(r) for r in path.read_text().splitlines() if r.strip()]


# ---- curves --------------------------------------------------------------------------------------


def plot_runs(
    run_dirs: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    key: str = "eval/return_mean",
    title: str | None = None,
    labels: list[str] | None = None,
) -> Path:
    """Learning curves of several runs on one figure (mean ± std of the evaluation episodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dirs = [Path(r) for r in run_dirs]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, rd in enumerate(run_dirs):
        rows = [r for r in read_metrics(rd) if key in r]
        if not rows:
            continue
        x = np.array([r["step"] for r in rows])
        y = np.array([float(r[key]) for r in rows])
        label = labels[i] if labels else rd.name
        ax.plot(x, y, label=label, lw=1.8)
        std_key = key.replace("_mean", "_std")
        if std_key != key and all(std_key in r for r in rows):
            s = np.array([float(r[std_key]) for r in rows])
            ax.fill_between(x, y - s, y + s, alpha=0.2)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ---- checkpoints ---------------------------------------------------------------------------------


def to_host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, jax.device_get(tree))


def save_checkpoint(run_dir: Path, payload: dict) -> Path:
    """Atomically write checkpoint.pkl; the previous one is kept as checkpoint.prev.pkl."""
    path = run_dir / "checkpoint.pkl"
    tmp = run_dir / "checkpoint.pkl.tmp"
    with tmp.open("wb") as fh:
        pickle.dump({"format": CHECKPOINT_FORMAT, **payload}, fh, protocol=pickle.HIGHEST_PROTOCOL)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        os.replace(path, run_dir / "checkpoint.prev.pkl")
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "checkpoint.pkl"
    if not path.exists():
        raise CheckpointError(f"no checkpoint in {run_dir}: the run stopped before its first checkpoint")
    try:
        with path.open("rb") as fh:
            payload = pickle.load(fh)
    except Exception as e:  # truncated file, garbage, wrong pickle
        prev = Path(run_dir) / "checkpoint.prev.pkl"
        fix = f" The previous checkpoint is {prev}: rename it to checkpoint.pkl to resume from it." if prev.exists() else ""
        raise CheckpointError(f"checkpoint {path} is corrupt ({type(e).__name__}: {e}).{fix}") from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an mbrlax checkpoint of format {CHECKPOINT_FORMAT}")
    return payload


def check_like(name: str, loaded: Any, reference: Any) -> Any:
    """Verify that a loaded pytree has the structure and shapes of a freshly initialized one; returns it
    as device arrays. A mismatch names the first differing leaf."""
    ref_leaves, ref_def = jax.tree.flatten_with_path(reference)
    try:
        got_leaves = ref_def.flatten_up_to(loaded)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint '{name}' does not match this config's structure: {e}") from e
    for (path, ref), got in zip(ref_leaves, got_leaves):
        if np.shape(ref) != np.shape(got):
            raise CheckpointError(
                f"checkpoint '{name}{jax.tree_util.keystr(path)}' has shape {np.shape(got)}, but this config "
                f"needs {np.shape(ref)}: the checkpoint was made with different sizes (env or network)."
            )
    return jax.tree.unflatten(ref_def, [jax.numpy.asarray(g) for g in got_leaves])


# ---- progress ------------------------------------------------------------------------------------


class ProgressBar:
    """A rich progress bar over environment steps with a live status line; silent when disabled."""

    def __init__(self, total: int, description: str, enabled: bool = True, start: int = 0):
        self.enabled = enabled
        self.status = ""
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
        )
        self._p.start()
        self._task = self._p.add_task(description, total=total, completed=start, status="")

    def update(self, completed: int, status: str | None = None) -> None:
        if not self.enabled:
            return
        if status is not None:
            self.status = status
        self._p.update(self._task, completed=completed, status=self.status)

    def close(self) -> None:
        if self.enabled:
            self._p.stop()
