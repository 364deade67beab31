"""Learning a policy by backpropagating the return through a learned model (the lecture's "v2.0").

The policy's H-step return is a differentiable function of its parameters when every step goes through the
model:  s_{t+1} = f(s_t, π_θ(s_t, ε_t)),  J(θ) = E[ Σ_{t<H} γ^t r(s_t, a_t) + γ^H V(s_H) ],  and
∇_θ J is the *pathwise* (reparameterization) gradient, computed by backpropagation through time (BPTT).
The practitioners' options that keep it sane are here:
- gradient clipping (global norm) of the policy gradient;
- a truncated horizon H with a learned value V at the end (SVG(H) / MVE-style bootstrap), V trained on the
  model rollouts' H-step targets with a Polyak-averaged target network;
- a reparameterized stochastic policy a = tanh(μ_θ(s) + σ ε) (σ = `action_noise`; 0 = deterministic), and
  reparameterized Gaussian model noise for probabilistic models.

The model only *carries* the gradient: its parameters enter every step through `stop_gradient`, so the
policy loss never changes the model (tests/unit/test_pathwise.py checks that the model's gradient is
exactly zero and that an update leaves the model bit-for-bit unchanged).

Shapes: B start states, H steps, D observation, A action features; ensemble members E.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mbrlax.agents.nets import MLP
from mbrlax.models.ensemble import EnsembleModel, ModelState, Prediction
from mbrlax.types import RewardFn, StaticSpec, TermFn

MEMBER_MODES = ("step", "sample", "mean", "fixed")


# ---- one differentiable model step -------------------------------------------------------------------


def predict_member(model: EnsembleModel, model_state: ModelState, obs: jax.Array, action: jax.Array,
                   member: jax.Array) -> Prediction:
    """`model.predict` for one member only (a traced index), 1×B×…: the E-stacked leaves (kernels E×d×f,
    biases E×f) are sliced to that member and applied by a one-member copy of the network, so a rollout
    that uses one member per step costs one network call, not E."""
    one_net = model.net.clone(ensemble_size=1)
    params = jax.tree.map(
        lambda x: jax.lax.dynamic_slice_in_dim(x, member, 1, 0) if x.ndim >= 2 else x, model_state.params
    )
    x = model_state.in_norm.normalize(jnp.concatenate([obs, action], -1))[None]
    mean_n, logvar_n, term_logit = one_net.apply(params, x)
    mean = model_state.out_norm.denormalize(mean_n)
    var = jnp.exp(logvar_n) * model_state.out_norm.std**2 if logvar_n is not None else jnp.zeros_like(mean)
    return Prediction(obs + mean[..., :-1], mean[..., -1], var[..., :-1], var[..., -1], term_logit)


def model_step(
    model: EnsembleModel,
    model_state: ModelState,
    obs: jax.Array,
    action: jax.Array,
    key: jax.Array,
    *,
    mode: str = "step",
    member: jax.Array | int | None = None,
    reward_fn: RewardFn | None = None,
    term_fn: TermFn | None = None,
    sample_noise: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One model step for B samples, differentiable in `obs` and `action` but never in the model.

    obs B×D, action B×A (the agent's [-1, 1] action). Which member predicts:
      - "step":   one random elite per step for the whole batch (only that member is evaluated: E× cheaper);
      - "sample": a random elite per sample (all E members are evaluated, as MBPO does);
      - "mean":   the mean of the elites' predictions;
      - "fixed":  member `member` (ME-TRPO's policy validation).
    Probabilistic members add reparameterized Gaussian noise (if `sample_noise`). The reward is
    `reward_fn(obs, action, next_obs)` when known, else the model's; termination is `term_fn` when known,
    else the learned head's probability, else 0. Returns next_obs B×D, reward B, done B (float in [0, 1]).
    """
    if mode not in MEMBER_MODES:
        raise ValueError(f"unknown member mode {mode!r}; choose one of {MEMBER_MODES}")
    ms = jax.lax.stop_gradient(model_state)  # the policy loss must never move the model
    k_member, k_noise = jax.random.split(key)
    b = obs.shape[0]
    if mode in ("step", "fixed"):
        if mode == "step":
            m = ms.elites[jax.random.randint(k_member, (), 0, ms.elites.shape[0])]
        else:
            if member is None:
                raise ValueError("mode='fixed' needs member=<index>")
            m = jnp.asarray(member, jnp.int32)
        pred = predict_member(model, ms, obs, action, m)
        pick = lambda x: None if x is None else x[0]  # noqa: E731
    elif mode == "sample":
        pred = model.predict(ms, obs, action)
        idx = ms.elites[jax.random.randint(k_member, (b,), 0, ms.elites.shape[0])]
        rows = jnp.arange(b)
        pick = lambda x: None if x is None else x[idx, rows]  # noqa: E731
    else:  # mean over the elites
        pred = model.predict(ms, obs, action)
        pick = lambda x: None if x is None else x[ms.elites].mean(0)  # noqa: E731
    mean_obs, mean_r = pick(pred.next_obs_mean), pick(pred.reward_mean)
    next_obs, reward = mean_obs, mean_r
    if model.probabilistic and sample_noise:
        k_o, k_r = jax.random.split(k_noise)
        next_obs = mean_obs + jnp.sqrt(pick(pred.next_obs_var)) * jax.random.normal(k_o, mean_obs.shape)
        reward = mean_r + jnp.sqrt(pick(pred.reward_var)) * jax.random.normal(k_r, mean_r.shape)
    if reward_fn is not None:
        reward = reward_fn(obs, action, next_obs)
    if term_fn is not None:
        done = term_fn(obs, action, next_obs).astype(jnp.float32)
    elif pred.term_logit is not None:
        done = jax.nn.sigmoid(pick(pred.term_logit))
    else:
        done = jnp.zeros((b,), jnp.float32)
    return next_obs, reward, done


