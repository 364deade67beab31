"""MAML policy-gradient pieces for MB-MPO (Clavera et al. 2018), as pure functions of explicit data.

Every ensemble member k is a task. With θ the pre-update ("meta") policy parameters:

    inner step      θ'_k = θ + α ∇_θ Ĵ_k(θ)          Ĵ_k: a policy-gradient surrogate on trajectories of π_θ in model k
    meta objective  M(θ) = 1/T Σ_k L_k(θ'_k(θ))       L_k: the TRPO surrogate E[π_θ'_k(a|s)/π_old(a|s) Â] on
                                                      trajectories of the adapted policy π_θ'_k in model k
    outer step      max_θ M(θ)  s.t.  1/T Σ_k E[KL(π_old,k ‖ π_θ'_k(θ))] ≤ δ      (TRPO, on θ)

The outer objective is differentiated *through* the inner step (second order: ∇_θ M = Σ_k (I + α ∇²Ĵ_k)
∇_θ' L_k). Every function below is a function of θ with the sampled data fixed (the behaviour log-probabilities
are data, so no `stop_gradient` hides a θ-dependence): `meta_objective` is exactly the function whose gradient
the outer step uses, and tests/unit/test_maml.py checks that gradient against central finite differences.

How the dependence of the *inner* samples' distribution on θ enters (`inner_type`); all three have the same
gradient at θ (the REINFORCE estimate 1/N Σ ∇log π(a_t|s_t) Â_t) and differ in the Hessian that the meta-gradient
carries:
  - "log_likelihood" (default; the MB-MPO authors' code, i.e. the MAML-TRPO surrogate of Finn et al. 2017):
    Ĵ = mean[log π_θ(a|s) Â]. The inner samples are treated as fixed data: the Hessian is mean[∇²log π Â] and
    the term from the samples' distribution is dropped.
  - "likelihood_ratio" (ProMP's LVC estimator, Rothfuss et al. 2019): Ĵ = mean[π_θ(a|s)/π_old(a|s) Â]; adds the
    per-step term mean[∇log π ∇log πᵀ Â] (a low-variance part of the sampling-distribution term).
  - "dice" (DiCE, Foerster et al. 2018): Ĵ = 1/N Σ_t □(W_t) (Â_t − Â_{t+1}), □(W_t) = exp(W_t − W_t^old),
    W_t = Σ_{t'≤t} log π(a_t'|s_t'); the suffix sums of the increments are the advantages, so the gradient is the
    same and the Hessian holds every cross term Σ_{t'≤t} ∇log π_t' ∇log π_tᵀ Â-increment (the full sampling term).

The Fisher-vector product of the outer TRPO step is the Hessian of the mean KL at θ, pulled back through the
inner step: F v = 1/T Σ_k J_kᵀ F_k J_k v with J_k = ∂θ'_k/∂θ (exact at θ, where the KL's gradient vanishes;
tests/unit/test_maml.py compares it with the Hessian of the KL through the inner step).

The policy is agents/ppo.py's Gaussian MLP (tanh hidden layers, state-independent log-std; the unclipped sample
is stored, the action clipped to [-1, 1] before the model). Advantages per task: discounted returns, the
linear-feature baseline of rllab (refit per task on the same trajectories, as ProMP does), GAE (λ = 1 in the
paper) and normalization per task. Rollouts in the models are `lax.scan` over the horizon, `vmap` over the tasks.

Shapes: T tasks (the meta-batch; which model a task uses is the dynamics' business), B rollouts per task, H steps,
D observation, A action.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from mbrlax.agents.pathwise import Rollout, imagine, reward_to_go
from mbrlax.agents.ppo import (
    GaussianPolicy,
    _normalize,
    _wmean,
    gae,
    gaussian_kl,
    gaussian_log_prob,
    trust_region_step,
)
from mbrlax.models.ensemble import EnsembleModel
from mbrlax.types import RewardFn, TermFn

INNER_TYPES = ("log_likelihood", "likelihood_ratio", "dice")

# dyn_step(dyn, obs T×B×D, action T×B×A in [-1, 1], key) -> (next_obs T×B×D, reward T×B, done T×B in [0, 1]):
# one step of every task's own dynamics (the dynamics know which model each task uses)
DynStep = Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array, jax.Array]]


@dataclass(frozen=True)
class EnsembleDynamics:
    """A `DynStep` for T = K·P tasks on a K-member ensemble, task i on member i // P: the tasks' rows are
    regrouped K×(P·B) and go through the ensemble in one batched forward pass (each member its own rows).
    `dyn` = (ModelState, low D, high D): predicted observations are clipped to [low, high] (the authors clip to
    the env's observation bounds, "to avoid numerical instabilities"), before the known reward and termination
    see them. The model is never differentiated (its state enters through stop_gradient). Hashable, so it can
    be a static jit argument."""

    model: EnsembleModel
    reward_fn: RewardFn | None = None
    term_fn: TermFn | None = None

    def __call__(self, dyn: Any, obs: jax.Array, action: jax.Array, key: jax.Array):
        model_state, low, high = jax.lax.stop_gradient(dyn)  # the policy loss must never move the model
        t, b, d = obs.shape
        k = self.model.ensemble_size
        group = lambda x: x.reshape(k, (t // k) * b, *x.shape[2:])  # noqa: E731  (tasks are contiguous per member)
        pred = self.model.predict(model_state, group(obs), group(action))
        next_obs, reward = pred.next_obs_mean, pred.reward_mean
        if self.model.probabilistic:
            k_o, k_r = jax.random.split(key)
            next_obs = next_obs + jnp.sqrt(pred.next_obs_var) * jax.random.normal(k_o, next_obs.shape)
            reward = reward + jnp.sqrt(pred.reward_var) * jax.random.normal(k_r, reward.shape)
        ungroup = lambda x: x.reshape(t, b, *x.shape[2:])  # noqa: E731
        next_obs, reward = jnp.clip(ungroup(next_obs), low, high), ungroup(reward)
        if self.reward_fn is not None:
            reward = self.reward_fn(obs, action, next_obs)
        if self.term_fn is not None:
            done = self.term_fn(obs, action, next_obs).astype(obs.dtype)
        elif pred.term_logit is not None:
            done = jax.nn.sigmoid(ungroup(pred.term_logit))
        else:
            done = jnp.zeros((t, b), obs.dtype)
        return next_obs, reward, done


class Imagined(NamedTuple):
    """Trajectories of one task (T-stacked where several): obs H×B×D, action H×B×A (unclipped), log_prob H×B
    and mean H×B×A of the behaviour policy, its log_std A, reward H×B, alive H×B (1 while live), final_alive B."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    mean: jax.Array
    log_std: jax.Array
    reward: jax.Array
    alive: jax.Array
    final_alive: jax.Array


class MetaState(NamedTuple):
    """The pre-update ("meta") policy θ and the T adapted policies θ'_k (T-stacked) that collect real data."""

    policy: Any
    adapted: Any


class TaskBatch(NamedTuple):
    """What the inner and outer objectives read, H×B(×…): the behaviour policy's samples and distribution,
    normalized advantages and weights (1 for live steps)."""

    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    mean: jax.Array
    log_std: jax.Array
    advantage: jax.Array
    weight: jax.Array


# ---- sampling and advantages -------------------------------------------------------------------------


def sample(policy_net: GaussianPolicy, params: Any, stacked: bool, dyn_step: DynStep, dyn: Any,
           start_obs: jax.Array, key: jax.Array, horizon: int) -> Imagined:
    """B trajectories per task of π_params (stacked=False: one θ for every task; stacked=True: task k's own
    params[k]) through `dyn_step` from start_obs T×B×D: a lax.scan over H, the tasks batched. Returns the
    T-stacked Imagined. A step whose prediction is not finite ends its trajectory (`pathwise.imagine` with guard)."""
    apply = jax.vmap(policy_net.apply) if stacked else policy_net.apply

    def act(obs, k):
        mean, log_std = apply(params, obs)
        log_std = jnp.broadcast_to(log_std[:, None] if stacked else log_std, mean.shape)
        a = mean + jnp.exp(log_std) * jax.random.normal(k, mean.shape, mean.dtype)
        return jnp.clip(a, -1.0, 1.0), (a, gaussian_log_prob(mean, log_std, a), mean)

    _, final_alive, (obs, (a, logp, mean), rew, alive) = imagine(
        act, lambda o, a, k: dyn_step(dyn, o, a, k), start_obs, key, horizon, guard=True)
    obs, a, logp, mean, rew, alive = (jnp.swapaxes(x, 0, 1) for x in (obs, a, logp, mean, rew, alive))  # -> T×H×…
    log_std = apply(params, start_obs[:, :1])[1]
    log_std = log_std if stacked else jnp.broadcast_to(log_std, (start_obs.shape[0], log_std.shape[-1]))
    return Imagined(obs, a, logp, mean, log_std, rew, alive, final_alive)


def baseline_features(obs: jax.Array) -> jax.Array:
    """rllab's LinearFeatureBaseline features of H×B×D observations: [o, o², t, t², t³, 1] with o clipped to
    ±10 and t = step/100. Returns H×B×(2D+4)."""
    h, b, _ = obs.shape
    o = jnp.clip(obs, -10.0, 10.0)
    t = jnp.broadcast_to((jnp.arange(h, dtype=obs.dtype) / 100.0)[:, None, None], (h, b, 1))
    return jnp.concatenate([o, o**2, t, t**2, t**3, jnp.ones_like(t)], -1)


def linear_baseline(obs: jax.Array, returns: jax.Array, weight: jax.Array, reg: float = 1e-5) -> jax.Array:
    """Ridge regression of the returns H×B on `baseline_features` (weighted by `weight`), predicted on the same
    states: H×B. Normal equations on features scaled to unit RMS, ridge `reg` relative to that scale (rllab's
    reg_coeff is 1e-5 on the raw Gram matrix), Cholesky solve: F×F work instead of an SVD of the N×F design
    (20× faster at the paper's 10,000 samples per task) and well conditioned in float32."""
    x = baseline_features(obs).reshape(-1, 2 * obs.shape[-1] + 4)
    w = weight.reshape(-1, 1)
    n = jnp.maximum(w.sum(), 1.0)
    scale = jnp.sqrt((w * x**2).sum(0) / n) + 1e-8
    xs = x / scale
    gram = (xs * w).T @ xs / n + reg * jnp.eye(x.shape[1], dtype=x.dtype)
    coef = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gram), (xs * w).T @ returns.reshape(-1) / n)
    return (xs @ coef).reshape(returns.shape)


