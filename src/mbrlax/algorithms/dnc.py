"""Divide-and-conquer RL (Ghosh, Singh, Rajeswaran, Kumar & Levine 2018, "Divide-and-conquer reinforcement
learning"), on the pure-JAX environments with fully jitted rollouts.

Algorithm 1 of the paper, and where it lives:

    partition the initial-state (context) space into ω_1..ω_K (k-means on sampled initial states)   # 1. partition
    repeat
        for each local policy π_i: sample trajectories from contexts in ω_i                           # 2. samples
        update π_i by policy gradient on  η(π_i) − α Σ_j E_{π_i}[D_KL(π_i ‖ π_j)]                    # 3. local update
            (the KL penalty pulls the local policies together, each on its own states)
        every R iterations: distill the locals into the central policy π_c by minimizing
            Σ_i E_{ω_i}[D_KL(π_i ‖ π_c)], then reset every π_i to π_c                                # 4. distill
    return π_c

The local learner is a plain likelihood-ratio policy gradient with a time-dependent baseline and normalized
advantages (the paper uses TRPO); `partitions=1` with α = 0 is the single policy trained on the whole
context distribution with the same number of samples, the paper's baseline. Policies are Gaussian MLPs on the
observation with a state-independent log-std, so every KL is analytic.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tyro

from mbrlax import runs
from mbrlax.algorithms import gps
from mbrlax.algorithms.common import Result as BaseResult
from mbrlax.algorithms.common import RunOptions, check_positive, fill_preset
from mbrlax.checkpoint import Leaves
from mbrlax.envs import jax_envs

DEFAULTS: dict[str, Any] = dict(iterations=300, batch=64, lr=3e-3, success_dist=0.1)
PRESETS: dict[str, dict[str, Any]] = {
    # Not in the paper (its tasks are MuJoCo picking/lobbing/catching with TRPO); sized for a laptop CPU.
    "mbrlax/PointMass-v0": dict(iterations=300, batch=64, lr=3e-3, success_dist=0.1),
    "mbrlax/Arm2-v0": dict(iterations=500, batch=64, lr=3e-3, success_dist=0.05),
}


@dataclass
class Config(RunOptions):
    """DnC (partitions > 1) or the single-policy baseline (partitions = 1, kl_weight = 0)."""

    env: str = "mbrlax/PointMass-v0"
    """A pure-JAX environment id (rollouts are jitted on its known dynamics)."""
    seed: int = 0
    """Seed of everything (contexts, policies, noise)."""
    partitions: int = 4
    """K: number of context partitions and local policies (1: the single-policy baseline)."""
    kl_weight: float = 0.01
    """α: weight of the pairwise KL penalty between local policies (paper: 1e-4 .. 1e-2)."""
    distill_every: int = 50
    """R: distill into the central policy (and reset the locals to it) every this many iterations."""
    distill_epochs: int = 200
    """Full-batch Adam steps of each distillation."""
    iterations: int | None = None
    """Policy-gradient iterations."""
    batch: int | None = None
    """Trajectories per local policy per iteration (the baseline gets batch × partitions)."""
    lr: float | None = None
    """Adam learning rate of the local policy-gradient steps and the distillation."""
    success_dist: float | None = None
    """Success: final distance to the target below this."""
    gamma: float = 0.99
    """Discount of the returns-to-go."""
    horizon: int | None = None
    """Episode length; None: the environment's registered length."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of the Gaussian MLP policies."""
    init_log_std: float = -0.5
    """Initial log standard deviation of every policy."""
    eval_every: int = 50
    """Evaluate the central policy every this many iterations."""
    eval_contexts: int = 64
    """Fixed initial states of the evaluation."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Constructor arguments of the pure-JAX env (e.g. a fixed target and the range of initial arm angles);
    Python API only."""
    checkpoint_every: int = 50
    """Checkpoint every this many iterations (and at the last)."""


@dataclass
class Result(BaseResult):
    success: float = 0.0


