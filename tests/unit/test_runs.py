"""The shared run loop (mbrlax.runs, mbrlax.checkpoint), each fault of issue 16 tried again; MBPO on tiny
settings is the algorithm where one is needed."""

import json
import os
import signal
import subprocess
import sys
import time

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax import checkpoint, cli, runs
from mbrlax.agents.sac import SAC, guarded
from mbrlax.algorithms import mbpo
from mbrlax.data.replay import ReplayBuffer
from mbrlax.envs.make import EnvError, make

TINY = dict(
    env="Pendulum-v1", steps=80, init_steps=40, epoch_length=40, model_train_freq=40, rollout_batch_size=64,
    rollout_schedule=(0, 2, 1, 2), updates_per_step=2, eval_every=40, eval_episodes=1, sac_hidden=(32, 32),
    model_hidden=(32, 32), ensemble_size=3, num_elites=2, model_max_epochs=3, progress=False, tensorboard=False,
)


def tiny(tmp_path, name="run", **kw):
    return mbpo.Config(**{**TINY, "run_dir": str(tmp_path / name), **kw})


class NaNAt(gym.Wrapper):
    """Pendulum that returns a NaN reward (or observation) at step `at`."""

    def __init__(self, env, at, what):
        super().__init__(env)
        self.at, self.what, self.t = at, what, 0

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        if self.t == self.at:
            if self.what == "reward":
                r = float("nan")
            else:
                obs = np.full_like(obs, np.inf)
        return obs, r, term, trunc, info


for _what in ("reward", "obs"):
    gym.register(f"mbrlax-test/NaN-{_what}-v0", entry_point=lambda what=_what, **kw: NaNAt(
        gym.make("Pendulum-v1").unwrapped, 50, what), max_episode_steps=200)


# ---- run directory -------------------------------------------------------------------------------


def test_new_run_refuses_an_existing_run_dir_unless_overwrite(tmp_path):
    first = mbpo.train(tiny(tmp_path, "a", steps=40))
    before = (first.run_dir / "metrics.jsonl").read_text()
    with pytest.raises(runs.RunDirError, match="already holds a run.*--overwrite.*--resume"):
        mbpo.train(tiny(tmp_path, "a", steps=40, seed=1))
    assert (first.run_dir / "metrics.jsonl").read_text() == before  # nothing lost
    again = mbpo.train(tiny(tmp_path, "a", steps=40, seed=1, overwrite=True))
    assert json.loads((again.run_dir / "config.json").read_text())["seed"] == 1
    assert (again.run_dir / "metrics.jsonl").read_text() != before


def test_second_training_on_a_locked_run_dir_is_refused(tmp_path):
    rd = tmp_path / "busy"
    rd.mkdir()
    holder = runs._Lock(rd)  # another training holds the lock (flock: a second open file conflicts)
    try:
        with pytest.raises(runs.RunDirError, match="in use by another training"):
            mbpo.train(tiny(tmp_path, "busy", steps=40))
        with pytest.raises(runs.RunDirError, match="in use"):
            runs._Lock(rd)
    finally:
        holder.release()
    mbpo.train(tiny(tmp_path, "busy", steps=40))  # free again


# ---- non-finite data and updates -----------------------------------------------------------------


@pytest.mark.parametrize("what", ["reward", "obs"])
def test_non_finite_env_data_is_refused_before_it_enters_the_buffer(tmp_path, what):
    with pytest.raises(runs.NonFiniteError, match=f"non-finite {'reward' if what == 'reward' else 'observation'}"
                       r".* at step 49"):
        mbpo.train(tiny(tmp_path, what, env=f"mbrlax-test/NaN-{what}-v0", eval_every=80))
    rd = tmp_path / what
    # the run stopped at step 49 (its checkpoint at 40 resumable); no NaN reached the metrics
    assert all("nan" not in line for line in (rd / "metrics.jsonl").read_text().splitlines())
    assert runs.load_checkpoint(rd)["t"] == 40


def test_fit_refuses_non_finite_data_with_a_message_about_the_data():
    from mbrlax.models.ensemble import EnsembleModel
    from mbrlax.models.fit import fit
    from mbrlax.types import Transition

    model = EnsembleModel(3, 1, ensemble_size=2, num_elites=1, hidden=(8,))
    rng = np.random.default_rng(0)
    data = Transition(rng.normal(size=(50, 3)), rng.normal(size=(50, 1)), rng.normal(size=50),
                      rng.normal(size=(50, 3)), np.zeros(50))
    data = data._replace(reward=data.reward.copy())
    data.reward[7] = np.nan
    with pytest.raises(ValueError, match="non-finite reward in 1 of 50 transitions .*row 7"):
        fit(model, model.init(jax.random.key(0)), data, jax.random.key(1))


