"""Model rollouts.

`branched_rollout` is MBPO's: start from N real states, roll the current policy through the model for k
steps (each sample through a random elite member, re-drawn at every step: `EnsembleModel.elite_step`), and
write every transition into the device-side model buffer. A rollout that terminates stops there: its later
steps are not written.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mbrlax.data.replay import DeviceBuffer, device_buffer_add
from mbrlax.models.ensemble import EnsembleModel, ModelState
from mbrlax.types import TermFn, Transition

# policy(params, obs B×D, key) -> action B×A
PolicySampler = Callable[[Any, jax.Array, jax.Array], jax.Array]


@partial(jax.jit, static_argnames=("model", "policy", "term_fn"))
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
) -> tuple[DeviceBuffer, dict]:
    """Roll out `length` steps (a traced value: changing it does not recompile) from `start_obs` N×D.

    Termination comes from `term_fn` if given, else from the model's learned termination head
    (probability > 0.5), else nothing terminates. Returns the updated buffer and rollout statistics.
    """
    n = start_obs.shape[0]
    m = min(n, 256)
    if term_fn is None and not model.learn_termination:
        term_fn = lambda o, a, no: jnp.zeros(o.shape[:-1], bool)  # noqa: E731

    def step(t, carry):
        obs, alive, buffer, key, stats = carry
        key, k_pi, k_model = jax.random.split(key, 3)
        action = policy(policy_params, obs, k_pi)
        next_obs, reward, term_prob = model.elite_step(model_state, obs, action, k_model)
        terminated = term_fn(obs, action, next_obs) if term_fn is not None else term_prob > 0.5
        batch = Transition(obs, action, reward, next_obs, terminated.astype(jnp.float32))
        buffer = device_buffer_add(buffer, batch, alive)
        w = alive.astype(jnp.float32)
        stats = {
            "rollout/transitions": stats["rollout/transitions"] + w.sum(),
            "rollout/reward_sum": stats["rollout/reward_sum"] + (reward * w).sum(),
            # epistemic spread: std of all members' mean next states, averaged over features, measured on
            # the first `m` rollouts only (all E members on every row would cost E times the rollout)
            "rollout/disagreement_sum": stats["rollout/disagreement_sum"]
            + (model.predict(model_state, obs[:m], action[:m]).next_obs_mean.std(0).mean(-1) * w[:m]).sum(),
            "rollout/disagreement_count": stats["rollout/disagreement_count"] + w[:m].sum(),
        }
        return next_obs, alive & ~terminated, buffer, key, stats

    zero = jnp.zeros((), jnp.float32)
    stats0 = {"rollout/transitions": zero, "rollout/reward_sum": zero, "rollout/disagreement_sum": zero,
              "rollout/disagreement_count": zero}
    init = (start_obs, jnp.ones((n,), bool), buffer, key, stats0)
    _, alive, buffer, _, stats = jax.lax.fori_loop(0, length, step, init)
    count = jnp.maximum(stats["rollout/transitions"], 1.0)
    info = {
        "rollout/transitions": stats["rollout/transitions"],
        "rollout/mean_reward": stats["rollout/reward_sum"] / count,
        "rollout/disagreement": stats["rollout/disagreement_sum"]
        / jnp.maximum(stats["rollout/disagreement_count"], 1.0),
        "rollout/alive_fraction": alive.mean(),
    }
    return buffer, info