def process(roll: Imagined, gamma: float, lam: float = 1.0) -> TaskBatch:
    """Advantages for one task: baseline fitted to the discounted returns, GAE(γ, λ) against it (no bootstrap
    after H, as rllab), normalized over the task's live steps."""
    zeros = jnp.zeros_like(roll.final_alive)
    returns = reward_to_go(cast(Rollout, roll), zeros, gamma)  # it reads only reward, alive and final_alive
    base = jax.lax.stop_gradient(linear_baseline(roll.obs, returns, roll.alive))
    adv, _ = gae(roll.reward, base, zeros, roll.alive, roll.final_alive, gamma, lam)
    adv = _normalize(adv, roll.alive) * roll.alive
    return TaskBatch(roll.obs, roll.action, roll.log_prob, roll.mean, roll.log_std, adv, roll.alive)


def mean_return(roll: Imagined) -> jax.Array:
    """Undiscounted return per trajectory, averaged over the B trajectories."""
    return (roll.reward * roll.alive).sum(0).mean()


# ---- inner step --------------------------------------------------------------------------------------


def inner_objective(policy_net: GaussianPolicy, params: Any, batch: TaskBatch, inner_type: str) -> jax.Array:
    """Ĵ(θ) on fixed samples of the behaviour policy (see the module docstring for the three forms)."""
    mean, log_std = policy_net.apply(params, batch.obs)
    logp = gaussian_log_prob(mean, log_std, batch.action)
    w, adv = batch.weight, batch.advantage
    if inner_type == "log_likelihood":
        return _wmean(logp * adv, w)
    if inner_type == "likelihood_ratio":
        return _wmean(jnp.exp(logp - batch.log_prob) * adv, w)
    if inner_type == "dice":
        box = jnp.exp(jnp.cumsum((logp - batch.log_prob) * w, 0))  # □(W_t), 1 at θ = θ_old
        increment = adv - jnp.concatenate([adv[1:], jnp.zeros_like(adv[:1])], 0)  # suffix sums are Â_t
        return _wmean(box * increment, w)
    raise ValueError(f"unknown inner_type {inner_type!r}; choose one of {INNER_TYPES}")


