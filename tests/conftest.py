"""Test set-up: CPU only, eight simulated devices, tiny configs, and one
persistent XLA compilation cache shared by the whole test run.

The cache (`JAX_COMPILATION_CACHE_DIR`, a fresh temporary directory made by
the first process that loads this file; pytest-xdist's workers and the
commands the tests start inherit it) lets the many short runs of the same
tiny configs compile each program once per test run instead of once per
process. A cached executable is the compiled program itself, so numbers
are unchanged (the bitwise resume and golden tests would say otherwise).
The size limit turns on JAX's file lock around cache reads and writes, so
two processes never read an entry half written.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="lm-tests-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
  atexit.register(shutil.rmtree, _cache, True)

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
