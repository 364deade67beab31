"""Guided policy search and policy distillation, tiny end-to-end runs on the pure-JAX point mass."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


def test_gaussian_kl_is_zero_for_identical_and_matches_a_hand_value():
    mu = jnp.array([[0.3, -0.2]])
    cov = jnp.array([[[0.25, 0.0], [0.0, 0.25]]])
    assert float(distill.gaussian_kl(mu, cov, mu, jnp.log(jnp.array([0.5, 0.5])))[0]) == pytest.approx(0.0, abs=1e-6)
    # 1-D hand value: KL(N(0, 1) ‖ N(1, 4)) = log 2 + (1 + 1)/8 − 1/2 per dim
    kl = distill.gaussian_kl(jnp.zeros((1, 1)), jnp.ones((1, 1, 1)), jnp.ones((1, 1)), jnp.log(jnp.array([2.0])))
    assert float(kl[0]) == pytest.approx(np.log(2) + 2 / 8 - 0.5, rel=1e-5)


def test_distillation_student_matches_its_teachers(tmp_path):
    cfg = distill.Config(env="mbrlax/PointMass-v0", train_seeds=(0, 1), test_seeds=(100,), teacher_iters=20,
                         samples=2, dagger_rounds=0, epochs=300, run_root=str(tmp_path), progress=False, tensorboard=False)
    r = distill.train(cfg)
    rows = [json.loads(l) for l in (r.run_dir / "metrics.jsonl").read_text().splitlines()]
    # the student, alone, does about as well as the iLQR teachers (a do-nothing policy scores ≈ −100)
    assert r.final_return_mean > rows[-1]["teacher/return_mean"] - 10, (r.final_return_mean, rows[-1])
    assert r.train_success == 1.0
