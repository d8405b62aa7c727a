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
memory it already used at its peak. Setting the pad also fixes glibc's
threshold for serving a block from `mmap` instead of an arena, which otherwise
rises with the blocks a process frees; left at its 128 KiB start, every block
above it would fault in afresh (PyTorch's step in the same process went from
117 to 178 ms a step), so `M_MMAP_THRESHOLD` is set to 32 MiB, the most that
threshold ever rises to. It runs once when `lm` is imported. It is two
`mallopt` calls through ctypes, so no library is needed; they apply only where
the C library is glibc, and neither is made where the user set either setting
through glibc's own environment (`MALLOC_TOP_PAD_`, `MALLOC_MMAP_THRESHOLD_`,
or `GLIBC_TUNABLES=glibc.malloc.top_pad=...:glibc.malloc.mmap_threshold=...`).
`LM_KEEP_FREED_MEMORY=0` in the environment keeps glibc's defaults.

Buffers larger than 32 MiB (a large step's activations, stored for the
backward pass) still come from `mmap` and fault in again every step: 640 MB,
160,000 faults a step, at the `d384` benchmark shape. glibc backs them with
transparent huge pages (2 MiB faults) under `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`
where the kernel's huge pages are in `madvise` mode, but reads that setting
only when the process starts, so it is the user's to set for long CPU runs of
large steps (`d384`: 2,310-2,370 -> 1,820-2,180 ms a step); lm does not set
it, as short commands ran slower with it (the CLI tests: 56 -> 78 s).
"""

from __future__ import annotations

import ctypes
import os
import sys

TOP_PAD_BYTES = 64 << 20
MMAP_THRESHOLD_BYTES = 32 << 20
_M_TOP_PAD = -2        # mallopt's parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_USER_SETTINGS = (("MALLOC_TOP_PAD_", "glibc.malloc.top_pad"),
                  ("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold"))
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


def environment_decides(environ=None) -> bool:
  """Whether the environment sets glibc's top pad or mmap threshold itself,
  or asks for glibc's defaults (`LM_KEEP_FREED_MEMORY=0`)."""
  environ = os.environ if environ is None else environ
  if environ.get("LM_KEEP_FREED_MEMORY", "").strip() == "0":
    return True
  tunables = {t.split("=")[0].strip()
              for t in environ.get("GLIBC_TUNABLES", "").split(":")}
  return any(variable in environ or tunable in tunables
             for variable, tunable in _USER_SETTINGS)


def keep_freed_memory(pad_bytes: int = TOP_PAD_BYTES,
                      mmap_threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
  """Sets glibc's `M_TOP_PAD` and `M_MMAP_THRESHOLD` once per process; True
  when the settings are in force (set here), False where the C library is
  not glibc or the environment sets either."""
  global _applied
  if _applied is None:
    libc = _glibc()
    _applied = bool(
        libc is not None and not environment_decides()
        and libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
        and libc.mallopt(_M_TOP_PAD, int(pad_bytes)) == 1)
  return _applied