def adapt(policy_net: GaussianPolicy, params: Any, batch: TaskBatch, inner_lr: float, inner_type: str) -> Any:
    """The inner step θ' = θ + α ∇_θ Ĵ(θ), differentiable in θ (every parameter, the log-std included, as in
    the authors' MAML policy)."""
    g = jax.grad(inner_objective, argnums=1)(policy_net, params, batch, inner_type)
    return jax.tree.map(lambda p, d: p + inner_lr * d, params, g)


# ---- outer objective ---------------------------------------------------------------------------------


def surrogate(policy_net: GaussianPolicy, params: Any, batch: TaskBatch) -> jax.Array:
    """The TRPO surrogate mean[π_params(a|s) / π_old(a|s) Â] on one task's samples."""
    mean, log_std = policy_net.apply(params, batch.obs)
    return _wmean(jnp.exp(gaussian_log_prob(mean, log_std, batch.action) - batch.log_prob) * batch.advantage,
                  batch.weight)


def mean_kl(policy_net: GaussianPolicy, params: Any, batch: TaskBatch) -> jax.Array:
    """mean KL(π_old ‖ π_params) over one task's sampled states."""
    mean, log_std = policy_net.apply(params, batch.obs)
    old_log_std = jnp.broadcast_to(batch.log_std, batch.mean.shape)
    return _wmean(gaussian_kl(batch.mean, old_log_std, mean, jnp.broadcast_to(log_std, mean.shape)), batch.weight)


