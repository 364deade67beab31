"""What the local-model algorithms share (ilqr, lqr_flm, gps, distill, dnc): config pieces for the cost, for
LQR-FLM's local step and for several initial conditions, the `Result` with success rates, and the refusal of
a resume by the algorithms that keep no resumable state.

The pieces are dataclasses a Config inherits beside `common.RunOptions`, like `common.ModelOptions`; an
algorithm that needs another default for a field redeclares it. Flag names and config.json keys are the field
names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import tyro

from mbrlax import runs
from mbrlax.algorithms.common import Result


@dataclass
class CostOptions:
    """The differentiable cost on (observation, action) that the local controllers minimize (lqr_flm.COSTS)."""

    cost: str | None = None
    """'reach' or 'pendulum' (smooth surrogates of −reward, see lqr_flm.COSTS); ilqr and distill also take
    'reward' (−the env's own reward)."""
    w_dist: float | None = None
    """Weight of the distance term of the cost."""
    w_ctrl: float | None = None
    """Weight of the control term of the cost."""
    final_weight: float | None = None
    """Multiplier of the cost at the final state."""


@dataclass
class LocalStepOptions:
    """LQR-FLM's local step (lqr_flm, and gps's C-step): samples, the KL bound and its adaptation, the
    time-varying linear-Gaussian dynamics fit."""

    iterations: int | None = None
    """Iterations (each: sample, fit the local dynamics, KL-constrained update)."""
    samples: int | None = None
    """N: trajectories per iteration (gps: per initial condition)."""
    kl_step: float | None = None
    """Base KL bound per time step; ε = kl_step × step multiplier × T."""
    init_var: float | None = None
    """Variance of the initial zero-mean local controller(s)."""
    regression: str = "bayes"
    """'plain' linear regression, 'bayes' (normal-inverse-Wishart prior from a GMM on all data) or 'model'
    (the prior from a global neural model fitted on all data, linearized at each step's samples)."""
    gmm_components: int = 8
    """Components of the GMM prior (GPS code: up to 20; few samples per iteration favour fewer)."""
    prior_strength: float = 1.0
    """Pseudo-count of the GMM prior (GPS code: strength 1 with a small n0)."""
    max_prior_points: int = 20_000
    """Cap on the (x, u, x') points kept for the GMM (oldest dropped)."""
    prior_model_epochs: int = 50
    """At most this many epochs per fit of the 'model' prior's global model (warm-started; early stopping)."""
    min_step_mult: float = 0.01
    """Lower bound of the adaptive multiplier of kl_step (GPS code: 0.01)."""
    max_step_mult: float | None = 10.0
    """Upper bound of the adaptive multiplier of kl_step (GPS code: 10)."""
    checkpoint_every: int = 1
    """Checkpoint every this many iterations (and at the last)."""
    env_kwargs: Annotated[dict[str, Any] | None, tyro.conf.Suppress] = None
    """Keyword arguments for gymnasium.make; Python API and presets only."""


@dataclass
class ConditionOptions:
    """Several initial conditions, one local solution each, and unseen ones to test the single global policy."""

    success_dist: float | None = None
    """Success: the global policy's final fingertip–target distance is below this."""
    train_seeds: tuple[int, ...] | None = None
    """Reset seeds of the training conditions."""
    test_seeds: tuple[int, ...] | None = None
    """Reset seeds of the unseen conditions used only for evaluation."""


@dataclass
class ConditionResult(Result):
    """`Result` with the global policy's success rates on the training and the unseen conditions."""

    train_success: float = 0.0
    test_success: float = 0.0


def condition_result(run: runs.Run, steps: int) -> ConditionResult:
    """The run's `ConditionResult`: its last evaluation with that evaluation's success rates."""
    last = [r for r in runs.read_metrics(run.dir) if "eval/train_success" in r][-1]
    return run.result(ConditionResult, steps=steps, train_success=float(last["eval/train_success"]),
                      test_success=float(last["eval/test_success"]))


def refuse_resume(cfg: Any, algorithm: str) -> None:
    """Algorithms that keep no resumable state (their runs take seconds) hide --resume; from Python it is an
    error that says what to do instead."""
    if cfg.resume is not None:
        raise runs.RunDirError(f"{algorithm} keeps no resumable state (it saves its result once, at the end): start "
                               f"a new run instead of resuming {cfg.resume}")
