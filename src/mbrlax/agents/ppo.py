"""Likelihood-ratio policy gradients: REINFORCE with a baseline, PPO (clipped objective, GAE) and TRPO
(conjugate gradient + backtracking line search under a KL bound). The lecture's "v2.5" runs them on
trajectories sampled from a learned model; nothing here knows whether the data are real or imagined.

The policy is a Gaussian with a state-dependent mean μ_θ(s) and a state-independent log-std; the sampled
action is *clipped* to [-1, 1] before it reaches the environment (or the model), and the log-probability is
that of the unclipped sample (as in Stable-Baselines3 and the TRPO/ME-TRPO code).

Estimators (N = H·B samples, masks m_t = 1 while the trajectory is alive):
    REINFORCE:  L = -mean[ log π(a|s) Â ],                        Â = G_t − V(s_t)  (or GAE)
    PPO:        L = -mean[ min(ρ Â, clip(ρ, 1−ε, 1+ε) Â) ],       ρ = π_θ(a|s) / π_old(a|s)
    TRPO:       max_θ mean[ρ Â]  s.t.  mean KL(π_old ‖ π_θ) ≤ δ   (natural step by CG, line search)
Every update is a pure, jitted function; epochs and minibatches are `lax.scan`s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from mbrlax.agents.nets import MLP
from mbrlax.types import StaticSpec

PG_METHODS = ("reinforce", "ppo", "trpo")


class GaussianPolicy(nn.Module):
    """obs B×D -> (mean B×A, log_std A). The mean is unsquashed; actions are clipped to [-1, 1] outside."""

    hidden: Sequence[int]
    act_dim: int
    init_log_std: float = -0.5

    @nn.compact
    def __call__(self, obs: jax.Array):
        mean = MLP(self.hidden, self.act_dim, activation="tanh")(obs)
        log_std = self.param("log_std", nn.initializers.constant(self.init_log_std), (self.act_dim,))
        return mean, log_std


class ValueNet(nn.Module):
    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden, 1, activation="tanh")(obs)[..., 0]


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, action: jax.Array) -> jax.Array:
    """log N(action; mean, diag(exp(log_std)²)) summed over the A features: ...×A -> ..."""
    z = (action - mean) * jnp.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi)).sum(-1)


def gaussian_kl(mean0, log_std0, mean1, log_std1) -> jax.Array:
    """KL(N0 ‖ N1) for diagonal Gaussians, summed over features: ...×A -> ..."""
    var0, var1 = jnp.exp(2 * log_std0), jnp.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5).sum(-1)


def gae(rewards: jax.Array, values: jax.Array, last_value: jax.Array, alive: jax.Array, final_alive: jax.Array,
        gamma: float, lam: float) -> tuple[jax.Array, jax.Array]:
    """Generalized advantage estimation over H×B rollouts (Schulman et al. 2016).

    rewards, values, alive: H×B (alive_t = 1 if s_t is a live state); last_value, final_alive: B (the
    bootstrap V(s_H) of a truncated rollout, masked if it terminated). δ_t = r_t + γ alive_{t+1} V_{t+1} − V_t,
    Â_t = δ_t + γλ alive_{t+1} Â_{t+1}. Returns (advantages H×B, value targets Â + V: H×B)."""
    next_values = jnp.concatenate([values[1:], last_value[None]], 0)
    next_alive = jnp.concatenate([alive[1:], final_alive[None]], 0)
    deltas = rewards + gamma * next_alive * next_values - values

    def body(adv_next, x):
        delta, nalive = x
        adv = delta + gamma * lam * nalive * adv_next
        return adv, adv

    _, adv = jax.lax.scan(body, jnp.zeros_like(last_value), (deltas, next_alive), reverse=True)
    adv = adv * alive
    return adv, adv + values


class PGBatch(NamedTuple):
    """Flat samples, N each: obs N×D, action N×A (unclipped), log_prob N (behaviour policy), advantage N,
    ret N (value target), weight N (1 for live samples, 0 for padding after a termination)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    advantage: jax.Array
    ret: jax.Array
    weight: jax.Array


