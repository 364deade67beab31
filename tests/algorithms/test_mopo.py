"""MOPO and behaviour cloning end to end on tiny generated Pendulum datasets, and dataset generation."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax import cli, runs
from mbrlax.algorithms import bc, mopo
from mbrlax.data import offline
from mbrlax.data.replay import device_buffer
from mbrlax.datasets import make_dataset
from mbrlax.models.ensemble import EnsembleModel
from mbrlax.rollout import branched_rollout

TINY_MOPO = dict(
    epochs=2, epoch_length=100, rollout_freq=100, rollout_batch_size=64, model_retain_epochs=1,
    updates_per_call=50, eval_every=200, eval_episodes=1, model_hidden=(32, 32), sac_hidden=(32, 32),
    ensemble_size=3, num_elites=2, model_max_epochs=3, progress=False, tensorboard=False,
)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """All five kinds from one tiny SAC run (200 steps, 2 snapshots)."""
    root = tmp_path_factory.mktemp("datasets")
    kw = dict(size=250, sac_steps=200, snapshots=2, init_steps=100, root=root, ref_episodes=1, progress=False,
              sac_hidden=(32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 300 SAC steps may not beat the random policy: a warning says so
        paths = {k: make_dataset("Pendulum-v1", k, **kw) for k in offline.KINDS}
    return root, paths


def test_make_dataset_kinds_share_one_cached_sac_run(datasets):
    root, paths = datasets
    cache = root / "policies" / "pendulum-s0"
    snaps = json.loads((cache / "snapshots.json").read_text())
    assert [s["step"] for s in snaps] == [100, 200]  # trained once, for all five kinds
    assert all(s["file"].endswith(".npz") for s in snaps)  # actor snapshots are arrays, never pickles
    ds = {k: offline.load(p) for k, p in paths.items()}
    ref = json.loads((cache / "reference.json").read_text())
    for d in ds.values():
        assert (d.ref_min_score, d.ref_max_score) == (ref["ref_min_score"], ref["ref_max_score"])
    assert len(ds["random"]) == len(ds["medium"]) == len(ds["expert"]) == 250
    assert len(ds["medium-expert"]) == 500
    np.testing.assert_array_equal(ds["medium-expert"].observations[:250], ds["medium"].observations)
    # medium-replay is SAC's own buffer up to the medium snapshot, actions back in the env's units (×2)
    m = ds["medium-replay"].meta["policy_step"]
    buf = runs.load_checkpoint(cache / "sac")["real"]["data"]
    assert len(ds["medium-replay"]) == m
    np.testing.assert_array_equal(ds["medium-replay"].observations, buf["obs"][:m])
    np.testing.assert_allclose(ds["medium-replay"].actions, 2.0 * buf["action"][:m], atol=1e-6)
    assert ds["expert"].meta["policy_step"] == max(snaps, key=lambda s: s["eval_return"])["step"]
    with pytest.raises(FileExistsError, match="overwrite"):
        make_dataset("Pendulum-v1", "random", size=250, sac_steps=200, snapshots=2, root=root, sac_hidden=(32, 32))
    with pytest.raises(ValueError, match="unknown dataset kind 'good'"):
        make_dataset("Pendulum-v1", "good", root=root)


def test_penalized_rollout_subtracts_lambda_times_the_penalty():
    """MOPO's rollouts: rollout.branched_rollout with penalty= writes r̃ = r̂ − λ·u(s, a)."""
    model = EnsembleModel(3, 1, ensemble_size=3, num_elites=2, hidden=(16,))
    state = model.init(jax.random.key(0))
    policy = lambda p, o, k: jnp.tanh(o[:, :1])  # noqa: E731
    start = jax.random.normal(jax.random.key(1), (8, 3))
    out = {}
    for lam in (0.0, 2.0):
        buf, info = branched_rollout(model, state, policy, None, start, 3, device_buffer(64, 3, 1), jax.random.key(2),
                                     penalty="max_aleatoric", lam=lam)
        out[lam] = (buf, info)
    (b0, i0), (b2, _) = out[0.0], out[2.0]
    assert int(b0.size) == 24 and float(i0["rollout/mean_penalty"]) > 0
    np.testing.assert_array_equal(b0.data.next_obs, b2.data.next_obs)  # same key: same transitions
    # recompute u(s, a) for the stored transitions from the model's prediction: r̃ = r̂ − 2·u
    pred = jax.jit(model.predict)(state, b0.data.obs[:24], b0.data.action[:24])
    from mbrlax.models import penalties

    u = penalties.from_prediction("max_aleatoric", pred)
    np.testing.assert_allclose(b2.data.reward[:24], b0.data.reward[:24] - 2.0 * u, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def full_run(datasets, tmp_path_factory):
    """A 2-epoch MOPO run whose env steps are counted, split into inside and outside evaluation."""
    _, paths = datasets
    monkeypatch = pytest.MonkeyPatch()
    state = {"in_eval": False, "train_steps": 0, "eval_steps": 0}
    real_make, real_eval = mopo.make, mopo.evaluate

    def counting_make(*a, **k):
        env, spec = real_make(*a, **k)
        step = env.step

        def counted(action):
            state["eval_steps" if state["in_eval"] else "train_steps"] += 1
            return step(action)

        env.step = counted
        return env, spec

    def flagged_eval(*a, **k):
        state["in_eval"] = True
        try:
            return real_eval(*a, **k)
        finally:
            state["in_eval"] = False

    monkeypatch.setattr(mopo, "make", counting_make)
    monkeypatch.setattr(mopo, "evaluate", flagged_eval)
    try:
        r = mopo.train(mopo.Config(dataset=str(paths["medium-replay"]),
                                   run_dir=str(tmp_path_factory.mktemp("m") / "run"), **TINY_MOPO))
    finally:
        monkeypatch.undo()
    return r, state


def test_mopo_trains_offline_and_touches_the_env_only_to_evaluate(datasets, full_run):
    _, paths = datasets
    r, state = full_run
    assert state["train_steps"] == 0 and state["eval_steps"] == 200  # one evaluation of one 200-step episode
    assert r.steps == 200 and [s for s, _ in r.evals] == [200]
    rows = runs.read_metrics(r.run_dir)
    roll = [x for x in rows if "rollout/mean_penalty" in x]
    assert len(roll) == 2 and all(x["rollout/mean_penalty"] > 0 for x in roll)
    assert all(x["rollout/transitions"] == 64 * 5 for x in roll)  # pendulum preset h=5, nothing terminates
    ds = offline.load(paths["medium-replay"])
    assert r.final_normalized_score == pytest.approx(float(ds.normalized_score(r.final_return_mean)))
    cfg = json.loads((r.run_dir / "config.json").read_text())
    assert (cfg["horizon"], cfg["lam"], cfg["env"]) == (5, 1.0, "Pendulum-v1")  # from the pendulum preset


def test_mopo_same_seed_same_run_and_resume_continues_exactly(datasets, full_run, tmp_path):
    _, paths = datasets
    full, _ = full_run
    kw = dict(TINY_MOPO, dataset=str(paths["medium-replay"]))
    half = mopo.train(mopo.Config(run_dir=str(tmp_path / "half"), **{**kw, "epochs": 1}))
    resumed = mopo.train(mopo.Config(resume=str(half.run_dir), epochs=2, progress=False, tensorboard=False))
    # the half run's extra final evaluation at step 100 is reporting only: without it the rows agree exactly
    strip = lambda rd: [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"}  # noqa: E731
                        for r in runs.read_metrics(rd) if not ("eval/return_mean" in r and r["step"] == 100)]
    assert strip(full.run_dir) == strip(resumed.run_dir)
    assert resumed.final_return_mean == full.final_return_mean
    a, b = runs.load_checkpoint(full.run_dir), runs.load_checkpoint(resumed.run_dir)
    for name in ("sac", "model"):
        for x, y in zip(jax.tree.leaves(a[name]), jax.tree.leaves(b[name])):
            np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(a["fake"]), jax.tree.leaves(b["fake"])):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(runs.RunDirError, match="penalty='disagreement'"):
        mopo.train(mopo.Config(resume=str(half.run_dir), penalty="disagreement", progress=False))