def adapt_all(policy_net: GaussianPolicy, params: Any, pre: TaskBatch, inner_lr: float, inner_type: str) -> Any:
    """θ'_k for every task (pre: T-stacked batches): a T-stacked pytree."""
    return jax.vmap(adapt, (None, None, 0, None, None))(policy_net, params, pre, inner_lr, inner_type)


def meta_objective_and_kl(policy_net: GaussianPolicy, params: Any, pre: TaskBatch, post: TaskBatch,
                          inner_lr: float, inner_type: str) -> tuple[jax.Array, jax.Array]:
    """(M(θ), the mean KL) from one inner step per task: M(θ) = 1/T Σ_k surrogate_k(θ + α ∇Ĵ_k(θ)) and
    1/T Σ_k mean KL(π_old,k ‖ π_θ'_k(θ)) on the adapted policies' samples (the authors' `kl_constrain_step=-1`).
    pre and post are T-stacked batches of the pre-update and of the adapted policies."""
    adapted = adapt_all(policy_net, params, pre, inner_lr, inner_type)
    both = lambda p, b: (surrogate(policy_net, p, b), mean_kl(policy_net, p, b))  # noqa: E731
    sur, kl = jax.vmap(both)(adapted, post)
    return sur.mean(), kl.mean()


def meta_objective(policy_net: GaussianPolicy, params: Any, pre: TaskBatch, post: TaskBatch, inner_lr: float,
                   inner_type: str) -> jax.Array:
    """M(θ), the function whose gradient the outer step ascends."""
    return meta_objective_and_kl(policy_net, params, pre, post, inner_lr, inner_type)[0]


def meta_kl(policy_net: GaussianPolicy, params: Any, pre: TaskBatch, post: TaskBatch, inner_lr: float,
            inner_type: str) -> jax.Array:
    """The outer step's constraint: the mean KL of the adapted policies of θ from those that sampled `post`."""
    return meta_objective_and_kl(policy_net, params, pre, post, inner_lr, inner_type)[1]


def first_order_gradient(policy_net: GaussianPolicy, params: Any, pre: TaskBatch, post: TaskBatch,
                         inner_lr: float, inner_type: str) -> Any:
    """First-order MAML: 1/T Σ_k ∇_θ' surrogate_k at θ'_k, the inner step's Jacobian taken as the identity."""
    adapted = adapt_all(policy_net, params, pre, inner_lr, inner_type)
    g = jax.vmap(jax.grad(surrogate, argnums=1), (None, 0, 0))(policy_net, adapted, post)
    return jax.tree.map(lambda x: x.mean(0), g)