class PGState(NamedTuple):
    policy: Any
    value: Any
    policy_opt: Any
    value_opt: Any
    steps: jax.Array


def _wmean(x: jax.Array, w: jax.Array) -> jax.Array:
    return (x * w).sum() / jnp.maximum(w.sum(), 1.0)


def _normalize(adv: jax.Array, w: jax.Array) -> jax.Array:
    mu = _wmean(adv, w)
    std = jnp.sqrt(_wmean((adv - mu) ** 2, w))
    return (adv - mu) / (std + 1e-8)


# ---- pure losses (used by the agent and checked by hand in tests/unit/test_ppo.py) -------------------


def ppo_clip_objective(log_prob: jax.Array, old_log_prob: jax.Array, advantage: jax.Array, clip_eps: float,
                       weight: jax.Array | None = None) -> jax.Array:
    """The PPO clipped surrogate (to be *maximized*): mean[min(ρ Â, clip(ρ, 1−ε, 1+ε) Â)]."""
    ratio = jnp.exp(log_prob - old_log_prob)
    obj = jnp.minimum(ratio * advantage, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * advantage)
    return _wmean(obj, jnp.ones_like(obj) if weight is None else weight)


def reinforce_objective(log_prob: jax.Array, advantage: jax.Array, weight: jax.Array | None = None) -> jax.Array:
    """REINFORCE with a baseline (to be maximized): mean[log π(a|s) · Â], Â = return − baseline."""
    return _wmean(log_prob * jax.lax.stop_gradient(advantage), jnp.ones_like(log_prob) if weight is None else weight)


def conjugate_gradient(fvp, b: jax.Array, iters: int, tol: float = 1e-10) -> jax.Array:
    """Solve F x = b for symmetric positive-definite F given only x ↦ F x (fixed iterations, jittable)."""

    def body(_, carry):
        x, r, p, rr = carry
        fp = fvp(p)
        alpha = rr / jnp.maximum(p @ fp, 1e-12)
        x, r = x + alpha * p, r - alpha * fp
        rr_new = r @ r
        p = r + (rr_new / jnp.maximum(rr, 1e-30)) * p
        # Converged: freeze (a traced break).
        done = rr < tol
        return (jnp.where(done, carry[0], x), jnp.where(done, carry[1], r), jnp.where(done, carry[2], p),
                jnp.where(done, rr, rr_new))

    x0 = jnp.zeros_like(b)
    x, *_ = jax.lax.fori_loop(0, iters, body, (x0, b, b, b @ b))
    return x


def trpo_step(
    policy_net: nn.Module,
    params: Any,
    batch: PGBatch,
    *,
    max_kl: float,
    cg_iters: int = 10,
    cg_damping: float = 0.1,
    backtrack_iters: int = 10,
    backtrack_coef: float = 0.8,
) -> tuple[Any, dict]:
    """One TRPO update (Schulman et al. 2015) of the surrogate mean[π/π_old Â] under mean KL ≤ δ, by
    `trust_region_step` with Fisher-vector products from the Hessian of the mean KL."""
    flat, unravel = ravel_pytree(params)
    old_mean, old_log_std = jax.lax.stop_gradient(policy_net.apply(params, batch.obs))
    adv = batch.advantage

    def surrogate(f):
        mean, log_std = policy_net.apply(unravel(f), batch.obs)
        ratio = jnp.exp(gaussian_log_prob(mean, log_std, batch.action) - batch.log_prob)
        return _wmean(ratio * adv, batch.weight)

    def mean_kl(f):
        mean, log_std = policy_net.apply(unravel(f), batch.obs)
        return _wmean(gaussian_kl(old_mean, old_log_std, mean, jnp.broadcast_to(log_std, mean.shape)), batch.weight)

    new_flat, info = trust_region_step(
        lambda f: (surrogate(f), mean_kl(f)), lambda v: jax.jvp(jax.grad(mean_kl), (flat,), (v,))[1], flat,
        max_kl=max_kl, cg_iters=cg_iters, cg_damping=cg_damping, backtrack_iters=backtrack_iters,
        backtrack_coef=backtrack_coef, prefix="pg/")
    return unravel(new_flat), info