def resolve(cfg: Config) -> Config:
    if cfg.env not in jax_envs.JAX_ENVS:
        raise ValueError(f"dnc runs jitted rollouts on known dynamics: '{cfg.env}' is not a pure-JAX env")
    cfg = fill_preset(cfg, PRESETS.get(cfg.env, {}), DEFAULTS)
    if cfg.partitions < 1:
        raise ValueError(f"partitions must be ≥ 1, got {cfg.partitions}")
    check_positive(cfg, "iterations", "batch", "eval_every", "distill_every", "checkpoint_every")
    return cfg


# ---- pieces ------------------------------------------------------------------------------------------------


def kmeans(points: jax.Array, k: int, key: jax.Array, iters: int = 20) -> jax.Array:
    """k-means centers K×D of points P×D (Lloyd's algorithm from random points)."""
    centers = points[jax.random.choice(key, points.shape[0], (k,), replace=False)]

    def body(c, _):
        lab = jnp.argmin(((points[:, None] - c[None]) ** 2).sum(-1), 1)
        oh = jax.nn.one_hot(lab, k)
        n = oh.sum(0)
        new = (oh.T @ points) / jnp.maximum(n, 1)[:, None]
        return jnp.where(n[:, None] > 0, new, c), None

    return jax.lax.scan(body, centers, None, length=iters)[0]


def assign(x0: jax.Array, centers: jax.Array) -> jax.Array:
    return jnp.argmin(((x0[:, None] - centers[None]) ** 2).sum(-1), 1)


def gauss_kl(mu_p, ls_p, mu_q, ls_q):
    """KL(N(mu_p, e^{2 ls_p}) ‖ N(mu_q, e^{2 ls_q})), diagonal, summed over the last axis."""
    return jnp.sum(ls_q - ls_p + (jnp.exp(2 * ls_p) + (mu_p - mu_q) ** 2) / (2 * jnp.exp(2 * ls_q)) - 0.5, -1)