def test_a_non_finite_sac_update_is_rejected_and_the_state_kept():
    sac = SAC(3, 1, hidden=(8, 8))
    state = sac.init(jax.random.key(0))
    z = jnp.zeros((2, 16, 3))
    batch = mbpo.Transition(z, jnp.zeros((2, 16, 1)), jnp.full((2, 16), jnp.nan), z, jnp.zeros((2, 16)))
    new, info = sac.update_many(state, batch, jax.random.key(1))
    assert float(info["guard/rejected"]) == 1.0
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(new)):
        np.testing.assert_array_equal(a, b)
    good = batch._replace(reward=jnp.zeros((2, 16)))
    new, info = sac.update_many(state, good, jax.random.key(1))
    assert float(info["guard/rejected"]) == 0.0 and int(new.steps) == 2
    # the guard itself: a finite step goes through, a NaN one does not
    step = guarded(lambda s, x: (s + x, {"loss": x}))
    assert float(step(jnp.ones(2), jnp.ones(2))[0][0]) == 2.0
    out, info = step(jnp.ones(2), jnp.array([1.0, jnp.nan]))
    assert float(info["guard/rejected"]) == 1.0 and np.all(np.asarray(out) == 1.0)


def test_run_stops_after_many_fully_rejected_update_calls(tmp_path):
    cfg = tiny(tmp_path, "rej")
    with runs.Run(cfg, "mbpo", "x", 10) as run:
        for t in range(49):
            run.rejected(t, 1.0)
        run.rejected(49, 0.5)  # a partial rejection resets the count
        for t in range(49):
            run.rejected(50 + t, 1.0)
        with pytest.raises(runs.NonFiniteError, match="last 50 calls"):
            run.rejected(99, 1.0)
    assert any("guard/sac_rejected_fraction" in r for r in runs.read_metrics(tmp_path / "rej"))


# ---- resume --------------------------------------------------------------------------------------


def test_resume_refuses_other_flags_and_other_algorithms(tmp_path, capsys):
    mbpo.train(tiny(tmp_path, "m", steps=40))
    rd = str(tmp_path / "m")
    with pytest.raises(runs.RunDirError, match=r"seed=3 \(the run has 0\).*Only steps"):
        mbpo.train(mbpo.Config(resume=rd, seed=3, progress=False))
    with pytest.raises(runs.RunDirError, match="model_lr=0.01"):
        mbpo.train(mbpo.Config(resume=rd, model_lr=0.01, progress=False))
    assert cli.main(["train", "sac", "--resume", rd, "--no-progress"]) == 2
    assert "is a run of 'mbpo', not 'sac'" in capsys.readouterr().err
    (tmp_path / "m" / "run.json").write_text(json.dumps({"algorithm": "mopo"}))
    with pytest.raises(runs.RunDirError, match="run of 'mopo'.*mbrlax train mopo --resume"):
        mbpo.train(mbpo.Config(resume=rd, progress=False))
    with pytest.raises(runs.RunDirError, match="no such directory"):
        mbpo.train(mbpo.Config(resume=str(tmp_path / "nope"), progress=False))


def test_resume_logs_no_row_twice_and_carries_the_timers(tmp_path):
    full = mbpo.train(tiny(tmp_path, "full", steps=120))
    mbpo.train(tiny(tmp_path, "r", steps=80))
    mbpo.train(mbpo.Config(resume=str(tmp_path / "r"), steps=120, progress=False))

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"} for r in rows]

    resumed = runs.read_metrics(tmp_path / "r")
    assert strip(resumed) == strip(runs.read_metrics(full.run_dir))  # the same rows, none twice
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["steps"] == 120 and saved["resume"] is None  # the new length is the run's own from now on
    env_time = [r["time/env"] for r in resumed if "time/env" in r]
    assert env_time == sorted(env_time) and env_time[-1] > 0  # counters continue across the resume


