"""Guided policy search and policy distillation, tiny end-to-end runs on the pure-JAX point mass."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax import runs
from mbrlax.algorithms import distill, gps


def test_gps_c_steps_respect_their_trust_regions_and_the_global_policy_acts_alone(tmp_path):
    cfg = gps.Config(env="mbrlax/PointMass-v0", iterations=2, samples=3, train_seeds=(0, 1), test_seeds=(100,),
                     regression="plain", policy_epochs=100, run_root=str(tmp_path), progress=False, tensorboard=False)
    r = gps.train(cfg)
    rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    # the S-step fits: the precision-weighted regression loss falls between iterations' fits
    assert all(np.isfinite(row["gps/policy_loss"]) for row in rows)
    for row in rows:  # every C-step respects its trust region (within the dual's tolerance)
        for i in range(2):
            assert row[f"gps/kl_c{i}"] <= 1.1 * row[f"gps/eps_c{i}"]
    act, cfg2 = gps.load_policy(r.run_dir)  # the global policy works alone, without the local controllers
    a = act(np.zeros(8, np.float32))
    assert a.shape == (2,) and np.all(np.abs(a) <= 1)


def test_gps_resume_continues_exactly(tmp_path):
    """On-policy MDGPS: 1 iteration + resume to 2 gives the metrics, the global policy and the local controllers
    of 2 uninterrupted iterations, bit for bit (plain regression: test_lqr_flm resumes the priors)."""
    kw = dict(env="mbrlax/PointMass-v0", samples=2, train_seeds=(0, 1), test_seeds=(100,), regression="plain",
              policy_epochs=20, marginal_states=2, sample_on_policy=True, progress=False, tensorboard=False)
    a = gps.train(gps.Config(iterations=2, run_root=str(tmp_path / "a"), **kw))
    b = gps.train(gps.Config(iterations=1, run_root=str(tmp_path / "b"), **kw))
    b = gps.train(gps.Config(iterations=2, resume=str(b.run_dir), progress=False, tensorboard=False))
    rows = lambda r: [{k: v for k, v in row.items() if not k.startswith("time/")}
                      for row in runs.read_metrics(r.run_dir)]
    assert len(rows(a)) == 2 and rows(a) == rows(b)
    sa, sb = runs.load_checkpoint(a.run_dir), runs.load_checkpoint(b.run_dir)
    learned = lambda st: jax.tree.leaves((st["pol"], st["local"], st["step_mult"]))  # global and local controllers
    for x, y in zip(learned(sa), learned(sb), strict=True):
        np.testing.assert_array_equal(x, y)


def test_policy_fit_recovers_a_linear_teacher():
    """The S-step regression on a linear teacher u = W x recovers W on the data (precision-weighted)."""
    rng = np.random.default_rng(0)
    W = rng.normal(size=(2, 3))
    obs = jnp.asarray(rng.normal(size=(512, 3)), jnp.float32)
    tm = obs @ jnp.asarray(W.T, jnp.float32)
    prec = jnp.broadcast_to(jnp.eye(2), (512, 2, 2))
    pol = gps.init_policy((32,), 3, 2, jax.random.key(0))
    pol, loss = gps.fit_policy((32,), 2, pol, obs, tm, prec, 1500, 3e-3)
    assert float(loss) < 0.01 * float(jnp.mean(jnp.sum(tm**2, -1)))
    np.testing.assert_allclose(np.asarray(pol["cov"]), np.eye(2), atol=1e-5)  # inverse of the mean precision


def test_precision_cap_limits_each_scale_to_a_multiple_of_the_median():
    scales = jnp.array([1.0, 2.0, 3.0, 4.0, 1000.0])
    prec = scales[:, None, None] * jnp.broadcast_to(jnp.eye(2), (5, 2, 2))
    capped = gps.cap_precision(prec, 2.0)
    # median scale 3 → cap 6: the 1000 becomes 6, the rest are untouched, the shape (direction) is kept
    np.testing.assert_allclose(np.asarray(capped[:, 0, 0]), [1.0, 2.0, 3.0, 4.0, 6.0], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(capped[:, 0, 1]), 0.0)
    np.testing.assert_array_equal(np.asarray(gps.cap_precision(prec, 0.0)), np.asarray(prec))


def test_moment_covariance_adds_the_fit_error_to_the_teachers_covariance():
    """cov_rule='moment': Σ_π = E[P⁻¹ + (π(x) − μ)(π(x) − μ)ᵀ]; with a constant target the fit is exact, so Σ_π is
    the mean target covariance; 'precision' gives the inverse mean precision instead."""
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(64, 3)), jnp.float32)
    tm = jnp.full((64, 2), 0.3)
    prec = jnp.concatenate([jnp.broadcast_to(jnp.eye(2), (32, 2, 2)), jnp.broadcast_to(4 * jnp.eye(2), (32, 2, 2))])
    pol = gps.init_policy((16,), 3, 2, jax.random.key(0))
    fit_m, _ = gps.fit_policy((16,), 2, pol, obs, tm, prec, 800, 1e-2, cov_rule="moment")
    fit_p, _ = gps.fit_policy((16,), 2, pol, obs, tm, prec, 800, 1e-2, cov_rule="precision")
    np.testing.assert_allclose(np.asarray(fit_m["cov"]), 0.625 * np.eye(2), atol=2e-3)  # (1 + 1/4) / 2
    np.testing.assert_allclose(np.asarray(fit_p["cov"]), 0.4 * np.eye(2), atol=1e-5)  # 1 / ((1 + 4) / 2)
    # a target the network cannot follow (noise) widens the moment covariance by the squared error
    noisy = tm + jnp.asarray(np.random.default_rng(1).normal(size=(64, 2)), jnp.float32)
    fit_n, _ = gps.fit_policy((16,), 2, pol, obs, noisy, prec, 50, 1e-2, cov_rule="moment")
    assert np.all(np.diag(np.asarray(fit_n["cov"])) > 0.625 + 0.3)


def test_reacher_conditions_put_the_arm_where_the_preset_says(tmp_path):
    from mbrlax.envs.make import EnvError, make, reset_to

    cfg = gps.resolve(gps.Config(env="Reacher-v5"))
    env, _ = make("Reacher-v5")
    for (seed, qpos), arm in zip(gps.conditions(cfg.train_seeds, cfg.train_qpos), gps.REACHER_TRAIN_ARM, strict=True):
        obs = reset_to(env, seed, qpos)
        np.testing.assert_allclose(np.arctan2(obs[2:4], obs[0:2]), arm, atol=1e-6)  # joint angles from cos, sin
        np.testing.assert_allclose(obs[4:6], gps.REACHER_GOAL, atol=1e-6)  # the one fixed target
        np.testing.assert_allclose(obs[6:8], 0.0, atol=1e-9)  # at rest
    # the same condition gives the same start whatever the seed's own reset drew
    np.testing.assert_allclose(reset_to(env, 1, cfg.train_qpos[0]), reset_to(env, 7, cfg.train_qpos[0]))
    with pytest.raises(EnvError, match="needs 4 numbers"):
        reset_to(env, 0, (0.0, 0.0))
    env.close()
    pm, _ = make("mbrlax/PointMass-v0")
    with pytest.raises(EnvError, match="MuJoCo"):
        reset_to(pm, 0, (0.0, 0.0))
    # () means the env's own resets (None would take the preset's conditions)
    plain = gps.resolve(gps.Config(env="Reacher-v5", train_qpos=(), test_qpos=()))
    assert all(q is None for _, q in gps.conditions(plain.train_seeds, plain.train_qpos))
    with pytest.raises(ValueError, match="one seed per qpos"):
        gps.resolve(gps.Config(env="Reacher-v5", train_seeds=(0, 1)))


def test_gaussian_kl_is_zero_for_identical_and_matches_a_hand_value():
    mu = jnp.array([[0.3, -0.2]])
    cov = jnp.array([[[0.25, 0.0], [0.0, 0.25]]])
    assert float(distill.gaussian_kl(mu, cov, mu, jnp.log(jnp.array([0.5, 0.5])))[0]) == pytest.approx(0.0, abs=1e-6)
    # 1-D hand value: KL(N(0, 1) ‖ N(1, 4)) = log 2 + (1 + 1)/8 − 1/2 per dim
    kl = distill.gaussian_kl(jnp.zeros((1, 1)), jnp.ones((1, 1, 1)), jnp.ones((1, 1)), jnp.log(jnp.array([2.0])))
    assert float(kl[0]) == pytest.approx(np.log(2) + 2 / 8 - 0.5, rel=1e-5)


def test_distillation_student_matches_its_teachers(tmp_path):
    cfg = distill.Config(env="mbrlax/PointMass-v0", train_seeds=(0, 1), test_seeds=(100,), teacher_iters=20,
                         samples=2, dagger_rounds=0, epochs=300, run_root=str(tmp_path), progress=False,
                         tensorboard=False)
    r = distill.train(cfg)
    rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    # the student, alone, does about as well as the iLQR teachers (a do-nothing policy scores ≈ −100)
    assert r.final_return_mean > rows[-1]["teacher/return_mean"] - 10, (r.final_return_mean, rows[-1])
    assert r.train_success == 1.0
