"""Making D4RL-style offline datasets with mbrlax's own SAC (`mbrlax dataset make`), and `mbrlax dataset info`.

This is the part of the offline data that trains a policy, so it lives outside mbrlax/data (which only reads,
writes, validates and collects: nothing there imports the algorithms). The recipe follows D4RL with a modest
budget:
    1. train SAC (mbrlax.algorithms.mbpo with real_ratio=1, one update per step) for `sac_steps` steps,
       snapshotting the actor and its evaluation return every `sac_steps / snapshots` steps. Cached and
       resumable in ROOT/policies: the five kinds reuse one training run (an ordinary mbrlax run directory,
       ROOT/policies/<env>-s<seed>/sac, resumed to each next snapshot).
    2. reference returns: a uniformly random policy (ref_min_score) and the best snapshot ("expert";
       ref_max_score), each averaged over `ref_episodes` episodes.
    3. the data: random = uniform random actions; medium = the stochastic policy of the snapshot whose
       return is closest to a third of the expert's; medium-replay = SAC's replay buffer up to that
       snapshot; expert = the stochastic best snapshot; medium-expert = medium + expert.
"Expert" here means "SAC after `sac_steps` steps", usually well below D4RL's 1M-step SAC experts.
Actor snapshots are `actor_<step>.npz` (the actor's arrays, read with allow_pickle=False, no code).
"""

from __future__ import annotations

import functools
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import jax
import jax.numpy as jnp
import numpy as np
import tyro

from mbrlax import checkpoint, runs
from mbrlax.agents.sac import SAC
from mbrlax.algorithms import mbpo
from mbrlax.data.offline import (
    KINDS,
    DatasetError,
    Kind,
    OfflineDataset,
    collect,
    concatenate,
    env_slug,
    info,
    save,
    split_episodes,
)
from mbrlax.envs.make import make
from mbrlax.evaluation import evaluate

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


# ---- 1. SAC policies (cached, resumable) -------------------------------------------------------------


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

    @functools.cached_property
    def sac(self) -> SAC:
        _, spec = make(self.env_id, **self.env_kwargs)
        return SAC(spec.obs_dim, spec.act_dim, hidden=self.sac_hidden)

    def actor(self, snap: dict) -> Any:
        """The actor parameters of a snapshot (its arrays, checked against a fresh actor's shapes)."""
        path = self.cache / snap["file"]
        if path.suffix != ".npz":
            raise DatasetError(f"{path} is a pickled actor from an older mbrlax; delete {self.cache} and make the "
                               f"datasets again (the SAC run is retrained)")
        with np.load(path, allow_pickle=False) as f:
            leaves = checkpoint.Leaves(f[f"arr_{i}"] for i in range(len(f.files)))
        return runs.check_like(f"actor {path.name}", leaves, self.sac.init(jax.random.key(0)).actor)


def train_policies(
    env_id: str, *, sac_steps: int, snapshots: int = 10, seed: int = 0, init_steps: int = 5000,
    cache_root: str | os.PathLike = "datasets/policies", env_kwargs: dict | None = None,
    sac_hidden: tuple[int, ...] = (256, 256), eval_episodes: int = 5, progress: bool = True,
) -> PolicySet:
    """Train SAC up to `sac_steps` steps (or continue the cached run of this env and seed), saving the actor
    every `snapshot_every` steps with its deterministic evaluation return. The interval is fixed when the
    cache is created (sac_steps / snapshots); a later, larger budget continues the same run, a smaller one
    uses the snapshots up to it. Safe to kill and re-run."""
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
    policies = PolicySet(cache, env_id, env_kwargs, [], tuple(sac_hidden))
    for t in range(every, sac_steps + 1, every):
        if any(s["step"] == t for s in index):
            continue
        if checkpoint.exists(run) or (run / "checkpoint.pkl").exists():  # a pickle: the resume says how to convert
            mbpo.train(mbpo.Config(resume=str(run), steps=t, real_ratio=1.0, progress=progress, tensorboard=False))
        else:
            mbpo.train(mbpo.Config(
                env=env_id, seed=seed, steps=t, real_ratio=1.0, updates_per_step=1, init_steps=init_steps,
                target_entropy=-float(spec.act_dim), eval_every=every, eval_episodes=eval_episodes,
                checkpoint_every=every, replay_size=max(sac_steps, 1_000_000), sac_hidden=tuple(sac_hidden),
                env_kwargs=env_kwargs, run_dir=str(run), progress=progress, tensorboard=False,
            ))
        saved = runs.load_checkpoint(run)
        step = int(saved["t"])
        actor = runs.check_like("sac", saved["sac"], policies.sac.init(jax.random.key(0))).actor
        ret = [r["eval/return_mean"] for r in runs.read_metrics(run) if r["step"] == step and "eval/return_mean" in r]
        file = f"actor_{step:08d}.npz"
        np.savez(cache / file, *(np.asarray(x) for x in jax.tree.leaves(actor)))
        index.append({"step": step, "eval_return": float(ret[-1]), "file": file})
        tmp = index_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, index_path)
    usable = sorted((s for s in index if s["step"] <= sac_steps), key=lambda s: s["step"])
    if not usable:
        raise ValueError(f"sac_steps={sac_steps} is below the cached run's snapshot interval {every}")
    policies.snapshots = usable
    return policies


def _actor_policy(sac: SAC, actor: Any, deterministic: bool):
    """`act(obs, rng) -> action in [-1, 1]` of a SAC actor: its mean, or a draw keyed from `rng`."""
    mean = jax.jit(sac.mean_action)
    sample = jax.jit(sac.sample_action)

    def act(obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        o = jnp.asarray(obs, jnp.float32)[None]
        if deterministic:
            return np.asarray(mean(actor, o))[0]
        return np.asarray(sample(actor, o, jax.random.key(int(rng.integers(2**31)))))[0]

    return act


# ---- 2. reference returns, 3. the data -----------------------------------------------------------------


def reference_returns(policies: PolicySet, episodes: int = 10, seed: int = 50_000) -> dict:
    """ref_min_score (uniform random policy) and ref_max_score (best snapshot, deterministic), cached."""
    path = policies.cache / "reference.json"
    if path.exists():
        ref = json.loads(path.read_text())
        if ref.get("episodes") == episodes and ref.get("expert_step") == policies.best()["step"]:
            return ref
    env, spec = make(policies.env_id, **policies.env_kwargs)
    rng = np.random.default_rng(seed)
    rand, _, _ = evaluate(env, lambda o: rng.uniform(-1, 1, spec.act_dim).astype(np.float32), episodes, seed)
    best = policies.best()
    act = _actor_policy(policies.sac, policies.actor(best), deterministic=True)
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
        warnings.warn(f"the best SAC policy ({ref['ref_max_score']:.1f}) is no better than the random policy "
                      f"({ref['ref_min_score']:.1f}) after {sac_steps} steps: normalized scores will be meaningless; "
                      f"raise --sac-steps", stacklevel=2)
    sac = policies.sac
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