class DnC:
    """The jitted parts, closed over the environment and sizes (hashable by identity for jit)."""

    def __init__(self, env: jax_envs.JaxEnv, T: int, cfg: Config):
        self.env, self.T, self.hidden, self.A = env, T, tuple(cfg.hidden), env.act_dim
        self.cfg = cfg
        self.opt = optax.adam(cfg.lr)

    def mean(self, pol: dict, obs: jax.Array) -> jax.Array:
        return gps.policy_mean(self.hidden, self.A, pol, obs)

    def rollout(self, pol: dict, x0: jax.Array, key: jax.Array, stochastic: bool = True):
        """B trajectories from initial states B×S: (obs T×B×D, actions T×B×A, rewards T×B, final distance B)."""
        env = self.env

        def body(x, k):
            o = env.observe(x)
            mu = self.mean(pol, o)
            a = mu + stochastic * jnp.exp(pol["log_std"]) * jax.random.normal(k, mu.shape)
            x2 = env.dynamics(x, a)
            return x2, (o, a, env.reward(o, a, env.observe(x2)))

        xT, (O, Acts, R) = jax.lax.scan(body, x0, jax.random.split(key, self.T))
        return O, Acts, R, jnp.linalg.norm(env.observe(xT)[..., -2:], axis=-1)

    @partial(jax.jit, static_argnums=0)
    def update(self, pols: dict, opt_state, x0: jax.Array, mask: jax.Array, key: jax.Array):
        """One policy-gradient step of all K local policies (stacked pytrees). x0: K×B×S contexts, mask K×B
        marks each policy's own contexts (all ones here: contexts are drawn per partition)."""
        K = mask.shape[0]
        keys = jax.random.split(key, K)
        O, Acts, R, dist = jax.vmap(self.rollout)(pols, x0, keys)  # K×T×B×...
        # returns-to-go and a time-dependent baseline per policy
        disc = self.cfg.gamma ** jnp.arange(self.T)
        G = jnp.flip(jnp.cumsum(jnp.flip(R * disc[None, :, None], 1), 1), 1) / disc[None, :, None]
        adv = G - G.mean(2, keepdims=True)
        adv = adv / (adv.std(axis=(1, 2), keepdims=True) + 1e-6)

        def loss(pols):
            def one(pol, O_i, A_i, adv_i):
                mu = self.mean(pol, O_i)
                logp = -0.5 * jnp.sum(((A_i - mu) / jnp.exp(pol["log_std"])) ** 2 + 2 * pol["log_std"], -1)
                return -(logp * adv_i).mean()

            pg = jax.vmap(one)(pols, O, Acts, jax.lax.stop_gradient(adv)).sum()
            if K == 1 or self.cfg.kl_weight == 0:
                return pg
            # α Σ_j E_{π_i's states}[KL(π_i ‖ π_j)]: every pair, on policy i's own observations
            mus = jax.vmap(lambda pol_j: jax.vmap(lambda O_i: self.mean(pol_j, O_i))(O))(pols)  # j×i×T×B×A
            ls = pols["log_std"]  # K×A
            mu_own = jnp.einsum("jitba,ij->itba", mus, jnp.eye(K))
            kl = gauss_kl(mu_own[None], ls[None, :, None, None], mus, ls[:, None, None, None])  # j×i×T×B
            return pg + self.cfg.kl_weight * kl.mean((2, 3)).sum()

        g = jax.grad(loss)(pols)
        up, opt_state = jax.vmap(self.opt.update)(g, opt_state)
        pols = optax.apply_updates(pols, up)
        return pols, opt_state, dict(ret=R.sum(1).mean(), dist=dist.mean()), O

    @partial(jax.jit, static_argnums=0)
    def distill(self, central: dict, pols: dict, O: jax.Array):
        """Central ← argmin Σ_i E_{O_i}[KL(π_i ‖ π_c)] (O: K×T×B×D, each local policy's own states)."""
        opt = optax.adam(self.cfg.lr)
        targets = jax.vmap(lambda pol, O_i: self.mean(pol, O_i))(pols, O)

        def loss(c):
            mu_c = jax.vmap(lambda O_i: self.mean(c, O_i))(O)
            return gauss_kl(targets, pols["log_std"][:, None, None], mu_c, c["log_std"]).mean()

        def step(carry, _):
            c, s = carry
            v, g = jax.value_and_grad(loss)(c)
            up, s = opt.update(g, s)
            return (optax.apply_updates(c, up), s), v

        (c, _), losses = jax.lax.scan(step, (central, opt.init(central)), None, length=self.cfg.distill_epochs)
        return c, losses[-1]

    @partial(jax.jit, static_argnums=0)
    def evaluate(self, pol: dict, x0: jax.Array):
        _, _, R, dist = self.rollout(pol, x0, jax.random.key(0), stochastic=False)
        return R.sum(0), dist


def sample_contexts(env: jax_envs.JaxEnv, centers: jax.Array, key: jax.Array, K: int, B: int) -> jax.Array:
    """B initial states per partition: draw a pool, keep the first B of each partition (K×B×S)."""
    pool = jax.vmap(env.init_state)(jax.random.split(key, 8 * K * B))
    lab = assign(pool, centers)
    idx = jnp.stack([jnp.argsort(lab != i, stable=True)[:B] for i in range(K)])
    return pool[idx]


def init_policy(hidden: tuple[int, ...], env: jax_envs.JaxEnv, init_log_std: float, key: jax.Array) -> dict:
    """A Gaussian MLP policy (gps.init_policy's network and normalizer) with a state-independent log-std."""
    pol = gps.init_policy(hidden, env.obs_dim, env.act_dim, key)
    return dict(params=pol["params"], obs_mean=pol["obs_mean"], obs_std=pol["obs_std"],
                log_std=jnp.full(env.act_dim, init_log_std))


