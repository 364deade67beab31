"""ME-TRPO: the stop rule on constructed validation sequences, optimization in the ensemble that stops when
validation stops improving, per-member validation returns, and a tiny end-to-end run (determinism, exact resume)."""

import jax
import numpy as np
import pytest

from mbrlax import runs
from mbrlax.agents.ppo import PolicyGradient
from mbrlax.algorithms import metrpo
from mbrlax.models.ensemble import EnsembleModel

TINY = dict(
    env="Pendulum-v1", env_kwargs={"max_episode_steps": 20}, steps=60, init_steps=20, steps_per_round=20,
    max_iterations=4, validate_every=2, horizon=4, rollouts=8, validation_rollouts=4, minibatches=2,
    value_epochs=2, model_hidden=(16,), ensemble_size=3, model_max_epochs=2, eval_episodes=1, policy_hidden=(16,),
    progress=False, tensorboard=False,
)


def test_improvement_ratio_and_stop_rule():
    assert metrpo.improvement_ratio(np.array([1, 2, 3, 4, 5]), np.array([0, 0, 0, 9, 9])) == pytest.approx(0.6)
    rule = metrpo.StopRule(threshold=0.7, patience=2)
    # 0.8 keeps going; 0.6 is one bad validation; 1.0 resets the count; two bad in a row stop
    assert [rule.update(r) for r in (0.8, 0.6, 1.0, 0.6, 0.4)] == [False, False, False, False, True]


def _tiny_parts():
    model = EnsembleModel(3, 1, ensemble_size=5, num_elites=5, hidden=(8,), probabilistic=False)
    ms = model.init(jax.random.key(0))
    agent = PolicyGradient(3, 1, method="trpo", hidden=(8,), minibatches=2, value_epochs=1)
    return model, ms, agent, agent.init(jax.random.key(1))


def test_optimization_stops_when_validation_stops_improving():
    """Member returns improve in all 5 members for two validations, then in only 2 of 5 (ratio 0.4 < 0.7):
    with patience 2 the loop stops after the 4th validation, i.e. after 4 × validate_every iterations."""
    model, ms, agent, st = _tiny_parts()
    returns = iter([np.zeros(5), np.ones(5), 2 * np.ones(5),
                    np.array([3, 3, 1, 1, 1.0]), np.array([4, 4, 0, 0, 0.0]), np.full(5, 9.0), np.full(5, 10.0)])
    starts = lambda n: jax.random.normal(jax.random.key(n), (n, 4, 3))  # noqa: E731
    _, info, ratios = metrpo.optimize_in_ensemble(
        agent, st, model, ms, starts, lambda s: next(returns), max_iterations=100, validate_every=3,
        threshold=0.7, patience=2, key=jax.random.key(2), horizon=3,
    )
    assert ratios == [1.0, 1.0, 0.4, 0.4]
    assert info["metrpo/iterations"] == 12 and info["metrpo/stopped_early"] == 1.0
    # if validation keeps improving, it runs to max_iterations
    returns = iter([np.full(5, float(i)) for i in range(100)])
    _, info, ratios = metrpo.optimize_in_ensemble(
        agent, st, model, ms, starts, lambda s: next(returns), max_iterations=9, validate_every=3,
        threshold=0.7, patience=2, key=jax.random.key(2), horizon=3,
    )
    assert info["metrpo/iterations"] == 9 and ratios == [1.0, 1.0, 1.0] and info["metrpo/stopped_early"] == 0.0


def test_member_returns_are_each_members_own_rollout():
    model, ms, agent, st = _tiny_parts()
    starts = jax.random.normal(jax.random.key(3), (4, 3))
    rew = lambda o, a, o2: -(o2**2).sum(-1)  # noqa: E731
    got = metrpo.member_returns(agent, st, model, ms, starts, jax.random.key(4), horizon=3, reward_fn=rew)
    assert got.shape == (5,) and len(set(np.round(np.asarray(got), 5))) == 5  # the members differ
    # member 2 alone, by the mean of the deterministic prediction with the same policy noise
    from mbrlax.agents.pathwise import stepper
    from mbrlax.agents.ppo import model_rollout
    roll = model_rollout(agent, st, stepper(model, ms, mode="fixed", member=2, reward_fn=rew), starts,
                         jax.random.key(4), 3)
    assert float(got[2]) == pytest.approx(float((roll.reward * roll.alive).sum(0).mean()), rel=1e-5)


def test_tiny_run_is_deterministic_and_resumes_exactly(tmp_path):
    a = metrpo.train(metrpo.Config(**TINY, run_dir=str(tmp_path / "a")))
    strip = lambda d: [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"}  # noqa: E731
                       for r in runs.read_metrics(d)]
    # the same seed again, stopped after the round ending at 40 steps and resumed to 60: the same rows and
    # parameters as the uninterrupted run
    metrpo.train(metrpo.Config(**{**TINY, "steps": 40}, run_dir=str(tmp_path / "c")))
    c = metrpo.train(metrpo.Config(resume=str(tmp_path / "c"), steps=60, progress=False))
    assert strip(c.run_dir) == strip(a.run_dir)
    x, y = runs.load_checkpoint(a.run_dir), runs.load_checkpoint(c.run_dir)
    for u, v in zip(jax.tree.leaves((x["agent"], x["model"])), jax.tree.leaves((y["agent"], y["model"])), strict=True):
        np.testing.assert_array_equal(u, v)
    last = [r for r in runs.read_metrics(a.run_dir) if "eval/return_mean" in r][-1]
    assert 1 <= last["metrpo/validations"] <= 2 and last["metrpo/iterations"] in (2, 4)
    assert runs.run_algorithm(a.run_dir) == "metrpo"
    with pytest.raises(ValueError, match="ensemble_size"):
        metrpo.resolve(metrpo.Config(**{**TINY, "ensemble_size": 1}))
