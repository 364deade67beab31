"""Tabular mazes of Sutton & Barto (2018), chapter 8, as Gymnasium environments with `Discrete` spaces.

    mbrlax/DynaMaze-v0       Figure 8.2 (Example 8.1): 6×9 grid, shortest path 14 steps.
    mbrlax/BlockingMaze-v0   Figure 8.4 (Example 8.2): the short way on the right is blocked after 1000
                             steps; a longer way opens on the left.
    mbrlax/ShortcutMaze-v0   Figure 8.5 (Example 8.3): a shortcut on the right opens after 3000 steps.

Layouts are ASCII grids ('#' wall, 'S' start, 'G' goal, '.' free), copied cell by cell from the figures.
A state is the cell index row·width + col; actions are 0 up, 1 down, 2 left, 3 right (the book's order).
A move into a wall or off the grid leaves the agent where it is. Reward is +1 on reaching the goal (which
ends the episode), 0 otherwise; the book's discount is γ = 0.95 (`GAMMA`). There is no time limit.

The changing mazes count time steps over the *whole experiment*, not per episode: the walls switch after
`switch_step` steps since the environment was made (or since `reset(options={"restart": True})`).

Every maze is also a set of transition tables (`maze_tables`, K×S×A for K layouts), so that the vmapped
JAX runner of `algorithms/dyna_q.py` steps the very same MDP as the Gymnasium environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

GAMMA = 0.95  # Sutton & Barto, Example 8.1
ACTIONS = ((-1, 0), (1, 0), (0, -1), (0, 1))  # up, down, left, right as (Δrow, Δcol)
ACTION_NAMES = ("up", "down", "left", "right")


@dataclass(frozen=True)
class Maze:
    """One maze: its layouts (the second one, if any, takes over after `switch_step` steps)."""

    name: str
    layouts: tuple[tuple[str, ...], ...]
    switch_step: int | None = None
    figure: str = ""


# Figure 8.2: S at row 2 col 0, G at row 0 col 8; walls at col 2 rows 1-3, col 7 rows 0-2, row 4 col 5.
DYNA_MAZE = Maze(
    "DynaMaze",
    ((
        ".......#G",
        "..#....#.",
        "S.#....#.",
        "..#......",
        ".....#...",
        ".........",
    ),),
    figure="Sutton & Barto Figure 8.2",
)


def _wall_maze(wall: str) -> tuple[str, ...]:
    """Figures 8.4 and 8.5's 6×9 grid: G top right, S in the bottom row at col 3, `wall` as row 3."""
    return ("........G", ".........", ".........", wall, ".........", "...S.....")


# Figure 8.4: wall along row 3; first with a gap on the right (cols 0-7 blocked), after 1000 steps with a
# gap on the left (cols 1-8 blocked).
BLOCKING_MAZE = Maze("BlockingMaze", (_wall_maze("########."), _wall_maze(".########")), switch_step=1000,
                     figure="Sutton & Barto Figure 8.4")

# Figure 8.5: first only the long way on the left (cols 1-8 blocked); after 3000 steps a shortcut opens on
# the right (cols 1-7 blocked).
SHORTCUT_MAZE = Maze("ShortcutMaze", (_wall_maze(".########"), _wall_maze(".#######.")), switch_step=3000,
                     figure="Sutton & Barto Figure 8.5")

MAZES: dict[str, Maze] = {m.name: m for m in (DYNA_MAZE, BLOCKING_MAZE, SHORTCUT_MAZE)}
ENV_IDS: dict[str, str] = {f"mbrlax/{name}-v0": name for name in MAZES}


class MazeTables(NamedTuple):
    """A maze as arrays: K layouts × S states × A actions."""

    next_state: np.ndarray  # K×S×A int32
    reward: np.ndarray  # K×S×A float32
    terminated: np.ndarray  # K×S×A bool
    start: int
    goal: int
    switch_step: int  # the step from which layout 1 is used (a huge number if there is one layout)
    shape: tuple[int, int]


def _parse(layout: tuple[str, ...]) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
    rows = {len(r) for r in layout}
    if len(rows) != 1:
        raise ValueError(f"maze rows have different lengths {sorted(rows)}")
    grid = np.array([list(r) for r in layout])
    bad = set(np.unique(grid)) - set(".#SG")
    if bad:
        raise ValueError(f"maze has unknown cells {sorted(bad)}; use '.', '#', 'S' and 'G'")
    (s,), (g,) = (list(zip(*np.nonzero(grid == c))) for c in "SG")
    return grid == "#", (int(s[0]), int(s[1])), (int(g[0]), int(g[1]))


