import jax
import jax.numpy as jnp
import numpy as np

from mbrlax.agents.nets import tanh_gaussian_sample
from mbrlax.agents.sac import SAC
from mbrlax.types import Transition


def np_mlp(params, x):
    """Plain NumPy forward pass of a flax MLP param dict (Dense_0 … Dense_n, ReLU between)."""
    layers = sorted(params, key=lambda k: int(k.split("_")[1]))
    for i, name in enumerate(layers):
        x = x @ np.asarray(params[name]["kernel"]) + np.asarray(params[name]["bias"])
        if i < len(layers) - 1:
            x = np.maximum(x, 0)
    return x


def batch(n=6, obs_dim=3, act_dim=2, seed=0):
    rng = np.random.default_rng(seed)
    return Transition(
        rng.normal(size=(n, obs_dim)).astype(np.float32),
        rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        rng.normal(size=(n, obs_dim)).astype(np.float32),
        (np.arange(n) % 3 == 1).astype(np.float32),
    )


def test_critic_target_matches_hand_calculation():
    sac = SAC(3, 2, hidden=(8, 8), gamma=0.9, init_alpha=0.3)
    state = sac.init(jax.random.key(0))
    # make the target critic differ from the critic, as after training
    state = state._replace(target_critic=jax.tree.map(lambda x: x * 0.7, state.critic))
    b = batch()
    key = jax.random.key(42)
    y = np.asarray(sac.critic_target(state, Transition(*map(jnp.asarray, b)), key))

    # by hand: a' = tanh(μ + σ ε), log π = Σ log N(u; μ, σ) - Σ log(1 - tanh(u)²)
    out = np_mlp(state.actor["params"]["MLP_0"], b.next_obs)
    mu, raw = out[:, :2], out[:, 2:]
    log_std = -5.0 + 0.5 * 7.0 * (np.tanh(raw) + 1.0)
    eps = np.asarray(jax.random.normal(key, mu.shape))
    u = mu + np.exp(log_std) * eps
    a = np.tanh(u)
    logp = (-0.5 * eps**2 - log_std - 0.5 * np.log(2 * np.pi)).sum(-1) - np.log(1 - np.tanh(u) ** 2).sum(-1)
    tq = state.target_critic["params"]["VmapMLP_0"]
    q = [np_mlp(jax.tree.map(lambda x, i=i: x[i], tq), np.concatenate([b.next_obs, a], -1))[:, 0] for i in range(2)]
    expected = b.reward + 0.9 * (1 - b.terminated) * (np.minimum(q[0], q[1]) - 0.3 * logp)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)


def test_tanh_gaussian_log_prob_is_stable_at_saturation():
    mean = jnp.array([[0.0, 30.0, -30.0]])
    a, logp = tanh_gaussian_sample(mean, jnp.full_like(mean, -5.0), jax.random.key(0))
    assert np.all(np.isfinite(np.asarray(logp))) and np.all(np.abs(np.asarray(a)) <= 1.0)


def test_update_many_equals_sequential_updates_and_improves_fit():
    sac = SAC(3, 2, hidden=(16, 16))
    state = sac.init(jax.random.key(0))
    b = Transition(*map(jnp.asarray, batch(32)))
    g = 3
    batches = jax.tree.map(lambda x: jnp.stack([x] * g), b)
    fused, _ = sac.update_many(state, batches, jax.random.key(7))
    seq = state
    for k in jax.random.split(jax.random.key(7), g):
        seq, _ = jax.jit(sac.update)(seq, b, k)
    for x, y in zip(jax.tree.leaves(fused), jax.tree.leaves(seq)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=2e-4, atol=2e-5)
    assert int(fused.steps) == g
    # with γ = 0 the soft Bellman target is the reward itself: the critics must regress onto it
    sac0 = SAC(3, 2, hidden=(32, 32), gamma=0.0, lr=3e-3)
    trained, _ = sac0.update_many(sac0.init(jax.random.key(0)), jax.tree.map(lambda x: jnp.stack([x] * 400), b),
                                  jax.random.key(1))
    q = np.asarray(sac0.critic_net.apply(trained.critic, b.obs, b.action))
    assert np.abs(q - np.asarray(b.reward)).mean() < 0.1 * np.std(np.asarray(b.reward))


def test_temperature_moves_towards_target_entropy():
    """With entropy above target α decreases; with an unreachable target it increases."""
    b = jax.tree.map(lambda x: jnp.stack([jnp.asarray(x)] * 20), batch(32))
    for target, direction in ((-10.0, -1), (10.0, +1)):
        sac = SAC(3, 2, hidden=(16, 16), target_entropy=target)
        s0 = sac.init(jax.random.key(0))
        s1, _ = sac.update_many(s0, b, jax.random.key(1))
        assert np.sign(float(s1.log_alpha - s0.log_alpha)) == direction


def test_target_network_is_polyak_average():
    sac = SAC(3, 2, hidden=(8,), tau=0.1)
    state = sac.init(jax.random.key(0))
    new, _ = jax.jit(sac.update)(state, Transition(*map(jnp.asarray, batch())), jax.random.key(1))
    for t_new, c_new, t_old in zip(
        jax.tree.leaves(new.target_critic), jax.tree.leaves(new.critic), jax.tree.leaves(state.target_critic)
    ):
        np.testing.assert_allclose(np.asarray(t_new), 0.1 * np.asarray(c_new) + 0.9 * np.asarray(t_old), atol=1e-6)
