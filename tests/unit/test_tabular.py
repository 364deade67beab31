"""The Sutton & Barto mazes: layouts cell by cell, shortest paths by BFS, the wall switch, Gymnasium API."""

import gymnasium as gym
import numpy as np
import pytest

from mbrlax.envs import tabular

UP, DOWN, LEFT, RIGHT = range(4)


def cell(tables, r, c):
    return r * tables.shape[1] + c


def test_dyna_maze_is_figure_8_2():
    t = tabular.maze_tables(tabular.DYNA_MAZE)
    assert t.shape == (6, 9) and t.next_state.shape == (1, 54, 4)
    assert t.start == cell(t, 2, 0) and t.goal == cell(t, 0, 8)
    walls = {(r, c) for r, row in enumerate(tabular.DYNA_MAZE.layouts[0]) for c, x in enumerate(row) if x == "#"}
    assert walls == {(1, 2), (2, 2), (3, 2), (4, 5), (0, 7), (1, 7), (2, 7)}
    assert tabular.shortest_path_length(t) == 14  # the book's optimal path


def test_changing_mazes_are_figures_8_4_and_8_5():
    b = tabular.maze_tables(tabular.BLOCKING_MAZE)
    s = tabular.maze_tables(tabular.SHORTCUT_MAZE)
    assert b.switch_step == 1000 and s.switch_step == 3000
    assert b.start == s.start == cell(b, 5, 3) and b.goal == s.goal == cell(b, 0, 8)
    # blocking: the short way on the right (10 steps) closes, a longer one on the left (16) opens
    assert [tabular.shortest_path_length(b, k) for k in (0, 1)] == [10, 16]
    # shortcut: only the long way at first, then a shortcut on the right
    assert [tabular.shortest_path_length(s, k) for k in (0, 1)] == [16, 10]


def test_moves_walls_and_goal():
    t = tabular.maze_tables(tabular.DYNA_MAZE)
    s0 = cell(t, 2, 0)
    assert t.next_state[0, s0, LEFT] == s0  # the border
    assert t.next_state[0, cell(t, 2, 1), RIGHT] == cell(t, 2, 1)  # wall at (2, 2)
    assert t.next_state[0, s0, UP] == cell(t, 1, 0) and t.next_state[0, s0, DOWN] == cell(t, 3, 0)
    into_goal = (0, cell(t, 1, 8), UP)
    assert t.reward[into_goal] == 1.0 and t.terminated[into_goal]
    # rows of the goal and of wall cells are never used (the episode ends at G; walls cannot be entered)
    used = np.array([x in ".S" for x in "".join(tabular.DYNA_MAZE.layouts[0])])
    assert t.reward[0, used].sum() == 1  # G is entered only from below: (0, 7) is a wall
    assert not t.terminated[0, cell(t, 2, 8), UP]


def test_gym_env_steps_the_tables_and_switches_walls_across_episodes():
    env = gym.make("mbrlax/BlockingMaze-v0")
    t = env.unwrapped.tables
    assert env.observation_space == gym.spaces.Discrete(54) and env.action_space == gym.spaces.Discrete(4)
    s, info = env.reset(seed=0)
    assert s == t.start and info["layout"] == 0
    gap_old, gap_new = cell(t, 4, 8), cell(t, 4, 0)  # below the gaps of the two layouts
    rng = np.random.default_rng(0)
    for _ in range(1000):  # random walk; every step must match the layout-0 table
        a = int(rng.integers(4))
        s2, r, term, trunc, info = env.step(a)
        assert (s2, r, term, info["layout"]) == (t.next_state[0, s, a], t.reward[0, s, a], t.terminated[0, s, a], 0)
        s = s2 if not term else env.reset()[0]
    # step 1000 is the first one in the new layout, also after a reset (time counts over the experiment)
    s, info = env.reset()
    assert info["layout"] == 1
    env.unwrapped.s = gap_old
    assert env.step(UP)[0] == gap_old  # the right gap is closed now
    env.unwrapped.s = gap_new
    assert env.step(UP)[0] == cell(t, 3, 0)  # the left gap is open
    assert env.reset(options={"restart": True})[1]["layout"] == 0


def test_goal_ends_the_episode_with_reward_one():
    env = gym.make("mbrlax/DynaMaze-v0")
    env.reset(seed=0)
    path = [DOWN, DOWN, RIGHT, RIGHT, RIGHT, UP] + [RIGHT] * 5 + [UP] * 3  # 14 steps
    for i, a in enumerate(path):
        s, r, term, trunc, _ = env.step(a)
        assert (r, term) == ((1.0, True) if i == len(path) - 1 else (0.0, False)), i
    assert s == env.unwrapped.tables.goal
    with pytest.raises(ValueError, match="up, down, left, right"):
        env.step(7)


def test_check_discrete_rejects_continuous_envs_with_a_fix():
    env = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="Discrete.*mve"):
        tabular.check_discrete(env, "Pendulum-v1")
    for env_id in ("FrozenLake-v1", "CliffWalking-v1", "Taxi-v4"):
        assert tabular.check_discrete(gym.make(env_id), env_id)[1] in (4, 6)
