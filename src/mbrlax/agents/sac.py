"""Soft actor-critic (Haarnoja et al. 2018): tanh-Gaussian actor, twin Q, automatic entropy tuning.

Pure functions of an explicit `SACState`. `update` is one gradient step on one batch; `update_many` fuses
G steps on G batches with `lax.scan` so that a whole "G updates per environment step" is one device call.
Actions live in [-1, 1]; `envs.make` rescales them to the environment's bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mbrlax.agents.nets import TanhGaussianActor, TwinQ, tanh_gaussian_sample
from mbrlax.types import StaticSpec, Transition


class SACState(NamedTuple):
    actor: Any
    critic: Any
    target_critic: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    steps: jax.Array


class SAC(StaticSpec):
    """Static description (sizes, optimizers, coefficients) plus pure functions of a `SACState`."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        *,
        hidden: Sequence[int] = (256, 256),
        lr: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
        init_alpha: float = 1.0,
        target_entropy: float | None = None,
        autotune_alpha: bool = True,
    ):
        # Equal settings make equal (hashable) objects, so jitted methods share their compiled code.
        self._spec = (obs_dim, act_dim, tuple(hidden), lr, gamma, tau, init_alpha, target_entropy, autotune_alpha)
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.actor_net = TanhGaussianActor(tuple(hidden), act_dim)
        self.critic_net = TwinQ(tuple(hidden))
        self.gamma, self.tau, self.init_alpha = gamma, tau, init_alpha
        self.target_entropy = -float(act_dim) if target_entropy is None else float(target_entropy)
        self.autotune_alpha = autotune_alpha
        self.actor_tx, self.critic_tx, self.alpha_tx = optax.adam(lr), optax.adam(lr), optax.adam(lr)

    @partial(jax.jit, static_argnums=0)
    def init(self, key: jax.Array) -> SACState:
        k_a, k_c = jax.random.split(key)
        obs = jnp.zeros((1, self.obs_dim), jnp.float32)
        act = jnp.zeros((1, self.act_dim), jnp.float32)
        actor = self.actor_net.init(k_a, obs)
        critic = self.critic_net.init(k_c, obs, act)
        log_alpha = jnp.log(jnp.asarray(self.init_alpha, jnp.float32))
        return SACState(
            actor=actor,
            critic=critic,
            target_critic=critic,
            log_alpha=log_alpha,
            actor_opt=self.actor_tx.init(actor),
            critic_opt=self.critic_tx.init(critic),
            alpha_opt=self.alpha_tx.init(log_alpha),
            steps=jnp.zeros((), jnp.int32),
        )

    # ---- acting ------------------------------------------------------------------------------
    def sample_action(self, actor_params, obs: jax.Array, key: jax.Array) -> jax.Array:
        mean, log_std = self.actor_net.apply(actor_params, obs)
        return tanh_gaussian_sample(mean, log_std, key)[0]

    def mean_action(self, actor_params, obs: jax.Array) -> jax.Array:
        return jnp.tanh(self.actor_net.apply(actor_params, obs)[0])

    # ---- losses ------------------------------------------------------------------------------
    def critic_target(self, state: SACState, batch: Transition, key: jax.Array) -> jax.Array:
        """y = r + γ (1 - terminated) (min_i Q̄_i(s', a') - α log π(a'|s')),  a' ~ π(·|s')."""
        mean, log_std = self.actor_net.apply(state.actor, batch.next_obs)
        next_a, next_logp = tanh_gaussian_sample(mean, log_std, key)
        q_next = self.critic_net.apply(state.target_critic, batch.next_obs, next_a).min(0)
        soft_v = q_next - jnp.exp(state.log_alpha) * next_logp
        return batch.reward + self.gamma * (1.0 - batch.terminated) * soft_v

    def _critic_loss(self, critic, batch: Transition, target: jax.Array):
        q = self.critic_net.apply(critic, batch.obs, batch.action)  # 2×B
        return 0.5 * ((q - target) ** 2).mean(1).sum(), q.mean()

    def _actor_loss(self, actor, critic, log_alpha, obs: jax.Array, key: jax.Array):
        mean, log_std = self.actor_net.apply(actor, obs)
        a, logp = tanh_gaussian_sample(mean, log_std, key)
        q = self.critic_net.apply(critic, obs, a).min(0)
        return (jnp.exp(log_alpha) * logp - q).mean(), logp

    # ---- one update --------------------------------------------------------------------------
    def update(self, state: SACState, batch: Transition, key: jax.Array) -> tuple[SACState, dict]:
        k_target, k_actor = jax.random.split(key)
        # critic: regress both Qs onto the soft Bellman target (no gradient through the target)
        target = jax.lax.stop_gradient(self.critic_target(state, batch, k_target))
        (c_loss, q_mean), c_grads = jax.value_and_grad(self._critic_loss, has_aux=True)(
            state.critic, batch, target
        )
        c_upd, critic_opt = self.critic_tx.update(c_grads, state.critic_opt, state.critic)
        critic = optax.apply_updates(state.critic, c_upd)
        new, info = self.policy_step(state, critic, critic_opt, batch.obs, k_actor)
        return new, {"sac/critic_loss": c_loss, "sac/q_mean": q_mean, **info}

    def policy_step(self, state: SACState, critic, critic_opt, obs: jax.Array, key: jax.Array):
        """The rest of an update once the critic has stepped (to `critic`, `critic_opt`): the actor on
        min Q - α log π of the updated critic, the temperature, the Polyak target. Shared by MVE's update."""
        (a_loss, logp), a_grads = jax.value_and_grad(self._actor_loss, has_aux=True)(
            state.actor, critic, state.log_alpha, obs, key
        )
        a_upd, actor_opt = self.actor_tx.update(a_grads, state.actor_opt, state.actor)
        actor = optax.apply_updates(state.actor, a_upd)
        # temperature: drive the policy entropy towards the target entropy
        entropy = -jax.lax.stop_gradient(logp).mean()
        log_alpha, alpha_opt = state.log_alpha, state.alpha_opt
        if self.autotune_alpha:
            alpha_grad = entropy - self.target_entropy  # d/dlogα of  logα·(H - H_target)
            al_upd, alpha_opt = self.alpha_tx.update(alpha_grad, state.alpha_opt, state.log_alpha)
            log_alpha = optax.apply_updates(state.log_alpha, al_upd)
        target_critic = optax.incremental_update(critic, state.target_critic, self.tau)
        new = SACState(actor, critic, target_critic, log_alpha, actor_opt, critic_opt, alpha_opt, state.steps + 1)
        return new, {"sac/actor_loss": a_loss, "sac/entropy": entropy, "sac/alpha": jnp.exp(log_alpha)}

    @partial(jax.jit, static_argnums=0)
    def update_many(self, state: SACState, batches: Transition, key: jax.Array) -> tuple[SACState, dict]:
        """G updates on batches with a leading G axis (G×B×…), fused in one `lax.scan`."""
        keys = jax.random.split(key, batches.obs.shape[0])
        state, infos = jax.lax.scan(lambda s, xs: guarded(self.update)(s, *xs), state, (batches, keys))
        return state, jax.tree.map(jnp.mean, infos)


def all_finite(tree: Any) -> jax.Array:
    """True when every floating-point leaf of `tree` is finite."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves])) if leaves else jnp.asarray(True)


def guarded(update: Any) -> Any:
    """`update(state, *args) -> (state, info)` that rejects a step whose new state or info is not finite: the
    old state is kept and info["guard/rejected"] is 1 (0 otherwise; its mean over a scan is the fraction)."""

    def step(state: Any, *args: Any) -> tuple[Any, dict]:
        new, info = update(state, *args)
        ok = all_finite(new) & all_finite(info)
        new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, state)
        return new, {**info, "guard/rejected": 1.0 - ok.astype(jnp.float32)}

    return step