def test_torn_metrics_line_and_truncated_config_are_handled(tmp_path):
    res = mbpo.train(tiny(tmp_path, "t", steps=80))
    metrics = res.run_dir / "metrics.jsonl"
    n = len(runs.read_metrics(res.run_dir))
    with metrics.open("a") as fh:
        fh.write('{"step": 81, "eval/ret')  # a kill mid-write
    assert len(runs.read_metrics(res.run_dir)) == n
    mbpo.train(mbpo.Config(resume=str(res.run_dir), steps=120, progress=False))  # cut off at the resume
    assert all(json.loads(line) for line in metrics.read_text().splitlines())
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:2] + ["{oops"] + lines[2:]) + "\n")
    with pytest.raises(runs.CheckpointError, match="metrics.jsonl line 3 is not valid JSON"):
        runs.read_metrics(res.run_dir)
    cfg = res.run_dir / "config.json"
    cfg.write_text(cfg.read_text()[:50])
    with pytest.raises(runs.CheckpointError, match="config.json .* is not valid JSON"):
        mbpo.train(mbpo.Config(resume=str(res.run_dir), progress=False))


def test_resume_is_bit_exact_after_kill_9(tmp_path):
    """A real kill -9 while training: the resumed run ends exactly where an uninterrupted one does."""
    rd = tmp_path / "killed"
    code = ("from mbrlax.algorithms import mbpo; "
            f"mbpo.train(mbpo.Config(**{dict(TINY, steps=400, checkpoint_every=40)!r}, run_dir={str(rd)!r}))")
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if checkpoint.exists(rd) and runs.load_checkpoint(rd)["t"] >= 80:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the training ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert runs.load_checkpoint(rd)["t"] < 400
    resumed = mbpo.train(mbpo.Config(resume=str(rd), steps=160, progress=False))
    full = mbpo.train(tiny(tmp_path, "full", steps=160, checkpoint_every=40))

    def strip(rows):
        return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"} for r in rows]

    assert strip(runs.read_metrics(resumed.run_dir)) == strip(runs.read_metrics(full.run_dir))
    for a, b in zip(jax.tree.leaves(runs.load_checkpoint(rd)["sac"]),
                    jax.tree.leaves(runs.load_checkpoint(full.run_dir)["sac"])):
        np.testing.assert_array_equal(a, b)


# ---- checkpoints ---------------------------------------------------------------------------------


def test_checkpoint_round_trip_of_every_kind_of_value(tmp_path):
    sac = SAC(3, 1, hidden=(8,))
    state = sac.init(jax.random.key(0))
    rng = np.random.default_rng(5)
    rng.random(3)
    payload = {"t": 7, "x": 1.5, "s": "a", "none": None, "flag": True, "big": 2**100, "tup": (1, 2),
               "key": jax.random.key(3), "rng": rng, "sac": state, "arr": np.arange(4.0),
               "nested": {"l": [1, {"a": 2}]}}
    checkpoint.save(tmp_path, 7, payload)
    got = checkpoint.load(tmp_path)
    assert {k: got[k] for k in ("t", "x", "s", "none", "flag", "big", "tup")} == \
           {k: payload[k] for k in ("t", "x", "s", "none", "flag", "big", "tup")}
    assert got["nested"] == {"l": [1, {"a": 2}]}
    np.testing.assert_array_equal(jax.random.key_data(got["key"]), jax.random.key_data(payload["key"]))
    assert got["rng"].random() == rng.random()
    restored = checkpoint.restore_like("sac", got["sac"], state)
    assert isinstance(restored, type(state))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match="only data"):
        checkpoint.save(tmp_path, 8, {"f": lambda: 0})


def test_checkpoint_files_hold_no_code(tmp_path):
    checkpoint.save(tmp_path, 1, {"a": np.ones(3)})
    path = next((tmp_path / "checkpoints").iterdir())
    # an object array (which would need pickle) planted in the file is refused on load, not unpickled
    np.savez(path / "arrays.npz", a0=np.array([object()], dtype=object))
    meta = json.loads((path / "state.json").read_text())
    meta["sha256"] = checkpoint._sha256(path / "arrays.npz")
    (path / "state.json").write_text(json.dumps(meta))
    with pytest.raises(checkpoint.CheckpointError, match="unreadable"):
        checkpoint.load(tmp_path)