def meta_fvp(policy_net: GaussianPolicy, params: Any, pre: TaskBatch, post: TaskBatch, inner_lr: float,
             inner_type: str) -> Callable[[jax.Array], jax.Array]:
    """v ↦ F v on flat parameters, F = 1/T Σ_k J_k F_k J_k: the Hessian of `meta_kl` at θ (the KL's gradient
    is zero there), with F_k the KL Hessian at θ'_k and J_k = ∂θ'_k/∂θ = I + α ∇²Ĵ_k, which is symmetric, so
    J_kᵀ = J_k. Both Hessians are linearized once; a product costs two tangent passes on the inner samples and
    one on the adapted policies' samples."""
    flat, unravel = ravel_pytree(params)
    t = pre.obs.shape[0]
    inner_grad = jax.grad(lambda f, b: inner_objective(policy_net, unravel(f), b, inner_type))
    kl_grad = jax.grad(lambda f, b: mean_kl(policy_net, unravel(f), b))
    stacked = jnp.broadcast_to(flat, (t, flat.size))
    adapted = stacked + inner_lr * jax.vmap(inner_grad)(stacked, pre)
    _, h_inner = jax.linearize(lambda x: jax.vmap(inner_grad)(x, pre), stacked)
    _, h_kl = jax.linearize(lambda x: jax.vmap(kl_grad)(x, post), adapted)

    def fvp(v: jax.Array) -> jax.Array:
        jv = jnp.broadcast_to(v, (t, v.size))
        jv = jv + inner_lr * h_inner(jv)
        w = h_kl(jv)
        return (w + inner_lr * h_inner(w)).mean(0)

    return fvp


# ---- the agent ---------------------------------------------------------------------------------------


