import os
import tempfile

# Tests run on the CPU. Identical computations compiled by different tests hit a persistent XLA cache,
# which keeps the suite's compile time down on a 2-core machine.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mbrlax-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Most of the suite's time is XLA compiling tiny programs, and two CPU-backend settings buy nothing at these sizes
# but compile time: LLVM's optimization passes (backend optimization level 0) and XLA's newer fusion emitters
# (the classic elemental emitters compile faster). Measured cold, one process, tests/unit/test_sac.py +
# test_ppo.py + tests/algorithms/test_mbpo.py: 125 s default, 91 s at level 0, 67 s with both; test_lqr_flm.py +
# test_maml.py: 135 s at level 0, 109 s with both. Benchmarks keep the defaults.
_FAST_COMPILE = {"xla_backend_optimization_level": "0", "xla_cpu_use_fusion_emitters": "false"}
_flags = os.environ.get("XLA_FLAGS", "")
_flags += "".join(f" --{k}={v}" for k, v in _FAST_COMPILE.items() if k not in _flags)
os.environ["XLA_FLAGS"] = _flags.strip()
