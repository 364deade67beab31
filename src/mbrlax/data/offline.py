"""Offline datasets: Minari-format read/write, validation, and D4RL-style generation with our own SAC.

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

Generation (`make_dataset`, `mbrlax dataset make`) follows D4RL's recipe with a modest budget:
    1. train SAC (mbrlax.algorithms.mbpo with real_ratio=1, one update per step) for `sac_steps` steps,
       snapshotting the actor and its evaluation return every `sac_steps / snapshots` steps. Cached and
       resumable in `policies/`: the five kinds reuse one training run.
    2. reference returns: a uniformly random policy (ref_min_score) and the best snapshot ("expert";
       ref_max_score), each averaged over `ref_episodes` episodes.
    3. the data: random = uniform random actions; medium = the stochastic policy of the snapshot whose
       return is closest to a third of the expert's; medium-replay = SAC's replay buffer up to that
       snapshot; expert = the stochastic best snapshot; medium-expert = medium + expert.
"Expert" here means "SAC after `sac_steps` steps", usually well below D4RL's 1M-step SAC experts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import gymnasium as gym
import numpy as np
import tyro

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
    trunc = np.zeros(len(obs), bool)
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


# ---- generation: SAC policies (cached, resumable) ----------------------------------------------------

# Budgets per environment. D4RL trains its SAC experts for 1M steps; on a shared 2-core CPU we cannot, so
# "expert" is "SAC after sac_steps steps" (docs/datasets.md lists the returns these budgets reach).
DATA_PRESETS: dict[str, dict[str, Any]] = {
    "HalfCheetah-v5": dict(sac_steps=120_000, size=50_000, init_steps=5000),
    "Hopper-v5": dict(sac_steps=120_000, size=50_000, init_steps=5000),
    "Walker2d-v5": dict(sac_steps=100_000, size=100_000, init_steps=5000),
    "Pendulum-v1": dict(sac_steps=6000, size=20_000, init_steps=400),
    "mbrlax/Pendulum-v0": dict(sac_steps=6000, size=20_000, init_steps=400),
}
DATA_DEFAULTS: dict[str, Any] = dict(sac_steps=100_000, size=100_000, init_steps=5000)


def env_slug(env_id: str) -> str:
    """HalfCheetah-v5 -> halfcheetah, mbrlax/Pendulum-v0 -> pendulum (D4RL-style names)."""
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1]).lower()


@dataclass
class PolicySet:
    """The cached SAC run of one env: snapshots (step, eval return, actor file), and what acting needs."""

    cache: Path
    env_id: str
    env_kwargs: dict
    snapshots: list[dict]
    sac_hidden: tuple[int, ...]

    def best(self) -> dict:
        return max(self.snapshots, key=lambda s: s["eval_return"])

    def medium(self, random_return: float, fraction: float = 1 / 3) -> dict:
        """The snapshot whose return is closest to `fraction` of the way from the random policy's return to
        the expert's (a normalized score of 33; for HalfCheetah/Hopper about a third of the expert's return)."""
        target = random_return + fraction * (self.best()["eval_return"] - random_return)
        return min(self.snapshots, key=lambda s: abs(s["eval_return"] - target))

    def actor(self, snap: dict):
        with open(self.cache / snap["file"], "rb") as fh:
            return pickle.load(fh)["actor"]


def train_policies(
    env_id: str, *, sac_steps: int, snapshots: int = 10, seed: int = 0, init_steps: int = 5000,
    cache_root: str | os.PathLike = "datasets/policies", env_kwargs: dict | None = None,
    sac_hidden: tuple[int, ...] = (256, 256), eval_episodes: int = 5, progress: bool = True,
) -> PolicySet:
    """Train SAC up to `sac_steps` steps (or continue the cached run of this env and seed), saving the actor
    every `snapshot_every` steps with its deterministic evaluation return. The interval is fixed when the
    cache is created (sac_steps / snapshots); a later, larger budget continues the same run, a smaller one
    uses the snapshots up to it. Safe to kill and re-run."""
    from mbrlax import runs
    from mbrlax.algorithms import mbpo
    from mbrlax.envs.make import make

    env_kwargs = dict(env_kwargs or {})
    cache = Path(cache_root) / f"{env_slug(env_id)}-s{seed}"
    run = cache / "sac"
    index_path, meta_path = cache / "snapshots.json", cache / "cache.json"
    cache.mkdir(parents=True, exist_ok=True)
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if tuple(meta["sac_hidden"]) != tuple(sac_hidden):
            raise ValueError(f"the cached SAC run in {cache} has sac_hidden={tuple(meta['sac_hidden'])}, not "
                             f"{tuple(sac_hidden)}: use another cache root or seed")
    else:
        meta = {"env_id": env_id, "snapshot_every": max(sac_steps // snapshots, 1), "sac_hidden": list(sac_hidden)}
        meta_path.write_text(json.dumps(meta, indent=1))
    every = int(meta["snapshot_every"])
    index = json.loads(index_path.read_text()) if index_path.exists() else []
    _, spec = make(env_id, **env_kwargs)
    for t in range(every, sac_steps + 1, every):
        if any(s["step"] == t for s in index):
            continue
        if (run / "checkpoint.pkl").exists():
            mbpo.train(mbpo.Config(resume=str(run), steps=t, progress=progress, tensorboard=False))
        else:
            mbpo.train(mbpo.Config(
                env=env_id, seed=seed, steps=t, real_ratio=1.0, updates_per_step=1, init_steps=init_steps,
                target_entropy=-float(spec.act_dim), eval_every=every, eval_episodes=eval_episodes,
                checkpoint_every=every, replay_size=max(sac_steps, 1_000_000), sac_hidden=tuple(sac_hidden),
                env_kwargs=env_kwargs, run_dir=str(run), progress=progress, tensorboard=False,
            ))
        payload = runs.load_checkpoint(run)
        step = int(payload["t"])
        ret = [r["eval/return_mean"] for r in runs.read_metrics(run) if r["step"] == step and "eval/return_mean" in r]
        file = f"actor_{step:08d}.pkl"
        with open(cache / file, "wb") as fh:
            pickle.dump({"actor": payload["sac"].actor, "step": step}, fh)
        index.append({"step": step, "eval_return": float(ret[-1]), "file": file})
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, index_path)
    usable = sorted((s for s in index if s["step"] <= sac_steps), key=lambda s: s["step"])
    if not usable:
        raise ValueError(f"sac_steps={sac_steps} is below the cached run's snapshot interval {every}")
    return PolicySet(cache, env_id, env_kwargs, usable, tuple(sac_hidden))


def _sac_for(policies: PolicySet):
    from mbrlax.agents.sac import SAC
    from mbrlax.envs.make import make

    _, spec = make(policies.env_id, **policies.env_kwargs)
    return SAC(spec.obs_dim, spec.act_dim, hidden=policies.sac_hidden)


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
    cols = {k: np.zeros((n, *s), np.float32) for k, s in
            dict(observations=(spec.obs_dim,), actions=(spec.act_dim,), rewards=(), next_observations=(spec.obs_dim,)).items()}
    term, trunc = np.zeros(n, bool), np.zeros(n, bool)
    episode = 0
    obs, _ = env.reset(seed=seed)
    for i in range(n):
        a = rng.uniform(-1, 1, spec.act_dim).astype(np.float32) if policy is None else policy(obs, rng)
        nxt, r, te, tr, _ = env.step(a)
        cols["observations"][i], cols["actions"][i], cols["rewards"][i], cols["next_observations"][i] = (
            obs, low + (np.asarray(a) + 1.0) * 0.5 * (high - low), r, nxt)
        term[i], trunc[i] = te, tr
        obs = nxt
        if te or tr:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    natural_end = bool(term[-1] or trunc[-1])
    trunc[-1] = trunc[-1] or not term[-1]
    return OfflineDataset(**cols, terminations=term, truncations=trunc, env_id=env_id, env_kwargs=dict(env_kwargs or {}),
                          meta={"cut_episodes": [] if natural_end else [n - 1]})


def _actor_policy(sac, actor, deterministic: bool):
    import jax
    import jax.numpy as jnp

    mean = jax.jit(sac.mean_action)
    sample = jax.jit(sac.sample_action)

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        o = jnp.asarray(obs, jnp.float32)[None]
        if deterministic:
            return np.asarray(mean(actor, o))[0]
        return np.asarray(sample(actor, o, jax.random.key(int(rng.integers(2**31)))))[0]

    return act


def reference_returns(policies: PolicySet, episodes: int = 10, seed: int = 50_000) -> dict:
    """ref_min_score (uniform random policy) and ref_max_score (best snapshot, deterministic), cached."""
    from mbrlax.envs.make import make
    from mbrlax.evaluation import evaluate

    path = policies.cache / "reference.json"
    if path.exists():
        ref = json.loads(path.read_text())
        if ref.get("episodes") == episodes and ref.get("expert_step") == policies.best()["step"]:
            return ref
    env, spec = make(policies.env_id, **policies.env_kwargs)
    rng = np.random.default_rng(seed)
    rand, _, _ = evaluate(env, lambda o: rng.uniform(-1, 1, spec.act_dim).astype(np.float32), episodes, seed)
    best = policies.best()
    act = _actor_policy(_sac_for(policies), policies.actor(best), deterministic=True)
    expert, _, _ = evaluate(env, lambda o: act(o, rng), episodes, seed)
    env.close()
    ref = {"ref_min_score": rand, "ref_max_score": expert, "episodes": episodes, "expert_step": best["step"]}
    path.write_text(json.dumps(ref, indent=1))
    return ref


def make_dataset(
    env_id: str, kind: Kind, *, size: int | None = None, seed: int = 0, sac_steps: int | None = None,
    snapshots: int = 10, init_steps: int | None = None, out: str | os.PathLike | None = None,
    root: str | os.PathLike = "datasets", env_kwargs: dict | None = None, ref_episodes: int = 10,
    overwrite: bool = False, progress: bool = True, sac_hidden: tuple[int, ...] = (256, 256),
) -> Path:
    """Generate one D4RL-style dataset (see the module docstring) and write it at `out`
    (default ROOT/mbrlax/<env>-<kind>-v0). The SAC run behind it is cached under ROOT/policies."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind '{kind}'; choose one of {', '.join(KINDS)}")
    preset = {**DATA_DEFAULTS, **DATA_PRESETS.get(env_id, {})}
    size = size or preset["size"]
    sac_steps = sac_steps or preset["sac_steps"]
    init_steps = init_steps if init_steps is not None else min(preset["init_steps"], sac_steps // 2)
    out = Path(out) if out is not None else Path(root) / "mbrlax" / f"{env_slug(env_id)}-{kind}-v0"
    if (out / "data").exists() and not overwrite:
        raise FileExistsError(f"a dataset already exists at {out}; pass --overwrite to replace it")
    tic = time.perf_counter()

    # 1. SAC policies (cached: every kind of one env reuses them)
    policies = train_policies(env_id, sac_steps=sac_steps, snapshots=snapshots, seed=seed, init_steps=init_steps,
                              cache_root=Path(root) / "policies", env_kwargs=env_kwargs, progress=progress,
                              sac_hidden=sac_hidden)
    # 2. reference returns for normalized scores
    ref = reference_returns(policies, ref_episodes)
    best, medium = policies.best(), policies.medium(ref["ref_min_score"])
    if ref["ref_max_score"] <= ref["ref_min_score"]:
        import warnings

        warnings.warn(f"the best SAC policy ({ref['ref_max_score']:.1f}) is no better than the random policy "
                      f"({ref['ref_min_score']:.1f}) after {sac_steps} steps: normalized scores will be meaningless; "
                      f"raise --sac-steps", stacklevel=2)
    sac = _sac_for(policies)
    common = dict(sac_steps=sac_steps, expert_step=best["step"], expert_eval_return=best["eval_return"],
                  snapshots=policies.snapshots)

    # 3. the data itself
    def rollouts(snap: dict | None, n: int, s: int) -> OfflineDataset:
        pol = None if snap is None else _actor_policy(sac, policies.actor(snap), deterministic=False)
        return collect(env_id, pol, n, seed=s, env_kwargs=policies.env_kwargs)

    if kind == "random":
        ds = rollouts(None, size, seed)
        ds.meta.update(behaviour="uniform random actions")
    elif kind in ("medium", "expert"):
        snap = medium if kind == "medium" else best
        ds = rollouts(snap, size, seed + (1 if kind == "medium" else 2) * 1_000_000)
        ds.meta.update(behaviour=f"stochastic SAC actor at step {snap['step']}", policy_step=snap["step"],
                       policy_return=snap["eval_return"])
    elif kind == "medium-expert":
        parts = [rollouts(medium, size, seed + 1_000_000), rollouts(best, size, seed + 2_000_000)]
        ds = concatenate(parts)
        ds.meta.update(behaviour=f"stochastic SAC actors at steps {medium['step']} and {best['step']}",
                       cut_episodes=[len(parts[0]) - 1, 2 * size - 1])
    else:  # medium-replay: SAC's own replay buffer, oldest first, up to the medium snapshot
        from mbrlax import runs

        payload = runs.load_checkpoint(policies.cache / "sac")
        data = payload["real"]["data"]
        m = medium["step"]
        if payload["real"]["capacity"] < int(payload["t"]):
            raise DatasetError(f"the cached SAC replay buffer wrapped (capacity {payload['real']['capacity']} < "
                               f"{payload['t']} steps): its oldest transitions are gone; use a fresh cache")
        env = gym.make(env_id, **policies.env_kwargs)
        low, high = env.action_space.low, env.action_space.high
        env.close()
        obs, nxt, term = data["obs"][:m], data["next_obs"][:m], data["terminated"][:m].astype(bool)
        ds = OfflineDataset(
            obs, low + (data["action"][:m] + 1.0) * 0.5 * (high - low), data["reward"][:m], nxt, term,
            split_episodes(obs, nxt, term), env_id, dict(policies.env_kwargs),
            meta={"cut_episodes": [m - 1] if not term[-1] else []},
        )
        ds.meta.update(behaviour=f"SAC replay buffer of steps 0-{m} (random for the first {init_steps})",
                       policy_step=m, policy_return=medium["eval_return"])
    ds.ref_min_score, ds.ref_max_score = ref["ref_min_score"], ref["ref_max_score"]
    ds.meta.update(kind=kind, algorithm="mbrlax SAC", seed=seed, **common,
                   seconds=time.perf_counter() - tic,
                   description=f"{env_id} {kind}: {ds.meta['behaviour']}; reference returns random "
                               f"{ref['ref_min_score']:.1f}, expert (SAC after {best['step']} steps) "
                               f"{ref['ref_max_score']:.1f}")
    return save(ds, out, overwrite=overwrite)


# ---- CLI: mbrlax dataset make|info -------------------------------------------------------------------


@dataclass
class MakeArgs:
    env: str = "HalfCheetah-v5"
    """Gymnasium environment id."""
    kind: Kind = "medium"
    """Which D4RL-style dataset: random, medium, medium-replay, expert, medium-expert."""
    size: int | None = None
    """Transitions (per part for medium-expert); default: the env's preset (50,000 for HalfCheetah/Hopper)."""
    sac_steps: int | None = None
    """SAC training steps behind medium/expert; default: the env's preset. Cached and resumable."""
    snapshots: int = 10
    """Actor snapshots saved along the SAC run (medium is chosen among them)."""
    seed: int = 0
    """Seed of the SAC run and of the data collection."""
    root: str = "datasets"
    """Root directory: datasets go to ROOT/mbrlax/<env>-<kind>-v0, SAC policies to ROOT/policies."""
    out: str | None = None
    """Write the dataset exactly here instead."""
    ref_episodes: int = 10
    """Episodes averaged for the random and expert reference returns."""
    overwrite: bool = False
    """Replace an existing dataset at the output path."""
    progress: bool = True
    """Show progress bars while SAC trains."""


@dataclass
class InfoArgs:
    path: tyro.conf.Positional[str]
    """Dataset directory."""


def _print_info(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, title=summary["path"])
    for k, v in summary.items():
        if k in ("path",):
            continue
        table.add_row(k, f"{v:.2f}" if isinstance(v, float) else str(v))
    Console().print(table)


def dataset_command(argv: list[str]) -> int:
    """`mbrlax dataset make [...]` and `mbrlax dataset info PATH`."""
    usage = "usage: mbrlax dataset make --env ID --kind KIND [...] | mbrlax dataset info PATH"
    if not argv or argv[0] not in ("make", "info"):
        print(usage)
        return 2
    if argv[0] == "make":
        a = tyro.cli(MakeArgs, args=argv[1:], prog="mbrlax dataset make")
        path = make_dataset(a.env, a.kind, size=a.size, seed=a.seed, sac_steps=a.sac_steps, snapshots=a.snapshots,
                            out=a.out, root=a.root, ref_episodes=a.ref_episodes, overwrite=a.overwrite,
                            progress=a.progress)
        _print_info(info(path))
        return 0

    a = tyro.cli(InfoArgs, args=argv[1:], prog="mbrlax dataset info")
    _print_info(info(a.path))
    return 0