def train(cfg: Config) -> Result:
    """DnC (or the single-policy baseline) with periodic evaluation of the central policy."""
    cfg = resolve(runs.prepare(cfg, "dnc", may_change=("iterations",)))
    env = jax_envs.load(cfg.env, **(cfg.env_kwargs or {}))
    T = cfg.horizon or jax_envs.JAX_ENVS[cfg.env][2]
    K, B = cfg.partitions, cfg.batch
    d = DnC(env, T, cfg)
    per_iter = K * B * T  # environment steps per iteration (the same for DnC and the baseline)
    key = jax.random.key(cfg.seed)
    key, k_part, k_pol, k_eval = jax.random.split(key, 4)
    # 1. partition the context space: k-means on sampled initial states
    centers = kmeans(jax.vmap(env.init_state)(jax.random.split(k_part, 2000)), K, k_part) if K > 1 else \
        jnp.zeros((1, env.state_dim))
    x_eval = jax.vmap(env.init_state)(jax.random.split(k_eval, cfg.eval_contexts))
    stack = lambda c: jax.tree.map(lambda a: jnp.broadcast_to(a, (K, *a.shape)), c)
    central = init_policy(d.hidden, env, cfg.init_log_std, k_pol)
    st = dict(key=key, central=central, pols=stack(central), opt=jax.vmap(d.opt.init)(stack(central)))
    it = 0
    name = f"dnc-{cfg.env.replace('/', '_')}-K{K}-s{cfg.seed}"
    with runs.Run(cfg, "dnc", name, cfg.iterations * per_iter) as run:
        if run.resumed:  # by leaves: check_like does not take the optimizer's tuple of NamedTuples as stored
            it = int(run.resumed["it"])
            st = {k: runs.check_like(k, Leaves(jax.tree.leaves(run.resumed[k])), v) for k, v in st.items()}
        while it < cfg.iterations:
            it += 1
            st["key"], k_ctx, k_up = jax.random.split(st["key"], 3)
            # 2. contexts of each partition, 3. local policy-gradient step with the KL penalty
            with run.timer("update"):
                x0 = (sample_contexts(env, centers, k_ctx, K, B) if K > 1
                      else jax.vmap(env.init_state)(jax.random.split(k_ctx, B))[None])
                st["pols"], st["opt"], info, O = d.update(st["pols"], st["opt"], x0, jnp.ones((K, B)), k_up)
                row = {"dnc/train_return": float(info["ret"]), "dnc/train_distance": float(info["dist"])}
                # 4. distill into the central policy and reset the locals to it
                if K > 1 and run.due(it, cfg.distill_every, cfg.iterations):
                    st["central"], dl = d.distill(st["central"], st["pols"], O)
                    st["pols"], st["opt"] = stack(st["central"]), jax.vmap(d.opt.init)(stack(st["central"]))
                    row["dnc/distill_kl"] = float(dl)
                elif K == 1:
                    st["central"] = jax.tree.map(lambda a: a[0], st["pols"])
            if run.due(it, cfg.eval_every, cfg.iterations):
                with run.timer("eval"):
                    R, dist = d.evaluate(st["central"], x_eval)
                success = float((dist < cfg.success_dist).mean())
                run.record_eval(it * per_iter, float(R.mean()), float(R.std()),
                                extra={**row, "eval/success": success, "eval/final_distance": float(dist.mean())})
                run.progress(it * per_iter, eval=f"central return {float(R.mean()):.1f}  success {success:.2f}")
            else:
                run.log(it * per_iter, {**row, **run.times()})
                run.progress(it * per_iter)
            if run.due(it, cfg.checkpoint_every, cfg.iterations):
                run.save(it * per_iter, dict(st, it=it, centers=np.asarray(centers)))
        last = [r for r in runs.read_metrics(run.dir) if "eval/success" in r][-1]
        return run.result(Result, steps=it * per_iter, success=float(last["eval/success"]))


def load_policy(run_dir: str | Path):
    """The central policy's mean action as `act(obs) -> action`."""
    cfg = resolve(runs.config_from_dict(Config, runs.load_config(run_dir)))
    env = jax_envs.load(cfg.env, **(cfg.env_kwargs or {}))  # also checks that the run's env_kwargs still apply
    return gps.mean_policy(cfg.hidden, env.act_dim, runs.load_checkpoint(run_dir)["central"]), cfg
