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
         if k not in ("GLIBC_TUNABLES", "MALLOC_TOP_PAD_", "LM_KEEP_FREED_MEMORY")}
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


def test_user_set_pad_reads_glibcs_two_settings():
  assert not host_memory.user_set_pad({})
  assert not host_memory.user_set_pad(
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
  assert host_memory.user_set_pad(
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1:glibc.malloc.top_pad=0"})
  assert host_memory.user_set_pad({"MALLOC_TOP_PAD_": "131072"})
  assert host_memory.user_set_pad({"LM_KEEP_FREED_MEMORY": "0"})
  assert not host_memory.user_set_pad({"LM_KEEP_FREED_MEMORY": "1"})
  assert host_memory.user_set_pad({"MALLOC_MMAP_THRESHOLD_": "131072"})
  assert host_memory.user_set_pad(
      {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"})


_glibc_2_35 = (host_memory._glibc() is not None  # pylint: disable=protected-access
               and host_memory._glibc_version(host_memory._glibc()) >= (2, 35))  # pylint: disable=protected-access


@pytest.mark.skipif(not _glibc_2_35, reason="glibc.malloc.hugetlb needs glibc 2.35")
def test_huge_page_environment_adds_the_setting_only_where_it_helps():
  env = host_memory.huge_page_environment({"HOME": "/h"}, thp_mode="madvise")
  assert env == {"HOME": "/h", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
  env = host_memory.huge_page_environment(
      {"GLIBC_TUNABLES": "glibc.malloc.top_pad=0"}, thp_mode="madvise")
  assert env["GLIBC_TUNABLES"] == "glibc.malloc.top_pad=0:glibc.malloc.hugetlb=1"
  # The user's own setting wins; the kernel's other modes need no restart.
  assert host_memory.huge_page_environment(
      {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, thp_mode="madvise") is None
  assert host_memory.huge_page_environment({}, thp_mode="always") is None
  assert host_memory.huge_page_environment({}, thp_mode="never") is None


def test_thp_mode_reads_the_bracketed_mode(tmp_path):
  path = tmp_path / "enabled"
  path.write_text("always [madvise] never\n")
  assert host_memory._thp_mode(str(path)) == "madvise"  # pylint: disable=protected-access
  assert host_memory._thp_mode(str(tmp_path / "absent")) is None  # pylint: disable=protected-access


_RESTART = r"""
import os
from lm import host_memory
print("start", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), flush=True)
host_memory.restart_with_huge_pages()
print("running", os.getpid(), os.environ.get("GLIBC_TUNABLES", ""))
"""


def test_restart_runs_the_same_command_again_with_huge_pages():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  lines = subprocess.run([sys.executable, "-c", _RESTART], env=env, check=True,
                         capture_output=True, text=True, cwd=ROOT).stdout.splitlines()
  expected = host_memory.huge_page_environment(env)
  pid = lines[0].split()[1]
  if expected is None:        # not glibc 2.35+, or huge pages not in madvise mode
    assert lines == [f"start {pid} ", f"running {pid} "]
  else:                       # the same process, started again with the setting
    assert lines == [f"start {pid} ", f"start {pid} glibc.malloc.hugetlb=1",
                     f"running {pid} glibc.malloc.hugetlb=1"]


def test_entry_points_restart_before_they_print_anything():
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  out = subprocess.run([sys.executable, "-m", "launch.predict", "--help"],
                       env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  # The usage is printed once: the restart comes before any output.
  first = out.stdout.splitlines()[0]
  assert first.startswith("Print")
  assert out.stdout.splitlines().count(first) == 1