def maze_tables(maze: Maze) -> MazeTables:
    """The deterministic transition tables of every layout of `maze`."""
    parsed = [_parse(layout) for layout in maze.layouts]
    _, start, goal = parsed[0]
    if any(p[1] != start or p[2] != goal for p in parsed):
        raise ValueError(f"{maze.name}: every layout must have the same S and G")
    h, w = parsed[0][0].shape
    k, n_s, n_a = len(parsed), h * w, len(ACTIONS)
    nxt = np.zeros((k, n_s, n_a), np.int32)
    for i, (walls, _, _) in enumerate(parsed):
        for r in range(h):
            for c in range(w):
                for a, (dr, dc) in enumerate(ACTIONS):
                    r2, c2 = r + dr, c + dc
                    if not (0 <= r2 < h and 0 <= c2 < w) or walls[r2, c2]:
                        r2, c2 = r, c  # bumping into a wall or the border: stay
                    nxt[i, r * w + c, a] = r2 * w + c2
    goal_s = goal[0] * w + goal[1]
    term = nxt == goal_s
    switch = maze.switch_step if maze.switch_step is not None else np.iinfo(np.int32).max
    return MazeTables(nxt, term.astype(np.float32), term, start[0] * w + start[1], goal_s, int(switch), (h, w))


def shortest_path_length(tables: MazeTables, layout: int = 0) -> int:
    """Breadth-first search from S to G in one layout: the number of steps of an optimal path."""
    dist = {tables.start: 0}
    frontier = [tables.start]
    while frontier:
        nxt = []
        for s in frontier:
            if s == tables.goal:
                return dist[s]
            for s2 in tables.next_state[layout, s]:
                if int(s2) not in dist:
                    dist[int(s2)] = dist[s] + 1
                    nxt.append(int(s2))
        frontier = nxt
    raise ValueError("the goal cannot be reached from the start")


class MazeEnv(gym.Env):
    """A Sutton & Barto maze. Observation: Discrete(rows·cols) cell index; action: Discrete(4)."""

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, maze: str = "DynaMaze", render_mode: str | None = None):
        if maze not in MAZES:
            raise ValueError(f"unknown maze '{maze}'; available: {', '.join(MAZES)}")
        self.maze = MAZES[maze]
        self.tables = maze_tables(self.maze)
        k, n_s, n_a = self.tables.next_state.shape
        self.observation_space = gym.spaces.Discrete(n_s)
        self.action_space = gym.spaces.Discrete(n_a)
        self.render_mode = render_mode
        self.total_steps = 0  # over the whole experiment: drives the wall switch
        self.s = self.tables.start

    def layout_index(self) -> int:
        return int(self.total_steps >= self.tables.switch_step)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and options.get("restart"):
            self.total_steps = 0
        self.s = self.tables.start
        return self.s, {"layout": self.layout_index()}

    def step(self, action: int):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in 0..3 (up, down, left, right), got {action!r}")
        k = self.layout_index()
        s, a = self.s, int(action)
        self.s = int(self.tables.next_state[k, s, a])
        self.total_steps += 1
        return self.s, float(self.tables.reward[k, s, a]), bool(self.tables.terminated[k, s, a]), False, {"layout": k}

    def render(self) -> str:
        h, w = self.tables.shape
        grid = [list(r) for r in self.maze.layouts[self.layout_index()]]
        grid[self.s // w][self.s % w] = "A"
        return "\n".join("".join(r) for r in grid)


def register() -> None:
    """Register mbrlax/DynaMaze-v0, mbrlax/BlockingMaze-v0 and mbrlax/ShortcutMaze-v0 (idempotent)."""
    for env_id, name in ENV_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="mbrlax.envs.tabular:MazeEnv", kwargs={"maze": name})


def check_discrete(env: gym.Env, env_id: str) -> tuple[int, int]:
    """(number of states, number of actions) of a tabular env; a clear error otherwise."""
    obs, act = env.observation_space, env.action_space
    if not isinstance(obs, gym.spaces.Discrete) or not isinstance(act, gym.spaces.Discrete):
        raise ValueError(
            f"'{env_id}' has observation space {obs} and action space {act}; tabular Dyna-Q needs Discrete "
            f"observations and actions (e.g. mbrlax/DynaMaze-v0, FrozenLake-v1, CliffWalking-v1, Taxi-v4). "
            f"For continuous control use `mve` or `mbpo`."
        )
    if obs.start != 0 or act.start != 0:
        raise ValueError(f"'{env_id}': Discrete spaces must start at 0 (got {obs.start}, {act.start})")
    return int(obs.n), int(act.n)


register()
