"""File modes for what lm writes: new files follow the user's umask.

`tempfile.mkstemp` creates its file 0600 whatever the umask, so a file written
to a temporary name and then renamed into place would end up readable by its
owner only. Writers chmod the temporary file to `default_file_mode()` before
the rename, so the result has the mode `open(path, "w")` would have given it.

Example (umask 022):
  >>> oct(default_file_mode())
  '0o644'
"""

from __future__ import annotations

import os


def _umask_from_proc() -> int | None:
  """The process umask from /proc/self/status (Linux 4.7+), or None."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  return None


def _umask_at_import() -> int:
  # Setting and restoring the umask is the only portable way to read it; done
  # once, while the module is imported, rather than on every write.
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


_IMPORT_UMASK = _umask_at_import()


def current_umask() -> int:
  """The process umask, read without changing it where the OS allows."""
  mask = _umask_from_proc()
  return _IMPORT_UMASK if mask is None else mask


def default_file_mode() -> int:
  """The mode a new regular file gets: 0o666 less the umask (0o644 for 022)."""
  return 0o666 & ~current_umask()


def default_dir_mode() -> int:
  """The mode a new directory gets: 0o777 less the umask (0o755 for 022).

  `tempfile.mkdtemp` creates its directory 0700 whatever the umask; a
  directory built under a temporary name and renamed into place is chmod-ed
  to this first, so it ends up as `os.makedirs(path)` would have made it.
  """
  return 0o777 & ~current_umask()
