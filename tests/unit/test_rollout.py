import jax
import jax.numpy as jnp
import numpy as np

from mbrlax.data.replay import device_buffer
from mbrlax.models.ensemble import EnsembleModel
from mbrlax.models.fit import fit
from mbrlax.rollout import branched_rollout
from mbrlax.types import Transition


def zero_policy(params, obs, key):
    return jnp.zeros((obs.shape[0], 1))


MODEL = EnsembleModel(2, 1, ensemble_size=3, num_elites=2, hidden=(16,))
DET = EnsembleModel(2, 1, ensemble_size=3, num_elites=1, hidden=(16,), probabilistic=False)


def always(o, a, n):
    return jnp.ones(o.shape[:-1], bool)


def never(o, a, n):
    return jnp.zeros(o.shape[:-1], bool)


def test_terminated_rollouts_stop_being_written():
    state = MODEL.init(jax.random.key(0))
    start = jnp.asarray(np.random.default_rng(0).normal(size=(50, 2)), jnp.float32)
    buf = device_buffer(1000, 2, 1)
    out, info = branched_rollout(MODEL, state, zero_policy, None, start, 3, buf, jax.random.key(1), always)
    assert int(out.size) == 50 and float(info["rollout/alive_fraction"]) == 0.0
    assert np.all(np.asarray(out.data.terminated[:50]) == 1.0)
    np.testing.assert_array_equal(np.asarray(out.data.obs[:50]), np.asarray(start))
    out, info = branched_rollout(MODEL, state, zero_policy, None, start, 3, buf, jax.random.key(1), never)
    assert int(out.size) == 150 and float(info["rollout/alive_fraction"]) == 1.0
    # step t+1 starts where step t ended
    np.testing.assert_array_equal(np.asarray(out.data.obs[50:100]), np.asarray(out.data.next_obs[:50]))


def test_rollout_length_is_traced_and_partial_termination():
    state = MODEL.init(jax.random.key(0))
    start = jnp.asarray(np.linspace(-1, 1, 40)[:, None].repeat(2, 1), jnp.float32)
    buf = device_buffer(1000, 2, 1)
    half = lambda o, a, n: o[..., 0] > 0  # noqa: E731  the starts with positive x end after one step
    out, _ = branched_rollout(MODEL, state, zero_policy, None, start, 2, buf, jax.random.key(1), half)
    first = np.asarray(out.data.terminated[:40])
    np.testing.assert_array_equal(first, (np.asarray(start[:, 0]) > 0).astype(np.float32))
    assert int(out.size) == 40 + int((first == 0).sum())


def test_samples_come_from_elite_members_only():
    state = DET.init(jax.random.key(0))._replace(elites=jnp.array([2], jnp.int32))
    obs, act = jnp.ones((8, 2)), jnp.zeros((8, 1))
    nxt, rew, _, pred = DET.sample_step(state, obs, act, jax.random.key(3))
    np.testing.assert_allclose(np.asarray(nxt), np.asarray(pred.next_obs_mean[2]), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(rew), np.asarray(pred.reward_mean[2]), rtol=1e-6)
    assert not np.allclose(np.asarray(pred.next_obs_mean[0]), np.asarray(pred.next_obs_mean[2]))


def test_learned_termination_head():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1500, 2)).astype(np.float32)
    act = rng.uniform(-1, 1, (1500, 1)).astype(np.float32)
    nxt = obs + 0.1 * act
    term = (nxt[:, 0] > 0.5).astype(np.float32)
    model = EnsembleModel(2, 1, ensemble_size=2, num_elites=2, hidden=(32, 32), learn_termination=True)
    state, _ = fit(model, model.init(jax.random.key(0)), Transition(obs, act, np.zeros(1500, np.float32), nxt, term),
                   jax.random.key(1), batch_size=64, max_epochs=30, patience=30)
    test = rng.normal(size=(400, 2)).astype(np.float32)
    _, _, prob, _ = model.sample_step(state, jnp.asarray(test), jnp.zeros((400, 1)), jax.random.key(2))
    accuracy = np.mean((np.asarray(prob) > 0.5) == (test[:, 0] > 0.5))
    assert accuracy > 0.93, accuracy


def test_penalty_over_the_elites_and_its_statistics():
    """MOPO's path of the kernel: r̃ = r̂ − λ·u with u over the elites only; the logged mean/max penalty and the
    mean model reward are those of the written transitions."""
    from mbrlax.models import penalties

    state = MODEL.init(jax.random.key(0))._replace(elites=jnp.array([2, 0], jnp.int32))
    start = jnp.asarray(np.random.default_rng(0).normal(size=(20, 2)), jnp.float32)
    kw = dict(penalty="disagreement", penalty_members="elites")
    b0, _ = branched_rollout(MODEL, state, zero_policy, None, start, 2, device_buffer(100, 2, 1), jax.random.key(1),
                             never, lam=0.0, **kw)
    b1, info = branched_rollout(MODEL, state, zero_policy, None, start, 2, device_buffer(100, 2, 1), jax.random.key(1),
                                never, lam=0.5, **kw)
    obs, act = b0.data.obs[:40], b0.data.action[:40]
    u = np.asarray(penalties.from_prediction("disagreement", MODEL.predict(state, obs, act), members=state.elites))
    r_hat = np.asarray(b0.data.reward[:40])  # lam = 0: the model's own rewards
    np.testing.assert_allclose(np.asarray(b1.data.reward[:40]), r_hat - 0.5 * u, rtol=1e-5, atol=1e-6)
    assert float(info["rollout/transitions"]) == 40
    np.testing.assert_allclose(float(info["rollout/mean_penalty"]), u.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(info["rollout/max_penalty"]), u.max(), rtol=1e-5)
    np.testing.assert_allclose(float(info["rollout/mean_model_reward"]), r_hat.mean(), rtol=1e-5, atol=1e-6)
    all_members = penalties.from_prediction("disagreement", MODEL.predict(state, obs, act))
    assert not np.allclose(u, np.asarray(all_members))  # the elites-only penalty is another quantity