# ---- networks ----------------------------------------------------------------------------------------


class DeterministicActor(nn.Module):
    """obs B×D -> pre-tanh action mean B×A; the action is tanh(mean + σ ε)."""

    hidden: Sequence[int]
    act_dim: int

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden, self.act_dim, activation="tanh")(obs)


class ValueNet(nn.Module):
    """obs B×D -> V(s) B."""

    hidden: Sequence[int]

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        return MLP(self.hidden, 1, activation="tanh")(obs)[..., 0]


class PathwiseState(NamedTuple):
    policy: Any
    value: Any
    target_value: Any
    policy_opt: Any
    value_opt: Any
    steps: jax.Array


class Rollout(NamedTuple):
    """A differentiable model rollout: obs H×B×D (s_0 … s_{H-1}), action H×B×A, reward H×B, alive H×B
    (1 until the rollout terminated, held constant within the step), final_obs B×D, final_alive B."""

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    alive: jax.Array
    final_obs: jax.Array
    final_alive: jax.Array


def imagine(
    act: Callable[[jax.Array, jax.Array], tuple[jax.Array, Any]],
    step: Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]],
    start_obs: jax.Array,
    key: jax.Array,
    horizon: int,
    *,
    guard: bool = False,
) -> tuple[jax.Array, jax.Array, tuple[jax.Array, Any, jax.Array, jax.Array]]:
    """The one scan of a policy through a model, shared by the pathwise, policy-gradient and MB-MPO rollouts.

    `act(obs, key) -> (action, record)`: the action the model takes and what the rollout keeps of it;
    `step(obs, action, key) -> (next_obs, reward, done)`. start_obs is …×D (any leading batch axes).
    Returns final_obs, final_alive and the H-stacked (obs, record, reward, alive), alive = 1 until the rollout
    ended (held within the step). guard=False (differentiable, BPTT): alive decays by 1 − done, done not
    differentiated. guard=True (sampled rollouts for likelihood-ratio gradients): done > 0.5 ends a rollout, and a
    step predicting a non-finite state or reward ends it too (state held, reward 0) so it cannot poison a batch."""

    def body(carry, k):
        obs, alive = carry
        k_pi, k_m = jax.random.split(k)
        action, record = act(obs, k_pi)
        next_obs, reward, done = step(obs, action, k_m)
        if guard:
            bad = ~jnp.all(jnp.isfinite(next_obs), -1) | ~jnp.isfinite(reward)
            next_obs = jnp.where(bad[..., None], obs, next_obs)
            reward = jnp.where(bad, 0.0, reward)
            next_alive = alive * (1.0 - (done > 0.5)) * (1.0 - bad)
        else:  # termination is a discrete event: it masks, it is not differentiated
            next_alive = alive * (1.0 - jax.lax.stop_gradient(done))
        return (next_obs, next_alive), (obs, record, reward, alive)

    alive0 = jnp.ones(start_obs.shape[:-1], start_obs.dtype)
    (final_obs, final_alive), out = jax.lax.scan(body, (start_obs, alive0), jax.random.split(key, horizon))
    return final_obs, final_alive, out