def test_mopo_bad_input_is_a_clear_error(datasets, tmp_path):
    _, paths = datasets
    with pytest.raises(ValueError, match="no dataset given"):
        mopo.train(mopo.Config())
    with pytest.raises(ValueError, match="unknown penalty 'huge'"):
        mopo.train(mopo.Config(dataset=str(paths["random"]), penalty="huge", **TINY_MOPO))
    with pytest.raises(ValueError, match="lam must be ≥ 0"):
        mopo.train(mopo.Config(dataset=str(paths["random"]), lam=-1.0, **TINY_MOPO))
    with pytest.raises(offline.DatasetError, match="action_space"):
        mopo.train(mopo.Config(dataset=str(paths["random"]), env="mbrlax/Pendulum-v0", **TINY_MOPO))


@pytest.fixture(scope="module")
def deterministic(tmp_path_factory):
    """400 transitions of a deterministic behaviour policy a = tanh(θ̇/2) (torque 2a): an exact regression target."""
    ds = offline.collect("Pendulum-v1", lambda o, rng: np.tanh(o[2:3] / 2.0), 400, seed=3)
    ds.ref_min_score, ds.ref_max_score, ds.meta = -1200.0, -150.0, {"kind": "medium"}
    return ds, offline.save(ds, tmp_path_factory.mktemp("det") / "det")


