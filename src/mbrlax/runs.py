"""The run loop every algorithm shares: run directory, resume, metrics, progress, evaluation, checkpoints.

A run directory looks like
    runs/mbpo-Pendulum-v1-s0-20261122-051500/
        config.json        the resolved config (every preset value filled in)
        run.json           which algorithm made the run (`mbrlax eval` and `--resume` read it)
        metrics.jsonl      one JSON object per logging event, each with "step"
        events.out.tfevents.*   the same scalars for TensorBoard
        curve.png          evaluation return vs steps, refreshed at every evaluation
        checkpoints/<step>/  the latest two checkpoints (mbrlax.checkpoint: no pickles, crash-safe)
        .lock              held while a training writes here; a second training is refused

An algorithm's `train(cfg)` reads as its paper's steps around this:

    cfg = runs.prepare(cfg, "mbpo", may_change=("steps",))   # a resume: the run's own config, checked
    cfg = resolve(cfg)
    with runs.Run(cfg, "mbpo", name=..., total=cfg.steps) as run:
        st = fresh state;  if run.resumed: st = restore(run.resumed, st)
        while ...:
            with run.timer("model"): ...          # time/model in the metrics, carried across resumes
            run.log(t, info)
            if run.due(t, cfg.eval_every): run.evaluate(t, env, act, episodes, seed)
            if run.due(t, cfg.checkpoint_every): run.save(t, state)
            run.progress(t, eval=..., mse=...)
    return run.result()
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mbrlax import checkpoint
from mbrlax.checkpoint import CheckpointError, restore_like

check_like = restore_like  # the name the algorithm files use

# Config fields that describe where and how a run is shown, never what it computes: a resume takes them
# from the command line, not from the run's config.json.
RUN_FIELDS = ("run_root", "run_dir", "resume", "overwrite", "progress", "tensorboard")


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (in use, already holding a run, made by another algorithm)."""


class NonFiniteError(RuntimeError):
    """NaN or inf where learning cannot go on: from the environment, or every update of a learner rejected."""


# ---- run directory and config --------------------------------------------------------------------


def new_run_dir(root: str | os.PathLike, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    i = 1
    while path.exists():
        path = Path(root) / f"{name}-{stamp}-{i}"
        i += 1
    path.mkdir(parents=True)
    return path


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{path} ({what}) is not valid JSON ({e}): the file is damaged; restore it from "
                              f"a copy, or start a new run") from e


