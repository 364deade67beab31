"""Time-varying linear-Gaussian dynamics fits: exact recovery, the prior's limits, the GMM prior."""

import jax
import jax.numpy as jnp
import numpy as np

from mbrlax.models import local_linear as ll


def _linear_data(rng, N, T=5, S=3, A=2, noise=0.0):
    As = np.eye(S) + 0.2 * rng.normal(size=(T, S, S))
    Bs = rng.normal(size=(T, S, A))
    cs = rng.normal(size=(T, S))
    X = np.zeros((N, T + 1, S))
    X[:, 0] = rng.normal(size=(N, S))
    U = rng.normal(size=(N, T, A))
    for t in range(T):
        X[:, t + 1] = X[:, t] @ As[t].T + U[:, t] @ Bs[t].T + cs[t] + noise * rng.normal(size=(N, S))
    return X, U, As, Bs, cs


def test_plain_regression_recovers_known_dynamics_exactly_on_noiseless_data():
    rng = np.random.default_rng(0)
    X, U, As, Bs, cs = _linear_data(rng, N=20)
    with jax.enable_x64(True):
        dyn = ll.fit_linear_gaussian(jnp.asarray(X), jnp.asarray(U), reg=0.0)
        F, f, cov = map(np.asarray, dyn)
    np.testing.assert_allclose(F[:, :, :3], As, atol=1e-8)
    np.testing.assert_allclose(F[:, :, 3:], Bs, atol=1e-8)
    np.testing.assert_allclose(f, cs, atol=1e-8)
    assert np.abs(cov).max() < 1e-7  # no residual


def test_plain_regression_estimates_the_noise_covariance():
    rng = np.random.default_rng(1)
    X, U, *_ = _linear_data(rng, N=4000, noise=0.3)
    dyn = ll.fit_linear_gaussian(jnp.asarray(X, jnp.float32), jnp.asarray(U, jnp.float32))
    np.testing.assert_allclose(np.asarray(dyn.cov), np.broadcast_to(0.09 * np.eye(3), (5, 3, 3)), atol=0.01)


def test_bayesian_regression_with_a_strong_prior_returns_the_prior():
    rng = np.random.default_rng(2)
    X, U, As, Bs, cs = _linear_data(rng, N=6, noise=0.1)
    # a prior that believes in *different* dynamics A', B', c'
    _, _, A2, B2, c2 = _linear_data(np.random.default_rng(99), N=2)
    with jax.enable_x64(True):
        T = 5
        mus, covs = [], []
        for t in range(T):
            J = np.concatenate([A2[t], B2[t]], 1)
            cin = np.eye(5)
            mu_in = rng.normal(size=5)
            mus.append(np.concatenate([mu_in, J @ mu_in + c2[t]]))
            covs.append(np.block([[cin, cin @ J.T], [J @ cin, J @ cin @ J.T + 0.01 * np.eye(3)]]))
        strength = 1e9
        prior = ll.NIWPrior(jnp.asarray(np.stack(mus)), strength * jnp.asarray(np.stack(covs)),
                            jnp.full(T, strength), jnp.full(T, strength))
        dyn = ll.fit_linear_gaussian_bayes(jnp.asarray(X), jnp.asarray(U), prior, reg=0.0)
        F, f, cov = map(np.asarray, dyn)
        np.testing.assert_allclose(F[:, :, :3], A2, atol=1e-6)
        np.testing.assert_allclose(F[:, :, 3:], B2, atol=1e-6)
        np.testing.assert_allclose(f, c2, atol=1e-6)
        np.testing.assert_allclose(cov, np.broadcast_to(0.01 * np.eye(3), (T, 3, 3)), atol=1e-6)
        # and with zero prior strength it is exactly the plain least-squares fit
        weak = prior._replace(Phi=0 * prior.Phi, m=0 * prior.m, n0=0 * prior.n0)
        plain = ll.fit_linear_gaussian(jnp.asarray(X), jnp.asarray(U), reg=0.0)
        bayes = ll.fit_linear_gaussian_bayes(jnp.asarray(X), jnp.asarray(U), weak, reg=0.0)
        np.testing.assert_allclose(np.asarray(bayes.F), np.asarray(plain.F), atol=1e-8)


def test_gmm_prior_lets_few_samples_fit_what_plain_regression_cannot():
    """Prior from 200 old trajectories, then only 3 new ones (< S+A+1 = 6): the Bayesian fit is accurate,
    the (ridge-regularized) plain fit is not."""
    X_old, U_old, As, Bs, cs = _linear_data(np.random.default_rng(3), N=200, noise=0.01)
    X_new, U_new, *_ = _linear_data(np.random.default_rng(3), N=203, noise=0.01)
    X_new, U_new = X_new[200:], U_new[200:]
    pts = ll.joint_points(jnp.asarray(X_old, jnp.float32), jnp.asarray(U_old, jnp.float32)).reshape(-1, 8)
    gmm = ll.fit_gmm(pts, jax.random.key(0), num_components=4, iters=30)
    prior = ll.gmm_prior(gmm, jnp.asarray(X_new, jnp.float32), jnp.asarray(U_new, jnp.float32), strength=20.0)
    bayes = ll.fit_linear_gaussian_bayes(jnp.asarray(X_new, jnp.float32), jnp.asarray(U_new, jnp.float32), prior)
    plain = ll.fit_linear_gaussian(jnp.asarray(X_new, jnp.float32), jnp.asarray(U_new, jnp.float32), reg=1e-3)
    truth = np.concatenate([As, Bs], -1)
    err_bayes = np.abs(np.asarray(bayes.F) - truth).mean()
    err_plain = np.abs(np.asarray(plain.F) - truth).mean()
    # With 4 components over 5 different time steps the mixture is not exact, but far better than 3 samples.
    assert err_bayes < 0.5 * err_plain, (err_bayes, err_plain)


def test_model_prior_from_a_known_global_model_gives_its_linearization():
    rng = np.random.default_rng(4)
    X, U, *_ = _linear_data(rng, N=50)
    with jax.enable_x64(True):
        f = lambda x, u: jnp.array([jnp.sin(x[0]) + u[0], x[1] * x[2], u[1] - x[0]])
        prior = ll.model_prior(f, jnp.asarray(X), jnp.asarray(U), strength=1e9, noise=1e-6)
        dyn = ll.fit_linear_gaussian_bayes(jnp.asarray(X), jnp.asarray(U), prior, reg=0.0)
        mean = np.concatenate([X[:, :-1], U], -1).mean(0)
        J = np.asarray(jax.vmap(jax.jacfwd(lambda xu: f(xu[:3], xu[3:])))(jnp.asarray(mean)))
    np.testing.assert_allclose(np.asarray(dyn.F), J, atol=1e-6)
