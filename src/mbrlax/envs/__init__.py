"""Environments: Gymnasium creation (make.py), known reward/termination functions (known_fns.py), the pure-JAX
environments (jax_envs.py) and the tabular mazes (tabular.py), registered with Gymnasium under `mbrlax/...` ids
on import."""

from mbrlax.envs.jax_envs import register_all as _register_jax_envs
from mbrlax.envs.tabular import register as _register_mazes

_register_jax_envs()
_register_mazes()
