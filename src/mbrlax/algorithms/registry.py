"""Maps the names used by `mbrlax train NAME` to algorithm modules (each has `Config` and `train`)."""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> (module, fixed overrides). "sac" is MBPO with real_ratio=1: the same loop with no model.
ALGORITHMS: dict[str, tuple[str, dict]] = {
    "mbpo": ("mbrlax.algorithms.mbpo", {}),
    "sac": ("mbrlax.algorithms.mbpo", {"real_ratio": 1.0}),
    "dyna_q": ("mbrlax.algorithms.dyna_q", {}), "dyna_q_plus": ("mbrlax.algorithms.dyna_q", {"plus": True}),
    "mve": ("mbrlax.algorithms.mve", {}),
    "mpc": ("mbrlax.algorithms.mpc", {}), "pets": ("mbrlax.algorithms.mpc", {"variant": "pets"}),
    "mopo": ("mbrlax.algorithms.mopo", {}), "bc": ("mbrlax.algorithms.bc", {}),
    "bptt": ("mbrlax.algorithms.bptt", {}), "mbpg": ("mbrlax.algorithms.mbpg", {}),
    "metrpo": ("mbrlax.algorithms.metrpo", {}), "mbmpo": ("mbrlax.algorithms.mbmpo", {}),
    "ilqr": ("mbrlax.algorithms.ilqr", {}), "lqr_flm": ("mbrlax.algorithms.lqr_flm", {}),
    "gps": ("mbrlax.algorithms.gps", {}),
    "distill": ("mbrlax.algorithms.distill", {}), "dnc": ("mbrlax.algorithms.dnc", {}),
}


def get(name: str) -> tuple[ModuleType, dict]:
    if name not in ALGORITHMS:
        raise KeyError(f"unknown algorithm '{name}'; available: {', '.join(sorted(ALGORITHMS))}")
    module, overrides = ALGORITHMS[name]
    return importlib.import_module(module), overrides


def base_name(name: str) -> str:
    """The name of the same module without fixed overrides ('sac' -> 'mbpo')."""
    module = ALGORITHMS[name][0]
    return next(n for n, (m, o) in ALGORITHMS.items() if m == module and not o)
