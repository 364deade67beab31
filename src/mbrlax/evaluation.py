"""Evaluation of a policy in a real environment."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np


def evaluate(
    env: gym.Env, act: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int
) -> tuple[float, float, list[float]]:
    """Run `episodes` full episodes with `act(obs) -> action` (deterministic for SAC: the tanh of the
    mean). Episode i is reset with seed `seed + i`, so two evaluations of one policy agree exactly.
    Returns (mean, std, returns)."""
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done, total = False, 0.0
        while not done:
            obs, r, terminated, truncated, _ = env.step(act(obs))
            total += float(r)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns)), returns
