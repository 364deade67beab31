"""Offline datasets: the in-memory type, validation, Minari-format read/write, and collecting a policy's
transitions. Making the D4RL-style datasets (training the behaviour SAC, the five kinds, `mbrlax dataset`)
is mbrlax/datasets.py: nothing under mbrlax/data imports the algorithms.

On disk a dataset is a Minari dataset directory (Minari 0.5 layout, HDF5 storage):

    PATH/                       e.g. datasets/mbrlax/halfcheetah-medium-v0
      data/metadata.json        spaces, env spec, ref_min_score / ref_max_score, our "mbrlax" block
      data/main_data.hdf5       one group per episode: observations (T+1)×D, actions T×A, rewards T,
                                terminations T, truncations T

so `minari.MinariDataset(PATH + "/data")` reads it, and with `MINARI_DATASETS_PATH` set to the root two levels
up, `minari.load_dataset("mbrlax/halfcheetah-medium-v0")` does too (tests/unit/test_offline.py checks both).
Writing goes through Minari's own `MinariStorage`, with JPEG encoding off so the round trip is lossless.
Actions are stored in the environment's OWN action space (as D4RL/Minari do); `OfflineDataset.transitions`
rescales them to the [-1, 1] the mbrlax agents act in.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np

from mbrlax.types import Transition

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")
Kind = Literal["random", "medium", "medium-replay", "expert", "medium-expert"]
FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")
EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


class DatasetError(ValueError):
    """A dataset that cannot be used, naming the field at fault and the fix."""


# ---- the in-memory dataset ---------------------------------------------------------------------------


@dataclass
class OfflineDataset:
    """Flat transitions N×…, actions in the environment's own action space. An episode ends at a row whose
    `terminations` (true end of the MDP) or `truncations` (time limit or end of the collected data) is set."""

    observations: np.ndarray  # N×D float32
    actions: np.ndarray  # N×A float32, env units
    rewards: np.ndarray  # N float32
    next_observations: np.ndarray  # N×D float32
    terminations: np.ndarray  # N bool
    truncations: np.ndarray  # N bool
    env_id: str
    env_kwargs: dict = field(default_factory=dict)
    ref_min_score: float | None = None
    """Average return of a uniformly random policy (Minari/D4RL normalization)."""
    ref_max_score: float | None = None
    """Average return of the 'expert' policy (Minari/D4RL normalization)."""
    meta: dict = field(default_factory=dict)
    """Anything else: kind, how it was made, behaviour returns."""

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def episode_ends(self) -> np.ndarray:
        return self.terminations | self.truncations

    def episode_returns(self, complete_only: bool = True) -> np.ndarray:
        """Undiscounted return of each episode (only those ending by termination or time limit if
        `complete_only`: the last, cut-off episode of a dataset is not a full episode)."""
        ends = np.flatnonzero(self.episode_ends)
        starts = np.concatenate([[0], ends[:-1] + 1])
        rets = np.array([self.rewards[s : e + 1].sum() for s, e in zip(starts, ends)], np.float64)
        if complete_only:
            keep = np.array([not self.meta.get("cut_episodes") or e not in self.meta["cut_episodes"] for e in ends])
            rets = rets[keep] if len(rets) else rets
        return rets

    def transitions(self, action_low: np.ndarray, action_high: np.ndarray) -> Transition:
        """Host `Transition` with actions rescaled from [low, high] to the agents' [-1, 1]."""
        a = 2.0 * (self.actions - action_low) / (action_high - action_low) - 1.0
        return Transition(
            self.observations.astype(np.float32), np.clip(a, -1.0, 1.0).astype(np.float32),
            self.rewards.astype(np.float32), self.next_observations.astype(np.float32),
            self.terminations.astype(np.float32),
        )

    def normalized_score(self, returns: float | np.ndarray) -> float | np.ndarray:
        """100 · (return − random) / (expert − random), D4RL's normalized score."""
        if self.ref_min_score is None or self.ref_max_score is None:
            raise DatasetError("the dataset has no ref_min_score/ref_max_score: cannot normalize a score "
                               "(regenerate it with `mbrlax dataset make`, which records both)")
        return 100.0 * (np.asarray(returns) - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


def concatenate(parts: list[OfflineDataset], **meta: Any) -> OfflineDataset:
    """One dataset from several of the same env (each part's last row ends an episode)."""
    first = parts[0]
    cat = lambda name: np.concatenate([getattr(p, name) for p in parts])  # noqa: E731
    trunc = cat("truncations")
    ends = np.cumsum([len(p) for p in parts]) - 1
    term = cat("terminations")
    trunc[ends] = ~term[ends]
    return OfflineDataset(
        cat("observations"), cat("actions"), cat("rewards"), cat("next_observations"), term, trunc,
        first.env_id, dict(first.env_kwargs), first.ref_min_score, first.ref_max_score, meta,
    )


# ---- validation --------------------------------------------------------------------------------------


def validate(ds: OfflineDataset, env: gym.Env | None = None) -> OfflineDataset:
    """Check shapes, dtypes, finiteness and episode continuity; with `env` (the raw gymnasium env, not the
    [-1, 1]-rescaled one), also that the observation and action spaces match. Raises DatasetError naming
    the field. Returns the dataset with canonical dtypes."""
    for name in FIELDS:
        if getattr(ds, name, None) is None:
            raise DatasetError(f"dataset field '{name}' is missing")
    n = len(np.asarray(ds.rewards))
    obs, act = np.asarray(ds.observations), np.asarray(ds.actions)
    want = {
        "observations": (n, None), "actions": (n, None), "rewards": (n,), "next_observations": (n, None),
        "terminations": (n,), "truncations": (n,),
    }
    for name, shape in want.items():
        arr = np.asarray(getattr(ds, name))
        if arr.ndim != len(shape) or arr.shape[0] != n:
            pretty = "×".join("D" if s is None else str(s) for s in shape)
            raise DatasetError(f"dataset field '{name}' has shape {arr.shape}, expected {pretty} "
                               f"(N = {n} transitions, from 'rewards')")
    if np.asarray(ds.next_observations).shape != obs.shape:
        raise DatasetError(f"dataset field 'next_observations' has shape {np.asarray(ds.next_observations).shape}"
                           f" but 'observations' has {obs.shape}; they must match")
    if n == 0:
        raise DatasetError("dataset field 'rewards' is empty: the dataset has no transitions")
    for name in ("observations", "actions", "rewards", "next_observations"):
        arr = np.asarray(getattr(ds, name), np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise DatasetError(f"dataset field '{name}' has {int(bad.sum())} non-finite values (NaN/inf), the "
                               f"first in row {row}; drop or fix those transitions")
    if env is not None:
        o_space, a_space = env.observation_space, env.action_space
        if tuple(o_space.shape) != obs.shape[1:]:
            raise DatasetError(f"dataset field 'observations' has rows of shape {obs.shape[1:]}, but "
                               f"{ds.env_id} observes {tuple(o_space.shape)}: the dataset is for another env")
        if not isinstance(a_space, gym.spaces.Box) or tuple(a_space.shape) != act.shape[1:]:
            raise DatasetError(f"dataset field 'actions' has rows of shape {act.shape[1:]}, but the action space "
                               f"of {ds.env_id} is {a_space}: the dataset is for another env")
        tol = 1e-4 * (a_space.high - a_space.low)
        if (act < a_space.low - tol).any() or (act > a_space.high + tol).any():
            raise DatasetError(f"dataset field 'actions' has values in [{act.min():.3g}, {act.max():.3g}] outside "
                               f"the action space of {ds.env_id} [{a_space.low.min():.3g}, {a_space.high.max():.3g}]"
                               f"; store actions in the env's own units (not rescaled)")
    ds = dataclasses.replace(
        ds,
        observations=obs.astype(np.float32), actions=act.astype(np.float32),
        rewards=np.asarray(ds.rewards, np.float32), next_observations=np.asarray(ds.next_observations, np.float32),
        terminations=np.asarray(ds.terminations).astype(bool), truncations=np.asarray(ds.truncations).astype(bool),
    )
    # Minari stores an episode as T+1 observations: inside an episode next_obs[i] must be obs[i+1].
    inside = ~ds.episode_ends[:-1]
    gap = inside & np.any(ds.next_observations[:-1] != ds.observations[1:], axis=-1)
    if gap.any():
        i = int(np.flatnonzero(gap)[0])
        raise DatasetError(f"dataset field 'next_observations' row {i} differs from 'observations' row {i + 1} "
                           f"but no episode ends there: mark the end with 'truncations' (or use "
                           f"`split_episodes`, which finds the boundaries)")
    if not ds.episode_ends[-1]:
        ds.truncations[-1] = True  # the data ends: the last episode is cut there
    return ds


def split_episodes(obs: np.ndarray, next_obs: np.ndarray, terminated: np.ndarray) -> np.ndarray:
    """Truncation flags for a flat stream of transitions (e.g. a replay buffer that stored only
    `terminated`): an episode also ends wherever next_obs[i] is not obs[i+1], and at the last row."""
    trunc: np.ndarray = np.zeros(len(obs), bool)
    trunc[:-1] = np.any(next_obs[:-1] != obs[1:], axis=-1)
    trunc[-1] = True
    return trunc & ~np.asarray(terminated, bool)


# ---- Minari on-disk format ---------------------------------------------------------------------------


def _dataset_id(path: Path) -> str:
    """Minari ids are namespace/name-vN, matching root/namespace/name-vN on disk."""
    name = path.name if re.search(r"-v\d+$", path.name) else f"{path.name}-v0"
    return f"{path.parent.name}/{name}" if path.parent.name else name


def save(ds: OfflineDataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write `ds` as a Minari dataset directory at `path` (see the module docstring)."""
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    path = Path(path)
    env = gym.make(ds.env_id, **ds.env_kwargs)
    ds = validate(ds, env)
    if (path / "data").exists():
        if not overwrite:
            raise FileExistsError(f"a dataset already exists at {path}; pass overwrite=True or choose another path")
        shutil.rmtree(path / "data")
    path.mkdir(parents=True, exist_ok=True)
    storage = MinariStorage.new(
        path / "data", observation_space=env.observation_space, action_space=env.action_space,
        env_spec=env.spec, data_format="hdf5", jpeg_encoding=False,
    )
    env.close()
    ends = np.flatnonzero(ds.episode_ends)
    starts = np.concatenate([[0], ends[:-1] + 1])
    buffers = []
    for i, (s, e) in enumerate(zip(starts, ends)):
        buffers.append(EpisodeBuffer(
            id=i,
            observations=np.concatenate([ds.observations[s : e + 1], ds.next_observations[e : e + 1]]),
            actions=ds.actions[s : e + 1], rewards=ds.rewards[s : e + 1],
            terminations=ds.terminations[s : e + 1], truncations=ds.truncations[s : e + 1], infos={},
        ))
    storage.update_episodes(buffers)
    meta: dict[str, Any] = {
        "dataset_id": _dataset_id(path),
        "algorithm_name": str(ds.meta.get("algorithm", "mbrlax")),
        "author": {"mbrlax"},
        "description": str(ds.meta.get("description", f"{ds.env_id} dataset made by mbrlax")),
        "minari_version": _minari_version(),
        "mbrlax": {"env_id": ds.env_id, "env_kwargs": ds.env_kwargs, **ds.meta},
    }
    if ds.ref_min_score is not None and ds.ref_max_score is not None:
        meta.update(ref_min_score=float(ds.ref_min_score), ref_max_score=float(ds.ref_max_score))
    storage.update_metadata(meta)
    return path


def _minari_version() -> str:
    import minari

    return minari.__version__


def _data_dir(path: Path) -> Path:
    if (path / "data" / "metadata.json").exists():
        return path / "data"
    if (path / "metadata.json").exists():
        return path
    raise DatasetError(f"{path} is not a Minari dataset: no data/metadata.json in it (make one with "
                       f"`mbrlax dataset make --env ENV --kind KIND`)")


def _check_raw(data: Path) -> dict:
    """Check metadata.json and every episode's keys before Minari reads them (its errors name no field)."""
    meta = json.loads((data / "metadata.json").read_text())
    for key in ("observation_space", "action_space", "data_format", "total_episodes"):
        if key not in meta:
            raise DatasetError(f"dataset metadata field '{key}' is missing in {data / 'metadata.json'}")
    if meta["data_format"] == "hdf5":
        import h5py

        main = data / "main_data.hdf5"
        if not main.exists():
            raise DatasetError(f"dataset file {main} is missing")
        with h5py.File(main, "r") as f:
            for ep in f.keys():
                for key in EPISODE_KEYS:
                    if key not in f[ep]:
                        raise DatasetError(f"dataset field '{key}' is missing in episode '{ep}' of {main}")
                t = f[ep]["rewards"].shape[0]
                if f[ep]["observations"].shape[0] != t + 1:
                    raise DatasetError(
                        f"dataset field 'observations' of episode '{ep}' has {f[ep]['observations'].shape[0]} rows;"
                        f" Minari stores T+1 observations for the T={t} rewards")
                for key in ("actions", "terminations", "truncations"):
                    if f[ep][key].shape[0] != t:
                        raise DatasetError(f"dataset field '{key}' of episode '{ep}' has {f[ep][key].shape[0]} "
                                           f"rows, expected T={t} (as many as 'rewards')")
    return meta


def load(path: str | os.PathLike, *, env_id: str | None = None, check_env: bool = True) -> OfflineDataset:
    """Read a Minari dataset directory (ours or any Minari 0.5 dataset with Box spaces) and validate it.
    `env_id` overrides the env recorded in the dataset; `check_env` compares the spaces with the env's."""
    import minari

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no dataset at {path} (make one with `mbrlax dataset make --env ENV --kind KIND`)")
    data = _data_dir(path)
    raw = _check_raw(data)
    mds = minari.MinariDataset(data)
    cols: dict[str, list] = {k: [] for k in FIELDS}
    for ep in mds.iterate_episodes():
        o = np.asarray(ep.observations)
        if o.ndim != 2:
            raise DatasetError(f"dataset field 'observations' of episode {ep.id} has shape {o.shape}; mbrlax needs "
                               f"flat Box observations (T+1)×D")
        cols["observations"].append(o[:-1])
        cols["next_observations"].append(o[1:])
        cols["actions"].append(np.asarray(ep.actions).reshape(len(ep.rewards), -1))
        cols["rewards"].append(np.asarray(ep.rewards))
        cols["terminations"].append(np.asarray(ep.terminations, bool))
        cols["truncations"].append(np.asarray(ep.truncations, bool))
    if not cols["rewards"]:
        raise DatasetError(f"dataset {path} has no episodes")
    arrays = {k: np.concatenate(v) for k, v in cols.items()}
    # Minari's episodes end where the data of an episode ends, whatever the flags say.
    ends = np.cumsum([len(r) for r in cols["rewards"]]) - 1
    arrays["truncations"][ends] |= ~arrays["terminations"][ends]
    ours = raw.get("mbrlax", {})
    recorded = ours.get("env_id")
    if recorded is None and raw.get("env_spec"):
        recorded = json.loads(raw["env_spec"]).get("id")
    env_id = env_id or recorded
    if env_id is None:
        raise DatasetError(f"dataset {path} records no environment (no env_spec): pass env_id explicitly")
    meta = {k: v for k, v in ours.items() if k not in ("env_id", "env_kwargs")}
    ds = OfflineDataset(
        **arrays, env_id=env_id, env_kwargs=dict(ours.get("env_kwargs") or {}),
        ref_min_score=raw.get("ref_min_score"), ref_max_score=raw.get("ref_max_score"), meta=meta,
    )
    env = None
    if check_env:
        from mbrlax.envs.make import make

        make(env_id, **ds.env_kwargs)[0].close()  # a clear EnvError for an unknown id
        env = gym.make(env_id, **ds.env_kwargs)
        space = mds.action_space
        if isinstance(space, gym.spaces.Box) and isinstance(env.action_space, gym.spaces.Box) and (
            space.shape != env.action_space.shape
            or not np.allclose(space.low, env.action_space.low) or not np.allclose(space.high, env.action_space.high)
        ):
            raise DatasetError(f"dataset field 'action_space' is {space} but {env_id} has {env.action_space}: the "
                               f"dataset was made for another environment (or another action scaling)")
    ds = validate(ds, env)
    if env is not None:
        env.close()
    return ds


def info(path: str | os.PathLike) -> dict:
    """A summary of a dataset: size, episodes, returns, reference scores, how it was made."""
    ds = load(path, check_env=False)
    rets = ds.episode_returns()
    out = {
        "path": str(path),
        "env": ds.env_id,
        "kind": ds.meta.get("kind"),
        "transitions": len(ds),
        "episodes": int(ds.episode_ends.sum()),
        "terminations": int(ds.terminations.sum()),
        "obs_dim": int(ds.observations.shape[1]),
        "act_dim": int(ds.actions.shape[1]),
        "episode_return_mean": float(rets.mean()) if len(rets) else None,
        "episode_return_std": float(rets.std()) if len(rets) else None,
        "episode_return_min": float(rets.min()) if len(rets) else None,
        "episode_return_max": float(rets.max()) if len(rets) else None,
        "reward_mean": float(ds.rewards.mean()),
        "ref_min_score": ds.ref_min_score,
        "ref_max_score": ds.ref_max_score,
    }
    if len(rets) and ds.ref_min_score is not None and ds.ref_max_score is not None:
        out["normalized_return_mean"] = float(ds.normalized_score(rets.mean()))
    for k in ("behaviour", "sac_steps", "policy_step", "policy_return", "expert_step", "seed", "description"):
        if k in ds.meta:
            out[k] = ds.meta[k]
    return out


# ---- collecting transitions of a policy ---------------------------------------------------------------


def env_slug(env_id: str) -> str:
    """HalfCheetah-v5 -> halfcheetah, mbrlax/Pendulum-v0 -> pendulum (D4RL-style names)."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1]).lower()


def collect(
    env_id: str, policy: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None, n: int, *, seed: int,
    env_kwargs: dict | None = None,
) -> OfflineDataset:
    """`n` transitions of `policy(obs, rng) -> action in [-1, 1]` (None: uniformly random) in the real env,
    episode after episode; actions are stored in the env's own units. The last episode is cut at n."""
    from mbrlax.envs.make import make

    env, spec = make(env_id, **(env_kwargs or {}))
    low, high = env.unwrapped.action_space.low, env.unwrapped.action_space.high
    rng = np.random.default_rng(seed)
    obs_rows: np.ndarray = np.zeros((n, spec.obs_dim), np.float32)
    act_rows: np.ndarray = np.zeros((n, spec.act_dim), np.float32)
    rew_rows: np.ndarray = np.zeros(n, np.float32)
    next_rows: np.ndarray = np.zeros((n, spec.obs_dim), np.float32)
    term: np.ndarray = np.zeros(n, bool)
    trunc: np.ndarray = np.zeros(n, bool)
    episode = 0
    obs, _ = env.reset(seed=seed)
    for i in range(n):
        a = rng.uniform(-1, 1, spec.act_dim).astype(np.float32) if policy is None else policy(obs, rng)
        nxt, r, te, tr, _ = env.step(a)
        obs_rows[i], rew_rows[i], next_rows[i] = obs, r, nxt
        act_rows[i] = low + (np.asarray(a) + 1.0) * 0.5 * (high - low)  # stored in the env's own units
        term[i], trunc[i] = te, tr
        obs = nxt
        if te or tr:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    natural_end = bool(term[-1] or trunc[-1])
    trunc[-1] = trunc[-1] or not term[-1]
    return OfflineDataset(obs_rows, act_rows, rew_rows, next_rows, term, trunc, env_id, dict(env_kwargs or {}),
                          meta={"cut_episodes": [] if natural_end else [n - 1]})