def test_a_kill_at_any_point_of_a_save_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, 10, {"t": 10})
    checkpoint.save(tmp_path, 20, {"t": 20})
    # killed after writing the new one's files but before its rename: a leftover tmp dir, the old ones intact
    (tmp_path / "checkpoints" / ".tmp-30-999").mkdir()
    (tmp_path / "checkpoints" / ".tmp-30-999" / "arrays.npz").write_bytes(b"partial")
    assert checkpoint.load(tmp_path)["t"] == 20
    # killed during each later step of a save: every os.replace and rmtree point
    real_replace = os.replace
    calls = []

    def dying_replace(a, b):
        calls.append((a, b))
        if len(calls) == 1:
            raise KeyboardInterrupt  # the kill
        return real_replace(a, b)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 30, {"t": 30})
    monkeypatch.setattr(os, "replace", real_replace)
    assert checkpoint.load(tmp_path)["t"] == 20
    checkpoint.save(tmp_path, 30, {"t": 30})  # and the next save cleans up and goes through
    assert checkpoint.load(tmp_path)["t"] == 30
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["000000000020", "000000000030"]
    # a second save at the same step (a resume that ends where it began) replaces it safely
    checkpoint.save(tmp_path, 30, {"t": 30, "again": True})
    assert checkpoint.load(tmp_path)["again"] is True


def test_old_pickle_checkpoints_are_refused_and_converted_on_request(tmp_path, capsys):
    import pickle

    res = mbpo.train(tiny(tmp_path, "old", steps=40))
    state = runs.load_checkpoint(res.run_dir)
    legacy = dict(state, format=1, config=json.loads((res.run_dir / "config.json").read_text()),
                  key=np.asarray(jax.random.key_data(state["key"])), np_rng=state["np_rng"].bit_generator.state,
                  episode={k: state["env"][k] for k in ("ret", "len", "count")}, obs=state["env"]["obs"],
                  env_state=state["env"]["env_state"], sac=runs.to_host(state["sac"]),
                  model=runs.to_host(state["model"]))
    legacy.pop("env")
    import shutil

    shutil.rmtree(res.run_dir / "checkpoints")
    (res.run_dir / "checkpoint.pkl").write_bytes(pickle.dumps(legacy))
    with pytest.raises(runs.CheckpointError, match="old pickle checkpoint.*mbrlax checkpoint convert"):
        mbpo.train(mbpo.Config(resume=str(res.run_dir), steps=80, progress=False))
    assert cli.main(["checkpoint", "convert", str(res.run_dir)]) == 0
    assert (res.run_dir / "checkpoint.pkl.converted").exists() and not (res.run_dir / "checkpoint.pkl").exists()
    resumed = mbpo.train(mbpo.Config(resume=str(res.run_dir), steps=80, progress=False))
    full = mbpo.train(tiny(tmp_path, "full", steps=80))
    assert resumed.final_return_mean == full.final_return_mean


# ---- sac, env errors, replay ---------------------------------------------------------------------


def test_sac_takes_its_own_settings_and_refuses_mbpo_only_values(tmp_path, capsys):
    cfg = mbpo.resolve(mbpo.Config(env="HalfCheetah-v5", real_ratio=1.0))
    assert cfg.updates_per_step == 1 and cfg.target_entropy is None and cfg.init_steps == 10_000
    assert mbpo.resolve(mbpo.Config(env="HalfCheetah-v5")).updates_per_step == 40
    assert cli.main(["train", "sac", "--real-ratio", "0.5", "--run-dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "fixes real_ratio=1.0" in err and "mbrlax train mbpo" in err
    assert not (tmp_path / "x").exists()


def test_missing_optional_dependency_is_one_clear_error(capsys):
    try:
        import Box2D  # noqa: F401
        pytest.skip("Box2D is installed here")
    except ImportError:
        pass
    with pytest.raises(EnvError, match="needs a package that is not installed.*box2d"):
        make("LunarLanderContinuous-v3")
    assert cli.main(["train", "sac", "--env", "LunarLanderContinuous-v3"]) == 2
    err = capsys.readouterr().err
    assert "box2d" in err and len(err.strip().splitlines()) == 1


def test_replay_buffer_restores_exactly_after_wrapping():
    buf = ReplayBuffer(10, 2, 1)
    for i in range(23):  # wrapped twice
        buf.add(np.full(2, i), np.full(1, i), float(i), np.full(2, i + 1), 0.0)
    other = ReplayBuffer(10, 2, 1)
    other.load_state_dict(checkpoint._decode(*_roundtrip(buf.state_dict())))
    assert other.ptr == buf.ptr and other.size == buf.size
    a, b = buf.sample(np.random.default_rng(0), 50), other.sample(np.random.default_rng(0), 50)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(20, 2, 1).load_state_dict(buf.state_dict())


def _roundtrip(tree):
    arrays = []
    enc = checkpoint._encode(tree, arrays)
    return enc, {f"a{i}": a for i, a in enumerate(arrays)}
