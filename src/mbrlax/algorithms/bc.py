"""Behaviour cloning: the offline baseline MOPO is compared against (as in the MOPO paper's Table 1).

    Initialize a deterministic policy π_θ(s) = tanh(MLP_θ(s))
    repeat `steps` times:
        Sample a batch (s, a) from the dataset D                                        # 1. sample
        θ ← θ − η ∇_θ (1/B) Σ ‖π_θ(s) − a‖²                                            # 2. regress
    Every `eval_every` steps: run π in the real environment, for reporting only        # 3. evaluate

Actions are regressed in the agents' [-1, 1] (the dataset's own units rescaled). `updates_per_call` steps
are fused in one `lax.scan`. Evaluation reports D4RL's normalized score with the dataset's reference returns.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbrlax import runs
from mbrlax.agents.nets import MLP
from mbrlax.algorithms.common import Result as BaseResult
from mbrlax.data import offline
from mbrlax.envs.make import make
from mbrlax.evaluation import evaluate


@dataclass
class Config:
    """Behaviour cloning on a fixed dataset."""

    dataset: str = ""
    """Path of a Minari dataset directory (make one with `mbrlax dataset make`)."""
    env: str | None = None
    """Environment of the dataset (None: the one the dataset records); used only for evaluation."""
    seed: int = 0
    """Seed of everything."""
    steps: int = 50_000
    """Gradient steps."""
    batch_size: int = 256
    lr: float = 1e-3
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of the policy MLP."""
    updates_per_call: int = 500
    """Gradient steps fused in one device call (a divisor of eval_every)."""
    eval_every: int = 5000
    """Evaluate in the real environment (reporting only) every this many gradient steps."""
    eval_episodes: int = 10
    run_root: str = "runs"
    run_dir: str | None = None
    """Use exactly this run directory (created if needed) instead of a new one under run_root."""
    resume: str | None = None
    """Continue the run in this directory from its last checkpoint."""
    progress: bool = True
    tensorboard: bool = True


@dataclass
class Result(BaseResult):
    final_normalized_score: float | None = None


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


def train(cfg: Config) -> Result:
    """Behaviour cloning; returns the final evaluation (and normalized score) and the run directory."""
    if cfg.resume is not None:
        saved = runs.load_config(cfg.resume)
        saved.update(run_dir=cfg.resume, resume=cfg.resume, progress=cfg.progress, tensorboard=cfg.tensorboard)
        cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    if not cfg.dataset:
        raise ValueError("no dataset given: pass --dataset PATH (make one with `mbrlax dataset make`)")
    if cfg.eval_every % cfg.updates_per_call or cfg.steps % cfg.updates_per_call:
        raise ValueError(f"eval_every={cfg.eval_every} and steps={cfg.steps} must be multiples of "
                         f"updates_per_call={cfg.updates_per_call}")
    ds = offline.load(cfg.dataset, env_id=cfg.env)
    cfg = dataclasses.replace(cfg, env=cfg.env or ds.env_id)
    env, spec = make(cfg.env, **ds.env_kwargs)
    space = env.unwrapped.action_space
    data = ds.transitions(space.low, space.high)
    obs, act = jnp.asarray(data.obs), jnp.asarray(data.action)
    net, tx = _policy(cfg.hidden, spec.act_dim), optax.adam(cfg.lr)

    key = jax.random.key(cfg.seed)
    key, k_init = jax.random.split(key)
    params = net.init(k_init, obs[:1])
    opt_state, t = tx.init(params), 0
    if cfg.resume is not None:
        run_dir = Path(cfg.resume)
        payload = runs.load_checkpoint(run_dir)
        params = runs.check_like("params", payload["params"], params)
        opt_state = runs.check_like("opt_state", payload["opt_state"], opt_state)
        key, t = jax.random.wrap_key_data(jnp.asarray(payload["key"])), int(payload["t"])
    else:
        run_dir = Path(cfg.run_dir) if cfg.run_dir else runs.new_run_dir(
            cfg.run_root, f"bc-{offline.env_slug(ds.env_id)}-{ds.meta.get('kind', 'data')}-s{cfg.seed}")
        run_dir.mkdir(parents=True, exist_ok=True)
        runs.save_config(run_dir, cfg, algorithm="bc")
    logger = runs.MetricsLogger(run_dir, tensorboard=cfg.tensorboard)
    logger.truncate_after(t)
    evals = [(r["step"], r["eval/return_mean"]) for r in runs.read_metrics(run_dir) if "eval/return_mean" in r] \
        if (run_dir / "metrics.jsonl").exists() else []
    apply = jax.jit(lambda p, o: jnp.tanh(net.apply(p, o)))
    has_ref = ds.ref_min_score is not None and ds.ref_max_score is not None
    bar = runs.ProgressBar(cfg.steps, f"bc {offline.env_slug(ds.env_id)}", cfg.progress, t)
    tic = time.perf_counter()
    try:
        while t < cfg.steps:
            # 1.-2. sample batches from D and regress the actions
            params, opt_state, loss, key = bc_updates(net, tx, params, opt_state, obs, act, key,
                                                      cfg.updates_per_call, cfg.batch_size)
            t += cfg.updates_per_call
            if t % cfg.eval_every == 0 or t == cfg.steps:
                # 3. evaluate in the real environment (reporting only)
                mean, std, _ = evaluate(env, lambda o: np.asarray(apply(params, jnp.asarray(o[None], jnp.float32)))[0],
                                        cfg.eval_episodes, seed=10_000 + cfg.seed)
                evals.append((t, mean))
                row = {"eval/return_mean": mean, "eval/return_std": std, "bc/loss": float(loss),
                       "time/total": time.perf_counter() - tic}
                if has_ref:
                    row["eval/normalized_score"] = float(ds.normalized_score(mean))
                logger.log(t, row)
                runs.plot_runs([run_dir], run_dir / "curve.png", title=run_dir.name)
                runs.save_checkpoint(run_dir, dict(config=dataclasses.asdict(cfg), t=t, params=runs.to_host(params),
                                                   opt_state=runs.to_host(opt_state),
                                                   key=np.asarray(jax.random.key_data(key))))
                bar.update(t, f"eval {mean:.1f}  loss {float(loss):.3g}")
    finally:
        bar.close()
        logger.close()
        env.close()
    final = [r for r in runs.read_metrics(run_dir) if "eval/return_mean" in r][-1]
    return Result(run_dir, t, final["eval/return_mean"], final["eval/return_std"], evals,
                  final.get("eval/normalized_score"))


def load_policy(run_dir: str | Path):
    """The cloned policy of a run's last checkpoint, as `act(obs) -> action`, plus the config."""
    saved = runs.load_config(run_dir)
    cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    env, spec = make(cfg.env)
    env.close()
    net = _policy(cfg.hidden, spec.act_dim)
    payload = runs.load_checkpoint(run_dir)
    params = runs.check_like("params", payload["params"], net.init(jax.random.key(0), jnp.zeros((1, spec.obs_dim))))
    apply = jax.jit(lambda p, o: jnp.tanh(net.apply(p, o)))
    return (lambda o: np.asarray(apply(params, jnp.asarray(o[None], jnp.float32)))[0]), cfg
