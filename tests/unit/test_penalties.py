"""MOPO penalties: hand-computed values on a fake ensemble, and no gradient into the model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mbrlax.models import penalties as P
from mbrlax.models.ensemble import EnsembleModel, Prediction

# Two members, two samples, D=2. Sample 0: μ = (1,0), (3,0); σ = (1,2), (2,2).
# Sample 1: both members agree on μ = (5,5), σ = (0.5,0.5) and (1,1).
MEAN = jnp.array([[[1.0, 0.0], [5.0, 5.0]],
                  [[3.0, 0.0], [5.0, 5.0]]])  # E×B×D
STD = jnp.array([[[1.0, 2.0], [0.5, 0.5]],
                 [[2.0, 2.0], [1.0, 1.0]]])
SAMPLE = jnp.array([[2.0, 3.0], [5.0, 4.0]])  # B×D


def test_max_aleatoric_is_the_largest_member_std_norm():
    # sample 0: ‖(1,2)‖ = √5, ‖(2,2)‖ = √8 -> √8;  sample 1: ‖(1,1)‖ = √2
    np.testing.assert_allclose(P.penalty("max_aleatoric", MEAN, STD), [np.sqrt(8), np.sqrt(2)], rtol=1e-6)


def test_disagreement_is_the_largest_distance_to_the_mean_of_means():
    # sample 0: μ̄ = (2,0), gaps (−1,0) and (1,0) -> 1;  sample 1: members agree -> 0
    np.testing.assert_allclose(P.penalty("disagreement", MEAN, STD), [1.0, 0.0], atol=1e-6)


def test_normalized_mean_gap_max_and_mean():
    # sample 0: member 1 ((−1)/1)² + (0/2)² = 1, member 2 (1/2)² + 0 = 0.25
    np.testing.assert_allclose(P.penalty("mean_gap_max", MEAN, STD), [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(P.penalty("mean_gap_mean", MEAN, STD), [0.625, 0.0], atol=1e-6)


def test_prediction_error_is_the_sample_distance_to_the_ensemble_mean():
    # sample 0: (2,3) − (2,0) = (0,3) -> 3; sample 1: (5,4) − (5,5) -> 1
    np.testing.assert_allclose(P.penalty("prediction_error", MEAN, STD, SAMPLE), [3.0, 1.0], atol=1e-6)


def test_unknown_penalty_and_missing_sample_are_clear_errors():
    with pytest.raises(ValueError, match="unknown penalty 'nope'.*max_aleatoric"):
        P.penalty("nope", MEAN, STD)
    with pytest.raises(ValueError, match="prediction_error.*sample"):
        P.penalty("prediction_error", MEAN, STD)


def test_outputs_concatenate_next_obs_and_reward_and_select_members():
    pred = Prediction(
        next_obs_mean=MEAN[..., :1], reward_mean=MEAN[..., 1], next_obs_var=STD[..., :1] ** 2,
        reward_var=STD[..., 1] ** 2, term_logit=None,
    )
    mean, std = P.outputs(pred)
    np.testing.assert_allclose(mean, MEAN)
    np.testing.assert_allclose(std, STD, rtol=1e-6)
    np.testing.assert_allclose(P.from_prediction("max_aleatoric", pred), [np.sqrt(8), np.sqrt(2)], rtol=1e-6)
    # member 0 alone: its own std norm (√5, √0.5), and no disagreement with itself
    np.testing.assert_allclose(P.from_prediction("max_aleatoric", pred, members=jnp.array([0])),
                               [np.sqrt(5), np.sqrt(0.5)], rtol=1e-6)
    np.testing.assert_allclose(P.from_prediction("disagreement", pred, members=jnp.array([0])), [0, 0], atol=1e-6)


@pytest.mark.parametrize("kind", P.PENALTIES)
def test_penalty_does_not_backpropagate_into_the_model(kind):
    model = EnsembleModel(3, 1, ensemble_size=3, num_elites=2, hidden=(8,))
    state = model.init(jax.random.key(0))
    obs = jax.random.normal(jax.random.key(1), (5, 3))
    act = jax.random.uniform(jax.random.key(2), (5, 1), minval=-1, maxval=1)

    def u(params):
        st = state._replace(params=params)
        nxt, rew, _, pred = model.sample_step(st, obs, act, jax.random.key(3))
        return P.from_prediction(kind, pred, nxt, rew).sum()

    value, grads = jax.jit(jax.value_and_grad(u))(state.params)
    assert float(value) > 0  # the penalty is live: the zero gradient is not a zero function
    for leaf in jax.tree.leaves(grads):
        assert float(jnp.abs(leaf).max()) == 0.0
