"""MB-MPO end to end on tiny settings: a complete run, determinism under a seed, bit-exact resume, gradient
isolation (the policy loss never moves the model), which policy is evaluated, and bad settings."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax import runs
from mbrlax.agents import maml
from mbrlax.algorithms import mbmpo
from mbrlax.envs.make import make

TINY = dict(
    env="Pendulum-v1", env_kwargs={"max_episode_steps": 20}, steps=60, init_steps=20, steps_per_round=20,
    meta_steps=2, meta_batch_size=4, ensemble_size=2, rollouts=4, horizon=5, model_hidden=(16,), model_max_epochs=2,
    policy_hidden=(8,), eval_episodes=1, start_pool=16, progress=False, tensorboard=False,
)


def tiny(tmp_path, name="run", **kw):
    return mbmpo.Config(**{**TINY, "run_dir": str(tmp_path / name), **kw})


def rows(run_dir):
    """Metric rows without wall-clock fields."""
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"}
            for r in runs.read_metrics(run_dir)]


def test_tiny_run_is_complete_deterministic_and_resumes_exactly(tmp_path):
    full = mbmpo.train(tiny(tmp_path, "full"))
    assert full.steps == 60 and np.isfinite(full.final_return_mean)
    metrics = runs.read_metrics(full.run_dir)
    evals = [r for r in metrics if "eval/return_mean" in r]
    # 20 random steps, then two rounds of one 20-step episode each (run by the adapted policies of tasks 0 and 1)
    assert [r["step"] for r in evals] == [40, 60] and [r["round"] for r in evals] == [1, 2]
    for key in ("maml/pre_return", "maml/post_return", "maml/adaptation_gain", "maml/inner_kl", "outer/kl",
                "outer/step_accepted"):
        assert all(np.isfinite(r[key]) for r in evals), key
    assert len([r for r in metrics if "model/holdout_mse" in r]) == 2  # one fit per round
    assert json.loads((full.run_dir / "config.json").read_text())["max_kl"] == 0.02  # the Pendulum preset's δ
    assert all(0 < r["outer/kl"] <= 0.02 for r in evals)
    assert runs.run_algorithm(full.run_dir) == "mbmpo"

    again = mbmpo.train(tiny(tmp_path, "again"))
    assert rows(again.run_dir) == rows(full.run_dir)
    other = mbmpo.train(tiny(tmp_path, "seed1", seed=1))
    assert rows(other.run_dir) != rows(full.run_dir)

    # interrupted after 40 steps (a checkpoint every round), resumed to 60: the uninterrupted run, bit for bit
    mbmpo.train(tiny(tmp_path, "resumed", steps=40))
    resumed = mbmpo.train(mbmpo.Config(resume=str(tmp_path / "resumed"), steps=60, progress=False))
    assert rows(resumed.run_dir) == rows(full.run_dir)
    a, b = runs.load_checkpoint(full.run_dir), runs.load_checkpoint(resumed.run_dir)
    for part in ("agent", "model"):  # the agent: the pre-update policy and the adapted policies
        for x, y in zip(jax.tree.leaves(a[part]), jax.tree.leaves(b[part])):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a["buffer"]["data"]["obs"], b["buffer"]["data"]["obs"])

    # `mbrlax eval` runs the pre-update policy's mean action, the one the evaluations measured
    act, cfg = mbmpo.load_policy(full.run_dir)
    assert cfg.meta_batch_size == 4
    _, agent = mbmpo._components(cfg, *make(cfg.env, **cfg.env_kwargs))
    state = runs.check_like("agent", a["agent"], agent.init(jax.random.key(0)))
    obs = np.array([0.3, -0.9, 1.5], np.float32)
    # (jitted against eager: the same function, up to float32 rounding of a different fusion)
    np.testing.assert_allclose(act(obs), np.asarray(agent.mean_action(state.policy, jnp.asarray(obs[None])))[0],
                               rtol=1e-5, atol=1e-7)


def test_the_policy_loss_moves_no_model_parameter():
    """The meta-objective computed from imagined trajectories (sampling, inner step, sampling, outer surrogate)
    has a gradient of exactly zero with respect to every model parameter, and meta steps leave the model as it was."""
    cfg = mbmpo.resolve(mbmpo.Config(**{k: v for k, v in TINY.items() if k not in ("progress", "tensorboard")}))
    env, spec = make(cfg.env, **cfg.env_kwargs)
    model, agent = mbmpo._components(cfg, env, spec)
    model_state = model.init(jax.random.key(0))
    params = agent.init(jax.random.key(1)).policy
    pool = jax.random.normal(jax.random.key(2), (16, 3))

    bounds = (-5 * jnp.ones(3), 5 * jnp.ones(3))

    def meta_loss(model_params):
        ms = (model_state._replace(params=model_params), *bounds)
        pre, _ = agent.imagine(params, False, ms, agent._starts(pool, jax.random.key(3)), jax.random.key(4))
        adapted = maml.adapt_all(agent.policy_net, params, pre, agent.inner_lr, agent.inner_type)
        post, _ = agent.imagine(adapted, True, ms, agent._starts(pool, jax.random.key(5)), jax.random.key(6))
        return -maml.meta_objective(agent.policy_net, params, pre, post, agent.inner_lr, agent.inner_type)

    grads = jax.jit(jax.grad(meta_loss))(model_state.params)
    leaves = jax.tree.leaves(grads)
    assert leaves and all(float(jnp.abs(g).max()) == 0.0 for g in leaves)
    before = jax.tree.map(np.array, model_state)
    new_params = agent.optimize(params, (model_state, *bounds), pool, jax.random.key(7), 2)[0].policy
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(new_params)))
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(model_state)):
        np.testing.assert_array_equal(x, y)


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"meta_batch_size \(3\) must be a multiple of ensemble_size \(2\)"):
        mbmpo.train(tiny(tmp_path, meta_batch_size=3))
    with pytest.raises(ValueError, match="inner_type must be one of"):
        mbmpo.train(tiny(tmp_path, inner_type="fomaml"))
    with pytest.raises(ValueError, match="inner_lr must be positive"):
        mbmpo.train(tiny(tmp_path, inner_lr=0.0))
