"""Tabular Dyna-Q against hand calculations; the deterministic model; Dyna-Q+; prioritized sweeping; the
Python (Gymnasium) loop and the jitted/vmapped runner agree; the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax import checkpoint, cli, runs
from mbrlax.algorithms import dyna_q
from mbrlax.envs import tabular

HYPER = dict(alpha=0.1, gamma=0.95)
UP, DOWN = 0, 1


def test_one_dyna_q_update_against_a_hand_calculation():
    state = dyna_q.init_state(3, 2)
    state = state._replace(q=jnp.array([[0.2, 0.5], [0.4, -0.3], [0.0, 0.0]]))
    # n = 0: only the direct Q-learning step on (s=0, a=1, r=1, s'=1)
    new = dyna_q.learn(state, 0, 1, 1.0, 1, False, jax.random.key(0), n=0, **HYPER)
    # Q(0,1) = 0.5 + 0.1 (1 + 0.95·max(0.4, -0.3) − 0.5) = 0.5 + 0.1·0.88 = 0.588
    assert float(new.q[0, 1]) == pytest.approx(0.588, abs=1e-6)
    np.testing.assert_allclose(np.asarray(new.q).ravel()[[0, 2, 3]], [0.2, 0.4, -0.3], rtol=1e-7)  # nothing else moves
    # a terminal transition does not bootstrap: Q(1,0) = 0.4 + 0.1 (2 − 0.4) = 0.56
    term = dyna_q.learn(state, 1, 0, 2.0, 0, True, jax.random.key(0), n=0, **HYPER)
    assert float(term.q[1, 0]) == pytest.approx(0.56, abs=1e-6)


def test_planning_repeats_the_update_on_the_stored_transition():
    # One stored pair, (0, 1) -> terminal with r = 1: the direct update and then n = 3 planning updates all
    # apply Q ← Q + α (1 − Q), so Q = 1 − (1 − α)^4.
    state = dyna_q.learn(dyna_q.init_state(2, 2), 0, 1, 1.0, 1, True, jax.random.key(3), n=3, **HYPER)
    assert float(state.q[0, 1]) == pytest.approx(1 - 0.9**4, abs=1e-6)
    assert float(state.q.sum()) == pytest.approx(1 - 0.9**4, abs=1e-6)  # untried pairs are never planned with


def test_deterministic_model_returns_what_it_stored_last():
    m = dyna_q.init_state(4, 2).model
    m = dyna_q.model_update(m, 2, 1, 0.5, 3, 0.0, 7)
    assert [float(x) for x in dyna_q.model_query(m, 2, 1)] == [0.5, 3.0, 0.0]
    m = dyna_q.model_update(m, 2, 1, -1.0, 0, 1.0, 9)  # the last observation wins
    assert [float(x) for x in dyna_q.model_query(m, 2, 1)] == [-1.0, 0.0, 1.0]
    assert int(m.last_tried[2, 1]) == 9 and bool(m.tried[2, 1]) and int(m.tried.sum()) == 1
    # an untried pair: back to the same state with reward 0 (Dyna-Q+'s initial model)
    assert [float(x) for x in dyna_q.model_query(m, 2, 0)] == [0.0, 2.0, 0.0]


def test_planning_samples_only_observed_pairs_unless_dyna_q_plus():
    m = dyna_q.init_state(5, 3).model
    for s, a in ((1, 0), (1, 2), (4, 1)):
        m = dyna_q.model_update(m, s, a, 0.0, 0, 0.0, 1)
    s, a = dyna_q.sample_planning_pairs(m, jax.random.key(0), 3000, untried=False)
    pairs = set(zip(np.asarray(s).tolist(), np.asarray(a).tolist(), strict=True))
    assert pairs == {(1, 0), (1, 2), (4, 1)}
    # the book's order: a state uniformly, then one of its actions; state 4 gets half of the samples
    assert np.mean(np.asarray(s) == 4) == pytest.approx(0.5, abs=0.04)
    s, a = dyna_q.sample_planning_pairs(m, jax.random.key(0), 3000, untried=True)
    pairs = set(zip(np.asarray(s).tolist(), np.asarray(a).tolist(), strict=True))
    assert pairs == {(1, 0), (1, 1), (1, 2), (4, 0), (4, 1), (4, 2)}  # all actions of visited states


def test_dyna_q_plus_bonus_by_hand():
    m = dyna_q.init_state(3, 2).model
    m = dyna_q.model_update(m, 0, 1, 0.0, 1, 0.0, 36)
    assert float(dyna_q.exploration_bonus(m, 0, 1, 100, kappa=1e-3)) == pytest.approx(1e-3 * 8)  # √(100−36)
    assert float(dyna_q.exploration_bonus(m, 0, 0, 100, kappa=1e-3)) == pytest.approx(1e-3 * 10)  # never tried
    # planning with the bonus: a single state with a single action, tried at step 1, planned at step 101:
    # Q(0,0) = 0 + α (0 + κ √100 + γ·0 − 0) = 0.1 · 0.01
    state = dyna_q.learn(dyna_q.init_state(2, 1), 0, 0, 0.0, 1, False, jax.random.key(0), n=0, **HYPER)
    state = state._replace(t=jnp.int32(101))
    q = dyna_q.plan(state, jax.random.key(1), n=1, kappa=1e-3, plus=True, **HYPER)
    assert float(q[0, 0]) == pytest.approx(1e-3, rel=1e-5)


def test_prioritized_sweeping_by_hand():
    # chain 0 -a0-> 1 -a0-> 2 (goal, r = 1). (0, 0) is in the model; then the real step (1, 0) -> goal.
    state = dyna_q.learn(dyna_q.init_state(3, 1), 0, 0, 0.0, 1, False, jax.random.key(0), n=0,
                         prioritized=True, **HYPER)
    assert float(state.q.sum()) == 0.0  # P = 0 ≤ θ: nothing queued, nothing updated (no direct RL step)
    state = dyna_q.learn(state, 1, 0, 1.0, 2, True, jax.random.key(0), n=2, prioritized=True, theta=1e-4, **HYPER)
    # pop (1,0) with P = 1: Q(1,0) = 0.1; its predecessor (0,0) gets P = |0 + 0.95·0.1 − 0| = 0.095 > θ;
    # pop (0,0): Q(0,0) = 0.1 · 0.095
    assert float(state.q[1, 0]) == pytest.approx(0.1)
    assert float(state.q[0, 0]) == pytest.approx(0.0095)
    assert float(state.priority[0, 0]) == 0.0 and float(state.priority[1, 0]) == 0.0


def test_epsilon_greedy_breaks_ties_at_random_and_explores():
    keys = jax.random.split(jax.random.key(0), 4000)
    q_row = jnp.array([1.0, 0.0, 1.0, 0.5])
    a = np.asarray(jax.vmap(lambda k: dyna_q.epsilon_greedy(q_row, k, 0.1))(keys))
    # greedy ties 0 and 2 share 0.9 + 0.1/4 each half; 1 and 3 get 0.1/4 each
    freq = np.bincount(a, minlength=4) / len(a)
    np.testing.assert_allclose(freq, [0.475, 0.025, 0.475, 0.025], atol=0.03)


def test_gym_loop_and_jitted_runner_give_the_same_q(tmp_path):
    """`train` (Python loop over the Gymnasium env) and `run_tables` (one jitted while_loop on the maze's
    tables) use the same keys in the same order: identical Q after the same steps."""
    cfg = dyna_q.Config(env="mbrlax/DynaMaze-v0", planning_steps=5, steps=400, episodes=None, seed=3,
                        eval_every=400, eval_episodes=1, progress=False, tensorboard=False, run_dir=str(tmp_path / "r"))
    res = dyna_q.train(cfg)
    t = tabular.maze_tables(tabular.DYNA_MAZE)
    tables = (jnp.asarray(t.next_state), jnp.asarray(t.reward), jnp.asarray(t.terminated, jnp.float32),
              jnp.int32(t.start), jnp.int32(t.switch_step))
    out = dyna_q.run_tables(tables, jax.random.key(3), n=5, alpha=0.1, gamma=0.95, epsilon=0.1, max_steps=400,
                            max_episodes=100)
    np.testing.assert_allclose(np.asarray(out["q"]), res.q, atol=1e-6)
    assert int(out["episodes"]) == len(res.episode_lengths)
    assert np.asarray(out["lengths"])[: len(res.episode_lengths)].tolist() == res.episode_lengths
    # and the same seed again gives the same run
    again = dyna_q.train(dyna_q.Config(**{**cfg.__dict__, "run_dir": str(tmp_path / "r2")}))
    np.testing.assert_array_equal(again.q, res.q)


def test_cli_train_dyna_q_on_the_dyna_maze(tmp_path, capsys):
    rd = tmp_path / "cli"
    args = ["train", "dyna_q", "--env", "mbrlax/DynaMaze-v0", "--planning-steps", "50", "--episodes", "8",
            "--eval-episodes", "1", "--no-progress", "--no-tensorboard", "--run-dir", str(rd)]
    assert cli.main(args) == 0
    assert "final evaluation return 1.0" in capsys.readouterr().out  # the greedy policy reaches G
    for f in ("config.json", "metrics.jsonl", "curve.png"):
        assert (rd / f).exists(), f
    assert checkpoint.exists(rd) and not (rd / "checkpoint.pkl").exists()  # the safe format, no pickle
    assert runs.run_algorithm(rd) == "dyna_q"
    cfg = json.loads((rd / "config.json").read_text())
    assert cfg["planning_steps"] == 50 and cfg["gamma"] == 0.95 and cfg["alpha"] == 0.1
    lengths = [r["train/episode_length"] for r in runs.read_metrics(rd) if "train/episode_length" in r]
    assert len(lengths) == 8 and min(lengths[3:]) <= 20  # n = 50: near the 14-step path within a few episodes
    act, _ = dyna_q.load_policy(rd)
    t = tabular.maze_tables(tabular.DYNA_MAZE)
    q = runs.load_checkpoint(rd)["q"]
    assert act(t.start) == int(np.argmax(q[t.start]))
    # the greedy path reaches G, within a few steps of the optimal 14
    path = dyna_q.greedy_path_length(jnp.asarray(q), jnp.asarray(t.next_state[0]), jnp.asarray(t.terminated[0]),
                                     t.start)
    assert 14 <= int(path) <= 20
    assert dyna_q.evaluate_run(rd, episodes=2) == (1.0, 0.0)
    assert cli.main(["eval", str(rd), "--episodes", "2"]) == 0  # `mbrlax eval` takes the tabular path
    assert "return 1.0 ± 0.0" in capsys.readouterr().out


def test_any_discrete_gymnasium_env_works(tmp_path):
    # CliffWalking-v1: Dyna-Q's greedy policy learns the optimal 13-step path along the cliff (return -13)
    res = dyna_q.train(dyna_q.Config(env="CliffWalking-v1", planning_steps=20, episodes=40, eval_episodes=1,
                                     progress=False, tensorboard=False, run_dir=str(tmp_path / "cliff")))
    assert res.final_return_mean == -13.0
    res = dyna_q.train(dyna_q.Config(env="FrozenLake-v1", steps=300, planning_steps=5, eval_episodes=2, progress=False,
                                     tensorboard=False, run_dir=str(tmp_path / "lake")))
    assert res.q.shape == (16, 4) and res.steps == 300


def test_bad_input_gets_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Discrete"):
        dyna_q.train(dyna_q.Config(env="Pendulum-v1", run_dir=str(tmp_path / "p"), progress=False))
    with pytest.raises(ValueError, match="mbrlax/DynaMaze-v0"):
        dyna_q.train(dyna_q.Config(env="DynaMaze", run_dir=str(tmp_path / "p"), progress=False))
    with pytest.raises(ValueError, match="not both"):
        dyna_q.resolve(dyna_q.Config(plus=True, prioritized=True))
    with pytest.raises(runs.RunDirError, match="no resumable state"):  # not a flag; from Python, refused
        dyna_q.train(dyna_q.Config(resume=str(tmp_path / "p"), progress=False))


@pytest.mark.slow
def test_figure_8_2_shape():
    out = dyna_q.run_many(tabular.maze_tables(tabular.DYNA_MAZE), jax.random.key(0), 30, n=50, alpha=0.1,
                          gamma=0.95, epsilon=0.1, max_steps=50_000, max_episodes=10)
    assert np.median(out["greedy"][:, 2]) == 14  # optimal greedy path after the third episode
