"""Behaviour cloning: the offline baseline MOPO is compared against (as in the MOPO paper's Table 1).

    Initialize a deterministic policy π_θ(s) = tanh(MLP_θ(s))
    repeat `steps` times:
        Sample a batch (s, a) from the dataset D                                        # 1. sample
        θ ← θ − η ∇_θ (1/B) Σ ‖π_θ(s) − a‖²                                            # 2. regress
    Every `eval_every` steps: run π in the real environment, for reporting only        # 3. evaluate

Actions are regressed in the agents' [-1, 1] (the dataset's own units rescaled). `updates_per_call` steps
are fused in one `lax.scan`. Evaluation reports D4RL's normalized score with the dataset's reference returns
(the dataset loading and the evaluation are MOPO's, mopo.py). The unit of a run's length is a gradient step;
`--resume RUN --steps N` continues a run to N.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrlax import runs
from mbrlax.agents.nets import MLP
from mbrlax.algorithms.common import RunOptions, check_positive
from mbrlax.algorithms.mopo import DatasetOptions, Result, evaluate_offline, offline_result, open_offline
from mbrlax.data import offline
from mbrlax.envs.make import make


@dataclass
class Config(RunOptions, DatasetOptions):
    """Behaviour cloning on a fixed dataset."""

    steps: int = 50_000
    """Gradient steps; may grow on a resume."""
    batch_size: int = 256
    lr: float = 1e-3
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the policy MLP."""
    updates_per_call: int = 500
    """Gradient steps fused in one device call (a divisor of steps, eval_every and checkpoint_every)."""
    eval_every: int = 5000
    """Evaluate in the real environment (reporting only) every this many gradient steps."""
    eval_episodes: int = 10
    checkpoint_every: int | None = None
    """Checkpoint every this many gradient steps; None: at every evaluation."""


def resolve(cfg: Config, ds: offline.OfflineDataset) -> Config:
    """The dataset's env unless one is given; every length a multiple of updates_per_call."""
    cfg = dataclasses.replace(cfg, env=cfg.env or ds.env_id, checkpoint_every=cfg.checkpoint_every or cfg.eval_every)
    check_positive(cfg, "steps", "batch_size", "updates_per_call", "eval_every", "eval_episodes", "checkpoint_every")
    for name in ("steps", "eval_every", "checkpoint_every"):
        if getattr(cfg, name) % cfg.updates_per_call:
            raise ValueError(f"{name}={getattr(cfg, name)} must be a multiple of updates_per_call="
                             f"{cfg.updates_per_call}")
    return cfg


def _policy(hidden: tuple[int, ...], act_dim: int) -> MLP:
    return MLP(tuple(hidden), act_dim)


@partial(jax.jit, static_argnames=("net", "tx", "g", "batch_size"))
def bc_updates(net: MLP, tx: optax.GradientTransformation, params, opt_state, obs: jax.Array, act: jax.Array,
               key: jax.Array, g: int, batch_size: int):
    """g regression steps on random batches of the dataset (obs N×D, act N×A in [-1, 1])."""

    def loss_fn(p, o, a):
        return jnp.mean(jnp.sum((jnp.tanh(net.apply(p, o)) - a) ** 2, -1))

    def step(carry, k):
        params, opt_state = carry
        idx = jax.random.randint(k, (batch_size,), 0, obs.shape[0])
        loss, grads = jax.value_and_grad(loss_fn)(params, obs[idx], act[idx])
        upd, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, upd), opt_state), loss

    key, k = jax.random.split(key)
    (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), jax.random.split(k, g))
    return params, opt_state, losses.mean(), key


def upgrade_legacy(old: dict) -> dict:
    """A format-1 (pickle) checkpoint's state in today's layout (`mbrlax checkpoint convert`)."""
    return dict(t=old["t"], key=jax.random.wrap_key_data(np.asarray(old["key"])), params=old["params"],
                opt_state=old["opt_state"])


def train(cfg: Config) -> Result:
    """Behaviour cloning; returns the final evaluation (and normalized score) and the run directory."""
    cfg, ds, env, spec, data = open_offline(cfg, "bc", resolve, may_change=("steps",))
    obs, act = jnp.asarray(data.obs), jnp.asarray(data.action)
    net, tx = _policy(cfg.hidden, spec.act_dim), optax.adam(cfg.lr)
    apply = jax.jit(lambda p, o: jnp.tanh(net.apply(p, o)))

    def policy(o: np.ndarray) -> np.ndarray:
        return np.asarray(apply(st["params"], jnp.asarray(o[None], jnp.float32)))[0]

    name = f"bc-{offline.env_slug(ds.env_id)}-{ds.meta.get('kind', 'data')}-s{cfg.seed}"
    with runs.Run(cfg, "bc", name, cfg.steps, unit="gradient steps") as run, env:
        key, k_init = jax.random.split(jax.random.key(cfg.seed))
        params = net.init(k_init, obs[:1])
        st = dict(t=0, key=key, params=params, opt_state=tx.init(params))
        if run.resumed:
            saved = run.resumed
            st = dict(t=int(saved["t"]), key=saved["key"], params=runs.check_like("params", saved["params"], params),
                      opt_state=runs.check_like("opt_state", saved["opt_state"], st["opt_state"]))
        while st["t"] < cfg.steps:
            # 1.-2. sample batches from D and regress the actions
            with run.timer("policy"):
                st["params"], st["opt_state"], loss, st["key"] = bc_updates(
                    net, tx, st["params"], st["opt_state"], obs, act, st["key"], cfg.updates_per_call, cfg.batch_size)
                loss = float(loss)
            st["t"] = t = st["t"] + cfg.updates_per_call
            if run.due(t, cfg.eval_every, cfg.steps):
                # 3. evaluate in the real environment (reporting only)
                evaluate_offline(run, t, env, policy, ds, cfg.eval_episodes, 10_000 + cfg.seed, {"bc/loss": loss})
            if run.due(t, cfg.checkpoint_every, cfg.steps):
                run.save(t, st)
            run.progress(t, loss=f"loss {loss:.3g}")
        return offline_result(run, ds)


def load_policy(run_dir: str | Path):
    """The cloned policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    cfg = runs.config_from_dict(Config, runs.load_config(run_dir))
    env, spec = make(cfg.env)
    env.close()
    net = _policy(cfg.hidden, spec.act_dim)
    params = runs.check_like("params", runs.load_checkpoint(run_dir)["params"],
                             net.init(jax.random.key(0), jnp.zeros((1, spec.obs_dim))))
    apply = jax.jit(lambda p, o: jnp.tanh(net.apply(p, o)))
    return (lambda o: np.asarray(apply(params, jnp.asarray(o[None], jnp.float32)))[0]), cfg