def trust_region_step(evaluate: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
                      fvp: Callable[[jax.Array], jax.Array], flat: jax.Array, *, max_kl: float, cg_iters: int = 10,
                      cg_damping: float = 1e-5, backtrack_iters: int = 15, backtrack_coef: float = 0.8,
                      prefix: str = "trpo/") -> tuple[jax.Array, dict]:
    """One TRPO step on flat parameters for any `evaluate(flat) -> (objective, mean KL)` and undamped
    Fisher-vector product `fvp` (Schulman et al. 2015, appendix C; rllab's ConjugateGradientOptimizer, the one
    the MB-MPO code uses): s = F⁻¹g by conjugate gradient, scaled to the trust-region boundary √(2δ / sᵀFs),
    then a backtracking line search (coef^i, sequential: it stops at the first step that improves the objective
    with KL ≤ δ). No acceptable step: the parameters are unchanged. Info keys start with `prefix`."""
    base, g = jax.value_and_grad(lambda f: evaluate(f)[0])(flat)
    damped = lambda v: fvp(v) + cg_damping * v  # noqa: E731
    s = conjugate_gradient(damped, g, cg_iters)
    full_step = jnp.sqrt(2 * max_kl / jnp.maximum(s @ damped(s), 1e-12)) * s

    def cond(c):
        i, accepted, *_ = c
        return (i < backtrack_iters) & ~accepted

    def body(c):
        i, _, _, _, _ = c
        frac = jnp.asarray(backtrack_coef, flat.dtype) ** i
        cand = flat + frac * full_step
        obj, d = evaluate(cand)
        ok = (d <= max_kl) & (obj > base) & jnp.isfinite(obj) & jnp.isfinite(d)
        return i + 1, ok, cand, obj, d

    zero = jnp.zeros((), flat.dtype)
    i, accepted, cand, obj, d = jax.lax.while_loop(cond, body, (jnp.int32(0), jnp.array(False), flat, base, zero))
    new = jnp.where(accepted, cand, flat)
    backtracks = jnp.where(accepted, i - 1, i)
    info = {
        "kl": jnp.where(accepted, d, 0.0),
        "improvement": jnp.where(accepted, obj - base, 0.0),
        "step_accepted": accepted.astype(jnp.float32),
        "step_fraction": jnp.where(accepted, jnp.asarray(backtrack_coef, flat.dtype) ** backtracks, 0.0),
        "backtracks": backtracks.astype(jnp.float32),
        "grad_norm": jnp.linalg.norm(g),
    }
    return new, {prefix + k: v for k, v in info.items()}


