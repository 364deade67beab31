import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.models.ensemble import EnsembleModel, Normalizer
from mbrlax.models.fit import ModelDivergedError, fit
from mbrlax.types import Transition


def linear_data(n=600, obs_dim=3, act_dim=2, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, (n, act_dim)).astype(np.float32)
    A = np.array([[0.9, 0.1, 0.0], [0.0, 0.8, 0.2], [0.1, 0.0, 0.95]], np.float32)
    # the same system for every seed
    B = np.random.default_rng(123).normal(size=(act_dim, obs_dim)).astype(np.float32) * 0.3
    nxt = obs @ A + act @ B + noise * rng.normal(size=(n, obs_dim)).astype(np.float32)
    rew = obs @ np.array([1.0, -0.5, 0.25], np.float32) - 0.3 * act.sum(-1)
    return Transition(obs, act, rew.astype(np.float32), nxt, np.zeros(n, np.float32))


def small_model(**kw):
    args = dict(ensemble_size=4, num_elites=2, hidden=(32, 32))
    args.update(kw)
    return EnsembleModel(3, 2, **args)


def test_normalizer_round_trip_and_constant_feature():
    x = np.random.default_rng(0).normal(3.0, 2.0, (100, 4)).astype(np.float32)
    x[:, 2] = 5.0  # constant feature: std must become 1, not 0
    norm = Normalizer.fit(x)
    z = norm.normalize(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(norm.denormalize(z)), x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(z[:, [0, 1, 3]]).mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(z[:, [0, 1, 3]]).std(0), 1.0, atol=1e-4)
    assert float(norm.std[2]) == 1.0 and np.all(np.isfinite(np.asarray(z)))


def test_prediction_shapes():
    model = small_model()
    state = model.init(jax.random.key(0))
    obs, act = jnp.zeros((5, 3)), jnp.zeros((5, 2))
    pred = model.predict(state, obs, act)
    assert pred.next_obs_mean.shape == (4, 5, 3) and pred.next_obs_var.shape == (4, 5, 3)
    assert pred.reward_mean.shape == (4, 5) and pred.reward_var.shape == (4, 5)
    assert pred.term_logit is None
    nxt, rew, term, _ = model.sample_step(state, obs, act, jax.random.key(1))
    assert nxt.shape == (5, 3) and rew.shape == (5,) and term is None
    lt = EnsembleModel(3, 2, ensemble_size=4, num_elites=2, hidden=(8,), learn_termination=True)
    p = lt.predict(lt.init(jax.random.key(0)), obs, act)
    assert p.term_logit.shape == (4, 5)


def test_elite_step_sends_each_row_through_one_elite_redrawn_per_call():
    """Deterministic members: every row's output is its own elite's mean; the K elites share the rows
    evenly (⌈B/K⌉ at most each), non-elites are never used, and another key deals the rows differently."""
    model = EnsembleModel(3, 2, ensemble_size=4, num_elites=2, hidden=(8,), probabilistic=False,
                          learn_termination=True)
    state = model.init(jax.random.key(0))._replace(elites=jnp.array([3, 1], jnp.int32))
    obs = jax.random.normal(jax.random.key(1), (7, 3))
    act = jax.random.normal(jax.random.key(2), (7, 2))
    pred = model.predict(state, obs, act)

    def members(key):
        nxt, rew, prob = jax.jit(model.elite_step)(state, obs, act, key)
        hit = [[np.allclose(nxt[i], pred.next_obs_mean[m, i], atol=1e-5)
                and np.isclose(rew[i], pred.reward_mean[m, i], atol=1e-5)
                for m in range(4)] for i in range(7)]
        member = np.array([int(np.argmax(h)) for h in hit])
        assert all(any(h) for h in hit) and set(member) <= {1, 3}
        assert max(np.bincount(member, minlength=4)[[1, 3]]) <= 4  # ⌈7/2⌉
        np.testing.assert_allclose(prob, jax.nn.sigmoid(pred.term_logit[member, np.arange(7)]), atol=1e-5)
        return member

    draws = [tuple(members(jax.random.key(k))) for k in range(6)]
    assert len(set(draws)) > 1


