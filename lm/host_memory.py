"""Keep freed host memory mapped for reuse instead of handing it back each step.

XLA:CPU allocates a step's buffers from its worker threads and frees them when
the step ends. glibc's malloc serves those threads from per-thread arenas and,
at its default settings, gives the free top of an arena back to the kernel as
soon as more than `M_TOP_PAD` (128 KiB) of it is free, so every step returns
its working memory and faults it back in, page by page, the next step. At
nanoGPT's CPU shape (4 layers × 128, batch 12 × 64) that is about 16,000 page
faults a step and a third of the step's wall time spent in the kernel.

`keep_freed_memory()` raises `M_TOP_PAD` to 64 MiB, the most a per-thread
arena grows, so arenas keep what they have held; the process keeps at most the
memory it already used at its peak. It runs once when `lm` is imported. It is
one `mallopt` call through ctypes, so no library is needed; it applies only
where the C library is glibc, and it leaves the setting alone where the user
set the pad through glibc's own environment (`MALLOC_TOP_PAD_`, or
`GLIBC_TUNABLES=glibc.malloc.top_pad=...`; `glibc.malloc.top_pad=131072`
restores glibc's default).

Buffers larger than 32 MiB (a large step's activations, stored for the
backward pass) always come from `mmap`, so they fault in again every step:
640 MB, 160,000 faults a step, at the `d384` benchmark shape. glibc backs them
with transparent huge pages (2 MiB faults) under
`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, but reads that setting only when the
process starts. `restart_with_huge_pages()`, which the entry points call before
they parse their flags, starts the same command again (`execve`, the same
process id) with the setting added, where the kernel's huge pages are in
`madvise` mode (its usual default; `always` needs no setting, `never` allows
none), the C library is glibc 2.35 or later and the environment does not set
`glibc.malloc.hugetlb` itself (`glibc.malloc.hugetlb=0` keeps it off).
"""

from __future__ import annotations

import ctypes
import os
import sys

TOP_PAD_BYTES = 64 << 20
_M_TOP_PAD = -2        # mallopt's parameter number for the top pad (malloc.h)
_applied = None


def _glibc():
  """The process's C library when it is glibc, else None."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    libc = ctypes.CDLL(None)
    libc.gnu_get_libc_version  # pylint: disable=pointless-statement
    libc.mallopt  # pylint: disable=pointless-statement
  except (OSError, AttributeError):
    return None
  return libc


def user_set_pad(environ=None) -> bool:
  """Whether the environment sets glibc's top pad itself."""
  environ = os.environ if environ is None else environ
  tunables = environ.get("GLIBC_TUNABLES", "")
  return ("MALLOC_TOP_PAD_" in environ
          or any(t.split("=")[0].strip() == "glibc.malloc.top_pad"
                 for t in tunables.split(":")))


def keep_freed_memory(pad_bytes: int = TOP_PAD_BYTES) -> bool:
  """Sets glibc's `M_TOP_PAD` to `pad_bytes` once per process; True when the
  setting is in force (set here), False where the C library is not glibc or
  the environment sets the pad."""
  global _applied
  if _applied is None:
    libc = _glibc()
    _applied = bool(libc is not None and not user_set_pad()
                    and libc.mallopt(_M_TOP_PAD, int(pad_bytes)) == 1)
  return _applied


_THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def _thp_mode(path: str = _THP_MODE_FILE) -> str | None:
  """The kernel's transparent huge page mode ("always", "madvise", "never"),
  or None where the kernel does not say."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else None


def _glibc_version(libc) -> tuple[int, ...]:
  libc.gnu_get_libc_version.restype = ctypes.c_char_p
  text = libc.gnu_get_libc_version().decode()
  return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def huge_page_environment(environ=None, thp_mode=None) -> dict | None:
  """The environment to start this process again with, so that glibc backs
  its large blocks with transparent huge pages; None where the setting is in
  force already, set by the user, or not available here."""
  environ = dict(os.environ if environ is None else environ)
  tunables = environ.get("GLIBC_TUNABLES", "")
  if any(t.split("=")[0].strip() == "glibc.malloc.hugetlb"
         for t in tunables.split(":")):
    return None
  libc = _glibc()
  if libc is None or _glibc_version(libc) < (2, 35):
    return None
  if (thp_mode or _thp_mode()) != "madvise":
    return None
  environ["GLIBC_TUNABLES"] = ":".join(
      t for t in (tunables, "glibc.malloc.hugetlb=1") if t)
  return environ


def restart_with_huge_pages() -> None:
  """Starts the running command again (same process id, same arguments)
  with `glibc.malloc.hugetlb=1` where `huge_page_environment` gives one;
  returns without doing anything elsewhere. Call it before anything the
  restart would repeat: it runs the whole command again from the start."""
  environ = huge_page_environment()
  if environ is None or not getattr(sys, "orig_argv", None):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], environ)
