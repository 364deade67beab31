import os
import tempfile

# Tests run on the CPU. Identical computations compiled by different tests hit a persistent XLA cache,
# which keeps the suite's compile time down on a 2-core machine.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mbrlax-test-xla-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Most of the suite's time is XLA compiling tiny programs. LLVM's optimization passes are most of that and buy
# nothing at these sizes: without them (backend optimization level 0) a cold suite compiles about a third
# faster (tests/algorithms/test_mbpo.py + tests/unit/test_sac.py: 73 s -> 50 s). Benchmarks keep the default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
