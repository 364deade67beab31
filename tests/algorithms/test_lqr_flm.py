"""LQR-FLM end to end on the pure-JAX point mass (tiny), and iLQR-MPC as an algorithm."""

import json

import numpy as np
import pytest

from mbrlax import runs
from mbrlax.algorithms import ilqr, lqr_flm


def test_lqr_flm_reduces_the_real_cost_within_the_trust_region(tmp_path):
    cfg = lqr_flm.Config(env="mbrlax/PointMass-v0", iterations=3, samples=4, regression="plain",
                         run_root=str(tmp_path), progress=False, tensorboard=False)
    r = lqr_flm.train(cfg)
    rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(r.costs) == 3 and r.costs[-1] < r.costs[0], r.costs
    for row in rows:  # every dual solve lands within ±10 % of its ε (or the constraint is inactive)
        assert row["lqr_flm/kl"] <= 1.1 * row["lqr_flm/epsilon"], row
    act, cfg2 = lqr_flm.load_policy(r.run_dir)
    assert cfg2.env == cfg.env and act(np.zeros(8, np.float32)).shape == (2,)


@pytest.mark.parametrize("regression", ["bayes", "model"])
def test_lqr_flm_resume_continues_exactly(tmp_path, regression):
    """Bayesian LQR-FLM (GMM prior, global-model prior): 1 iteration + resume to 2 equals 2 uninterrupted
    iterations (the global model fitted for at most 5 epochs: resuming is what is tested, not the fit)."""
    kw = dict(env="mbrlax/PointMass-v0", samples=3, regression=regression, gmm_components=2, progress=False,
              tensorboard=False, prior_model_epochs=5)
    a = lqr_flm.train(lqr_flm.Config(iterations=2, run_root=str(tmp_path / "a"), **kw))
    b = lqr_flm.train(lqr_flm.Config(iterations=1, run_root=str(tmp_path / "b"), **kw))
    b = lqr_flm.train(lqr_flm.Config(iterations=2, resume=str(b.run_dir), progress=False, tensorboard=False))
    assert len(a.costs) == 2 and a.costs == b.costs
    assert _rows(a.run_dir) == _rows(b.run_dir) and len(_rows(a.run_dir)) == 2
    pa, pb = runs.load_checkpoint(a.run_dir)["pol"], runs.load_checkpoint(b.run_dir)["pol"]
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k])


def _rows(run_dir):
    """metrics.jsonl without the wall-clock timers."""
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in runs.read_metrics(run_dir)]


def test_global_model_prior_fits_from_fewer_samples_than_dimensions():
    """On x' = A x + B u + c, after the global model has seen 40 trajectories, 2 new samples per step (fewer
    than the 4 inputs: plain regression is underdetermined) give [A B] close to the truth with the model prior."""
    import jax

    S, A_, T = 3, 1, 6
    rng = np.random.default_rng(0)
    A = np.array([[0.9, 0.2, 0.0], [0.0, 0.8, 0.1], [0.1, 0.0, 0.7]])
    B = np.array([[0.5], [-0.3], [0.2]])
    c = np.array([0.05, -0.02, 0.0])

    def rollouts(n):
        X = np.zeros((n, T + 1, S))
        X[:, 0] = rng.normal(size=(n, S))
        U = rng.normal(size=(n, T, A_))
        for t in range(T):
            X[:, t + 1] = X[:, t] @ A.T + U[:, t] @ B.T + c
        return X, U

    truth = np.concatenate([A, B], 1)
    errors = {}
    for regression in ("plain", "model"):
        fitter = lqr_flm.DynamicsFitter(regression, 2, 1.0, 20_000, seed=0)
        with jax.enable_x64(True):
            if regression == "model":
                fitter.fit(*rollouts(40))
            dyn = fitter.fit(*rollouts(2))
        F = np.asarray(dyn.F)  # T×S×(S+A)
        errors[regression] = float(np.mean(np.linalg.norm(F - truth, axis=(1, 2)) / np.linalg.norm(truth)))
    assert errors["model"] < 0.15 and errors["model"] < 0.5 * errors["plain"], errors