def stepper(model: EnsembleModel, model_state: ModelState, **kw: Any):
    """`step(obs, action, key)` of `imagine` for `model_step` with these settings (mode, member, reward_fn, …)."""
    return lambda obs, action, key: model_step(model, model_state, obs, action, key, **kw)


def model_rollout(act: Callable[[jax.Array, jax.Array], jax.Array], step, start_obs: jax.Array, key: jax.Array,
                  horizon: int) -> Rollout:
    """Roll `act(obs B×D, key) -> action B×A` through `step` (e.g. `stepper(model, model_state, mode=...)`) for
    `horizon` steps from start_obs B×D; differentiable through the actions and states."""
    final_obs, final_alive, (obs, action, reward, alive) = imagine(
        lambda o, k: (a := act(o, k), a), step, start_obs, key, horizon)
    return Rollout(obs, action, reward, alive, final_obs, final_alive)


def discounted_return(rollout: Rollout, bootstrap: jax.Array, gamma: float) -> jax.Array:
    """Σ_{t<H} γ^t alive_t r_t + γ^H alive_H V(s_H) per start state: B."""
    h = rollout.reward.shape[0]
    disc = gamma ** jnp.arange(h, dtype=jnp.float32)
    return (disc[:, None] * rollout.alive * rollout.reward).sum(0) + gamma**h * rollout.final_alive * bootstrap


def reward_to_go(rollout: Rollout, bootstrap: jax.Array, gamma: float) -> jax.Array:
    """G_t = Σ_{k≥t} γ^{k-t} alive_k r_k + γ^{H-t} alive_H V(s_H) for every t: H×B (reverse scan)."""

    def body(g_next, x):
        r, alive = x
        g = alive * r + gamma * g_next
        return g, g

    _, g = jax.lax.scan(body, rollout.final_alive * bootstrap, (rollout.reward, rollout.alive), reverse=True)
    return g


