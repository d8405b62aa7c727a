"""`lm.host_memory`: importing lm keeps freed heap memory mapped (glibc)."""

import os
import subprocess
import sys

import pytest

from lm import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A worker thread (XLA:CPU's buffers come from its worker threads, so from
# glibc's per-thread arenas) allocates, fills and frees 8 MiB forty times;
# the script prints whether lm set the pad and the page faults of the last
# thirty rounds.
_CHURN = r"""
import ctypes, threading
import lm
from lm import host_memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def minor_faults():
  with open("/proc/thread-self/stat") as f:
    return int(f.read().rsplit(")", 1)[1].split()[7])

out = {}
def churn():
  size = 8 << 20
  for i in range(40):
    if i == 10:
      start = minor_faults()
    p = libc.malloc(size)
    libc.memset(p, 1, size)
    libc.free(p)
  out["faults"] = minor_faults() - start

t = threading.Thread(target=churn)
t.start()
t.join()
print(host_memory.keep_freed_memory(), out["faults"])
"""

_PAGES_PER_ROUND = (8 << 20) // os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0


def _churn(extra_env):
  env = {k: v for k, v in os.environ.items()
         if k not in ("GLIBC_TUNABLES", "MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_",
                      "LM_KEEP_FREED_MEMORY")}
  env.update(extra_env)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run([sys.executable, "-c", _CHURN], env=env, check=True,
                       capture_output=True, text=True, cwd=ROOT).stdout.split()
  return out[0] == "True", int(out[1])


needs_glibc = pytest.mark.skipif(
    host_memory._glibc() is None or not os.path.exists("/proc/thread-self/stat"),  # pylint: disable=protected-access
    reason="the top pad is a glibc setting; the fault count is Linux's")


@needs_glibc
def test_import_keeps_freed_memory_mapped_and_the_users_pad_wins():
  applied, faults = _churn({})
  assert applied
  # Thirty rounds reuse the same pages: (almost) no faults.
  assert faults < _PAGES_PER_ROUND // 4, faults
  # The pad set by the user: lm leaves it, and at glibc's default pad every
  # round gives the 8 MiB back and faults it in again.
  applied, faults = _churn({"GLIBC_TUNABLES": "glibc.malloc.top_pad=131072"})
  assert not applied
  assert faults > 20 * _PAGES_PER_ROUND, faults
  applied, _ = _churn({"LM_KEEP_FREED_MEMORY": "0"})
  assert not applied


def test_environment_decides_reads_glibcs_two_settings():
  assert not host_memory.environment_decides({})
  assert not host_memory.environment_decides(
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
  assert host_memory.environment_decides(
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.top_pad=0"})
  assert host_memory.environment_decides({"MALLOC_TOP_PAD_": "131072"})
  assert host_memory.environment_decides({"LM_KEEP_FREED_MEMORY": "0"})
  assert not host_memory.environment_decides({"LM_KEEP_FREED_MEMORY": "1"})
  assert host_memory.environment_decides({"MALLOC_MMAP_THRESHOLD_": "131072"})
  assert host_memory.environment_decides(
      {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"})

