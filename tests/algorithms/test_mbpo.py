"""MBPO end to end on tiny settings: smoke, determinism, resume, bad input, divergence recovery.
(The run loop's faults, with MBPO as the algorithm, are in tests/unit/test_runs.py.)"""

import json

import jax
import numpy as np
import pytest

from mbrlax import cli, runs
from mbrlax.algorithms import mbpo
from mbrlax.envs.make import EnvError

TINY = dict(
    env="Pendulum-v1", steps=120, init_steps=40, epoch_length=40, model_train_freq=40, rollout_batch_size=64,
    rollout_schedule=(0, 2, 1, 2), updates_per_step=2, eval_every=40, eval_episodes=1, sac_hidden=(32, 32),
    model_hidden=(32, 32), ensemble_size=3, num_elites=2, model_max_epochs=3, progress=False, tensorboard=False,
)


def tiny(tmp_path, name="run", **kw):
    return mbpo.Config(**{**TINY, "run_dir": str(tmp_path / name), **kw})


def rows(run_dir):
    """Metric rows without wall-clock fields."""
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"}
            for r in runs.read_metrics(run_dir)]


def test_cli_train_writes_a_complete_run_dir(tmp_path, capsys):
    args = ["train", "mbpo", "--env", "Pendulum-v1", "--steps", "80", "--init-steps", "40", "--epoch-length", "40",
            "--model-train-freq", "40", "--rollout-batch-size", "64", "--updates-per-step", "2",
            "--eval-every", "40", "--eval-episodes", "1", "--sac-hidden", "32", "32", "--model-hidden", "32", "32",
            "--ensemble-size", "3", "--num-elites", "2", "--model-max-epochs", "3", "--no-progress",
            "--run-dir", str(tmp_path / "cli")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "final evaluation return" in out
    rd = tmp_path / "cli"
    for f in ("config.json", "metrics.jsonl", "curve.png", "checkpoints"):
        assert (rd / f).exists(), f
    assert list(rd.glob("events.out.tfevents.*")), "no TensorBoard events"
    assert runs.run_algorithm(rd) == "mbpo"  # run.json: `mbrlax eval` finds the algorithm's loader
    cfg = json.loads((rd / "config.json").read_text())
    assert cfg["steps"] == 80 and cfg["real_ratio"] == 0.1  # resolved: the Pendulum preset filled in
    metrics = runs.read_metrics(rd)
    assert [r["step"] for r in metrics if "eval/return_mean" in r] == [40, 80]
    assert any("model/holdout_mse" in r for r in metrics) and any("rollout/transitions" in r for r in metrics)
    # eval and plot work on the run directory
    assert cli.main(["eval", str(rd), "--episodes", "2"]) == 0
    assert "return" in capsys.readouterr().out
    assert cli.main(["plot", str(rd), str(rd), "--out", str(tmp_path / "two.png")]) == 0
    assert (tmp_path / "two.png").stat().st_size > 1000


def test_same_seed_same_run_and_resume_continues_exactly(tmp_path):
    full = mbpo.train(tiny(tmp_path, "full"))
    again = mbpo.train(tiny(tmp_path, "again"))
    assert rows(full.run_dir) == rows(again.run_dir)
    other = mbpo.train(tiny(tmp_path, "seed1", seed=1))
    assert rows(other.run_dir) != rows(full.run_dir)

    # interrupted after 80 steps (checkpoint at 80), resumed to 120: same result as uninterrupted
    mbpo.train(tiny(tmp_path, "resumed", steps=80))
    resumed = mbpo.train(mbpo.Config(resume=str(tmp_path / "resumed"), steps=120, progress=False))
    assert rows(resumed.run_dir) == rows(full.run_dir)
    a = runs.load_checkpoint(full.run_dir)
    b = runs.load_checkpoint(resumed.run_dir)
    for x, y in zip(jax.tree.leaves(a["sac"]), jax.tree.leaves(b["sac"])):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a["model"]), jax.tree.leaves(b["model"])):
        np.testing.assert_array_equal(x, y)


def test_slim_checkpoint_drops_the_model_buffer_and_resume_refills_it(tmp_path, monkeypatch):
    mbpo.train(tiny(tmp_path, "full", steps=60))  # stops between two model fits (every 40 steps from 40)
    full = sum(f.stat().st_size for f in (tmp_path / "full" / "checkpoints").rglob("*") if f.is_file())
    path = mbpo.slim_checkpoint(tmp_path / "full", tmp_path / "slim")
    payload = runs.load_checkpoint(tmp_path / "slim")
    slim = sum(f.stat().st_size for f in path.iterdir())
    assert len(payload["fake"]["data"]["reward"]) == 0 and payload["t"] == 60 and slim < full / 2
    assert (tmp_path / "slim" / "config.json").exists() and (tmp_path / "slim" / "metrics.jsonl").exists()
    mbpo.slim_checkpoint(tmp_path / "full", tmp_path / "slim")  # carrying again keeps no previous copy
    assert len(list((tmp_path / "slim" / "checkpoints").iterdir())) == 1
    sizes = []  # the model buffer the first policy update after the resume samples from
    real_updates = mbpo.policy_updates

    def spy(sac, state, real, fake, key, n_model):
        sizes.append(int(fake.size))
        return real_updates(sac, state, real, fake, key, n_model)

    monkeypatch.setattr(mbpo, "policy_updates", spy)
    res = mbpo.train(mbpo.Config(resume=str(tmp_path / "slim"), steps=120, progress=False))
    assert res.steps == 120 and np.isfinite(res.final_return_mean)
    assert sizes and sizes[0] > 0  # refilled at the resume (step 60), not sampled empty until the fit at 80
    assert [r["step"] for r in runs.read_metrics(tmp_path / "slim") if "eval/return_mean" in r] == [40, 60, 80, 120]


