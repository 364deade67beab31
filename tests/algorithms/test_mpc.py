"""v0.5 / v1.0 / v1.5 / PETS end to end on tiny settings: each variant does what its box says (fits once or
every episode, plans once per episode or every step), determinism, resume, the CLI, bad input."""

import json

import jax
import numpy as np
import pytest

from mbrlax import cli, runs
from mbrlax.algorithms import mpc

EP = 20  # steps per episode (Pendulum-v1 cut short with a time limit of 20)
TINY = dict(env="Pendulum-v1", env_kwargs={"max_episode_steps": EP}, episodes=3, horizon=5, population=24, elites=4,
            iterations=2, model_hidden=(16, 16), model_epochs=2, ensemble_size=2, progress=False, tensorboard=False)


def tiny(tmp_path, name, **kw):
    return mpc.Config(**{**TINY, "run_dir": str(tmp_path / name), **kw})


def rows(run_dir):
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"}
            for r in runs.read_metrics(run_dir)]


@pytest.mark.parametrize("variant, fits, plans", [
    ("v0.5", 1, [1, 1]),  # fit once on the random episode; one open-loop plan per episode
    ("v1.0", 2, [1, 1]),  # refit after every episode; still open loop
    ("v1.5", 2, [EP, EP]),  # MPC: a plan at every step
])
def test_variants_fit_and_plan_as_their_box_says(tmp_path, variant, fits, plans):
    res = mpc.train(tiny(tmp_path, variant, variant=variant))
    m = runs.read_metrics(res.run_dir)
    assert sum("model/holdout_mse" in r for r in m) == fits
    assert [r["plan/calls"] for r in m if "plan/calls" in r] == plans
    assert [r["step"] for r in m if "eval/return_mean" in r] == [2 * EP, 3 * EP] == [s for s, _ in res.evals]
    assert res.steps == 3 * EP and np.isfinite(res.final_return_mean)
    cfg = json.loads((res.run_dir / "config.json").read_text())
    assert cfg["model"] == "deterministic" and cfg["propagation"] == "expectation" and cfg["particles"] == 1


def test_pets_same_seed_same_run_and_resume_continues_exactly(tmp_path):
    kw = dict(variant="pets", particles=4, propagation="ts1", replan_every=2, planner="mppi")
    full = mpc.train(tiny(tmp_path, "full", **kw))
    m = runs.read_metrics(full.run_dir)
    assert [r["plan/calls"] for r in m if "plan/calls" in r] == [EP // 2, EP // 2]
    again = mpc.train(tiny(tmp_path, "again", **kw))
    assert rows(full.run_dir) == rows(again.run_dir)
    assert rows(mpc.train(tiny(tmp_path, "seed1", seed=1, **kw)).run_dir) != rows(full.run_dir)
    mpc.train(tiny(tmp_path, "resumed", episodes=2, **kw))  # interrupted after 2 episodes
    resumed = mpc.train(mpc.Config(resume=str(tmp_path / "resumed"), episodes=3, progress=False))
    assert rows(resumed.run_dir) == rows(full.run_dir)
    a, b = runs.load_checkpoint(full.run_dir), runs.load_checkpoint(resumed.run_dir)
    for x, y in zip(jax.tree.leaves(a["model"]), jax.tree.leaves(b["model"]), strict=True):
        np.testing.assert_array_equal(x, y)


def test_cli_train_pets_and_mpc_then_eval(tmp_path, capsys):
    common = ["--env", "mbrlax/LinearQuadratic-v0", "--episodes", "2", "--horizon", "4", "--population", "16",
              "--elites", "4", "--iterations", "2", "--model-hidden", "16", "16", "--model-epochs", "1",
              "--no-progress", "--no-tensorboard"]
    assert cli.main(["train", "pets", *common, "--ensemble-size", "2", "--particles", "2",
                     "--run-dir", str(tmp_path / "pets")]) == 0
    cfg = json.loads((tmp_path / "pets" / "config.json").read_text())
    assert (cfg["variant"], cfg["model"], cfg["propagation"], cfg["planner"]) == ("pets", "ensemble", "tsinf", "cem")
    assert runs.run_algorithm(tmp_path / "pets") == "pets"
    assert cli.main(["train", "mpc", *common, "--planner", "random", "--model", "ensemble", "--ensemble-size", "2",
                     "--particles", "2", "--replan-every", "1", "--run-dir", str(tmp_path / "mpc")]) == 0
    cfg = json.loads((tmp_path / "mpc" / "config.json").read_text())
    assert (cfg["planner"], cfg["model"], cfg["propagation"], cfg["replan_every"]) == ("random", "ensemble", "tsinf", 1)
    assert "final evaluation return" in capsys.readouterr().out
    assert cli.main(["eval", str(tmp_path / "mpc"), "--episodes", "1"]) == 0
    assert "return" in capsys.readouterr().out


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown planner"):
        mpc.resolve(mpc.Config(planner="ilqr"))
    with pytest.raises(ValueError, match="multiple"):
        mpc.resolve(mpc.Config(variant="pets", particles=7))
    with pytest.raises(ValueError, match="unknown variant"):
        mpc.resolve(mpc.Config(variant="v2.0"))
    with pytest.raises(ValueError, match="identical particles"):
        mpc.resolve(mpc.Config(propagation="tsinf", particles=4))
    with pytest.raises(ValueError, match="reward learned"):
        mpc.train(mpc.Config(env="HalfCheetah-v5", reward="known", progress=False))


def test_known_reward_is_rescaled_to_the_env_action_space():
    fns = mpc.KnownFns("Pendulum-v1", (-2.0,), (2.0,))
    obs = np.array([[1.0, 0.0, 0.0]], np.float32)  # upright at rest: only the action cost remains
    # agent action 0.5 is a torque of 1.0: reward -0.001 · 1²
    assert float(fns.reward(obs, np.array([[0.5]], np.float32), obs)[0]) == pytest.approx(-0.001)