def test_elite_step_samples_the_members_gaussian():
    """One elite: the draws' mean and std match that member's predicted mean and std; sample=False is the mean."""
    model = EnsembleModel(3, 2, ensemble_size=3, num_elites=1, hidden=(16,))
    state = model.init(jax.random.key(0))._replace(elites=jnp.array([2], jnp.int32))
    state = state._replace(out_norm=Normalizer(jnp.array([0.1, -0.2, 0.0, 1.0]), jnp.array([0.5, 2.0, 1.0, 3.0])))
    obs = jnp.broadcast_to(jnp.array([0.3, -0.1, 0.5]), (20_000, 3))
    act = jnp.broadcast_to(jnp.array([0.2, -0.4]), (20_000, 2))
    pred = model.predict(state, obs[:1], act[:1])
    nxt, rew, _ = jax.jit(model.elite_step)(state, obs, act, jax.random.key(5))
    np.testing.assert_allclose(nxt.mean(0), pred.next_obs_mean[2, 0], atol=0.05)
    np.testing.assert_allclose(nxt.std(0), np.sqrt(pred.next_obs_var[2, 0]), rtol=0.03)
    np.testing.assert_allclose(rew.std(), np.sqrt(pred.reward_var[2, 0]), rtol=0.03)
    mean_nxt, mean_rew, _ = model.elite_step(state, obs[:4], act[:4], jax.random.key(5), sample=False)
    np.testing.assert_allclose(mean_nxt, jnp.broadcast_to(pred.next_obs_mean[2, 0], (4, 3)), atol=1e-5)
    np.testing.assert_allclose(mean_rew, jnp.broadcast_to(pred.reward_mean[2, 0], (4,)), atol=1e-5)


def test_members_are_independent():
    """The loss gradient of one member's batch moves only that member's weights."""
    model = small_model()
    state = model.init(jax.random.key(0))
    d = linear_data(32)
    batch = Transition(*(jnp.broadcast_to(jnp.asarray(x), (4, *x.shape)) for x in d))

    def member0_only(params):
        mean, logvar, _ = model._forward(params, state.in_norm, batch.obs, batch.action)
        return (mean[0] ** 2).sum() + logvar[0].sum()

    g = jax.grad(member0_only)(state.params)["params"]
    for layer in ("EnsembleDense_0", "EnsembleDense_1", "EnsembleDense_2"):
        k = np.asarray(g[layer]["kernel"])
        assert np.abs(k[0]).sum() > 0
        assert np.all(k[1:] == 0), f"{layer}: gradient leaked into other members"
    # different members give different predictions from the same input
    pred = model.predict(state, batch.obs[0], batch.action[0])
    assert not np.allclose(pred.next_obs_mean[0], pred.next_obs_mean[1])


def test_fit_learns_and_logvar_bounds_move():
    model = small_model()
    state0 = model.init(jax.random.key(0))
    data = linear_data(800)
    state, info = fit(model, state0, data, jax.random.key(1), batch_size=32, max_epochs=40, patience=40)
    p0, p1 = state0.params["params"], state.params["params"]
    # the learnable soft bounds are trained (some ports freeze them by mistake)
    assert np.abs(np.asarray(p1["max_logvar"] - p0["max_logvar"])).max() > 1e-3
    assert np.abs(np.asarray(p1["min_logvar"] - p0["min_logvar"])).max() > 1e-3
    assert info["model/holdout_mse"] < 0.05, info
    # the fitted mean predicts the next state of unseen data well
    test = linear_data(200, seed=5)
    pred = model.predict(state, jnp.asarray(test.obs), jnp.asarray(test.action))
    err = np.mean((np.asarray(pred.next_obs_mean).mean(0) - test.next_obs) ** 2)
    assert err < 0.05 * np.var(test.next_obs), err
    r_err = np.mean((np.asarray(pred.reward_mean).mean(0) - test.reward) ** 2)
    assert r_err < 0.05 * np.var(test.reward), r_err