def save_config(run_dir: Path, cfg: Any, algorithm: str | None = None) -> None:
    """config.json (the resolved config) and, given `algorithm` (its `mbrlax train` name), run.json."""
    d = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) else dict(cfg)
    _write_atomic(run_dir / "config.json", json.dumps(d, indent=2, default=list) + "\n")
    if algorithm is not None:
        _write_atomic(run_dir / "run.json", json.dumps({"algorithm": algorithm}) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a run directory: it has no config.json")
    return _read_json(path, "the run's config")


def run_algorithm(run_dir: str | os.PathLike) -> str:
    """The algorithm name recorded in run.json ('mbpo' for runs made before run.json existed)."""
    path = Path(run_dir) / "run.json"
    if not path.exists():
        load_config(run_dir)  # a clear error if this is no run directory at all
        return "mbpo"
    return _read_json(path, "which algorithm made the run")["algorithm"]


def _plain(x: Any) -> Any:
    """Tuples and lists compare equal after this (configs round-trip through JSON)."""
    return json.loads(json.dumps(x, default=list))


def config_from_dict(cls: type, saved: dict) -> Any:
    """A Config from a config.json dict: lists back to tuples; keys this version no longer has are refused."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(saved) - names)
    if unknown:
        raise CheckpointError(f"the run's config.json has fields {unknown} that {cls.__module__}.Config does not "
                              f"have: it was made by another algorithm or another mbrlax version")

    def back(v: Any) -> Any:
        return tuple(back(x) for x in v) if isinstance(v, list) else v

    return cls(**{k: back(v) for k, v in saved.items()})


def prepare(cfg: Any, algorithm: str, may_change: Sequence[str] = ()) -> Any:
    """The config a run goes on with. A new run: `cfg` unchanged. A resume (`cfg.resume` set): the run's own
    config.json, with the run-display fields (RUN_FIELDS) and the fields in `may_change` (e.g. `steps`) taken
    from `cfg` where given. Any other field given with a value that differs from the run's, or a run made by
    another algorithm, is a `RunDirError` that names it (never silently dropped)."""
    if cfg.resume is None:
        return cfg
    run_dir = Path(cfg.resume)
    if not run_dir.is_dir():
        raise RunDirError(f"cannot resume {run_dir}: no such directory")
    made_by = run_algorithm(run_dir)
    if made_by != algorithm:
        raise RunDirError(f"{run_dir} is a run of '{made_by}', not '{algorithm}': resume it with "
                          f"`mbrlax train {made_by} --resume {run_dir}`")
    saved = load_config(run_dir)
    cls = type(cfg)
    default = cls()
    conflicts = []
    for f in dataclasses.fields(cls):
        if f.name in RUN_FIELDS or f.name in may_change or f.name not in saved:
            continue
        mine, theirs = _plain(getattr(cfg, f.name)), _plain(saved[f.name])
        if mine != _plain(getattr(default, f.name)) and mine != theirs:
            conflicts.append(f"{f.name}={getattr(cfg, f.name)!r} (the run has {saved[f.name]!r})")
    if conflicts:
        allowed = ", ".join(list(may_change) + ["progress", "tensorboard"])
        raise RunDirError(f"a resume continues the run with its own config; these options differ from it: "
                          f"{'; '.join(conflicts)}. Only {allowed} may change on a resume. To train with other "
                          f"settings start a new run (without --resume).")
    merged = dict(saved)
    for name in RUN_FIELDS:
        if name in merged or hasattr(cfg, name):
            merged[name] = getattr(cfg, name)
    for name in may_change:
        if _plain(getattr(cfg, name)) != _plain(getattr(default, name)):
            merged[name] = getattr(cfg, name)
    merged["run_dir"] = str(run_dir)
    return config_from_dict(cls, merged)


class _Lock:
    """An exclusive flock on run_dir/.lock for the life of a training; the OS drops it if the process dies."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fh = self.path.open("a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "another process"
            self.fh.close()
            raise RunDirError(f"{run_dir} is in use by another training (pid {holder}); wait for it to end or "
                              f"use another --run-dir") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()

    def release(self) -> None:
        if not self.fh.closed:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()


# ---- metrics -------------------------------------------------------------------------------------


def _scalar(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


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

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def truncate(self, size: int) -> None:
        """Cut metrics.jsonl back to `size` bytes: what it held when the checkpoint was written."""
        if self.path.exists() and self.path.stat().st_size > size:
            with self.path.open("r+b") as fh:
                fh.truncate(size)

    def truncate_after(self, step: int) -> None:
        """Drop the rows logged after `step` (for checkpoints that did not record the file's size)."""
        if not self.path.exists():
            return
        rows = [r for r in read_metrics(self.path.parent) if r["step"] <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of metrics.jsonl. A torn last line (a kill mid-write) is skipped; damage elsewhere is an error
    naming the file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl (is it a run directory?)")
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            if i == len(lines) - 1:
                continue  # torn by a kill while writing; the next resume cuts it off
            raise CheckpointError(f"{path} line {i + 1} is not valid JSON ({e}): the file is damaged") from e
    return rows


# ---- curves --------------------------------------------------------------------------------------


def plot_runs(
    run_dirs: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    key: str = "eval/return_mean",
    title: str | None = None,
    labels: list[str] | None = None,
    xlabel: str = "environment steps",
) -> Path:
    """Learning curves of several runs on one figure (mean ± std of the evaluation episodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = [Path(r) for r in run_dirs]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, rd in enumerate(dirs):
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
    ax.set_xlabel(xlabel)
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


# ---- progress ------------------------------------------------------------------------------------


class ProgressBar:
    """A rich progress bar over steps with a live status line; silent when disabled."""

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


def warn(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True, soft_wrap=True).print(f"[yellow]warning:[/yellow] {msg}")


def to_host(tree: Any) -> Any:
    return jax.tree.map(np.asarray, jax.device_get(tree))


# ---- the run -------------------------------------------------------------------------------------


def _is_empty(run_dir: Path) -> bool:
    return not any(p.name != ".lock" for p in run_dir.iterdir())


class Run:
    """One training run: its directory (locked), metrics, timers, progress bar, evaluations and checkpoints.

    `cfg` must have the RUN_FIELDS and `checkpoint_every`. A new run refuses a `run_dir` that already holds
    files unless `cfg.overwrite`; a resume (`cfg.resume`, after `prepare`) loads the newest checkpoint into
    `self.resumed` (the `state` given to `save`), cuts metrics.jsonl back to what it held then and carries
    on the timers, so nothing is logged twice and nothing is lost.
    """

    def __init__(self, cfg: Any, algorithm: str, name: str, total: int, *, unit: str = "environment steps"):
        self.cfg, self.algorithm, self.total, self.unit = cfg, algorithm, int(total), unit
        self.resumed: dict | None = None
        self.timers: dict[str, float] = {}
        self._rejected_calls = 0
        self._status: dict[str, str] = {}
        if cfg.resume is not None:
            self.dir = Path(cfg.resume)
            self._lock = _Lock(self.dir)
            try:
                payload = checkpoint.load(self.dir)
            except BaseException:
                self._lock.release()
                raise
            self.resumed, info = payload["state"], payload["run"]
            self.timers = dict(info.get("timers") or {})
            start = int(info["step"])
            # a new length: a later bare --resume keeps it
            save_config(self.dir, dataclasses.replace(cfg, resume=None), algorithm=algorithm)
        else:
            name = name.replace("/", "_")  # env ids like mbrlax/CartPoleSwingUp-v0: one directory, not two
            self.dir = Path(cfg.run_dir) if cfg.run_dir else new_run_dir(cfg.run_root, name)
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = _Lock(self.dir)
            if not _is_empty(self.dir):
                if not getattr(cfg, "overwrite", False):
                    self._lock.release()
                    raise RunDirError(
                        f"{self.dir} already holds a run (or other files); pass --overwrite to replace it, "
                        f"`--resume {self.dir}` to continue it, or choose another --run-dir")
                for p in self.dir.iterdir():
                    if p.name != ".lock":
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
            save_config(self.dir, cfg, algorithm=algorithm)
            start = 0
        self.logger = MetricsLogger(self.dir, tensorboard=cfg.tensorboard)
        if self.resumed is not None:
            size = payload["run"].get("metrics_bytes")
            if size is None:  # converted from a format-1 checkpoint
                self.logger.truncate_after(start)
            else:
                self.logger.truncate(size)
        self.evals: list[tuple[int, float]] = [
            (r["step"], float(r["eval/return_mean"])) for r in self._rows() if "eval/return_mean" in r]
        self.bar = ProgressBar(self.total, f"{algorithm} {name}", cfg.progress, start)

    # context manager: always release the lock and close the files
    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.bar.close()
        self.logger.close()
        self._lock.release()

    def _rows(self) -> list[dict]:
        return read_metrics(self.dir) if (self.dir / "metrics.jsonl").exists() else []

    # ---- what a loop calls ----
    @staticmethod
    def due(t: int, every: int, total: int | None = None) -> bool:
        """True every `every` steps and at `total`."""
        return t % every == 0 or (total is not None and t == total)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.logger.log(step, metrics)

    @contextlib.contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Adds the wall-clock seconds of the block to time/<name> (the block should block on its results)."""
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.timers[name] = self.timers.get(name, 0.0) + time.perf_counter() - tic

    def times(self) -> dict[str, float]:
        return {f"time/{k}": v for k, v in self.timers.items()}

    def evaluate(self, step: int, env: Any, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int,
                 extra: dict[str, Any] | None = None) -> tuple[float, float]:
        """Evaluate `act` for `episodes` seeded episodes, log eval/return_mean, _std, the timers and `extra`,
        refresh curve.png. Returns (mean, std)."""
        from mbrlax.evaluation import evaluate

        with self.timer("eval"):
            mean, std, _ = evaluate(env, act, episodes, seed=seed)
        self.record_eval(step, mean, std, extra)
        return mean, std

    def record_eval(self, step: int, mean: float, std: float, extra: dict[str, Any] | None = None) -> None:
        """Log an evaluation made elsewhere (e.g. of a pure-JAX env) as `evaluate` does."""
        if not (math.isfinite(mean) and math.isfinite(std)):
            raise NonFiniteError(f"the evaluation at step {step} returned {mean} ± {std}: the policy or the "
                                 f"environment produced non-finite values")
        self.evals.append((int(step), float(mean)))
        self.log(step, {"eval/return_mean": mean, "eval/return_std": std, **self.times(),
                        **{k: _scalar(v) if _scalar(v) is not None else v for k, v in (extra or {}).items()}})
        plot_runs([self.dir], self.dir / "curve.png", title=self.dir.name, xlabel=self.unit)
        self._status["eval"] = f"eval {mean:.1f}"

    def save(self, step: int, state: dict) -> None:
        """Checkpoint `state` (any nested data and pytrees: mbrlax.checkpoint) as of `step`."""
        payload = {"state": state, "run": {"step": int(step), "metrics_bytes": self.logger.size(),
                                           "timers": dict(self.timers), "algorithm": self.algorithm},
                   "config": dataclasses.asdict(self.cfg)}
        checkpoint.save(self.dir, step, payload)

    def progress(self, step: int, **status: str | float | None) -> None:
        """Move the bar; `status` values (already formatted strings, or None to drop one) fill its status line."""
        for k, v in status.items():
            if v is None:
                self._status.pop(k, None)
            else:
                self._status[k] = v if isinstance(v, str) else f"{k} {v:.3g}"
        self.bar.update(step, "  ".join(self._status.values()))

    def rejected(self, step: int, fraction: float, what: str = "SAC", patience: int = 50) -> None:
        """Note the fraction of a call's updates that were rejected as non-finite (the learner kept its previous
        parameters). Logged; `patience` calls in a row with every update rejected is a `NonFiniteError`."""
        if fraction > 0:
            self.log(step, {f"guard/{what.lower()}_rejected_fraction": fraction})
        self._rejected_calls = self._rejected_calls + 1 if fraction >= 1.0 else 0
        if self._rejected_calls >= patience:
            raise NonFiniteError(f"every {what} update of the last {patience} calls (to step {step}) produced NaN or "
                                 f"inf and was rejected: the learner cannot go on (lower its learning rate, or check "
                                 f"the rewards' scale)")

    def result(self, cls: type | None = None, steps: int | None = None, **extra: Any) -> Any:
        """The `Result` of the run from its last logged evaluation."""
        from mbrlax.algorithms.common import Result

        rows = [r for r in self._rows() if "eval/return_mean" in r]
        if not rows:
            raise RuntimeError(f"{self.dir}: the run logged no evaluation")
        final = rows[-1]
        return (cls or Result)(self.dir, self.total if steps is None else steps, float(final["eval/return_mean"]),
                               float(final["eval/return_std"]), list(self.evals), **extra)


# ---- the real environment ------------------------------------------------------------------------


def check_finite(what: str, step: int, **values: Any) -> None:
    """A `NonFiniteError` naming the first non-finite value (nothing non-finite may enter D_env)."""
    for name, v in values.items():
        a = np.asarray(v, dtype=np.float64)
        if not np.isfinite(a).all():
            shown = a if a.size <= 8 else f"with {int((~np.isfinite(a)).sum())} bad entries"
            raise NonFiniteError(
                f"{what} returned a non-finite {name} ({shown}) "
                f"at step {step}; mbrlax never learns from NaN/inf data. Fix the environment (or wrap it, e.g. "
                f"clip its observations) and resume from the last checkpoint.")


class EnvLoop:
    """A Gymnasium env stepped one transition at a time: episode returns and lengths, resets seeded
    `seed + episode index`, exact continuation of an interrupted episode after a resume, and a refusal of
    non-finite observations or rewards."""

    def __init__(self, env: Any, seed: int, state: dict | None = None):
        from mbrlax.envs.make import set_env_state

        self.env, self.seed = env, seed
        self.ret, self.len, self.count = 0.0, 0, 0
        self.obs: np.ndarray
        if state is not None:
            self.ret, self.len, self.count = float(state["ret"]), int(state["len"]), int(state["count"])
        if state is not None and state.get("obs") is not None and state.get("env_state") is not None:
            env.reset(seed=seed)
            set_env_state(env, state["env_state"])
            self.obs = np.asarray(state["obs"])
        else:
            self.obs = self._reset()

    def _reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self.seed + self.count)
        check_finite("the environment's reset", -1, observation=obs)
        return obs

    def step(self, action: np.ndarray, t: int) -> tuple[tuple, dict | None]:
        """One step: ((obs, action, reward, next_obs, terminated), finished-episode stats or None).
        `next_obs` is the true next observation even when the episode ends (the loop resets itself)."""
        next_obs, reward, terminated, truncated, _ = self.env.step(action)
        check_finite("the environment", t, observation=next_obs, reward=reward)
        transition = (self.obs, action, float(reward), next_obs, float(terminated))
        self.ret += float(reward)
        self.len += 1
        done = None
        if terminated or truncated:
            done = {"train/episode_return": self.ret, "train/episode_length": self.len}
            self.ret, self.len, self.count = 0.0, 0, self.count + 1
            next_obs = self._reset()
        self.obs = next_obs
        return transition, done

    def state_dict(self) -> dict:
        from mbrlax.envs.make import get_env_state

        return {"ret": self.ret, "len": self.len, "count": self.count, "obs": np.asarray(self.obs),
                "env_state": get_env_state(self.env)}


# ---- deprecated helpers kept for the algorithm files not yet on `Run` ----------------------------


def save_checkpoint(run_dir: Path, payload: dict) -> Path:
    """Checkpoint `payload` (with its step in payload["t"]) in the safe format; prefer `Run.save`."""
    metrics = Path(run_dir) / "metrics.jsonl"
    return checkpoint.save(run_dir, int(payload["t"]), {
        "state": payload, "run": {"step": int(payload["t"]), "timers": {},
                                  "metrics_bytes": metrics.stat().st_size if metrics.exists() else 0}})


def load_checkpoint(run_dir: str | os.PathLike) -> dict:
    """The `state` of the newest checkpoint of a run."""
    return checkpoint.load(run_dir)["state"]

