"""Model rollouts.

`branched_rollout` is the one rollout kernel of MBPO and MOPO: start from N real states, roll the current
policy through the model for k steps (each sample through a random elite member, re-drawn at every step),
and write every transition into the device-side model buffer. A rollout that terminates stops there: its
later steps are not written.

MBPO (no penalty) steps the elites with `EnsembleModel.elite_step`: one network pass per sample. MOPO
(`penalty=` one of models/penalties.PENALTIES) needs every member's Gaussian for its uncertainty u(s, a),
so it predicts with all E members once (`EnsembleModel.sample_step`) and writes r̃ = r̂ − λ·u(s, a); the
penalty is a reward correction computed under `stop_gradient`, never a training signal for the model.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from mbrlax.data.replay import DeviceBuffer, device_buffer_add
from mbrlax.models import penalties
from mbrlax.models.ensemble import EnsembleModel, ModelState
from mbrlax.types import TermFn, Transition

# policy(params, obs B×D, key) -> action B×A
PolicySampler = Callable[[Any, jax.Array, jax.Array], jax.Array]

# rollouts whose members' means are compared for the logged disagreement (all E members on every row would
# cost E times the rollout in MBPO's elite-only path)
DISAGREEMENT_ROWS = 256


@partial(jax.jit, static_argnames=("model", "policy", "term_fn", "penalty", "penalty_members"))
def branched_rollout(
    model: EnsembleModel,
    model_state: ModelState,
    policy: PolicySampler,
    policy_params: Any,
    start_obs: jax.Array,
    length: jax.Array | int,
    buffer: DeviceBuffer,
    key: jax.Array,
    term_fn: TermFn | None = None,
    *,
    penalty: str | None = None,
    lam: float | jax.Array = 0.0,
    penalty_members: str = "all",
) -> tuple[DeviceBuffer, dict]:
    """Roll out `length` steps (a traced value: changing it does not recompile) from `start_obs` N×D.

    Termination comes from `term_fn` if given, else from the model's learned termination head
    (probability > 0.5), else nothing terminates. With `penalty` (static) each written reward is
    r̂ − `lam`·u(s, a), u computed over all members or, with `penalty_members="elites"`, the elites only.
    Returns the updated buffer and rollout statistics (with a penalty: MOPO's rollout/mean_penalty,
    max_penalty, mean_model_reward and mean_penalized_reward in place of MBPO's mean_reward).
    """
    n = start_obs.shape[0]
    m = min(n, DISAGREEMENT_ROWS)
    if term_fn is None and not model.learn_termination:
        term_fn = lambda o, a, no: jnp.zeros(o.shape[:-1], bool)  # noqa: E731
    if penalty_members not in ("all", "elites"):
        raise ValueError(f"penalty_members must be 'all' or 'elites', got {penalty_members!r}")
    members = model_state.elites if penalty_members == "elites" else None

    def model_step(obs, action, k):
        """(next_obs, model reward r̂, u (or None), term_prob, members' mean next states E×m×D) for one step."""
        if penalty is None:
            next_obs, reward, term_prob = model.elite_step(model_state, obs, action, k)
            means = model.predict(model_state, obs[:m], action[:m]).next_obs_mean
            return next_obs, reward, None, term_prob, means
        next_obs, reward, term_prob, pred = model.sample_step(model_state, obs, action, k)
        u = penalties.from_prediction(penalty, pred, next_obs, reward, members)
        return next_obs, reward, u, term_prob, pred.next_obs_mean[:, :m]

    def step(t, carry):
        obs, alive, buffer, key, stats = carry
        key, k_pi, k_model = jax.random.split(key, 3)
        action = policy(policy_params, obs, k_pi)
        next_obs, reward, u, term_prob, means = model_step(obs, action, k_model)
        terminated = term_fn(obs, action, next_obs) if term_fn is not None else term_prob > 0.5
        written = reward if u is None else reward - lam * u
        buffer = device_buffer_add(buffer, Transition(obs, action, written, next_obs, terminated.astype(jnp.float32)),
                                   alive)
        w = alive.astype(jnp.float32)
        new = {
            "transitions": stats["transitions"] + w.sum(),
            "reward_sum": stats["reward_sum"] + (reward * w).sum(),
            # epistemic spread: std of all members' mean next states, averaged over features, first m rollouts
            "disagreement_sum": stats["disagreement_sum"] + (means.std(0).mean(-1) * w[:m]).sum(),
            "disagreement_count": stats["disagreement_count"] + w[:m].sum(),
        }
        if u is not None:
            new["penalty_sum"] = stats["penalty_sum"] + (u * w).sum()
            new["penalty_max"] = jnp.maximum(stats["penalty_max"], (u * w).max())
        return next_obs, alive & ~terminated, buffer, key, new

    names: tuple[str, ...] = ("transitions", "reward_sum", "disagreement_sum", "disagreement_count")
    names += () if penalty is None else ("penalty_sum", "penalty_max")
    stats0 = {name: jnp.zeros((), jnp.float32) for name in names}
    init = (start_obs, jnp.ones((n,), bool), buffer, key, stats0)
    _, alive, buffer, _, stats = jax.lax.fori_loop(0, length, step, init)
    count = jnp.maximum(stats["transitions"], 1.0)
    info = {"rollout/transitions": stats["transitions"]}
    if penalty is None:
        info["rollout/mean_reward"] = stats["reward_sum"] / count
    else:
        info.update({
            "rollout/mean_model_reward": stats["reward_sum"] / count,
            "rollout/mean_penalty": stats["penalty_sum"] / count,
            "rollout/max_penalty": stats["penalty_max"],
            "rollout/mean_penalized_reward": (stats["reward_sum"] - lam * stats["penalty_sum"]) / count,
        })
    info["rollout/disagreement"] = stats["disagreement_sum"] / jnp.maximum(stats["disagreement_count"], 1.0)
    info["rollout/alive_fraction"] = alive.mean()
    return buffer, info