def test_bc_clones_the_behaviour_policy(deterministic, tmp_path):
    ds, path = deterministic
    r = bc.train(bc.Config(dataset=str(path), steps=1000, updates_per_call=500, eval_every=1000,
                           eval_episodes=1, hidden=(64, 64), run_dir=str(tmp_path / "bc"), progress=False,
                           tensorboard=False))
    assert [x["step"] for x in runs.read_metrics(r.run_dir) if "bc/loss" in x] == [1000]
    act, cfg = bc.load_policy(r.run_dir)
    # the cloned policy reproduces the dataset's actions far better than predicting their mean does
    pred = np.stack([act(o) for o in ds.observations[:200]])
    target = ds.actions[:200] / 2.0
    assert np.mean((pred - target) ** 2) < 0.1 * np.mean((target - target.mean()) ** 2)
    assert cfg.env == "Pendulum-v1" and r.final_normalized_score == pytest.approx(
        100 * (r.final_return_mean + 1200.0) / 1050.0)


def test_bc_resume_continues_exactly(deterministic, tmp_path):
    """Interrupted at 500 steps and resumed to 1000: the same rows and parameters as the uninterrupted run."""
    _, path = deterministic
    kw = dict(dataset=str(path), updates_per_call=250, eval_every=500, eval_episodes=1, hidden=(64, 64),
              progress=False, tensorboard=False)
    bc.train(bc.Config(steps=500, run_dir=str(tmp_path / "half"), **kw))
    resumed = bc.train(bc.Config(resume=str(tmp_path / "half"), steps=1000, progress=False))
    full = bc.train(bc.Config(steps=1000, run_dir=str(tmp_path / "full"), **kw))
    strip = lambda rd: [{k: v for k, v in x.items() if not k.startswith("time/")} for x in runs.read_metrics(rd)]  # noqa: E731
    assert strip(resumed.run_dir) == strip(full.run_dir) and len(strip(full.run_dir)) == 2
    a, b = runs.load_checkpoint(full.run_dir), runs.load_checkpoint(resumed.run_dir)
    assert a["t"] == b["t"] == 1000
    for x, y in zip(jax.tree.leaves((a["params"], a["opt_state"])), jax.tree.leaves((b["params"], b["opt_state"]))):
        np.testing.assert_array_equal(x, y)


def test_cli_train_mopo_and_bc_then_eval(datasets, tmp_path, capsys):
    _, paths = datasets
    args = ["train", "mopo", "--dataset", str(paths["medium"]), "--penalty", "max_aleatoric", "--lam", "0.3",
            "--horizon", "5", "--epochs", "1", "--epoch-length", "100", "--rollout-freq", "100",
            "--rollout-batch-size", "64", "--updates-per-call", "50", "--eval-every", "100", "--eval-episodes", "1",
            "--model-hidden", "32", "32", "--sac-hidden", "32", "32", "--ensemble-size", "3", "--num-elites", "2",
            "--model-max-epochs", "3", "--model-retain-epochs", "1", "--no-progress",
            "--run-dir", str(tmp_path / "cli")]
    assert cli.main(args) == 0
    cfg = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert (cfg["penalty"], cfg["lam"], cfg["horizon"], cfg["epochs"]) == ("max_aleatoric", 0.3, 5, 1)
    assert cli.main(["eval", str(tmp_path / "cli"), "--episodes", "1"]) == 0
    assert "Pendulum-v1: return" in capsys.readouterr().out
    assert cli.main(["train", "bc", "--dataset", str(paths["medium"]), "--steps", "500", "--updates-per-call", "500",
                     "--eval-every", "500", "--eval-episodes", "1", "--hidden", "64", "64", "--no-progress",
                     "--run-dir", str(tmp_path / "b")]) == 0
    assert cli.main(["eval", str(tmp_path / "b"), "--episodes", "1"]) == 0
    assert cli.main(["train", "mopo", "--dataset", str(tmp_path / "nope"), "--no-progress"]) == 2