class PolicyGradient(StaticSpec):
    """REINFORCE / PPO / TRPO agent: static settings plus pure functions of a `PGState`.

    `update(state, batch, key)` performs one policy update on a `PGBatch` (REINFORCE: `pg_steps` gradient
    steps on the full batch; PPO: `epochs` × minibatches of clipped-objective steps; TRPO: one KL-bounded
    natural step) and fits the value baseline for `value_epochs` × minibatches."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        method: str = "ppo",
        hidden: Sequence[int] = (64, 64),
        value_hidden: Sequence[int] = (64, 64),
        lr: float = 3e-4,
        value_lr: float = 1e-3,
        gamma: float = 0.99,
        lam: float = 0.95,
        clip_eps: float = 0.2,
        epochs: int = 10,
        minibatches: int = 16,
        value_epochs: int = 10,
        pg_steps: int = 1,
        ent_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 0.1,
        init_log_std: float = -0.5,
        normalize_advantage: bool = True,
    ):
        if method not in PG_METHODS:
            raise ValueError(f"unknown policy-gradient method {method!r}; choose one of {PG_METHODS}")
        self._spec = (obs_dim, act_dim, method, tuple(hidden), tuple(value_hidden), lr, value_lr, gamma, lam,
                      clip_eps, epochs, minibatches, value_epochs, pg_steps, ent_coef, max_grad_norm, max_kl,
                      cg_iters, cg_damping, init_log_std, normalize_advantage)
        self.obs_dim, self.act_dim, self.method = obs_dim, act_dim, method
        self.gamma, self.lam, self.clip_eps, self.ent_coef = gamma, lam, clip_eps, ent_coef
        self.epochs, self.minibatches, self.value_epochs, self.pg_steps = epochs, minibatches, value_epochs, pg_steps
        self.max_kl, self.cg_iters, self.cg_damping = max_kl, cg_iters, cg_damping
        self.normalize_advantage = normalize_advantage
        self.policy_net = GaussianPolicy(tuple(hidden), act_dim, init_log_std)
        self.value_net = ValueNet(tuple(value_hidden))
        self.policy_tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(lr))
        self.value_tx = optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(value_lr))

    @partial(jax.jit, static_argnums=0)
    def init(self, key: jax.Array) -> PGState:
        k_p, k_v = jax.random.split(key)
        obs = jnp.zeros((1, self.obs_dim), jnp.float32)
        policy = self.policy_net.init(k_p, obs)
        value = self.value_net.init(k_v, obs)
        return PGState(policy, value, self.policy_tx.init(policy), self.value_tx.init(value), jnp.zeros((), jnp.int32))

    # ---- acting ------------------------------------------------------------------------------------
    def sample(self, policy_params: Any, obs: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Unclipped Gaussian sample B×A and its log-probability B (clip it before stepping)."""
        mean, log_std = self.policy_net.apply(policy_params, obs)
        a = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
        return a, gaussian_log_prob(mean, log_std, a)

    def mean_action(self, policy_params: Any, obs: jax.Array) -> jax.Array:
        return jnp.clip(self.policy_net.apply(policy_params, obs)[0], -1.0, 1.0)

    def value(self, value_params: Any, obs: jax.Array) -> jax.Array:
        return self.value_net.apply(value_params, obs)

    # ---- losses ------------------------------------------------------------------------------------
    def _policy_loss(self, params, batch: PGBatch):
        mean, log_std = self.policy_net.apply(params, batch.obs)
        logp = gaussian_log_prob(mean, log_std, batch.action)
        entropy = (log_std + 0.5 * jnp.log(2 * jnp.pi * jnp.e)).sum()
        if self.method == "ppo":
            obj = ppo_clip_objective(logp, batch.log_prob, batch.advantage, self.clip_eps, batch.weight)
        else:
            obj = reinforce_objective(logp, batch.advantage, batch.weight)
        approx_kl = _wmean(batch.log_prob - logp, batch.weight)
        clipfrac = _wmean((jnp.abs(jnp.exp(logp - batch.log_prob) - 1) > self.clip_eps).astype(jnp.float32),
                          batch.weight)
        return -obj - self.ent_coef * entropy, {"pg/approx_kl": approx_kl, "pg/clipfrac": clipfrac,
                                                "pg/entropy": entropy}

    def _value_loss(self, params, batch: PGBatch):
        return 0.5 * _wmean((self.value_net.apply(params, batch.obs) - batch.ret) ** 2, batch.weight)

    def _minibatches(self, batch: PGBatch, key: jax.Array, epochs: int) -> PGBatch:
        """epochs × minibatches of a shuffled batch: (epochs·M)×(N/M)×…"""
        n = batch.obs.shape[0]
        m = self.minibatches
        size = n // m
        if size == 0:
            raise ValueError(f"batch of {n} samples is smaller than minibatches={m}; collect more or use fewer")
        perms = jax.vmap(lambda k: jax.random.permutation(k, n)[: m * size])(jax.random.split(key, epochs))
        idx = perms.reshape(epochs * m, size)
        return jax.tree.map(lambda x: x[idx], batch)

    # ---- one update --------------------------------------------------------------------------------
    @partial(jax.jit, static_argnums=0)
    def update(self, state: PGState, batch: PGBatch, key: jax.Array) -> tuple[PGState, dict]:
        k_pi, k_v = jax.random.split(key)
        if self.normalize_advantage:
            batch = batch._replace(advantage=_normalize(batch.advantage, batch.weight) * batch.weight)
        policy, policy_opt = state.policy, state.policy_opt
        if self.method == "trpo":
            policy, info = trpo_step(self.policy_net, policy, batch, max_kl=self.max_kl, cg_iters=self.cg_iters,
                                     cg_damping=self.cg_damping)
        else:
            if self.method == "ppo":
                mbs = self._minibatches(batch, k_pi, self.epochs)
            else:  # REINFORCE is on-policy: full-batch steps only
                mbs = jax.tree.map(lambda x: jnp.broadcast_to(x, (self.pg_steps, *x.shape)), batch)

            def step(carry, mb):
                p, o = carry
                (loss, inf), g = jax.value_and_grad(self._policy_loss, has_aux=True)(p, mb)
                upd, o = self.policy_tx.update(g, o, p)
                return (optax.apply_updates(p, upd), o), {**inf, "pg/policy_loss": loss,
                                                          "pg/grad_norm": optax.global_norm(g)}

            (policy, policy_opt), infos = jax.lax.scan(step, (policy, policy_opt), mbs)
            info = jax.tree.map(jnp.mean, infos)

        def vstep(carry, mb):
            p, o = carry
            loss, g = jax.value_and_grad(self._value_loss)(p, mb)
            upd, o = self.value_tx.update(g, o, p)
            return (optax.apply_updates(p, upd), o), loss

        (value, value_opt), v_losses = jax.lax.scan(
            vstep, (state.value, state.value_opt), self._minibatches(batch, k_v, self.value_epochs)
        )
        info = {**info, "pg/value_loss": v_losses.mean(),
                "pg/log_std": self.policy_net.apply(policy, batch.obs[:1])[1].mean()}
        return PGState(policy, value, policy_opt, value_opt, state.steps + 1), info


