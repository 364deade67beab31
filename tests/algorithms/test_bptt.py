"""v2.0 (BPTT through the model) end to end on tiny settings: the CLI writes a complete run directory that
`mbrlax eval` can use, a seed determines the run, and a resumed run continues exactly."""

import json

import jax
import numpy as np
import pytest

from mbrlax import cli, runs
from mbrlax.algorithms import bptt

# 20-step episodes (a TimeLimit override), so that a round is cheap
TINY = dict(
    env="Pendulum-v1", env_kwargs={"max_episode_steps": 20}, steps=60, init_steps=20, steps_per_round=20,
    updates_per_round=3, horizon=3, batch_size=8, model_hidden=(16,), ensemble_size=2, model_max_epochs=2,
    eval_episodes=1, policy_hidden=(16,), progress=False, tensorboard=False,
)


def rows(run_dir):
    """Metric rows without wall-clock fields."""
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"}
            for r in runs.read_metrics(run_dir)]


def test_train_is_deterministic_resumable_and_evaluable(tmp_path, capsys):
    full = bptt.train(bptt.Config(**TINY, run_dir=str(tmp_path / "full")))
    assert full.steps == 60 and [s for s, _ in full.evals] == [40, 60]
    assert np.isfinite(full.final_return_mean)
    for f in ("config.json", "metrics.jsonl", "curve.png", "checkpoint.pkl", "run.json"):
        assert (full.run_dir / f).exists(), f
    assert runs.run_algorithm(full.run_dir) == "bptt"
    cfg = json.loads((full.run_dir / "config.json").read_text())
    assert cfg["gamma"] == bptt.PRESETS["Pendulum-v1"]["gamma"]  # resolved from the preset
    metrics = runs.read_metrics(full.run_dir)
    assert any("bptt/grad_norm" in r and "model/holdout_mse" in r for r in metrics)

    again = bptt.train(bptt.Config(**TINY, run_dir=str(tmp_path / "again")))
    assert rows(again.run_dir) == rows(full.run_dir)

    # stopped after 40 steps, resumed to 60: identical to the uninterrupted run
    bptt.train(bptt.Config(**{**TINY, "steps": 40}, run_dir=str(tmp_path / "resumed")))
    resumed = bptt.train(bptt.Config(resume=str(tmp_path / "resumed"), steps=60, progress=False))
    assert rows(resumed.run_dir) == rows(full.run_dir)
    a, b = runs.load_checkpoint(full.run_dir), runs.load_checkpoint(resumed.run_dir)
    for x, y in zip(jax.tree.leaves((a["agent"], a["model"])), jax.tree.leaves((b["agent"], b["model"]))):
        np.testing.assert_array_equal(x, y)

    # `mbrlax eval` finds bptt's load_policy through run.json
    assert cli.main(["eval", str(full.run_dir), "--episodes", "1"]) == 0
    assert "return" in capsys.readouterr().out


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="member_mode"):
        bptt.train(bptt.Config(**TINY, member_mode="median", run_dir=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="init_steps"):
        bptt.resolve(bptt.Config(**{**TINY, "init_steps": 0}))
