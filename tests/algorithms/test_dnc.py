"""Divide-and-conquer RL: the pieces (k-means, KL, distillation) and a tiny run against the baseline."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.algorithms import dnc
from mbrlax.envs import jax_envs


def test_kmeans_finds_separated_clusters():
    key = jax.random.key(0)
    centers = (jnp.array([5.0, 0.0]), jnp.array([-5.0, 0.0]))
    pts = jnp.concatenate([jax.random.normal(key, (100, 2)) * 0.1 + c for c in centers])
    centers = dnc.kmeans(pts, 2, jax.random.key(1))
    np.testing.assert_allclose(np.sort(np.asarray(centers[:, 0])), [-5.0, 5.0], atol=0.1)


def test_diagonal_gaussian_kl():
    kl = dnc.gauss_kl(jnp.zeros(1), jnp.zeros(1), jnp.ones(1), jnp.log(jnp.array([2.0])))
    assert float(kl) == pytest.approx(np.log(2) + 2 / 8 - 0.5, rel=1e-5)


def test_contexts_are_drawn_from_their_own_partition():
    env = jax_envs.load("mbrlax/PointMass-v0")
    centers = dnc.kmeans(jax.vmap(env.init_state)(jax.random.split(jax.random.key(0), 500)), 3, jax.random.key(1))
    x0 = dnc.sample_contexts(env, centers, jax.random.key(2), 3, 8)
    assert x0.shape == (3, 8, 6)
    for i in range(3):
        assert bool(jnp.all(dnc.assign(x0[i], centers) == i))


def test_dnc_distills_a_central_policy_that_improves(tmp_path):
    kw = dict(env="mbrlax/PointMass-v0", iterations=30, eval_every=15, distill_every=15, distill_epochs=50,
              horizon=30, hidden=(32,), run_root=str(tmp_path), progress=False, tensorboard=False)
    r = dnc.train(dnc.Config(partitions=2, batch=16, **kw))
    assert len(r.evals) == 2
    # 30 steps of a do-nothing policy ~1 away from the target score ≈ −35; the distilled central policy moves
    # towards the target
    assert r.evals[-1][1] > -30, r.evals
    act, _ = dnc.load_policy(r.run_dir)
    assert act(np.zeros(8, np.float32)).shape == (2,)


def test_dnc_env_kwargs_reach_the_environment(tmp_path, monkeypatch):
    """env_kwargs (a fixed target, say) are passed to the pure-JAX env by train and by load_policy."""
    from mbrlax.envs import jax_envs

    seen = []
    real_load = jax_envs.load
    monkeypatch.setattr(jax_envs, "load", lambda env_id, **kw: seen.append(kw) or real_load(env_id, **kw))
    kw = dict(env="mbrlax/PointMass-v0", iterations=2, eval_every=2, distill_every=2, distill_epochs=5, horizon=5,
              hidden=(8,), partitions=1, batch=4, kl_weight=0.0, env_kwargs=dict(target=(0.5, -0.5)),
              run_root=str(tmp_path), progress=False, tensorboard=False)
    r = dnc.train(dnc.Config(**kw))
    dnc.load_policy(r.run_dir)
    assert len(seen) == 2 and all(tuple(k["target"]) == (0.5, -0.5) for k in seen)


def test_dnc_resume_continues_exactly(tmp_path):
    """Interrupted at the checkpoint of iteration 2 (after a distillation) and resumed to 4: the same metrics and
    the same central and local policies as 4 uninterrupted iterations, bit for bit."""
    from mbrlax import runs

    kw = dict(env="mbrlax/PointMass-v0", eval_every=2, distill_every=2, checkpoint_every=2, distill_epochs=5,
              horizon=5, hidden=(8,), partitions=2, batch=4, progress=False, tensorboard=False)
    a = dnc.train(dnc.Config(iterations=4, run_root=str(tmp_path / "a"), **kw))
    b = dnc.train(dnc.Config(iterations=2, run_root=str(tmp_path / "b"), **kw))
    b = dnc.train(dnc.Config(iterations=4, resume=str(b.run_dir), progress=False, tensorboard=False))
    rows = lambda r: [{k: v for k, v in row.items() if not k.startswith("time/")}
                      for row in runs.read_metrics(r.run_dir)]
    assert len(rows(a)) == 4 and rows(a) == rows(b) and a.evals == b.evals
    sa, sb = runs.load_checkpoint(a.run_dir), runs.load_checkpoint(b.run_dir)
    learned = lambda st: jax.tree.leaves((st["central"], st["pols"]))
    for x, y in zip(learned(sa), learned(sb), strict=True):
        np.testing.assert_array_equal(x, y)