def test_elites_are_the_members_with_lowest_holdout_error():
    model = small_model(ensemble_size=5, num_elites=3, lr=0.0)  # lr 0: fitting cannot change the weights
    state = model.init(jax.random.key(0))
    state, _ = fit(small_model(ensemble_size=5, num_elites=3), state, linear_data(800), jax.random.key(1),
                   batch_size=32, max_epochs=40, patience=40)
    # sabotage members 1 and 3: scale their output layer
    params = jax.tree.map(lambda x: x, state.params)
    last = params["params"]["EnsembleDense_2"]
    scale = jnp.array([1.0, 30.0, 1.0, 30.0, 1.0])[:, None, None]
    params["params"]["EnsembleDense_2"] = {"kernel": last["kernel"] * scale, "bias": last["bias"]}
    state = state._replace(params=params)
    _, info = fit(model, state, linear_data(800, seed=3), jax.random.key(2), max_epochs=1, patience=0)
    assert set(info["model/elites"]) == {0, 2, 4}
    mse = np.array(info["model/holdout_mse_members"])
    assert list(np.argsort(mse)[:3]) == info["model/elites"]


def test_deterministic_variant_fits_by_mse():
    model = EnsembleModel(3, 2, ensemble_size=1, num_elites=1, hidden=(32, 32), probabilistic=False)
    state, info = fit(model, model.init(jax.random.key(0)), linear_data(600), jax.random.key(1), batch_size=32,
                      max_epochs=40)
    assert "max_logvar" not in state.params["params"]
    pred = model.predict(state, jnp.zeros((2, 3)), jnp.zeros((2, 2)))
    assert np.all(np.asarray(pred.next_obs_var) == 0)
    assert info["model/holdout_mse"] < 0.05


def test_non_finite_loss_raises_and_non_finite_data_is_refused():
    model = small_model()
    state = model.init(jax.random.key(0))
    data = linear_data(300)
    # finite data, an absurd learning rate: the loss becomes NaN, the fit reports divergence
    wild = small_model(lr=1e8)
    with pytest.raises(ModelDivergedError, match="nan"):
        fit(wild, wild.init(jax.random.key(0)), data, jax.random.key(0), max_epochs=3)
    # non-finite data never reaches the optimizer: the error is about the data, not the learning rate
    bad = data._replace(reward=np.where(np.arange(300) % 2 == 0, np.inf, data.reward).astype(np.float32))
    with pytest.raises(ValueError, match="non-finite reward in 150 of 300"):
        fit(model, state, bad, jax.random.key(0), max_epochs=3)


def test_bad_sizes_rejected():
    with pytest.raises(ValueError, match="num_elites"):
        EnsembleModel(3, 2, ensemble_size=3, num_elites=5)


def test_an_epoch_is_at_least_min_epoch_steps_minibatches():
    # 100 transitions, batch 64: one pass is 2 minibatches; with min_epoch_steps=7 each epoch takes 7 steps,
    # which Adam's step counter shows (2 epochs -> 14 steps; a pass-only epoch would give 4).
    model = small_model()
    state0 = model.init(jax.random.key(0))
    for min_steps, expected in ((7, 14), (1, 4)):
        state, info = fit(model, state0, linear_data(125), jax.random.key(1), batch_size=64, max_epochs=2,
                          patience=10, min_epoch_steps=min_steps)
        assert info["model/epochs"] == 2
        assert int(state.opt_state[0].count) == expected
    # a refit keeps the weights but starts a fresh optimizer state (the step count restarts)
    state2, _ = fit(model, state, linear_data(125), jax.random.key(2), batch_size=64, max_epochs=2, patience=10,
                    min_epoch_steps=1)
    assert int(state2.opt_state[0].count) == 4
