"""MVE-SAC: H = 0 is SAC exactly; the TD-k targets against a hand-rolled H-step expansion with a known
model; termination; a tiny end-to-end run (CLI, determinism, resume-able checkpoint, eval)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax import cli, runs
from mbrlax.agents.nets import tanh_gaussian_sample
from mbrlax.agents.sac import SAC
from mbrlax.algorithms import mve
from mbrlax.types import Transition

OBS, ACT, B = 3, 2, 5
# jitted: op-by-op dispatch of a whole update is slower than compiling it
targets_fn = jax.jit(mve.mve_targets, static_argnums=(0, 3, 5))
update_fn = jax.jit(mve.mve_update, static_argnums=(0, 3, 5))


def known_step(obs, action, key):
    """A perfect 'model' with closed-form dynamics and reward (deterministic; key unused)."""
    next_obs = 0.9 * obs + 0.1 * jnp.concatenate([action, action[:, :1]], -1)
    reward = -jnp.sum(obs**2, -1) - 0.1 * jnp.sum(action**2, -1)
    return next_obs, reward, jnp.zeros(obs.shape[0])


def setup(seed=0):
    sac = SAC(OBS, ACT, hidden=(16, 16), gamma=0.9, init_alpha=0.3)
    state = sac.init(jax.random.key(seed))
    # a target critic different from the critic, so that mixing them up would show
    state = state._replace(target_critic=jax.tree.map(lambda x: 0.5 * x + 0.01, state.critic))
    k = jax.random.split(jax.random.key(seed + 1), 3)
    obs = jax.random.normal(k[0], (B, OBS))
    act = jnp.tanh(jax.random.normal(k[1], (B, ACT)))
    next_obs, reward, _ = known_step(obs, act, None)
    batch = Transition(obs, act, reward, next_obs, jnp.zeros(B))
    return sac, state, batch


def test_h0_target_and_update_are_sac():
    sac, state, batch = setup()
    key = jax.random.key(7)
    _, _, target, w = targets_fn(sac, state, batch, known_step, key, 0)
    np.testing.assert_allclose(target[0], jax.jit(sac.critic_target)(state, batch, key), rtol=1e-5)
    assert w.shape == (1, B) and float(w.sum()) == B
    new_mve, _ = update_fn(sac, state, batch, known_step, key, 0)
    new_sac, _ = jax.jit(sac.update)(state, batch, key)
    for a, b in zip(jax.tree.leaves(new_mve), jax.tree.leaves(new_sac)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("horizon", [1, 3])
def test_targets_match_a_hand_rolled_expansion_with_a_perfect_model(horizon):
    sac, state, batch = setup()
    key = jax.random.key(11)
    obs, act, target, w = targets_fn(sac, state, batch, known_step, key, horizon)
    assert obs.shape == (horizon + 1, B, OBS) and target.shape == (horizon + 1, B)
    # hand roll: the same keys as `imagine` (step t uses split(fold_in(k_roll, t))) and the bootstrap key
    k_roll, k_boot = jax.random.split(key)
    alpha, g = float(np.exp(state.log_alpha)), sac.gamma
    s = [np.asarray(batch.obs), np.asarray(batch.next_obs)]
    a, r, logp = [np.asarray(batch.action)], [np.asarray(batch.reward)], [None]
    for t in range(1, horizon + 1):
        k_pi, _ = jax.random.split(jax.random.fold_in(k_roll, t))
        mean, log_std = sac.actor_net.apply(state.actor, jnp.asarray(s[t]))
        a_t, lp = tanh_gaussian_sample(mean, log_std, k_pi)
        s_next, r_t, _ = known_step(jnp.asarray(s[t]), a_t, None)
        a.append(np.asarray(a_t)), r.append(np.asarray(r_t)), logp.append(np.asarray(lp)), s.append(np.asarray(s_next))
    mean, log_std = sac.actor_net.apply(state.actor, jnp.asarray(s[horizon + 1]))
    a_b, lp_b = tanh_gaussian_sample(mean, log_std, k_boot)
    v_boot = np.asarray(sac.critic_net.apply(state.target_critic, jnp.asarray(s[horizon + 1]), a_b).min(0)) \
        - alpha * np.asarray(lp_b)
    for t in range(horizon + 1):
        # Q̂_t = r_t + Σ_{k=t+1}^{H} γ^{k−t} (r_k − α log π_k) + γ^{H+1−t} V̄(s_{H+1})
        expect = r[t] + sum(g ** (k - t) * (r[k] - alpha * logp[k]) for k in range(t + 1, horizon + 1)) \
            + g ** (horizon + 1 - t) * v_boot
        np.testing.assert_allclose(target[t], expect, rtol=2e-5, atol=2e-5, err_msg=f"t={t}")
        np.testing.assert_allclose(obs[t], s[t], rtol=1e-6)
        np.testing.assert_allclose(act[t], a[t], rtol=1e-6)
    assert float(w.min()) == 1.0  # nothing terminates


def test_termination_stops_the_expansion_and_masks_later_states():
    sac, state, batch = setup()

    def ending_step(obs, action, key):  # every imagined step terminates
        n, r, _ = known_step(obs, action, key)
        return n, r, jnp.ones(obs.shape[0])

    batch = batch._replace(terminated=jnp.array([1.0, 0, 0, 0, 0]))
    _, _, target, w = targets_fn(sac, state, batch, ending_step, jax.random.key(0), 3)
    # a real terminal transition: the target is its reward alone
    assert float(target[0, 0]) == pytest.approx(float(batch.reward[0]))
    np.testing.assert_array_equal(np.asarray(w[:, 0]), [1, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(w[:, 1]), [1, 1, 0, 0])  # s_1 is real-reached; s_2 after an end
    # non-terminal real step into a terminating imagined one: Q̂_0 = r_0 + γ (r_1 − α log π_1), no bootstrap
    k_roll, _ = jax.random.split(jax.random.key(0))
    k_pi, _ = jax.random.split(jax.random.fold_in(k_roll, 1))
    mean, log_std = sac.actor_net.apply(state.actor, batch.next_obs)
    a1, lp1 = tanh_gaussian_sample(mean, log_std, k_pi)
    r1 = known_step(batch.next_obs, a1, None)[1]
    expect = batch.reward + sac.gamma * (r1 - jnp.exp(state.log_alpha) * lp1)
    np.testing.assert_allclose(target[0, 1:], expect[1:], rtol=1e-5)


def test_generalized_dyna_batch_replaces_rows_with_simulated_transitions():
    sac, state, batch = setup()
    out = mve.dyna_batch(sac, state.actor, known_step, batch, jax.random.key(0), 1, 2)
    np.testing.assert_array_equal(out.obs[:3], batch.obs[:3])  # real rows kept
    np.testing.assert_allclose(out.obs[3:], batch.obs[:2])  # one step from the first two states
    n, r, _ = known_step(out.obs[3:], out.action[3:], None)
    np.testing.assert_allclose(out.next_obs[3:], n, rtol=1e-6)
    np.testing.assert_allclose(out.reward[3:], r, rtol=1e-6)


TINY = ["--env", "Pendulum-v1", "--steps", "120", "--init-steps", "40", "--model-train-freq", "40",
        "--horizon", "2", "--updates-per-step", "2", "--eval-every", "60", "--eval-episodes", "1",
        "--sac-hidden", "32", "32", "--model-hidden", "32", "32", "--ensemble-size", "3", "--num-elites", "2",
        "--model-max-epochs", "3", "--sac-batch-size", "32", "--no-progress", "--no-tensorboard"]


def test_cli_train_mve_end_to_end_and_same_seed_same_run(tmp_path, capsys):
    assert cli.main(["train", "mve", *TINY, "--run-dir", str(tmp_path / "a")]) == 0
    assert "final evaluation return" in capsys.readouterr().out
    rd = tmp_path / "a"
    for f in ("config.json", "metrics.jsonl", "curve.png", "checkpoints"):
        assert (rd / f).exists(), f
    assert runs.run_algorithm(rd) == "mve"
    assert json.loads((rd / "config.json").read_text())["horizon"] == 2
    rows = runs.read_metrics(rd)
    assert [r["step"] for r in rows if "eval/return_mean" in r] == [60, 120]
    assert any("mve/target_mean" in r for r in rows) and any("model/holdout_mse" in r for r in rows)
    assert cli.main(["train", "mve", *TINY, "--run-dir", str(tmp_path / "b")]) == 0
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/") and k != "model/seconds"}  # noqa: E731
                          for r in rows]
    assert strip(rows) == strip(runs.read_metrics(tmp_path / "b"))
    # interrupted at 60 and resumed: the same run as the uninterrupted one
    args = [*TINY, "--run-dir", str(tmp_path / "c")]
    args[args.index("--steps") + 1] = "60"
    assert cli.main(["train", "mve", *args]) == 0
    assert cli.main(["train", "mve", "--resume", str(tmp_path / "c"), "--steps", "120", "--no-progress"]) == 0
    assert strip(rows) == strip(runs.read_metrics(tmp_path / "c"))
    a, b = runs.load_checkpoint(rd), runs.load_checkpoint(tmp_path / "c")
    assert a["t"] == b["t"] == 120
    for name in ("sac", "model"):
        for x, y in zip(jax.tree.leaves(a[name]), jax.tree.leaves(b[name])):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a["real"]["data"]["obs"], b["real"]["data"]["obs"])
    assert cli.main(["eval", str(rd), "--episodes", "1"]) == 0


def test_bad_input():
    with pytest.raises(ValueError, match="horizon"):
        mve.resolve(mve.Config(horizon=-1))
    with pytest.raises(ValueError, match="dyna_ratio"):
        mve.resolve(mve.Config(dyna_ratio=1.5))


def test_model_step_uses_the_elites_and_the_known_termination():
    from mbrlax.models.ensemble import EnsembleModel

    model = EnsembleModel(OBS, ACT, ensemble_size=4, num_elites=2, hidden=(8,), probabilistic=False)
    ms = model.init(jax.random.key(0))._replace(elites=jnp.array([3, 1], jnp.int32))
    obs = jax.random.normal(jax.random.key(1), (5, OBS))
    act = jax.random.normal(jax.random.key(2), (5, ACT))
    ends = lambda o, a, n: n[:, 0] > 0  # noqa: E731
    nxt, rew, term = jax.jit(mve.model_step_fn(model, ms, ends))(obs, act, jax.random.key(3))
    pred = model.predict(ms, obs, act)  # every member on every row; deterministic model: no noise
    for i in range(5):  # each row is one elite's prediction (which one: tests/unit/test_ensemble.py)
        assert any(np.allclose(nxt[i], pred.next_obs_mean[m, i], atol=1e-5)
                   and np.isclose(rew[i], pred.reward_mean[m, i], atol=1e-5) for m in (1, 3))
    np.testing.assert_array_equal(term, (np.asarray(nxt)[:, 0] > 0).astype(np.float32))