class Pathwise(StaticSpec):
    """BPTT policy optimization through a model. Static settings plus pure functions of a `PathwiseState`.

    `update(state, model_state, start_obs, key)` is one policy step and one value step on B start states;
    `update_many` fuses G of them with `lax.scan` (G×B×D start states)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        model: EnsembleModel,
        *,
        reward_fn: RewardFn | None = None,
        term_fn: TermFn | None = None,
        hidden: Sequence[int] = (64, 64),
        value_hidden: Sequence[int] = (64, 64),
        lr: float = 1e-3,
        value_lr: float = 1e-3,
        horizon: int = 20,
        gamma: float = 0.99,
        grad_clip: float | None = 10.0,
        value_bootstrap: bool = True,
        action_noise: float = 0.1,
        member_mode: str = "step",
        tau: float = 0.01,
    ):
        if horizon < 1:
            raise ValueError(f"horizon must be ≥ 1, got {horizon}")
        if member_mode not in MEMBER_MODES[:3]:
            raise ValueError(f"member_mode must be one of {MEMBER_MODES[:3]}, got {member_mode!r}")
        self._spec = (obs_dim, act_dim, model, reward_fn, term_fn, tuple(hidden), tuple(value_hidden), lr,
                      value_lr, horizon, gamma, grad_clip, value_bootstrap, action_noise, member_mode, tau)
        self.obs_dim, self.act_dim, self.model = obs_dim, act_dim, model
        self.reward_fn, self.term_fn = reward_fn, term_fn
        self.horizon, self.gamma, self.tau = horizon, gamma, tau
        self.value_bootstrap, self.action_noise, self.member_mode = value_bootstrap, action_noise, member_mode
        self.actor_net = DeterministicActor(tuple(hidden), act_dim)
        self.value_net = ValueNet(tuple(value_hidden))
        clip = [optax.clip_by_global_norm(grad_clip)] if grad_clip else []
        self.policy_tx = optax.chain(*clip, optax.adam(lr))
        self.value_tx = optax.adam(value_lr)

    @partial(jax.jit, static_argnums=0)
    def init(self, key: jax.Array) -> PathwiseState:
        k_p, k_v = jax.random.split(key)
        obs = jnp.zeros((1, self.obs_dim), jnp.float32)
        policy = self.actor_net.init(k_p, obs)
        value = self.value_net.init(k_v, obs)
        return PathwiseState(policy, value, value, self.policy_tx.init(policy), self.value_tx.init(value),
                             jnp.zeros((), jnp.int32))

    # ---- acting ------------------------------------------------------------------------------------
    def mean_action(self, policy_params: Any, obs: jax.Array) -> jax.Array:
        return jnp.tanh(self.actor_net.apply(policy_params, obs))

    def sample_action(
        self, policy_params: Any, obs: jax.Array, key: jax.Array, noise: float | None = None
    ) -> jax.Array:
        """Reparameterized a = tanh(μ(s) + σ ε): differentiable in the parameters and in obs."""
        sigma = self.action_noise if noise is None else noise
        u = self.actor_net.apply(policy_params, obs)
        return jnp.tanh(u + sigma * jax.random.normal(key, u.shape))

    # ---- losses ------------------------------------------------------------------------------------
    def rollout(self, policy_params: Any, model_state: ModelState, start_obs: jax.Array, key: jax.Array) -> Rollout:
        step = stepper(self.model, model_state, mode=self.member_mode, reward_fn=self.reward_fn, term_fn=self.term_fn)
        return model_rollout(lambda o, k: self.sample_action(policy_params, o, k), step, start_obs, key, self.horizon)

    def policy_loss(self, policy_params: Any, value_params: Any, model_state: ModelState, start_obs: jax.Array,
                    key: jax.Array) -> tuple[jax.Array, Rollout]:
        """-mean_B [ Σ_{t<H} γ^t r_t + γ^H V(s_H) ]: the negative H-step return, differentiated by BPTT
        through the model's states (the value's parameters are held fixed; its input s_H is not)."""
        roll = self.rollout(policy_params, model_state, start_obs, key)
        boot = (self.value_net.apply(jax.lax.stop_gradient(value_params), roll.final_obs)
                if self.value_bootstrap else jnp.zeros_like(roll.final_alive))
        return -discounted_return(roll, boot, self.gamma).mean(), roll

    def value_loss(self, value_params: Any, obs: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
        """Weighted MSE of V(s_t) against the rollouts' H-step targets; obs H×B×D, target and weight H×B."""
        v = self.value_net.apply(value_params, obs)
        return 0.5 * ((v - target) ** 2 * weight).sum() / jnp.maximum(weight.sum(), 1.0)

    # ---- one update --------------------------------------------------------------------------------
    def update(self, state: PathwiseState, model_state: ModelState, start_obs: jax.Array, key: jax.Array):
        # policy: ascend the pathwise gradient of the H-step return (clipped, then Adam)
        (loss, roll), grads = jax.value_and_grad(self.policy_loss, has_aux=True)(
            state.policy, state.target_value, model_state, start_obs, key
        )
        grad_norm = optax.global_norm(grads)
        upd, policy_opt = self.policy_tx.update(grads, state.policy_opt, state.policy)
        policy = optax.apply_updates(state.policy, upd)
        # value: regress V(s_t) on the (stopped) reward-to-go of the same rollouts, bootstrapped by V̄(s_H)
        value, value_opt, v_loss = state.value, state.value_opt, jnp.zeros(())
        if self.value_bootstrap:
            roll = jax.lax.stop_gradient(roll)
            boot = self.value_net.apply(state.target_value, roll.final_obs)
            target = reward_to_go(roll, boot, self.gamma)
            v_loss, v_grads = jax.value_and_grad(self.value_loss)(state.value, roll.obs, target, roll.alive)
            v_upd, value_opt = self.value_tx.update(v_grads, state.value_opt, state.value)
            value = optax.apply_updates(state.value, v_upd)
        target_value = optax.incremental_update(value, state.target_value, self.tau)
        new = PathwiseState(policy, value, target_value, policy_opt, value_opt, state.steps + 1)
        info = {
            "bptt/return_h": -loss,
            "bptt/grad_norm": grad_norm,
            "bptt/value_loss": v_loss,
            "bptt/model_reward": (roll.reward * roll.alive).sum() / jnp.maximum(roll.alive.sum(), 1.0),
        }
        return new, info

    @partial(jax.jit, static_argnums=0)
    def update_many(self, state: PathwiseState, model_state: ModelState, starts: jax.Array, key: jax.Array):
        """G updates on start states G×B×D, fused in one `lax.scan`; returns the mean info."""
        keys = jax.random.split(key, starts.shape[0])
        state, infos = jax.lax.scan(lambda s, xs: self.update(s, model_state, *xs), state, (starts, keys))
        return state, jax.tree.map(jnp.mean, infos)
