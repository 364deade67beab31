"""Returns of action sequences through a model: PETS trajectory sampling (TS1, TS∞), expectation, known models.

Each function here builds the planners' `return_fn(actions P×H×A, key) -> P` (see `planning.shooting`).

PETS (Chua et al. 2018, section 4 and handful-of-trials `MPC._predict_next_obs`) propagates N particles per
candidate sequence through a probabilistic ensemble of K members (the elites; all E members when
num_elites = E, as in PETS):
* TS∞ ("tsinf"): each particle keeps one member for the whole horizon. Members are assigned in balanced
  blocks (N/K particles each), as in PETS, so that a member computes only its own particles: the state is
  laid out K×P×(N/K)×D and one batched ensemble call per step costs N·P network evaluations, not K·N·P.
* TS1 ("ts1"): the member of every particle is resampled at every step. PETS does it by randomly permuting
  the particles of each candidate before the same balanced assignment and permuting the predictions back;
  so does this code.
* expectation ("expectation"): one particle per candidate, the next state is the mean of the K members'
  means, no sampling (PETS's "E" baseline; with one deterministic network this is plain v0.5–v1.5 MPC).
Each step samples the member's Gaussian (aleatoric noise) unless the model is deterministic. The reward is
either known (`reward_fn(obs, action, next_obs)` with the action in [-1, 1]) or the model's reward
prediction (sampled like the state). With a known termination function (or the model's termination head)
a particle's rewards after it terminates are zero. The return of a candidate is the mean over its particles
of the undiscounted sum of rewards (PETS's cost).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import jax
import jax.numpy as jnp

from mbrlax.models.ensemble import EnsembleModel, ModelState
from mbrlax.types import RewardFn, TermFn

PROPAGATIONS = ("tsinf", "ts1", "expectation")


@lru_cache(maxsize=32)
def _sub_model(model: EnsembleModel, k: int) -> EnsembleModel:
    """An ensemble of k members with `model`'s architecture, to run only the elites' weights."""
    return EnsembleModel(
        model.obs_dim, model.act_dim, ensemble_size=k, num_elites=k, hidden=model.net.hidden,
        probabilistic=model.probabilistic, learn_termination=model.learn_termination,
    )


def elite_model(model: EnsembleModel, state: ModelState) -> tuple[EnsembleModel, ModelState]:
    """The elites as a model of their own (members in `state.elites` order). With num_elites = E this is the
    model itself: every member is used, no weights are gathered."""
    k = model.num_elites
    if k == model.ensemble_size:
        return model, state
    return _sub_model(model, k), state._replace(params=model.elite_params(state),
                                                elites=jnp.arange(k, dtype=jnp.int32))


def check_particles(particles: int, members: int, propagation: str) -> None:
    """Clear errors for settings PETS's trajectory sampling cannot run."""
    if propagation not in PROPAGATIONS:
        raise ValueError(f"unknown propagation '{propagation}'; use one of {', '.join(PROPAGATIONS)}")
    if propagation != "expectation" and (particles < members or particles % members):
        raise ValueError(
            f"{propagation} needs the number of particles ({particles}) to be a positive multiple of the "
            f"members used ({members} elites), so that every member gets the same number; e.g. particles="
            f"{max(members, (particles // members) * members)}"
        )


