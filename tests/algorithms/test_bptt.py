"""v2.0 (BPTT through the model) end to end on tiny settings: the CLI writes a complete run directory that
`mbrlax eval` can use, a seed determines the run, and a resumed run continues exactly. Also: a resume of each
algorithm on model_loop (bptt, mbpg, metrpo, mpc) refuses another flag and takes a new length."""

import json

import jax
import numpy as np
import pytest

from mbrlax import cli, runs
from mbrlax.algorithms import bptt, mbpg, metrpo, mpc

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
    for f in ("config.json", "metrics.jsonl", "curve.png", "checkpoints", "run.json"):
        assert (full.run_dir / f).exists(), f
    assert runs.run_algorithm(full.run_dir) == "bptt"
    cfg = json.loads((full.run_dir / "config.json").read_text())
    assert cfg["gamma"] == bptt.PRESETS["Pendulum-v1"]["gamma"]  # resolved from the preset
    metrics = runs.read_metrics(full.run_dir)
    # each round logs its model fit and, with its evaluation, its BPTT updates
    assert sum("model/holdout_mse" in r for r in metrics) == 2
    assert all("bptt/grad_norm" in r for r in metrics if "eval/return_mean" in r)

    again = bptt.train(bptt.Config(**TINY, run_dir=str(tmp_path / "again")))
    assert rows(again.run_dir) == rows(full.run_dir)

    # stopped after 40 steps, resumed to 60: identical to the uninterrupted run
    bptt.train(bptt.Config(**{**TINY, "steps": 40}, run_dir=str(tmp_path / "resumed")))
    resumed = bptt.train(bptt.Config(resume=str(tmp_path / "resumed"), steps=60, progress=False))
    assert rows(resumed.run_dir) == rows(full.run_dir)
    a, b = runs.load_checkpoint(full.run_dir), runs.load_checkpoint(resumed.run_dir)
    for x, y in zip(jax.tree.leaves((a["agent"], a["model"])), jax.tree.leaves((b["agent"], b["model"])), strict=True):
        np.testing.assert_array_equal(x, y)

    # `mbrlax eval` finds bptt's load_policy through run.json
    assert cli.main(["eval", str(full.run_dir), "--episodes", "1"]) == 0
    assert "return" in capsys.readouterr().out


def test_old_pickle_checkpoint_converts_and_resumes(tmp_path):
    import pickle
    import shutil

    res = bptt.train(bptt.Config(**{**TINY, "steps": 40}, run_dir=str(tmp_path / "old")))
    st = runs.load_checkpoint(res.run_dir)
    # the layout bptt / mbpg / metrpo pickled before the safe format (mpc's: "episode", and "data" for "buffer")
    legacy = dict(format=1, config=json.loads((res.run_dir / "config.json").read_text()), t=st["t"], round=st["round"],
                  episodes=st["episode"], key=np.asarray(jax.random.key_data(st["key"])),
                  np_rng=st["np_rng"].bit_generator.state, buffer=st["buffer"], model_fitted=True, evals=[],
                  model=runs.to_host(st["model"]), agent=runs.to_host(st["agent"]))
    shutil.rmtree(res.run_dir / "checkpoints")
    (res.run_dir / "checkpoint.pkl").write_bytes(pickle.dumps(legacy))
    assert cli.main(["checkpoint", "convert", str(res.run_dir)]) == 0
    new = runs.load_checkpoint(res.run_dir)
    assert (new["t"], new["episode"], new["env"]["count"]) == (40, 2, 2) and new["env"]["obs"] is None
    for x, y in zip(jax.tree.leaves(st["agent"]), jax.tree.leaves(new["agent"]), strict=True):
        np.testing.assert_array_equal(x, y)
    resumed = bptt.train(bptt.Config(resume=str(res.run_dir), steps=60, progress=False))
    assert [s for s, _ in resumed.evals] == [40, 60]


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="member_mode"):
        bptt.train(bptt.Config(**TINY, member_mode="median", run_dir=str(tmp_path / "x")))
    with pytest.raises(ValueError, match="init_steps"):
        bptt.resolve(bptt.Config(**{**TINY, "init_steps": 0}))


# The tiny settings of test_mbpg.py, test_metrpo.py and test_mpc.py (the same computations: compiled once)
SHORT = dict(env="Pendulum-v1", env_kwargs={"max_episode_steps": 20}, init_steps=20, steps_per_round=20,
             model_hidden=(16,), model_max_epochs=2, eval_episodes=1, policy_hidden=(16,), progress=False,
             tensorboard=False)
RESUMABLE = {  # name: (module, tiny config, the length flag, the run's length, a longer one)
    "bptt": (bptt, TINY, "steps", 40, 60),
    "mbpg": (mbpg, dict(SHORT, iterations_per_round=2, horizon=4, rollouts=8, minibatches=2, epochs=2, value_epochs=2,
                        ensemble_size=2), "steps", 40, 60),
    "metrpo": (metrpo, dict(SHORT, max_iterations=4, validate_every=2, horizon=4, rollouts=8, validation_rollouts=4,
                            minibatches=2, value_epochs=2, ensemble_size=3), "steps", 40, 60),
    "mpc": (mpc, dict(env="Pendulum-v1", env_kwargs={"max_episode_steps": 20}, variant="v1.0", horizon=5, population=24,
                      elites=4, iterations=2, model_hidden=(16, 16), model_epochs=2, progress=False, tensorboard=False),
            "episodes", 2, 3),
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_resume_refuses_another_flag_and_takes_a_new_length(tmp_path, name):
    module, tiny, length, short, longer = RESUMABLE[name]
    first = module.train(module.Config(**{**tiny, length: short}, run_dir=str(tmp_path / name)))
    before = runs.read_metrics(first.run_dir)
    with pytest.raises(runs.RunDirError, match=rf"seed=3 \(the run has 0\).*Only {length}, progress, tensorboard may"):
        module.train(module.Config(resume=str(first.run_dir), seed=3, **{length: longer}, progress=False))
    assert runs.read_metrics(first.run_dir) == before  # refused before anything ran
    res = module.train(module.Config(resume=str(first.run_dir), **{length: longer}, progress=False))
    assert runs.read_metrics(first.run_dir)[: len(before)] == before  # continued, nothing logged twice
    assert len(res.evals) == len(first.evals) + 1 and res.steps == first.steps + 20
    saved = runs.load_checkpoint(first.run_dir)
    assert (saved["t"], saved["episode"]) == (res.steps, res.steps // 20)
