"""Tabular Dyna-Q, Dyna-Q+ and prioritized sweeping (Sutton 1990; Sutton & Barto 2018, chapter 8).

The book's box "Tabular Dyna-Q", and where each line lives below:

    Initialize Q(s, a) and Model(s, a) for all s ∈ S and a ∈ A(s)                 `init_state`
    Loop forever:
      (a) S ← current (nonterminal) state
      (b) A ← ε-greedy(S, Q)                                                       # 1. act
      (c) Take action A; observe resultant reward, R, and state, S'                # 1. act
      (d) Q(S, A) ← Q(S, A) + α[R + γ max_a Q(S', a) − Q(S, A)]                     # 2. direct RL
      (e) Model(S, A) ← R, S' (assuming deterministic environment)                 # 3. model learning
      (f) Loop repeat n times:                                                     # 4. planning
            S ← random previously observed state
            A ← random action previously taken in S
            R, S' ← Model(S, A)
            Q(S, A) ← Q(S, A) + α[R + γ max_a Q(S', a) − Q(S, A)]

Dyna-Q+ (section 8.3) plans with the reward R + κ√τ, τ the number of time steps since (S, A) was last tried
in the real environment; actions never tried from a visited state may be planned with, and their initial
model leads back to the same state with reward 0 (the book's footnote). The bonus is used in planning only.

Prioritized sweeping (section 8.4, its own box) replaces (d) and (f): the pair just taken enters a priority
queue with priority P = |R + γ max_a Q(S', a) − Q(S, A)| if P > θ; then n times: pop the first pair, update
it from the model, and queue every pair predicted to lead to its state whose |TD error| exceeds θ. The queue
is a dense S×A array of priorities (0 = not queued, pop = argmax, insert = keep the larger priority), so the
whole sweep is jitted.

Everything is a pure function of a `DynaState`, jitted: `learn` is one real step (d)-(f). `train` drives any
Gymnasium environment with Discrete spaces (the mazes of `envs/tabular.py`, FrozenLake-v1, CliffWalking-v1,
Taxi-v4) from Python; `run_tables` runs a whole experiment on a maze's transition tables inside one jitted
`while_loop` and `run_many` vmaps it over independent runs (benchmarks/dyna_maze.py: 30 runs at once).
Both use the same keys in the same order, so the two give identical Q tables (tests/unit/test_dyna_q.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import tyro

from mbrlax import runs
from mbrlax.algorithms.common import Result as BaseResult
from mbrlax.algorithms.common import RunOptions, fill_preset
from mbrlax.envs import tabular

# ---------------------------------------------------------------------------------------------------
# Components: pure functions of explicit state
# ---------------------------------------------------------------------------------------------------


class TabularModel(NamedTuple):
    """The deterministic tabular model: the last observed outcome of every (s, a), S×A each."""

    next_state: jax.Array  # S×A int32
    reward: jax.Array  # S×A float32
    terminated: jax.Array  # S×A float32 (1: no bootstrap)
    tried: jax.Array  # S×A bool: (s, a) was taken at least once
    last_tried: jax.Array  # S×A int32: the real step count when (s, a) was last taken (0: never)


class DynaState(NamedTuple):
    q: jax.Array  # S×A float32
    model: TabularModel
    priority: jax.Array  # S×A float32: prioritized sweeping's queue (0 = not queued)
    t: jax.Array  # int32: real steps taken so far


def init_state(num_states: int, num_actions: int) -> DynaState:
    """Q = 0 and an empty model (the book's initialization)."""
    sa = (num_states, num_actions)
    model = TabularModel(
        next_state=jnp.zeros(sa, jnp.int32),
        reward=jnp.zeros(sa, jnp.float32),
        terminated=jnp.zeros(sa, jnp.float32),
        tried=jnp.zeros(sa, bool),
        last_tried=jnp.zeros(sa, jnp.int32),
    )
    return DynaState(jnp.zeros(sa, jnp.float32), model, jnp.zeros(sa, jnp.float32), jnp.zeros((), jnp.int32))


def pick(mask: jax.Array, u: jax.Array) -> jax.Array:
    """Index of a uniformly chosen True entry along the last axis of `mask` (…×N), given u ~ U[0, 1) (…):
    the ⌊u·count⌋-th True entry. One uniform per draw keeps the random-number cost low inside loops."""
    c = jnp.cumsum(mask, -1)
    k = jnp.floor(u * c[..., -1])
    return jnp.argmax(c > k[..., None], -1).astype(jnp.int32)


def epsilon_greedy(q_row: jax.Array, key: jax.Array, epsilon: float) -> jax.Array:
    """ε-greedy action from one row of Q (A), ties among greedy actions broken uniformly at random (without
    it, an all-zero Q always picks action 0 and the first episode of a maze never ends)."""
    u = jax.random.uniform(key, (3,))
    greedy = pick(q_row == q_row.max(), u[2])
    random = jnp.minimum(jnp.floor(u[1] * q_row.shape[0]), q_row.shape[0] - 1).astype(jnp.int32)
    return jnp.where(u[0] < epsilon, random, greedy)


def q_update(q: jax.Array, s, a, r, s2, terminated, *, alpha: float, gamma: float) -> jax.Array:
    """One Q-learning step: Q(s,a) += α [r + γ (1 − terminated) max_a' Q(s',a') − Q(s,a)]."""
    target = r + gamma * (1.0 - terminated) * q[s2].max()
    return q.at[s, a].add(alpha * (target - q[s, a]))


def model_update(model: TabularModel, s, a, r, s2, terminated, t) -> TabularModel:
    """Model(s, a) ← r, s' (the last observation wins), and (s, a) was tried at step t."""
    return TabularModel(
        next_state=model.next_state.at[s, a].set(s2),
        reward=model.reward.at[s, a].set(r),
        terminated=model.terminated.at[s, a].set(terminated),
        tried=model.tried.at[s, a].set(True),
        last_tried=model.last_tried.at[s, a].set(t),
    )


def model_query(model: TabularModel, s, a) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(r, s', terminated) the model predicts for (s, a); an untried pair leads back to s with r = 0
    (Dyna-Q+'s initial model; plain Dyna-Q never queries untried pairs)."""
    tried = model.tried[s, a]
    return (
        jnp.where(tried, model.reward[s, a], 0.0),
        jnp.where(tried, model.next_state[s, a], s),
        jnp.where(tried, model.terminated[s, a], 0.0),
    )


def exploration_bonus(model: TabularModel, s, a, t, *, kappa: float) -> jax.Array:
    """Dyna-Q+: κ √τ with τ = t − (the step at which (s, a) was last tried); never tried: τ = t."""
    return kappa * jnp.sqrt((t - model.last_tried[s, a]).astype(jnp.float32))


def sample_planning_pairs(model: TabularModel, key: jax.Array, n: int, *, untried: bool) -> tuple[jax.Array, jax.Array]:
    """n pairs (n each): S uniformly among states in which some action was taken, then A uniformly among the
    actions taken in S (among all actions with `untried`, Dyna-Q+). The model must hold at least one pair.
    The model does not change during planning, so all n pairs are drawn at once."""
    u = jax.random.uniform(key, (2, n))
    s = pick(model.tried.any(1), u[0])
    allowed = jnp.ones_like(model.tried[s]) if untried else model.tried[s]  # n×A
    return s, pick(allowed, u[1])


def plan(state: DynaState, key: jax.Array, *, n: int, alpha: float, gamma: float, kappa: float,
         plus: bool) -> jax.Array:
    """(f) n random-sample one-step tabular Q-planning updates; returns Q (S×A)."""
    if n == 0:
        return state.q
    model, t = state.model, state.t
    s, a = sample_planning_pairs(model, key, n, untried=plus)
    r, s2, term = model_query(model, s, a)
    if plus:
        r = r + exploration_bonus(model, s, a, t, kappa=kappa)

    def body(i, q):  # the updates are sequential: each one sees the Q of the previous
        return q_update(q, s[i], a[i], r[i], s2[i], term[i], alpha=alpha, gamma=gamma)

    return jax.lax.fori_loop(0, n, body, state.q)


def sweep(state: DynaState, s, a, r, s2, terminated, *, n: int, alpha: float, gamma: float,
          theta: float) -> tuple[jax.Array, jax.Array]:
    """Prioritized sweeping's (e)-(g) after the model was updated with (s, a, r, s2); returns (Q, queue)."""
    model = state.model
    p = jnp.abs(r + gamma * (1.0 - terminated) * state.q[s2].max() - state.q[s, a])
    prio = state.priority.at[s, a].max(jnp.where(p > theta, p, 0.0))

    def body(_, carry):
        q, prio = carry
        flat = jnp.argmax(prio)
        s_, a_ = flat // prio.shape[1], flat % prio.shape[1]
        queued = prio[s_, a_] > 0.0
        r_, s2_, term_ = model_query(model, s_, a_)
        q = jnp.where(queued, q_update(q, s_, a_, r_, s2_, term_, alpha=alpha, gamma=gamma), q)
        prio = prio.at[s_, a_].set(jnp.where(queued, 0.0, prio[s_, a_]))
        # every (s̄, ā) the model predicts to lead to s_, with its |TD error| as priority
        leads = model.tried & (model.next_state == s_)
        p_bar = jnp.abs(model.reward + gamma * (1.0 - model.terminated) * q[s_].max() - q)
        prio = jnp.where(queued & leads & (p_bar > theta), jnp.maximum(prio, p_bar), prio)
        return q, prio

    return jax.lax.fori_loop(0, n, body, (state.q, prio))


@partial(jax.jit, static_argnames=("n", "plus", "prioritized"))
def learn(state: DynaState, s, a, r, s2, terminated, key: jax.Array, *, n: int, alpha: float, gamma: float,
          kappa: float = 0.0, plus: bool = False, prioritized: bool = False, theta: float = 1e-4) -> DynaState:
    """Steps (d)-(f) after one real transition (s, a, r, s2, terminated)."""
    t = state.t + 1
    terminated = jnp.asarray(terminated, jnp.float32)
    # 3. model learning: Model(S, A) ← R, S'
    model = model_update(state.model, s, a, r, s2, terminated, t)
    state = state._replace(model=model, t=t)
    if prioritized:
        q, prio = sweep(state, s, a, r, s2, terminated, n=n, alpha=alpha, gamma=gamma, theta=theta)
        return state._replace(q=q, priority=prio)
    # 2. direct RL: one Q-learning step on the real transition
    state = state._replace(q=q_update(state.q, s, a, r, s2, terminated, alpha=alpha, gamma=gamma))
    # 4. planning: n Q-learning steps on transitions drawn from the model
    return state._replace(q=plan(state, key, n=n, alpha=alpha, gamma=gamma, kappa=kappa, plus=plus))


act = jax.jit(epsilon_greedy)


def greedy_path_length(q: jax.Array, next_state: jax.Array, terminated: jax.Array, start, max_len: int = 200):
    """Steps the greedy policy (first argmax) takes from `start` to a terminal transition in a deterministic
    table (S×A each); `max_len` + 1 if it never gets there."""

    def body(carry):
        s, n, done = carry
        a = jnp.argmax(q[s])
        return next_state[s, a], n + 1, terminated[s, a] > 0

    _, n, done = jax.lax.while_loop(lambda c: ~c[2] & (c[1] <= max_len), body,
                                    (jnp.asarray(start, jnp.int32), jnp.zeros((), jnp.int32), jnp.asarray(False)))
    return jnp.where(done, n, max_len + 1)


@partial(jax.jit, static_argnames=("n", "plus", "prioritized", "max_steps", "max_episodes", "track_greedy"))
def run_tables(tables: tuple, key: jax.Array, *, n: int, alpha: float, gamma: float, epsilon: float,
               kappa: float = 0.0, plus: bool = False, prioritized: bool = False, theta: float = 1e-4,
               max_steps: int, max_episodes: int, track_greedy: bool = True) -> dict:
    """One whole experiment on a maze's tables (next_state, reward, terminated: K×S×A; start; switch_step),
    stopping after `max_steps` steps or `max_episodes` episodes. Returns the episode lengths (max_episodes,
    0 where not reached), the greedy path length after each episode (with `track_greedy`; it keeps a
    max_episodes×S×A copy of Q, so leave it off for long experiments), the reward of every step (max_steps)
    and the final Q."""
    nxt, rew, term, start, switch = tables
    num_states, num_actions = nxt.shape[1:]

    def body(c):
        key, k_act, k_learn = jax.random.split(c["key"], 3)
        # 1. act ε-greedily in the maze (the layout in force at this step)
        a = epsilon_greedy(c["dyna"].q[c["s"]], k_act, epsilon)
        layout = (c["t"] >= switch).astype(jnp.int32)
        s2, r, done = nxt[layout, c["s"], a], rew[layout, c["s"], a], term[layout, c["s"], a]
        # 2.-4. direct RL, model learning, planning
        dyna = learn(c["dyna"], c["s"], a, r, s2, done, k_learn, n=n, alpha=alpha, gamma=gamma, kappa=kappa,
                     plus=plus, prioritized=prioritized, theta=theta)
        ep_len = c["ep_len"] + 1
        ep = c["episode"]
        return dict(
            key=key, dyna=dyna, s=jnp.where(done, start, s2), t=c["t"] + 1,
            episode=ep + done.astype(jnp.int32), ep_len=jnp.where(done, 0, ep_len),
            lengths=c["lengths"].at[ep].set(jnp.where(done, ep_len, c["lengths"][ep]), mode="drop"),
            # Q at the end of each episode (its greedy path is measured after the loop: cheaper under vmap)
            q_end=c["q_end"].at[ep].set(jnp.where(done, dyna.q, c["q_end"][ep]), mode="drop") if track_greedy else None,
            layout_end=c["layout_end"].at[ep].set(layout, mode="drop"),
            rewards=c["rewards"].at[c["t"]].set(r, mode="drop"),
        )

    init = dict(
        key=key, dyna=init_state(num_states, num_actions), s=jnp.asarray(start, jnp.int32),
        t=jnp.zeros((), jnp.int32), episode=jnp.zeros((), jnp.int32), ep_len=jnp.zeros((), jnp.int32),
        lengths=jnp.zeros(max_episodes, jnp.int32),
        q_end=jnp.zeros((max_episodes, num_states, num_actions)) if track_greedy else None,
        layout_end=jnp.zeros(max_episodes, jnp.int32),
        rewards=jnp.zeros(max_steps, jnp.float32),
    )
    out = jax.lax.while_loop(lambda c: (c["t"] < max_steps) & (c["episode"] < max_episodes), body, init)
    greedy = jnp.zeros(max_episodes, jnp.int32)
    if track_greedy:
        greedy = jax.vmap(lambda q, k: greedy_path_length(q, nxt[k], term[k], start))(out["q_end"], out["layout_end"])
        greedy = jnp.where(jnp.arange(max_episodes) < out["episode"], greedy, 0)
    final_layout = (out["t"] - 1 >= switch).astype(jnp.int32)
    return dict(lengths=out["lengths"], greedy=greedy, rewards=out["rewards"], q=out["dyna"].q,
                final_greedy=greedy_path_length(out["dyna"].q, nxt[final_layout], term[final_layout], start),
                steps=out["t"], episodes=out["episode"])


def run_many(maze_tables: tabular.MazeTables, key: jax.Array, runs_: int, **kw) -> dict:
    """`run_tables` vmapped over `runs_` independent runs (keys split from `key`); arrays get a leading
    runs axis."""
    t = maze_tables
    tables = (jnp.asarray(t.next_state), jnp.asarray(t.reward), jnp.asarray(t.terminated, jnp.float32),
              jnp.asarray(t.start, jnp.int32), jnp.asarray(t.switch_step, jnp.int32))
    keys = jax.random.split(key, runs_)
    out = jax.vmap(lambda k: run_tables(tables, k, **kw))(keys)
    return jax.tree.map(np.asarray, out)


# ---------------------------------------------------------------------------------------------------
# The algorithm: Config, presets, train
# ---------------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = dict(
    steps=20_000,
    episodes=None,
    planning_steps=10,
    alpha=0.1,
    gamma=0.95,
    eval_every=1000,
    env_kwargs={},
)

PRESETS: dict[str, dict[str, Any]] = {
    # Example 8.1 / Figure 8.2: 50 episodes, n ∈ {0, 5, 50}, γ = 0.95.
    "mbrlax/DynaMaze-v0": dict(episodes=50, steps=100_000, planning_steps=50, eval_every=500),
    # Example 8.2 / Figure 8.4: 3000 steps, the wall moves after 1000. The book gives neither n nor α here:
    # α = 1 (the maze is deterministic) and n = 10 reproduce the figure's shape (benchmarks/dyna_maze.py).
    "mbrlax/BlockingMaze-v0": dict(steps=3000, planning_steps=10, alpha=1.0, eval_every=250),
    # Example 8.3 / Figure 8.5: 6000 steps, the shortcut opens after 3000; α = 1 and n = 50 as above.
    "mbrlax/ShortcutMaze-v0": dict(steps=6000, planning_steps=50, alpha=1.0, eval_every=500),
    # Not from the book: sizes for a quick run on the toy-text tasks.
    "FrozenLake-v1": dict(steps=20_000, planning_steps=10, gamma=0.95, eval_every=2000),
    "CliffWalking-v1": dict(episodes=300, steps=50_000, planning_steps=10, gamma=0.95, eval_every=1000),
    "Taxi-v4": dict(episodes=500, steps=100_000, planning_steps=10, gamma=0.95, eval_every=5000),
}


@dataclass
class Config(RunOptions):
    """Tabular Dyna-Q. Fields left as None take the preset value of the environment (see PRESETS)."""

    env: str = "mbrlax/DynaMaze-v0"
    """Gymnasium id with Discrete observations and actions (mbrlax/DynaMaze-v0, FrozenLake-v1, ...)."""
    seed: int = 0
    """Seed of everything: two runs with the same seed are identical."""
    planning_steps: int | None = None
    """n: planning updates per real step (0: plain one-step Q-learning)."""
    steps: int | None = None
    """Stop after this many real steps."""
    episodes: int | None = None
    """Stop after this many episodes (None: the preset's, e.g. 50 on the Dyna Maze, else no episode limit)."""
    alpha: float | None = None
    """Step size α (book, Example 8.1: 0.1)."""
    gamma: float | None = None
    """Discount γ (book's mazes: 0.95)."""
    epsilon: float = 0.1
    """ε of the ε-greedy behaviour policy (book: 0.1)."""
    plus: bool = False
    """Dyna-Q+: plan with the bonus κ√τ, and with actions never tried from a visited state."""
    kappa: float = 1e-3
    """κ of Dyna-Q+'s bonus (book: 'a small κ')."""
    prioritized: bool = False
    """Prioritized sweeping instead of uniform planning (n = updates per step, popped from the queue)."""
    theta: float = 1e-4
    """Prioritized sweeping's threshold θ: pairs with |TD error| ≤ θ are not queued."""
    eval_every: int | None = None
    """Evaluate the greedy policy every this many real steps."""
    eval_episodes: int = 10
    """Episodes per evaluation."""
    eval_max_steps: int = 1000
    """An evaluation episode is cut after this many steps (a greedy policy can loop forever in a maze)."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make (e.g. is_slippery=False for FrozenLake); Python API only."""
    # A run takes seconds and keeps no resumable state: the Q table is saved once, at the end.
    resume: Annotated[str | None, tyro.conf.Suppress] = None
    checkpoint_every: Annotated[int | None, tyro.conf.Suppress] = None


@dataclass
class Result(BaseResult):
    episode_lengths: list[int] = field(default_factory=list)
    q: np.ndarray | None = None


def resolve(cfg: Config) -> Config:
    """Fill every None from the env's preset, then DEFAULTS; validate ranges."""
    cfg = fill_preset(cfg, PRESETS.get(cfg.env, {}), DEFAULTS)
    if cfg.planning_steps < 0:
        raise ValueError(f"planning_steps must be ≥ 0, got {cfg.planning_steps}")
    if cfg.steps <= 0 or (cfg.episodes is not None and cfg.episodes <= 0):
        raise ValueError(f"steps and episodes must be positive, got steps={cfg.steps}, episodes={cfg.episodes}")
    if not 0.0 < cfg.alpha <= 1.0 or not 0.0 <= cfg.gamma <= 1.0 or not 0.0 <= cfg.epsilon <= 1.0:
        raise ValueError(f"need 0 < alpha ≤ 1, 0 ≤ gamma ≤ 1, 0 ≤ epsilon ≤ 1; got {cfg.alpha}, {cfg.gamma}, "
                         f"{cfg.epsilon}")
    if cfg.plus and cfg.prioritized:
        raise ValueError("choose one of --plus (Dyna-Q+) and --prioritized (prioritized sweeping), not both")
    return cfg


def make_env(env_id: str, **kwargs: Any) -> tuple[gym.Env, int, int]:
    """A Gymnasium env with Discrete spaces, and its numbers of states and actions (clear errors)."""
    if env_id in ("DynaMaze", "BlockingMaze", "ShortcutMaze"):
        raise ValueError(f"the maze ids are namespaced: use mbrlax/{env_id}-v0")
    if env_id not in gym.registry:
        raise ValueError(f"unknown environment id '{env_id}'; tabular ones include "
                         f"{', '.join(tabular.ENV_IDS)}, FrozenLake-v1, CliffWalking-v1, Taxi-v4")
    env = gym.make(env_id, **kwargs)
    try:
        n_s, n_a = tabular.check_discrete(env, env_id)
    except ValueError:
        env.close()
        raise
    return env, n_s, n_a


def evaluate_greedy(env: gym.Env, q: np.ndarray, episodes: int, seed: int, max_steps: int) -> list[float]:
    """Returns of the greedy policy (first argmax) over `episodes` episodes, each cut at `max_steps`."""
    returns = []
    for i in range(episodes):
        s, _ = env.reset(seed=seed + i)
        total, done, n = 0.0, False, 0
        while not done and n < max_steps:
            s, r, terminated, truncated, _ = env.step(int(np.argmax(q[s])))
            total += float(r)
            done, n = terminated or truncated, n + 1
        returns.append(total)
    return returns


def plot_run(run_dir: Path, lengths: list[int], cum_steps: list[int], cum_rewards: list[float], title: str) -> Path:
    """curve.png: steps per episode (left) and cumulative reward over time steps (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(np.arange(1, len(lengths) + 1), lengths, lw=1.5)
    ax1.set_xlabel("episode")
    ax1.set_ylabel("steps per episode")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3)
    ax2.plot(cum_steps, cum_rewards, lw=1.5)
    ax2.set_xlabel("time steps")
    ax2.set_ylabel("cumulative reward")
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = run_dir / "curve.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def algorithm_name(cfg: Config) -> str:
    return "prioritized_sweeping" if cfg.prioritized else "dyna_q_plus" if cfg.plus else "dyna_q"


def train(cfg: Config) -> Result:
    """Run Dyna-Q (or Dyna-Q+, prioritized sweeping) on a Discrete Gymnasium env; returns the final
    evaluation of the greedy policy and the run directory."""
    if cfg.resume is not None:
        raise runs.RunDirError(f"dyna_q keeps no resumable state (it saves its Q table once, at the end): start a "
                               f"new run instead of resuming {cfg.resume}")
    cfg = resolve(cfg)
    env, n_s, n_a = make_env(cfg.env, **cfg.env_kwargs)
    eval_env, _, _ = make_env(cfg.env, **cfg.env_kwargs)
    name = algorithm_name(cfg)
    hyper = dict(n=cfg.planning_steps, alpha=cfg.alpha, gamma=cfg.gamma, kappa=cfg.kappa, plus=cfg.plus,
                 prioritized=cfg.prioritized, theta=cfg.theta)
    registry_name = "dyna_q_plus" if cfg.plus else "dyna_q"  # what `mbrlax eval` and run.json know it by
    run_name = f"{name}-{cfg.env.replace('/', '_')}-s{cfg.seed}"
    with env, eval_env, runs.Run(cfg, registry_name, run_name, cfg.steps) as run:
        key = jax.random.key(cfg.seed)
        state = init_state(n_s, n_a)
        s, _ = env.reset(seed=cfg.seed)
        t, ep_ret, ep_len, cum = 0, 0.0, 0, 0.0
        lengths: list[int] = []
        cum_steps, cum_rewards = [0], [0.0]
        done = False
        while not done:
            key, k_act, k_learn = jax.random.split(key, 3)
            with run.timer("learn"):
                # 1. act ε-greedily, observe R and S'
                a = int(act(state.q[s], k_act, cfg.epsilon))
                s2, r, terminated, truncated, _ = env.step(a)
                # 2.-4. direct RL, model learning, planning (or prioritized sweeping)
                state = learn(state, s, a, float(r), int(s2), bool(terminated), k_learn, **hyper)
            t, ep_ret, ep_len, cum = t + 1, ep_ret + float(r), ep_len + 1, cum + float(r)
            if r != 0:
                cum_steps.append(t)
                cum_rewards.append(cum)
            if terminated or truncated:
                lengths.append(ep_len)
                run.log(t, {"train/episode_return": ep_ret, "train/episode_length": ep_len,
                            "train/episode": len(lengths), "train/cumulative_reward": cum})
                ep_ret, ep_len = 0.0, 0
                s, _ = env.reset(seed=cfg.seed + len(lengths))
            else:
                s = int(s2)
            done = t >= cfg.steps or (cfg.episodes is not None and len(lengths) >= cfg.episodes)
            if run.due(t, cfg.eval_every) or done:
                with run.timer("eval"):
                    rets = evaluate_greedy(eval_env, np.asarray(state.q), cfg.eval_episodes, 10_000 + cfg.seed,
                                           cfg.eval_max_steps)
                run.record_eval(t, float(np.mean(rets)), float(np.std(rets)), extra={"train/cumulative_reward": cum})
            if run.due(t, 100) or done:
                run.progress(t, episodes=f"episodes {len(lengths)}")
        cum_steps.append(t)
        cum_rewards.append(cum)
        q = np.asarray(state.q)
        run.save(t, {"q": q, "state": state, "episode_lengths": lengths})
        # curve.png: the book's figures (steps per episode, cumulative reward) instead of the evaluation curve
        plot_run(run.dir, lengths, cum_steps, cum_rewards, f"{run.dir.name} (n={cfg.planning_steps})")
        return run.result(Result, steps=t, episode_lengths=lengths, q=q)


def _saved(run_dir: str | Path) -> tuple[Config, np.ndarray]:
    """A run's config and its final Q table."""
    cfg = resolve(runs.config_from_dict(Config, runs.load_config(run_dir)))
    return cfg, np.asarray(runs.load_checkpoint(run_dir)["q"])


def load_policy(run_dir: str | Path):
    """The greedy policy of a run's final Q table, as `act(obs) -> action`, plus the config."""
    cfg, q = _saved(run_dir)
    return (lambda o: int(np.argmax(q[int(o)]))), cfg


def evaluate_run(run_dir: str | Path, episodes: int = 10, seed: int = 20_000) -> tuple[float, float]:
    """Mean ± std return of a run's greedy policy (for `mbrlax eval`, whose `envs.make` rejects Discrete
    spaces); episodes are cut at the run's `eval_max_steps`."""
    cfg, q = _saved(run_dir)
    env, _, _ = make_env(cfg.env, **cfg.env_kwargs)
    with env:
        rets = evaluate_greedy(env, q, episodes, seed, cfg.eval_max_steps)
    return float(np.mean(rets)), float(np.std(rets))