def rollout_particles(
    model: EnsembleModel,
    state: ModelState,
    obs: jax.Array,
    actions: jax.Array,
    key: jax.Array,
    *,
    particles: int,
    propagation: str = "tsinf",
    reward_fn: RewardFn | None = None,
    term_fn: TermFn | None = None,
    return_trajectory: bool = False,
):
    """Propagate particles from one observation D under P action sequences P×H×A.

    Returns (returns P, trajectory) where trajectory is None or, if `return_trajectory`, the particles'
    observations (H+1)×P×N×D (N = 1 for expectation).
    """
    sub, sub_state = elite_model(model, state)
    k = sub.ensemble_size
    check_particles(particles, k, propagation)
    p, h, _ = actions.shape
    d = obs.shape[-1]
    expectation = propagation == "expectation"
    n = 1 if expectation else particles
    m = n // k if not expectation else 1
    learned_term = term_fn is None and model.learn_termination

    def predict(x, a, key):
        """x: P×N×D, a: P×A -> next P×N×D, reward P×N, terminated P×N (bool)."""
        k_noise, k_rew = jax.random.split(key)
        if expectation:
            pred = sub.predict(sub_state, x[:, 0], a)  # every member on every candidate: K×P×…
            nxt = pred.next_obs_mean.mean(0)[:, None]
            rew = pred.reward_mean.mean(0)[:, None]
            term = (pred.term_logit.mean(0) > 0)[:, None] if learned_term else None
            return nxt, rew, term
        # balanced blocks: particle j of a candidate uses member j // m
        xk = jnp.swapaxes(x.reshape(p, k, m, d), 0, 1).reshape(k, p * m, d)
        ak = jnp.broadcast_to(a[None, :, None], (k, p, m, a.shape[-1])).reshape(k, p * m, -1)
        pred = sub.predict(sub_state, xk, ak)
        nxt, rew = pred.next_obs_mean, pred.reward_mean
        if model.probabilistic:
            nxt = nxt + jnp.sqrt(pred.next_obs_var) * jax.random.normal(k_noise, nxt.shape)
            rew = rew + jnp.sqrt(pred.reward_var) * jax.random.normal(k_rew, rew.shape)

        def back(y):  # K×(P·M)×… -> P×N×…
            y = y.reshape((k, p, m) + y.shape[2:])
            return jnp.swapaxes(y, 0, 1).reshape((p, n) + y.shape[3:])

        term = back(pred.term_logit > 0) if learned_term else None
        return back(nxt), back(rew), term

    def step(carry, inp):
        x, ret, alive = carry
        a, key = inp
        k_perm, k_pred = jax.random.split(key)
        if propagation == "ts1":
            # a fresh random member for every particle: permute the particles of each candidate, predict with
            # the fixed blocks, permute back (PETS's TS1), so that a particle keeps its identity
            perm = jnp.argsort(jax.random.uniform(k_perm, (p, n)), axis=1)
            inv = jnp.argsort(perm, axis=1)
            nxt, r_model, term = predict(jnp.take_along_axis(x, perm[..., None], 1), a, k_pred)
            nxt = jnp.take_along_axis(nxt, inv[..., None], 1)
            r_model = jnp.take_along_axis(r_model, inv, 1)
            term = None if term is None else jnp.take_along_axis(term, inv, 1)
        else:
            nxt, r_model, term = predict(x, a, k_pred)
        a_b = jnp.broadcast_to(a[:, None], (p, n, a.shape[-1]))
        r = reward_fn(x, a_b, nxt) if reward_fn is not None else r_model
        ret = ret + jnp.where(alive, r, 0.0)
        if term_fn is not None:
            term = term_fn(x, a_b, nxt)
        if term is not None:
            alive = alive & ~term
        return (nxt, ret, alive), (nxt if return_trajectory else None)

    x0 = jnp.broadcast_to(obs, (p, n, d)).astype(jnp.float32)
    init = (x0, jnp.zeros((p, n), jnp.float32), jnp.ones((p, n), bool))
    keys = jax.random.split(key, h)
    (_, ret, _), traj = jax.lax.scan(step, init, (jnp.swapaxes(actions, 0, 1), keys))
    if return_trajectory:
        traj = jnp.concatenate([x0[None], traj], 0)
    return ret.mean(1), traj


def ensemble_return_fn(
    model: EnsembleModel,
    state: ModelState,
    obs: jax.Array,
    *,
    particles: int,
    propagation: str = "tsinf",
    reward_fn: RewardFn | None = None,
    term_fn: TermFn | None = None,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The planners' `return_fn` for a model (deterministic, probabilistic or ensemble) from observation D."""

    def return_fn(actions: jax.Array, key: jax.Array) -> jax.Array:
        return rollout_particles(model, state, obs, actions, key, particles=particles, propagation=propagation,
                                 reward_fn=reward_fn, term_fn=term_fn)[0]

    return return_fn


def known_return_fn(
    step_fn: Callable[[jax.Array, jax.Array], jax.Array],
    reward_fn: RewardFn,
    obs: jax.Array,
    term_fn: TermFn | None = None,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """`return_fn` for known deterministic dynamics `step_fn(x ...×D, a ...×A) -> next x` (e.g. a `JaxEnv`'s
    `dynamics` on its state, with `reward_fn` on that same vector). The key is unused."""

    def return_fn(actions: jax.Array, key: jax.Array) -> jax.Array:
        del key
        p = actions.shape[0]

        def step(carry, a):
            x, ret, alive = carry
            nxt = step_fn(x, a)
            ret = ret + jnp.where(alive, reward_fn(x, a, nxt), 0.0)
            if term_fn is not None:
                alive = alive & ~term_fn(x, a, nxt)
            return (nxt, ret, alive), None

        init = (jnp.broadcast_to(obs, (p,) + obs.shape), jnp.zeros(p, jnp.float32), jnp.ones(p, bool))
        (_, ret, _), _ = jax.lax.scan(step, init, jnp.swapaxes(actions, 0, 1))
        return ret

    return return_fn