def test_sac_alone_runs_without_a_model(tmp_path):
    res = mbpo.train(tiny(tmp_path, "sac", real_ratio=1.0))
    metrics = runs.read_metrics(res.run_dir)
    assert not any("model/holdout_mse" in r for r in metrics)
    assert any("sac/critic_loss" in r for r in metrics)


def test_unknown_and_discrete_envs_are_rejected_clearly(tmp_path):
    with pytest.raises(EnvError, match="unknown environment id 'Pendulum-v9'.*Pendulum-v1"):
        mbpo.train(tiny(tmp_path, env="Pendulum-v9"))
    with pytest.raises(EnvError, match="Discrete action space"):
        mbpo.train(tiny(tmp_path, env="CartPole-v1"))
    assert cli.main(["train", "mbpo", "--env", "Nope-v0", "--run-dir", str(tmp_path / "x")]) == 2


def test_corrupt_and_mismatched_checkpoints(tmp_path, capsys):
    res = mbpo.train(tiny(tmp_path, "a", steps=80, checkpoint_every=40))
    newest, older = sorted((res.run_dir / "checkpoints").iterdir(), reverse=True)
    arrays = newest / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:1000])  # torn, as by a crash of a non-atomic writer
    with pytest.warns(UserWarning, match="SHA-256.*resuming from .*000000000040"):
        payload = runs.load_checkpoint(res.run_dir)
    assert payload["t"] == 40  # the one before
    (older / "state.json").write_text("{")
    with pytest.raises(runs.CheckpointError, match="every checkpoint .* is damaged"):
        mbpo.train(mbpo.Config(resume=str(res.run_dir), progress=False))
    assert cli.main(["eval", str(res.run_dir)]) == 2
    assert "damaged" in capsys.readouterr().err
    assert (res.run_dir / "metrics.jsonl").exists() and (res.run_dir / "config.json").exists()

    # a checkpoint made with other network sizes
    good = mbpo.train(tiny(tmp_path, "b", steps=40))
    other = mbpo.train(tiny(tmp_path, "c", steps=40, sac_hidden=(16, 16)))
    fresh = mbpo.SAC(3, 1, hidden=(16, 16)).init(jax.random.key(0))
    with pytest.raises(runs.CheckpointError, match=r"sac\.actor.*has shape"):
        runs.check_like("sac", runs.load_checkpoint(good.run_dir)["sac"], fresh)
    runs.check_like("sac", runs.load_checkpoint(other.run_dir)["sac"], fresh)


def test_diverged_model_fit_keeps_last_good_model(tmp_path, monkeypatch, capsys):
    from mbrlax.models import fit as fit_module

    real_fit, seen, returned = fit_module.fit, [], []

    def flaky(model, state, data, key, **kw):
        seen.append(state)
        if len(seen) == 2:  # the second refit diverges
            raise fit_module.ModelDivergedError("model loss became nan at epoch 1")
        out = real_fit(model, state, data, key, **kw)
        returned.append(out[0])
        return out

    monkeypatch.setattr(fit_module, "fit", flaky)
    res = mbpo.train(tiny(tmp_path, "div", steps=160))
    assert len(seen) == 3 and len(returned) == 2  # fit 2 raised
    for x, y in zip(jax.tree.leaves(seen[2].params), jax.tree.leaves(returned[0].params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # fit 3 started from fit 1's model
    assert any(r.get("model/diverged") == 1.0 for r in runs.read_metrics(res.run_dir))
    assert "kept the last good model" in capsys.readouterr().err


def test_bad_config_values_are_named():
    with pytest.raises(ValueError, match="real_ratio"):
        mbpo.resolve(mbpo.Config(real_ratio=1.5))
    with pytest.raises(ValueError, match="rollout_schedule"):
        mbpo.resolve(mbpo.Config(rollout_schedule=(0, 1, 0, 1)))


def test_rollout_schedule_matches_authors_formula():
    assert [mbpo.rollout_length((20, 100, 1, 15), e) for e in (0, 20, 60, 100, 200)] == [1, 1, 8, 15, 15]
    cfg = mbpo.resolve(mbpo.Config(env="Hopper-v5"))
    assert mbpo.model_buffer_size(cfg, 1) == 400_000 and mbpo.model_buffer_size(cfg, 15) == 6_000_000