class MAML:
    """MB-MPO's policy optimization: static settings plus pure (jitted) functions of the pre-update parameters.

    `optimize(params, dyn, pool, key, n)` runs n meta steps (each: imagined trajectories of π_θ in every task,
    the inner step, trajectories of the adapted policies, one outer TRPO step) in one `lax.scan` and returns the
    new θ with its T adapted policies (which collect the next real data), in one device call."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        dyn_step: DynStep,
        tasks: int,
        *,
        hidden: Sequence[int] = (32, 32),
        init_log_std: float = 0.0,
        rollouts: int = 50,
        horizon: int = 200,
        gamma: float = 0.99,
        lam: float = 1.0,
        inner_lr: float = 1e-3,
        inner_type: str = "log_likelihood",
        max_kl: float = 0.01,
        cg_iters: int = 10,
        cg_damping: float = 1e-5,
        backtrack_iters: int = 15,
    ):
        if inner_type not in INNER_TYPES:
            raise ValueError(f"unknown inner_type {inner_type!r}; choose one of {INNER_TYPES}")
        self._spec = (obs_dim, act_dim, dyn_step, tasks, tuple(hidden), init_log_std, rollouts, horizon,
                      gamma, lam, inner_lr, inner_type, max_kl, cg_iters, cg_damping, backtrack_iters)
        self.obs_dim, self.act_dim, self.dyn_step = obs_dim, act_dim, dyn_step
        self.tasks = tasks
        self.rollouts, self.horizon, self.gamma, self.lam = rollouts, horizon, gamma, lam
        self.inner_lr, self.inner_type = inner_lr, inner_type
        self.max_kl, self.cg_iters = max_kl, cg_iters
        self.cg_damping, self.backtrack_iters = cg_damping, backtrack_iters
        self.policy_net = GaussianPolicy(tuple(hidden), act_dim, init_log_std)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._spec == self._spec

    def __hash__(self) -> int:
        return hash(self._spec)

    def init(self, key: jax.Array) -> MetaState:
        """θ from the policy's initializer; every adapted policy starts as θ."""
        policy = self.policy_net.init(key, jnp.zeros((1, self.obs_dim), jnp.float32))
        return MetaState(policy, jax.tree.map(lambda x: jnp.stack([x] * self.tasks), policy))

    # ---- acting ------------------------------------------------------------------------------------
    def mean_action(self, params: Any, obs: jax.Array) -> jax.Array:
        return jnp.clip(self.policy_net.apply(params, obs)[0], -1.0, 1.0)

    @partial(jax.jit, static_argnums=0)
    def task_action(self, adapted: Any, task: jax.Array, obs: jax.Array, key: jax.Array) -> jax.Array:
        """A Gaussian sample of task `task`'s adapted policy (T-stacked params) for one observation D, clipped."""
        params = jax.tree.map(lambda x: x[task], adapted)
        mean, log_std = self.policy_net.apply(params, obs[None])
        return jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape), -1.0, 1.0)[0]

    # ---- one meta step -----------------------------------------------------------------------------
    def imagine(self, params: Any, stacked: bool, dyn: Any, starts: jax.Array, key: jax.Array):
        """Trajectories in every task from starts T×B×D: of π_params (stacked=False) or of task k's own
        params[k] (stacked=True). Returns (T-stacked TaskBatch, T mean returns)."""
        rolls = sample(self.policy_net, params, stacked, self.dyn_step, dyn, starts, key, self.horizon)
        batches = jax.vmap(lambda r: process(r, self.gamma, self.lam))(rolls)
        return batches, jax.vmap(mean_return)(rolls)

    def _starts(self, pool: jax.Array, key: jax.Array) -> jax.Array:
        return pool[jax.random.randint(key, (self.tasks, self.rollouts), 0, pool.shape[0])]

    def meta_step(self, params: Any, dyn: Any, pool: jax.Array, key: jax.Array) -> tuple[Any, dict]:
        k1, k2, k3, k4 = jax.random.split(key, 4)
        # trajectories of the pre-update policy in every task's model, then the inner step per task
        pre, pre_ret = self.imagine(params, False, dyn, self._starts(pool, k1), k2)
        adapted = adapt_all(self.policy_net, params, pre, self.inner_lr, self.inner_type)
        # trajectories of the adapted policies; the outer TRPO step through the inner step
        post, post_ret = self.imagine(adapted, True, dyn, self._starts(pool, k3), k4)
        new, info = self.outer_step(params, pre, post)
        inner_kl = jax.vmap(mean_kl, (None, 0, 0))(self.policy_net, adapted, pre).mean()
        info = {**info, "maml/pre_return": pre_ret.mean(), "maml/post_return": post_ret.mean(),
                "maml/adaptation_gain": (post_ret - pre_ret).mean(), "maml/inner_kl": inner_kl,
                "maml/log_std": self.policy_net.apply(params, pool[:1])[1].mean()}
        return new, info

    def outer_step(self, params: Any, pre: TaskBatch, post: TaskBatch) -> tuple[Any, dict]:
        """The outer TRPO step on θ through the inner step, from the T-stacked batches of the pre-update and the
        adapted policies: (new θ, the step's "outer/" infos)."""
        flat, unravel = ravel_pytree(params)
        args = (pre, post, self.inner_lr, self.inner_type)
        new, info = trust_region_step(
            lambda f: meta_objective_and_kl(self.policy_net, unravel(f), *args),
            meta_fvp(self.policy_net, params, *args), flat, max_kl=self.max_kl, cg_iters=self.cg_iters,
            cg_damping=self.cg_damping, backtrack_iters=self.backtrack_iters, prefix="outer/")
        return unravel(new), info

    def adapt(self, params: Any, dyn: Any, pool: jax.Array, key: jax.Array) -> tuple[Any, jax.Array]:
        """The T adapted policies θ'_k of `params` (T-stacked) and the pre-update policy's T model returns."""
        k1, k2 = jax.random.split(key)
        pre, pre_ret = self.imagine(params, False, dyn, self._starts(pool, k1), k2)
        return adapt_all(self.policy_net, params, pre, self.inner_lr, self.inner_type), pre_ret

    @partial(jax.jit, static_argnums=(0, 5))
    def optimize(self, params: Any, dyn: Any, pool: jax.Array, key: jax.Array, n: int) -> tuple[MetaState, dict]:
        """n meta steps in one `lax.scan` (start states drawn from `pool` N×D), then the adapted policies of the
        final θ (to collect real data with). Returns the MetaState and the per-step infos (n each)."""
        k_steps, k_adapt = jax.random.split(key)
        params, infos = jax.lax.scan(lambda p, k: self.meta_step(p, dyn, pool, k), params, jax.random.split(k_steps, n))
        return MetaState(params, self.adapt(params, dyn, pool, k_adapt)[0]), infos
