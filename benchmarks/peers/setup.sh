#!/usr/bin/env bash
# Create (idempotently) the virtual environment of one peer library.
#
#   benchmarks/peers/setup.sh mbrl   # mbrl-lib 0.2.0 (PyTorch MBPO) + gymnasium 0.26.3 + mujoco 2.3.7
#   benchmarks/peers/setup.sh sb3    # Stable-Baselines3 SAC (PyTorch, CPU)
#   benchmarks/peers/setup.sh sbx    # SBX SAC (JAX, CPU)
#   benchmarks/peers/setup.sh offlinerl  # offlinerl 0.0.2 (PyTorch MOPO; see peers/offlinerl_mopo.py)
#   benchmarks/peers/setup.sh d3rlpy     # d3rlpy (PyTorch CQL/IQL: the model-free offline reference for MOPO)
#
# The venvs live in benchmarks/peers/.venvs/NAME (git-ignored). Re-running is cheap: pip sees
# the pinned packages already installed and the import check runs again.
# PYTHON overrides the interpreter (default python3.11).
set -euo pipefail

NAME="${1:-}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3.11}"
VENV="$HERE/.venvs/$NAME"

# torch 2.13.0 is a CPU build available from local disk; never ask for plain `torch`
# (that resolves to the multi-GB CUDA build).
TORCH_PIN="torch==2.13.0"

case "$NAME" in
  mbrl|sb3|sbx|offlinerl|d3rlpy) ;;
  *) echo "usage: $0 {mbrl|sb3|sbx|offlinerl|d3rlpy}" >&2; exit 2 ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$HERE/.venvs"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
"${PIP[@]}" --upgrade pip wheel setuptools >/dev/null

case "$NAME" in
  mbrl)
    # 1. the numerical stack first (CPU torch; mujoco 2.3.7 works with gymnasium 0.26.3's
    #    MuJoCo v4 envs — mujoco 3.x is newer than that gymnasium release was tested against).
    "${PIP[@]}" "$TORCH_PIN" "gymnasium==0.26.3" "mujoco==2.3.7" "numpy<2"
    # 2. mbrl-lib 0.2.0 without its stale pins (hydra-core==1.0.3, omegaconf<2.1 do not
    #    install/work on Python 3.11) ...
    "${PIP[@]}" --no-deps "mbrl==0.2.0"
    # 3. ... and its actual runtime dependencies, loosened.
    "${PIP[@]}" "hydra-core>=1.3,<1.4" "omegaconf>=2.3,<2.4" termcolor tqdm imageio \
      matplotlib tensorboard "numpy<2"
    "$VENV/bin/python" - <<'EOF'
import torch, gymnasium, mujoco, mbrl, hydra, omegaconf
import mbrl.algorithms.mbpo  # noqa: F401
env = gymnasium.make("HalfCheetah-v4")
env.reset(seed=0)
env.step(env.action_space.sample())
print(f"mbrl venv OK: torch {torch.__version__}, gymnasium {gymnasium.__version__}, "
      f"mujoco {mujoco.__version__}, mbrl {mbrl.__version__}, hydra {hydra.__version__}, "
      f"omegaconf {omegaconf.__version__}")
EOF
    ;;
  sb3)
    "${PIP[@]}" "$TORCH_PIN"
    "${PIP[@]}" "$TORCH_PIN" stable-baselines3 gymnasium
    "$VENV/bin/python" -c "import torch, stable_baselines3 as s, gymnasium as g; print('sb3 venv OK: torch', torch.__version__, 'sb3', s.__version__, 'gymnasium', g.__version__)"
    ;;
  sbx)
    # sbx-rl depends on stable-baselines3 -> torch: install the CPU torch first and keep it pinned
    # in the same resolve so pip never swaps in a CUDA build. jax[cpu] = jax + jaxlib, no CUDA plugins.
    "${PIP[@]}" "$TORCH_PIN"
    "${PIP[@]}" "$TORCH_PIN" "jax[cpu]" sbx-rl gymnasium mujoco
    "$VENV/bin/python" -c "import jax, sbx, torch; print('sbx venv OK: sbx', sbx.__version__, 'jax', jax.__version__, jax.devices(), 'torch', torch.__version__)"
    ;;
  offlinerl)
    # offlinerl 0.0.2 pins ray==2.9, aim, aiohttp==3.7.4 (no Python 3.11 wheels): install it without its
    # pins and add only what its MOPO path imports. The published wheel lacks offlinerl/outside_utils,
    # which offlinerl.algo.modelbase.model_base imports: the check below reports that (exit code 0, so the
    # other cases of this script are unaffected); peers/offlinerl_mopo.py records it in its JSON.
    "${PIP[@]}" "$TORCH_PIN"
    "${PIP[@]}" --no-deps "offlinerl==0.0.2"
    "${PIP[@]}" "$TORCH_PIN" loguru fire scikit-learn "gymnasium[mujoco]" gym "numpy<2" aim || true
    "$VENV/bin/python" - <<'EOF2' || true
import importlib.metadata as md
import torch
print("offlinerl venv: torch", torch.__version__, "offlinerl", md.version("offlinerl"))
import importlib.util
print("offlinerl.outside_utils present:", importlib.util.find_spec("offlinerl.outside_utils") is not None)
try:
    import offlinerl.algo.modelbase.mopo  # noqa: F401
    print("offlinerl MOPO imports OK")
except Exception as e:
    print(f"offlinerl MOPO does NOT import: {type(e).__name__}: {e}")
EOF2
    ;;
  d3rlpy)
    # Only reads our Minari-format datasets (h5py) and runs the policy in Gymnasium's MuJoCo v5 envs.
    "${PIP[@]}" "$TORCH_PIN"
    "${PIP[@]}" "$TORCH_PIN" "d3rlpy==2.8.1" "gymnasium[mujoco]>=1.0" h5py
    "$VENV/bin/python" -c "import d3rlpy, torch, gymnasium as g; g.make('Hopper-v5'); print('d3rlpy venv OK: d3rlpy', d3rlpy.__version__, 'torch', torch.__version__, 'gymnasium', g.__version__)"
    ;;
esac