# ---- model rollouts for the policy gradient ---------------------------------------------------------


class PGRollout(NamedTuple):
    """obs H×B×D, action H×B×A (unclipped), log_prob H×B, reward H×B, alive H×B, value H×B, last_value B,
    final_alive B."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    reward: jax.Array
    alive: jax.Array
    value: jax.Array
    last_value: jax.Array
    final_alive: jax.Array


def model_rollout(agent: PolicyGradient, state: PGState, step, start_obs: jax.Array, key: jax.Array,
                  horizon: int) -> PGRollout:
    """Sample trajectories of the Gaussian policy through `step` (`pathwise.stepper(model, model_state, ...)`);
    no gradient needed (likelihood ratio), so a non-finite prediction ends its rollout. Actions are clipped to
    [-1, 1] for the model, stored unclipped for log π."""
    from mbrlax.agents.pathwise import imagine

    def act(obs, k):
        a, logp = agent.sample(state.policy, obs, k)
        return jnp.clip(a, -1.0, 1.0), (a, logp)

    final_obs, final_alive, (obs, (a, logp), rew, alive) = imagine(act, step, start_obs, key, horizon, guard=True)
    values = agent.value(state.value, obs)
    last_value = agent.value(state.value, final_obs)
    return PGRollout(obs, a, logp, rew, alive, values, last_value, final_alive)


def rollout_to_batch(agent: PolicyGradient, roll: PGRollout) -> PGBatch:
    """GAE advantages and value targets, flattened H×B -> N."""
    adv, ret = gae(roll.reward, roll.value, roll.last_value, roll.alive, roll.final_alive, agent.gamma, agent.lam)
    flat = lambda x: x.reshape(-1, *x.shape[2:])  # noqa: E731
    return PGBatch(flat(roll.obs), flat(roll.action), flat(roll.log_prob), flat(adv), flat(ret), flat(roll.alive))
