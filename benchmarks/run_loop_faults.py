"""The run-loop faults of issue 16, each tried again through the `mbrlax` command (or the Python API where a
fault needs a broken environment), with the behaviour seen now. Writes results/run_loop_faults.json.

    python benchmarks/run_loop_faults.py        # ~3-5 minutes on 2 cores (tiny MBPO runs)

Each probe records the exit code and the last line the command printed on stderr, and whether that is the
wanted behaviour (`ok`). The tests in tests/unit/test_runs.py assert the same behaviours; this script shows
them as a user meets them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json

from mbrlax import checkpoint, cli, runs

TINY = ["--env", "Pendulum-v1", "--init-steps", "40", "--epoch-length", "40", "--model-train-freq", "40",
        "--rollout-batch-size", "64", "--updates-per-step", "2", "--eval-every", "40", "--eval-episodes", "1",
        "--sac-hidden", "32", "32", "--model-hidden", "32", "32", "--ensemble-size", "3", "--num-elites", "2",
        "--model-max-epochs", "3", "--no-progress", "--no-tensorboard"]


def mbrlax(*args: str) -> tuple[int, str]:
    """`mbrlax ARGS` in this process: (exit code, last stderr line)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli.main(list(args))
        except Exception as e:  # a traceback a user would see
            rc, err = 1, io.StringIO(f"Traceback: {type(e).__name__}: {e}")
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    return rc, (lines[-1] if lines else "")


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"} for r in rows]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="mbrlax-faults-"))
    out: dict = {"machine": machine(), "probes": {}}

    def record(name: str, ok: bool, **seen) -> None:
        out["probes"][name] = {"ok": bool(ok), **seen}
        print(f"{'ok ' if ok else 'BAD'} {name}: {seen}", flush=True)

    run = str(tmp / "run")
    rc, _ = mbrlax("train", "mbpo", *TINY, "--steps", "80", "--run-dir", run)
    metrics = (Path(run) / "metrics.jsonl").read_text()

    # 1. a new run pointed at an existing run
    rc, msg = mbrlax("train", "mbpo", *TINY, "--steps", "40", "--seed", "1", "--run-dir", run)
    record("new run on an existing run dir", rc == 2 and (Path(run) / "metrics.jsonl").read_text() == metrics,
           rc=rc, stderr=msg, metrics_unchanged=(Path(run) / "metrics.jsonl").read_text() == metrics)
    rc2, msg2 = mbrlax("train", "mbpo", *TINY, "--steps", "40", "--run-dir", str(tmp / "ow"))
    rc2, msg2 = mbrlax("train", "mbpo", *TINY, "--steps", "40", "--seed", "1", "--run-dir", str(tmp / "ow"),
                       "--overwrite")
    record("--overwrite replaces it", rc2 == 0 and runs.load_config(tmp / "ow")["seed"] == 1, rc=rc2)

    # 2. two trainings on one run dir
    busy = tmp / "busy"
    proc = subprocess.Popen([sys.executable, "-m", "mbrlax.cli", "train", "mbpo", *TINY, "--steps", "2000",
                             "--run-dir", str(busy)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (busy / "config.json").exists() and proc.poll() is None:
        time.sleep(0.2)
    rc, msg = mbrlax("train", "mbpo", *TINY, "--steps", "40", "--run-dir", str(busy), "--overwrite")
    rc_r, msg_r = mbrlax("train", "mbpo", "--resume", str(busy), "--no-progress")
    proc.kill()
    proc.wait()
    record("second training on a run dir in use", rc == 2 and rc_r == 2, rc=rc, stderr=msg, resume_rc=rc_r,
           resume_stderr=msg_r)

    # 3. NaN / inf from the environment
    class NaNAt(gym.Wrapper):
        def step(self, action):
            obs, r, term, trunc, info = self.env.step(action)
            self.t = getattr(self, "t", 0) + 1
            return (obs, float("nan"), term, trunc, info) if self.t == 50 else (obs, r, term, trunc, info)

    gym.register("probe/NaNReward-v0", entry_point=lambda **kw: NaNAt(gym.make("Pendulum-v1").unwrapped),
                 max_episode_steps=200)
    nan_run = tmp / "nan"
    rc, msg = mbrlax("train", "mbpo", *[a if a != "Pendulum-v1" else "probe/NaNReward-v0" for a in TINY],
                     "--steps", "80", "--eval-every", "80", "--run-dir", str(nan_run))
    nan_in_metrics = "nan" in (nan_run / "metrics.jsonl").read_text().lower()
    record("NaN reward from the environment", rc == 2 and "non-finite reward" in msg and not nan_in_metrics,
           rc=rc, stderr=msg, nan_in_metrics=nan_in_metrics, checkpoint_kept_at=runs.load_checkpoint(nan_run)["t"])

    # 4. a NaN SAC update
    import jax
    import jax.numpy as jnp

    from mbrlax.agents.sac import SAC
    from mbrlax.types import Transition

    sac = SAC(3, 1, hidden=(16, 16))
    state = sac.init(jax.random.key(0))
    z = jnp.zeros((4, 32, 3))
    new, info = sac.update_many(state, Transition(z, jnp.zeros((4, 32, 1)), jnp.full((4, 32), jnp.nan), z,
                                                  jnp.zeros((4, 32))), jax.random.key(1))
    kept = all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new)))
    record("a NaN SAC update", kept and float(info["guard/rejected"]) == 1.0,
           rejected_fraction=float(info["guard/rejected"]), state_kept=kept)

    # 5. resume with other flags / another algorithm
    probes = {
        "--resume with --seed": ("train", "mbpo", "--resume", run, "--seed", "3", "--no-progress"),
        "--resume with --model-lr": ("train", "mbpo", "--resume", run, "--model-lr", "0.01", "--no-progress"),
        "train sac --resume <mbpo run>": ("train", "sac", "--resume", run, "--no-progress"),
        "train mopo --resume <mbpo run>": ("train", "mopo", "--resume", run, "--no-progress"),
        "train lqr_flm --resume <mbpo run>": ("train", "lqr_flm", "--resume", run, "--no-progress"),
    }
    for name, args in probes.items():
        rc, msg = mbrlax(*args)
        record(name, rc == 2 and "Traceback" not in msg, rc=rc, stderr=msg)

    # 6. resume: no duplicated rows, time/* carried on
    full = str(tmp / "full")
    mbrlax("train", "mbpo", *TINY, "--steps", "120", "--run-dir", full)
    rc, _ = mbrlax("train", "mbpo", "--resume", run, "--steps", "120", "--no-progress")
    rows = runs.read_metrics(run)
    same = strip(rows) == strip(runs.read_metrics(full))
    env_time = [r["time/env"] for r in rows if "time/env" in r]
    record("resume: rows and timers", rc == 0 and same and env_time == sorted(env_time),
           rows_equal_uninterrupted=same, time_env_monotone=env_time == sorted(env_time))

    # 7. torn metrics line, truncated config.json
    with (Path(run) / "metrics.jsonl").open("a") as fh:
        fh.write('{"step": 121, "eval/ret')
    rc, msg = mbrlax("train", "mbpo", "--resume", run, "--steps", "160", "--no-progress")
    torn_gone = all(json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines())
    record("torn last metrics line", rc == 0 and torn_gone, rc=rc, torn_line_cut_off=torn_gone)
    broken = tmp / "broken"
    shutil.copytree(run, broken)
    cfg = broken / "config.json"
    cfg.write_text(cfg.read_text()[:40])
    rc, msg = mbrlax("train", "mbpo", "--resume", str(broken), "--no-progress")
    record("truncated config.json", rc == 2 and "config.json" in msg, rc=rc, stderr=msg)

    # 8. kill -9 at random instants, resume each time: the same run as an uninterrupted one
    killed = tmp / "killed"
    args = [sys.executable, "-m", "mbrlax.cli", "train", "mbpo", *TINY, "--steps", "1600", "--checkpoint-every", "40"]
    rng = np.random.default_rng(0)
    kills = attempts = 0

    def command() -> list[str]:  # resume; before the first checkpoint there is nothing to resume: start over
        if checkpoint.exists(killed):
            return [sys.executable, "-m", "mbrlax.cli", "train", "mbpo", "--resume", str(killed), "--no-progress"]
        return args + ["--run-dir", str(killed), "--overwrite"]

    # 4 kills of a run that has a checkpoint to resume from, each at a random instant after the process has trained
    # and logged (a kill before the first checkpoint tests nothing, and start-up alone can outlast a fixed delay)
    while kills < 4 and attempts < 10:
        attempts += 1
        proc = subprocess.Popen(command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline, metrics = time.monotonic() + 300, killed / "metrics.jsonl"
        size = metrics.stat().st_size if metrics.exists() else 0
        while (not checkpoint.exists(killed) or not metrics.exists() or metrics.stat().st_size <= size) \
                and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # until this process has trained and logged, so that the kill lands in training
        time.sleep(float(rng.uniform(0.0, 2.0)))
        if proc.poll() is not None:
            break
        had_checkpoint = checkpoint.exists(killed)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += had_checkpoint
    subprocess.run(command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    ref = tmp / "ref"
    subprocess.run(args + ["--run-dir", str(ref)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    same = strip(runs.read_metrics(killed)) == strip(runs.read_metrics(ref))
    a, b = runs.load_checkpoint(killed), runs.load_checkpoint(ref)
    bits = all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a["sac"]), jax.tree.leaves(b["sac"])))
    record("kill -9 during training, resumed", same and bits and kills == 4, kills=kills, attempts=attempts,
           rows_equal=same, params_bit_equal=bits)

    # 9. checkpoint format
    newest = sorted((Path(run) / "checkpoints").iterdir())[-1]
    with np.load(newest / "arrays.npz", allow_pickle=False) as npz:
        n_arrays = len(npz.files)
    record("checkpoint format", sorted(p.name for p in newest.iterdir()) == ["arrays.npz", "state.json"],
           files=sorted(p.name for p in newest.iterdir()), arrays=n_arrays,
           format=json.loads((newest / "state.json").read_text())["format"])

    # 10. sac: its own presets, MBPO-only flags refused
    from mbrlax.algorithms import mbpo

    cfg = mbpo.resolve(mbpo.Config(env="HalfCheetah-v5", real_ratio=1.0))
    rc, msg = mbrlax("train", "sac", "--real-ratio", "0.5", "--run-dir", str(tmp / "sac"))
    record("train sac --real-ratio 0.5", rc == 2, rc=rc, stderr=msg)
    mbpo_g = mbpo.resolve(mbpo.Config(env="HalfCheetah-v5")).updates_per_step
    record("sac presets on HalfCheetah-v5", cfg.updates_per_step == 1, updates_per_step=cfg.updates_per_step,
           init_steps=cfg.init_steps, mbpo_updates_per_step=mbpo_g)

    # 11. a missing optional dependency
    proc = subprocess.run([sys.executable, "-m", "mbrlax.cli", "train", "sac", "--env", "LunarLanderContinuous-v3",
                           "--run-dir", str(tmp / "ll")], capture_output=True, text=True)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    record("missing Box2D", proc.returncode == 2 and len(lines) == 1, rc=proc.returncode, stderr_lines=len(lines),
           stderr=lines[-1] if lines else "")

    # 12. replay buffer after it wraps
    from mbrlax.data.replay import ReplayBuffer

    buf = ReplayBuffer(10, 2, 1)
    for i in range(23):
        buf.add(np.full(2, i), np.full(1, i), float(i), np.full(2, i + 1), 0.0)
    checkpoint.save(tmp / "buf", 0, {"real": buf.state_dict()})
    other = ReplayBuffer(10, 2, 1)
    other.load_state_dict(checkpoint.load(tmp / "buf")["real"])
    same = all(np.array_equal(x, y) for x, y in zip(buf.sample(np.random.default_rng(0), 64),
                                                       other.sample(np.random.default_rng(0), 64)))
    record("replay buffer restored after wrapping", same, samples_equal=same)

    out["all_ok"] = all(p["ok"] for p in out["probes"].values())
    write_json("run_loop_faults.json", out)
    shutil.rmtree(tmp, ignore_errors=True)
    print("all ok" if out["all_ok"] else "SOME PROBES FAILED")


if __name__ == "__main__":
    main()
