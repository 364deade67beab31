"""PETS trajectory sampling on a fake ensemble whose member e moves the state by exactly e per step (and
predicts reward 10e): a particle's trajectory reveals which member it used at every step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.models.ensemble import EnsembleModel
from mbrlax.planning import propagation

H, P = 6, 3


def fake_ensemble(e: int = 5, elites=None):
    """Member i predicts Δobs = i, reward = 10 i, with a variance of ~1e-9 (so sampling changes nothing)."""
    model = EnsembleModel(1, 1, ensemble_size=e, num_elites=e if elites is None else len(elites), hidden=(4,))
    state = model.init(jax.random.key(0))
    p = jax.tree.map(jnp.zeros_like, state.params)["params"]
    i = jnp.arange(e, dtype=jnp.float32)
    p["EnsembleDense_1"]["bias"] = jnp.stack([i, 10 * i, jnp.full(e, -30.0), jnp.full(e, -30.0)], -1)
    p["max_logvar"] = jnp.full(2, -20.0)
    p["min_logvar"] = jnp.full(2, -40.0)
    state = state._replace(params={"params": p})
    if elites is not None:
        state = state._replace(elites=jnp.asarray(elites, jnp.int32))
    return model, state


def run(model, state, particles, prop, **kw):
    actions = jnp.zeros((P, H, 1))
    f = jax.jit(lambda k: propagation.rollout_particles(model, state, jnp.zeros(1), actions, k, particles=particles,
                                                        propagation=prop, return_trajectory=True, **kw))
    ret, traj = f(jax.random.key(1))
    members = np.round(np.diff(np.asarray(traj)[..., 0], axis=0)).astype(int)  # H×P×N: member used per step
    return np.asarray(ret), members


def test_tsinf_keeps_one_member_per_particle_in_balanced_blocks():
    model, state = fake_ensemble()
    ret, members = run(model, state, 10, "tsinf")
    assert np.all(members == members[:1])  # the same member at every step
    for p in range(P):
        assert sorted(members[0, p]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]  # N/K = 2 particles per member
    np.testing.assert_allclose(ret, H * 10 * 2.0, rtol=1e-5)  # learned reward: mean over members of 10e, H steps


def test_ts1_resamples_the_member_every_step():
    model, state = fake_ensemble()
    ret, members = run(model, state, 10, "ts1")
    for t in range(H):  # at every step each member still serves exactly N/K particles of each candidate
        for p in range(P):
            assert sorted(members[t, p]) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    changed = (members[1:] != members[:-1]).mean()
    assert changed > 0.6  # a fresh uniform draw differs from the last member 80 % of the time
    np.testing.assert_allclose(ret, H * 10 * 2.0, rtol=1e-5)  # balanced draws: the same expected reward


def test_expectation_uses_the_mean_of_the_members():
    model, state = fake_ensemble()
    ret, members = run(model, state, 10, "expectation")
    assert members.shape == (H, P, 1) and np.all(members == 2)  # mean of 0..4, one particle
    np.testing.assert_allclose(ret, H * 20.0, rtol=1e-5)


def test_only_elites_are_used_and_known_reward_and_termination_apply():
    model, state = fake_ensemble(5, elites=[4, 2])
    _, members = run(model, state, 4, "tsinf")
    assert sorted(members[0, 0]) == [2, 2, 4, 4]
    # known reward 1 per step, termination once x > 2.5: member e stops after ⌈2.5/e⌉ steps (0 never)
    model, state = fake_ensemble(5)
    ret, _ = run(model, state, 5, "tsinf", reward_fn=lambda o, a, n: jnp.ones(o.shape[:-1]),
                 term_fn=lambda o, a, n: n[..., 0] > 2.5)
    np.testing.assert_allclose(ret, (H + 3 + 2 + 1 + 1) / 5, rtol=1e-6)


def test_bad_particle_counts_are_refused():
    model, state = fake_ensemble()
    with pytest.raises(ValueError, match="multiple"):
        run(model, state, 7, "tsinf")
    with pytest.raises(ValueError, match="unknown propagation"):
        run(model, state, 10, "moment_matching")
