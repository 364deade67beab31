"""What every algorithm file shares: the `Result` of `train`, and filling a Config from a preset."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C")


@dataclass
class Result:
    """What `train(cfg)` returns; algorithms with more to report subclass it."""

    run_dir: Path
    steps: int
    """Real environment steps (or the algorithm's own unit of progress) run in total."""
    final_return_mean: float
    final_return_std: float
    evals: list[tuple[int, float]] = field(default_factory=list)
    """(step, mean evaluation return) of every evaluation."""


def fill_preset(cfg: C, preset: dict[str, Any], defaults: dict[str, Any]) -> C:
    """`cfg` with every field of `defaults` that is None in `cfg` taken from `preset`, else from `defaults`."""
    filled = {k: (preset.get(k, v) if getattr(cfg, k) is None else getattr(cfg, k)) for k, v in defaults.items()}
    return dataclasses.replace(cfg, **filled)
