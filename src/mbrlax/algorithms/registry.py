"""Maps the names used by `mbrlax train NAME` to algorithm modules (each has `Config` and `train`)."""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> (module, fixed overrides). "sac" is MBPO with real_ratio=1: the same loop with no model.
ALGORITHMS: dict[str, tuple[str, dict]] = {
    "mbpo": ("mbrlax.algorithms.mbpo", {}),
    "sac": ("mbrlax.algorithms.mbpo", {"real_ratio": 1.0}),
}


def get(name: str) -> tuple[ModuleType, dict]:
    if name not in ALGORITHMS:
        raise KeyError(f"unknown algorithm '{name}'; available: {', '.join(sorted(ALGORITHMS))}")
    module, overrides = ALGORITHMS[name]
    return importlib.import_module(module), overrides
