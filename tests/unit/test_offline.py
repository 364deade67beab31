"""Offline datasets: lossless Minari round trip, readable by Minari's own API, errors that name the field."""

import dataclasses

import h5py
import numpy as np
import pytest

from mbrlax import cli
from mbrlax.data import offline
from mbrlax.data.offline import DatasetError


@pytest.fixture(scope="module")
def data():
    """300 random Pendulum-v1 transitions, with one true termination and one cut made by hand."""
    ds = offline.collect("Pendulum-v1", None, 300, seed=0)
    ds.terminations[99] = True  # episode boundaries need no continuity across them
    ds.truncations[149] = True
    ds.ref_min_score, ds.ref_max_score = -1200.0, -150.0
    ds.meta = {"kind": "random", "note": "test"}
    return ds


def _same(a: offline.OfflineDataset, b: offline.OfflineDataset):
    for name in offline.FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


def test_round_trip_through_minari_is_lossless(tmp_path, data):
    path = offline.save(data, tmp_path / "mbrlax" / "pendulum-random-v0")
    back = offline.load(path)
    _same(offline.validate(data), back)
    assert back.env_id == "Pendulum-v1"
    assert (back.ref_min_score, back.ref_max_score) == (-1200.0, -150.0)
    assert back.meta["kind"] == "random" and back.meta["note"] == "test"
    # episodes: ends at 99 (terminated), 149 (truncated), 199 (time limit), 299 (time limit)
    np.testing.assert_array_equal(np.flatnonzero(back.episode_ends), [99, 149, 199, 299])


def test_minari_itself_reads_what_we_write(tmp_path, data, monkeypatch):
    import minari

    path = offline.save(data, tmp_path / "mbrlax" / "pendulum-random-v0")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    mds = minari.load_dataset("mbrlax/pendulum-random-v0")
    assert mds.total_steps == 300 and mds.total_episodes == 4
    ep = mds[0]
    np.testing.assert_array_equal(ep.observations[:-1], data.observations[:100])
    np.testing.assert_array_equal(ep.observations[-1], data.next_observations[99])
    np.testing.assert_array_equal(ep.actions, data.actions[:100])
    assert ep.terminations[-1] and not ep.truncations[-1]
    # Minari's normalized score uses the reference returns we recorded: (R − min)/(max − min)
    np.testing.assert_allclose(minari.get_normalized_score(mds, np.array([-675.0])), [0.5])
    assert mds.action_space.shape == (1,) and float(mds.action_space.high[0]) == 2.0
    assert offline.load(path).normalized_score(-675.0) == pytest.approx(50.0)


def test_actions_are_stored_in_env_units_and_rescaled_for_agents(data):
    assert np.abs(data.actions).max() > 1.0  # Pendulum's torque is in [-2, 2]
    tr = data.transitions(np.array([-2.0]), np.array([2.0]))
    np.testing.assert_allclose(tr.action, data.actions / 2.0, atol=1e-6)
    np.testing.assert_array_equal(tr.terminated, data.terminations.astype(np.float32))


@pytest.mark.parametrize("name", ["observations", "actions", "rewards", "next_observations"])
def test_nan_is_an_error_naming_the_field(data, name):
    arr = getattr(data, name).copy()
    arr[(7,) + (0,) * (arr.ndim - 1)] = np.nan
    with pytest.raises(DatasetError, match=f"field '{name}' has 1 non-finite.*row 7"):
        offline.validate(dataclasses.replace(data, **{name: arr}))


def test_wrong_shapes_are_errors_naming_the_field(data):
    with pytest.raises(DatasetError, match="field 'actions' has shape \\(299, 1\\)"):
        offline.validate(dataclasses.replace(data, actions=data.actions[:-1]))
    with pytest.raises(DatasetError, match="field 'rewards' has shape \\(300, 1\\)"):
        offline.validate(dataclasses.replace(data, rewards=data.rewards[:, None], terminations=data.terminations))
    with pytest.raises(DatasetError, match="field 'observations' has rows of shape \\(3,\\).*observes \\(2,\\)"):
        import gymnasium as gym

        offline.validate(data, gym.make("MountainCarContinuous-v0"))


def test_action_space_mismatch_is_an_error(tmp_path, data):
    import gymnasium as gym

    # mbrlax/Pendulum-v0 observes 3 numbers too, but its actions are in [-1, 1], Pendulum-v1's in [-2, 2]
    path = offline.save(data, tmp_path / "d")
    with pytest.raises(DatasetError, match="field 'action_space'.*another environment"):
        offline.load(path, env_id="mbrlax/Pendulum-v0")
    with pytest.raises(DatasetError, match="field 'actions' has values .* outside the action space"):
        offline.validate(dataclasses.replace(data, env_id="mbrlax/Pendulum-v0"), gym.make("mbrlax/Pendulum-v0"))


def test_missing_keys_are_errors_naming_the_field(tmp_path, data):
    path = offline.save(data, tmp_path / "d")
    with h5py.File(path / "data" / "main_data.hdf5", "a") as f:
        del f["episode_2"]["rewards"]
    with pytest.raises(DatasetError, match="field 'rewards' is missing in episode 'episode_2'"):
        offline.load(path)
    with pytest.raises(DatasetError, match="field 'actions' is missing"):
        offline.validate(dataclasses.replace(data, actions=None))
    with pytest.raises(FileNotFoundError, match="no dataset at"):
        offline.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a Minari dataset"):
        offline.load(tmp_path / "empty")


def test_discontinuity_needs_an_episode_end_and_split_episodes_finds_it(data):
    obs = data.observations.copy()
    obs[50] += 1.0  # next_obs[49] != obs[50], and row 49 ends no episode
    with pytest.raises(DatasetError, match="'next_observations' row 49 differs from 'observations' row 50"):
        offline.validate(dataclasses.replace(data, observations=obs))
    trunc = offline.split_episodes(obs, data.next_observations, data.terminations)
    # cuts at 49 (the gap), 199 (reset after the time limit) and the end; 99 is a termination, not a truncation
    assert set(np.flatnonzero(trunc)) >= {49, 199, 299} and not trunc[99]
    offline.validate(dataclasses.replace(data, observations=obs, truncations=trunc | data.truncations))


def test_info_and_cli(tmp_path, data, capsys):
    path = offline.save(data, tmp_path / "mbrlax" / "pendulum-random-v0")
    s = offline.info(path)
    assert s["transitions"] == 300 and s["episodes"] == 4 and s["terminations"] == 1
    rets = [data.rewards[a:b + 1].sum() for a, b in ((0, 99), (100, 149), (150, 199), (200, 299))]
    # the last episode is a full 100-step time-limit episode here, so all four count
    assert s["episode_return_mean"] == pytest.approx(np.mean(rets), rel=1e-5)
    assert cli.main(["dataset", "info", str(path)]) == 0
    assert "transitions" in capsys.readouterr().out
    assert cli.main(["dataset", "info", str(tmp_path / "missing")]) == 2
    with pytest.raises(FileExistsError, match="already exists"):
        offline.save(data, path)
