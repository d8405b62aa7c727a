"""Test set-up: CPU only, eight simulated devices, tiny configs, and one
persistent XLA compilation cache shared by the whole test run.

The cache (`JAX_COMPILATION_CACHE_DIR`, a fresh temporary directory made by
the first process that loads this file; pytest-xdist's workers and the
commands the tests start inherit it) lets the many short runs of the same
tiny configs compile each program once per test run instead of once per
process. A cached executable is the compiled program itself, so numbers
are unchanged (the bitwise resume and golden tests would say otherwise).
The size limit turns on JAX's file lock around cache reads and writes, so
two processes never read an entry half written. With that limit every
write also stats every entry already there, so a cache of every program
(each eager op included: thousands of entries by mid-run) made writes
slower as the run went on, and tests that run many small eager ops took
ten times as long late in a full run as alone. Only programs that took
50 ms or more to compile are kept: the run and model programs the cache
is for, a few hundred entries in all.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests compile many tiny programs and run each a few steps, so compile time
# dominates: XLA's CPU backend at optimisation level 0 compiles them 2-3x
# faster (a 3-step tiny run: 29 s -> 13 s). The programs compute the same
# functions; float results can differ from the optimised build in the last
# bits, so the golden numbers (tests/training/runlocal_golden.json) are
# recorded under this setting too. The commands the tests start inherit it.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_backend_optimization_level=0").strip()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="lm-tests-xla-cache-")
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.05")
  os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
  atexit.register(shutil.rmtree, _cache, True)

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


# The files that take minutes, longest first (as measured in a full run).
# pytest-xdist (`--dist loadfile --no-loadscope-reorder`) hands whole files
# to the workers in collection order, so these start first and the last
# files of the run are short ones: no worker waits alone on a long file at
# the end.
_LONG_FILES = (
    "tests/objectives/test_distill.py",
    "tests/tasks/test_finetune_e2e.py",
    "tests/objectives/test_contrastive.py",
    "tests/training/test_stream_runs.py",
    "tests/objectives/test_seq2seq.py",
    "tests/reliability/test_checkpoints.py",
    "tests/interop/test_hf_workdir.py",
    "tests/models/test_quantize.py",
    "tests/training/test_train_mlm.py",
    "tests/models/test_encoder_decoder.py",
    "tests/training/test_runlocal_golden.py",
    "tests/cloud/test_gcs_runs.py",
    "tests/interop/test_hf_bart.py",
    "tests/reliability/test_interruptions.py",
    "tests/interop/test_hf_t5_workdir.py",
    "tests/reliability/test_workdirs.py",
    "tests/launch/test_sample_evaluate.py",
    "tests/generation/test_decode.py",
    "tests/tasks/test_trimmed_batches.py",
    "tests/interop/test_hf_exports.py",
    "tests/objectives/test_span_corruption.py",
    "tests/parallel/test_mesh_equivalence.py",
    "tests/training/test_preemption.py",
    "tests/models/test_transformer.py",
    "tests/launch/test_encode.py",
    "tests/objectives/test_mlm.py",
)


def pytest_collection_modifyitems(session, config, items):
  del session, config
  rank = {path: i for i, path in enumerate(_LONG_FILES)}
  items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
