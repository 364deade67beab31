"""MAML pieces of MB-MPO on the linear-quadratic system, K = 3 variants of it (different input gains B) as the
three "models": the meta-gradient against central finite differences (float64), the inner step's effect on
each model's expected return, the second-order term, the Fisher-vector product and the outer TRPO step."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import enable_x64  # a context manager in JAX 0.10 (formerly jax.experimental.enable_x64)
from jax.flatten_util import ravel_pytree

from mbrlax.agents import maml
from mbrlax.envs.jax_envs import LinearQuadratic

GAINS = (0.5, 1.0, 1.5)
LQ = [LinearQuadratic(B=((0.0,), (0.1 * g,)), action_scale=1.0) for g in GAINS]


def lq_step(dyn, obs, action, key):
    """Task k runs the true LQ dynamics of variant k (dyn = stacked A, B): x' = A_k x + B_k u, r = -(xᵀQx + uᵀRu).
    obs T×B×2, action T×B×1."""
    next_obs = jnp.einsum("tbi,tji->tbj", obs, dyn[0]) + jnp.einsum("tbi,tji->tbj", action, dyn[1])
    return next_obs, LQ[0].reward(obs, action, next_obs), jnp.zeros(obs.shape[:2], obs.dtype)


def lq_dyn(dtype):
    return (jnp.asarray(np.stack([e.A for e in LQ]), dtype), jnp.asarray(np.stack([e.B for e in LQ]), dtype))


def agent(inner_type="log_likelihood", inner_lr=0.5, rollouts=8, horizon=10, hidden=(4,)):
    return maml.MAML(2, 1, lq_step, 3, hidden=hidden, rollouts=rollouts, horizon=horizon, gamma=0.95,
                     inner_lr=inner_lr, inner_type=inner_type)


def batches(ag, params, dtype, seed=0):
    """Fixed samples (fixed noise) of the pre-update policy and of the adapted policies in the three systems."""
    pool = jax.random.normal(jax.random.key(seed), (64, 2), dtype)
    return _batches(ag, params, pool, lq_dyn(dtype), tuple(jax.random.key(seed + i) for i in range(1, 5)))


@partial(jax.jit, static_argnums=0)  # one program instead of hundreds of op-by-op ones (the suite's time is compiling)
def _batches(ag, params, pool, dyn, keys):
    pre, _ = ag.imagine(params, False, dyn, ag._starts(pool, keys[0]), keys[1])
    adapted = maml.adapt_all(ag.policy_net, params, pre, ag.inner_lr, ag.inner_type)
    post, _ = ag.imagine(adapted, True, dyn, ag._starts(pool, keys[2]), keys[3])
    return pre, post


def params64(ag, seed=0):
    return jax.tree.map(lambda x: x.astype(jnp.float64), ag.init(jax.random.key(seed)).policy)


@pytest.mark.parametrize("inner_type", maml.INNER_TYPES)
def test_meta_gradient_equals_central_finite_differences(inner_type):
    """∇_θ M(θ), differentiated through the inner step, against (M(θ+he_i) − M(θ−he_i)) / 2h for every one of
    the 18 parameters of a 2→4→1 policy, on fixed samples of the LQ systems, in float64."""
    with enable_x64():
        ag = agent(inner_type)
        params = params64(ag)
        pre, post = batches(ag, params, jnp.float64)
        flat, unravel = ravel_pytree(params)
        m = jax.jit(lambda f: maml.meta_objective(ag.policy_net, unravel(f), pre, post, ag.inner_lr, inner_type))
        grad = np.asarray(jax.grad(m)(flat))
        h = 1e-5
        fd = np.array([(m(flat + h * e) - m(flat - h * e)) / (2 * h) for e in np.eye(flat.size)])
        assert flat.size == 18 and np.abs(grad).max() > 1e-3
        np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7 * np.abs(grad).max())


def test_inner_step_raises_each_models_expected_return():
    """θ'_k = θ + α ∇Ĵ_k from 64 rollouts in system k raises k's expected return, measured with 4096 rollouts
    with common random numbers; the step of the opposite sign lowers it (so the gain is not noise)."""
    ag = agent(inner_lr=0.05, rollouts=64, horizon=20, hidden=(16,))
    params = ag.init(jax.random.key(3)).policy
    dyn = lq_dyn(jnp.float32)
    pool = jax.random.normal(jax.random.key(0), (4096, 2))

    @jax.jit
    def inner_gradients(params):
        pre, _ = ag.imagine(params, False, dyn, ag._starts(pool, jax.random.key(1)), jax.random.key(2))
        return jax.vmap(jax.grad(maml.inner_objective, argnums=1), (None, None, 0, None))(
            ag.policy_net, params, pre, ag.inner_type)

    grads = inner_gradients(params)
    starts = jnp.broadcast_to(pool, (3, *pool.shape))

    @jax.jit
    def returns(step):  # J_k(θ + step · ∇Ĵ_k) for k = 0, 1, 2, 4096 rollouts each, the same noise
        stacked = jax.tree.map(lambda p, g: p + step * g, params, grads)
        rolls = maml.sample(ag.policy_net, stacked, True, lq_step, dyn, starts, jax.random.key(7), horizon=20)
        return jax.vmap(maml.mean_return)(rolls)

    def expected_returns(step):
        return np.asarray(returns(jnp.float32(step)))

    before, after, backwards = expected_returns(0.0), expected_returns(0.05), expected_returns(-0.05)
    gain = after - before
    assert gain.mean() > 0 and (gain > 0).all(), (before, after)
    assert ((backwards - before) < 0).all(), (before, backwards)


def _meta_and_first_order(inner_type):
    """(∇M, first-order ∇M, α·1/T Σ_k ∇²Ĵ_k ∇L_k(θ'_k), the T inner gradients ∇Ĵ_k) at θ, float64."""
    ag = agent(inner_type)
    params = params64(ag)
    return _gradients(ag, params, *batches(ag, params, jnp.float64))


@partial(jax.jit, static_argnums=0)
def _gradients(ag, params, pre, post):
    net, lr, inner_type = ag.policy_net, ag.inner_lr, ag.inner_type
    flat, unravel = ravel_pytree(params)
    meta = jax.grad(lambda f: maml.meta_objective(net, unravel(f), pre, post, lr, inner_type))(flat)
    first = ravel_pytree(maml.first_order_gradient(net, params, pre, post, lr, inner_type))[0]
    adapted = maml.adapt_all(net, params, pre, lr, inner_type)
    outer_grad = jax.grad(maml.surrogate, argnums=1)
    outer = jax.vmap(lambda p, b: ravel_pytree(outer_grad(net, p, b))[0])(adapted, post)

    def inner_grad(f, b):
        return jax.grad(lambda g: maml.inner_objective(net, unravel(g), b, inner_type))(f)

    hvp = jax.vmap(lambda b, v: jax.jvp(lambda f: inner_grad(f, b), (flat,), (v,))[1])(pre, outer)
    return meta, first, lr * hvp.mean(0), jax.vmap(lambda b: inner_grad(flat, b))(pre)


def test_second_order_term_is_the_inner_hessian_times_the_outer_gradient():
    """∇M − ∇M_first-order = α · 1/T Σ_k ∇²Ĵ_k(θ) ∇L_k(θ'_k): nonzero, and exactly the Hessian-vector product
    (the meta-gradient is not first-order MAML). The three inner forms share the gradient of Ĵ (the REINFORCE
    estimate) and differ in the Hessian, so their meta-gradients differ."""
    with enable_x64():
        parts = {inner_type: _meta_and_first_order(inner_type) for inner_type in maml.INNER_TYPES}
    for meta, first, second, _ in parts.values():
        assert np.linalg.norm(meta - first) > 1e-2 * np.linalg.norm(meta)
        np.testing.assert_allclose(meta - first, second, rtol=1e-9, atol=1e-12)
    reference = parts["log_likelihood"][3]
    for *_, inner_grads in parts.values():
        np.testing.assert_allclose(inner_grads, reference, rtol=1e-9, atol=1e-12)
    metas = [p[0] for p in parts.values()]
    assert min(np.linalg.norm(a - b) for i, a in enumerate(metas) for b in metas[i + 1:]) > 1e-6


def test_fisher_vector_product_is_the_hessian_of_the_kl_through_the_inner_step():
    with enable_x64():
        ag = agent()
        params = params64(ag)
        pre, post = batches(ag, params, jnp.float64)
        flat, unravel = ravel_pytree(params)
        kl = lambda f: maml.meta_kl(ag.policy_net, unravel(f), pre, post, ag.inner_lr, ag.inner_type)  # noqa: E731
        assert abs(kl(flat)) < 1e-12  # the post samples' behaviour policies are the adapted policies of θ
        hessian = jax.jit(jax.hessian(kl))(flat)
        vs = jax.random.normal(jax.random.key(0), (3, flat.size), jnp.float64)
        fvps = jax.jit(lambda v, pre, post: jax.vmap(
            maml.meta_fvp(ag.policy_net, params, pre, post, ag.inner_lr, ag.inner_type))(v))(vs, pre, post)
        np.testing.assert_allclose(fvps, vs @ hessian.T, rtol=1e-9, atol=1e-12)


def test_outer_trpo_step_improves_the_meta_objective_within_the_kl_bound():
    ag = agent()
    params = ag.init(jax.random.key(0)).policy
    pre, post = batches(ag, params, jnp.float32)
    flat, unravel = ravel_pytree(params)
    net, lr, inner_type = ag.policy_net, ag.inner_lr, ag.inner_type
    evaluate = jax.jit(lambda f, pre, post: maml.meta_objective_and_kl(net, unravel(f), pre, post, lr, inner_type))

    @jax.jit  # the samples are arguments, not constants folded into the program
    def step(f, max_kl, pre, post):
        fvp = maml.meta_fvp(net, unravel(f), pre, post, lr, inner_type)
        return maml.trust_region_step(lambda g: evaluate(g, pre, post), fvp, f, max_kl=max_kl, prefix="outer/")

    for max_kl in (1e-3, 1e-2):
        new, info = step(flat, max_kl, pre, post)
        (before, _), (after, kl) = evaluate(flat, pre, post), evaluate(new, pre, post)
        assert info["outer/step_accepted"] == 1.0
        assert after > before and 0 < kl <= max_kl
        assert float(info["outer/kl"]) == pytest.approx(float(kl), rel=1e-5)


def test_linear_baseline_fits_a_return_that_is_linear_in_its_features():
    obs = jax.random.normal(jax.random.key(0), (30, 8, 3))
    w = jnp.arange(10.0) - 4.0
    returns = maml.baseline_features(obs) @ w
    weight = jnp.ones((30, 8)).at[20:, :4].set(0.0)  # dead steps do not count
    fit = jax.jit(maml.linear_baseline)(obs, returns.at[20:, :4].set(1e3), weight)
    np.testing.assert_allclose(fit[:20], returns[:20], rtol=1e-3, atol=1e-3)


def test_unknown_inner_type_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown inner_type 'maml'.*log_likelihood"):
        agent("maml")


def test_ensemble_dynamics_runs_task_i_on_member_i_over_p_in_one_pass_and_clips():
    """T = 4 tasks on 2 members: tasks 0-1 step member 0, tasks 2-3 member 1 (one batched forward); predicted
    observations are clipped to the bounds before the known reward sees them."""
    from mbrlax.models.ensemble import EnsembleModel

    model = EnsembleModel(2, 1, ensemble_size=2, num_elites=2, hidden=(8,), probabilistic=False)
    state = model.init(jax.random.key(0))
    dyn_step = maml.EnsembleDynamics(model, reward_fn=lambda o, a, n: n.sum(-1))
    obs = jax.random.normal(jax.random.key(1), (4, 3, 2))
    action = jax.random.uniform(jax.random.key(2), (4, 3, 1), minval=-1, maxval=1)
    wide = (state, -1e9 * jnp.ones(2), 1e9 * jnp.ones(2))
    next_obs, reward, done = dyn_step(wide, obs, action, jax.random.key(3))
    per_member = model.predict(state, obs.reshape(-1, 2), action.reshape(-1, 1)).next_obs_mean.reshape(2, 4, 3, 2)
    np.testing.assert_allclose(next_obs[:2], per_member[0, :2], rtol=1e-6)
    np.testing.assert_allclose(next_obs[2:], per_member[1, 2:], rtol=1e-6)
    np.testing.assert_allclose(reward, next_obs.sum(-1), rtol=1e-6)
    assert done.shape == (4, 3) and not done.any()
    tight = (state, -0.01 * jnp.ones(2), 0.01 * jnp.ones(2))
    clipped, reward, _ = dyn_step(tight, obs, action, jax.random.key(3))
    np.testing.assert_allclose(clipped, jnp.clip(next_obs, -0.01, 0.01))
    np.testing.assert_allclose(reward, clipped.sum(-1), rtol=1e-6)
