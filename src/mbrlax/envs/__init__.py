"""Environments: Gymnasium creation (make.py), known reward/termination functions (known_fns.py) and the
pure-JAX environments (jax_envs.py), registered with Gymnasium under `mbrlax/...` ids on import."""

from mbrlax.envs.jax_envs import register_all as _register_all

_register_all()