def test_lqr_flm_rejects_bad_settings():
    with pytest.raises(ValueError, match="regression"):
        lqr_flm.resolve(lqr_flm.Config(env="mbrlax/PointMass-v0", regression="ridge"))
    with pytest.raises(ValueError, match="pure-JAX"):
        ilqr.resolve(ilqr.Config(env="Reacher-v5"))


def test_ilqr_mpc_holds_the_point_mass_at_its_target(tmp_path):
    cfg = ilqr.Config(env="mbrlax/PointMass-v0", eval_episodes=1, horizon=20, replan_every=10, first_iters=20,
                      iters=3, run_root=str(tmp_path), progress=False, tensorboard=False)
    r = ilqr.train(cfg)
    # A do-nothing policy from a random start ~1 away from the target costs ~100; reaching it costs far less.
    assert r.final_return_mean > -40, r.final_return_mean


def test_arm_environments_follow_the_reacher_layout_and_physics():
    import jax
    import jax.numpy as jnp

    from mbrlax.envs.arm import PointMass, TwoLinkArm

    arm = TwoLinkArm(target=(0.1, 0.05), init_q=(0.0, 0.0), init_noise=0.0)
    x = arm.init_state(jax.random.key(0))
    obs = np.asarray(arm.observe(x))
    assert obs.shape == (10,)
    np.testing.assert_allclose(obs[[0, 1, 2, 3]], [1, 1, 0, 0], atol=1e-6)  # cos q, sin q at q = 0
    np.testing.assert_allclose(obs[4:6], [0.1, 0.05], atol=1e-6)  # target
    np.testing.assert_allclose(obs[8:10], [0.21 - 0.1, -0.05], atol=1e-6)  # fingertip − target, arm stretched
    x2, r, _ = arm.step(x, jnp.zeros(2))  # at rest with no torque nothing moves
    np.testing.assert_allclose(np.asarray(x2), np.asarray(x), atol=1e-7)
    assert float(r) == pytest.approx(-np.hypot(0.11, 0.05), abs=1e-6)
    assert float(arm.reward(obs, jnp.ones(2), obs)) == pytest.approx(-np.hypot(0.11, 0.05) - 2.0, abs=1e-6)

    pm = PointMass(target=(0.5, 0.0), init_pos=(0.0, 0.0))
    s = pm.init_state(jax.random.key(0))
    s2 = pm.dynamics(s, jnp.array([1.0, 0.0]))  # v' = dt·F = 0.1, p' = dt·v' = 0.005
    np.testing.assert_allclose(np.asarray(s2[:4]), [0.005, 0.0, 0.1, 0.0], atol=1e-7)
    np.testing.assert_allclose(np.asarray(pm.observe(s2))[6:8], [0.005 - 0.5, 0.0], atol=1e-7)


def test_ilqr_resume_continues_with_the_next_episode_exactly(tmp_path):
    kw = dict(env="mbrlax/PointMass-v0", horizon=5, replan_every=5, first_iters=3, iters=1, progress=False,
              tensorboard=False)
    a = ilqr.train(ilqr.Config(eval_episodes=2, run_root=str(tmp_path / "a"), **kw))
    b = ilqr.train(ilqr.Config(eval_episodes=1, run_root=str(tmp_path / "b"), **kw))
    b = ilqr.train(ilqr.Config(eval_episodes=2, resume=str(b.run_dir), progress=False, tensorboard=False))
    assert len(_rows(a.run_dir)) == 2 and _rows(a.run_dir) == _rows(b.run_dir)
    assert b.steps == a.steps and b.final_return_mean == a.final_return_mean
    returns = [r["eval/episode_return"] for r in _rows(a.run_dir)]  # evals are the episodes' own returns
    assert [e[1] for e in b.evals] == returns and a.final_return_mean == pytest.approx(np.mean(returns))
