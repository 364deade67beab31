"""v2.5 (policy gradient on model rollouts) end to end on tiny settings, for REINFORCE, PPO and TRPO."""

import numpy as np
import pytest

from mbrlax import cli, runs
from mbrlax.algorithms import mbpg

TINY = dict(
    env="Pendulum-v1", env_kwargs={"max_episode_steps": 20}, steps=60, init_steps=20, steps_per_round=20,
    iterations_per_round=2, horizon=4, rollouts=8, minibatches=2, epochs=2, value_epochs=2, model_hidden=(16,),
    ensemble_size=2, model_max_epochs=2, eval_episodes=1, policy_hidden=(16,), progress=False, tensorboard=False,
)


def rows(run_dir):
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"}
            for r in runs.read_metrics(run_dir)]


@pytest.mark.parametrize("pg", ["reinforce", "trpo"])
def test_each_policy_gradient_runs_and_logs_its_update(tmp_path, pg):
    res = mbpg.train(mbpg.Config(**TINY, pg=pg, run_dir=str(tmp_path / pg)))
    assert res.steps == 60 and np.isfinite(res.final_return_mean)
    last = [r for r in runs.read_metrics(res.run_dir) if "eval/return_mean" in r][-1]
    assert last["pg/iterations"] == 2 and np.isfinite(last["pg/value_loss"])
    if pg == "trpo":
        assert 0.0 < last["pg/kl"] <= 0.02 * (1 + 1e-4)  # the preset's trust region δ


def test_ppo_is_deterministic_resumable_and_evaluable(tmp_path, capsys):
    full = mbpg.train(mbpg.Config(**TINY, run_dir=str(tmp_path / "full")))
    again = mbpg.train(mbpg.Config(**TINY, run_dir=str(tmp_path / "again")))
    assert rows(full.run_dir) == rows(again.run_dir)
    assert any("pg/clipfrac" in r for r in runs.read_metrics(full.run_dir))
    mbpg.train(mbpg.Config(**{**TINY, "steps": 40}, run_dir=str(tmp_path / "resumed")))
    resumed = mbpg.train(mbpg.Config(resume=str(tmp_path / "resumed"), steps=60, progress=False))
    assert rows(resumed.run_dir) == rows(full.run_dir)
    assert runs.run_algorithm(full.run_dir) == "mbpg"
    assert cli.main(["eval", str(full.run_dir), "--episodes", "1"]) == 0
    assert "return" in capsys.readouterr().out


def test_bad_method_is_a_clear_error():
    with pytest.raises(ValueError, match="reinforce, ppo, trpo"):
        mbpg.resolve(mbpg.Config(**TINY, pg="sac"))
    assert cli.main(["train", "mbpg", "--pg", "a2c", "--no-progress"]) == 2
