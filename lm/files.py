"""File modes for what lm writes: new files follow the user's umask.

`tempfile.mkstemp` creates its file 0600 whatever the umask, so a file written
to a temporary name and then renamed into place would end up readable by its
owner only. Writers chmod the temporary file to `default_file_mode()` before
the rename, so the result has the mode `open(path, "w")` would have given it.
`atomic_path(path)` and `write_atomic(path, data)` do the whole dance.

Example (umask 022):
  >>> oct(default_file_mode())
  '0o644'
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator

from lm.errors import LmError


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


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """A fresh temporary name next to `path` for a writer to fill.

  When the block ends without an error, the file is given `default_file_mode()`
  and renamed onto `path`, so readers see the old file or the whole new one and
  the mode is what `open(path, "w")` would have given; on an error it is
  removed. Example:

    with atomic_path("out/model.safetensors") as tmp:
      save_file(tensors, tmp)
  """
  directory, name = os.path.split(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".tmp")
  os.close(fd)
  try:
    yield tmp
    os.chmod(tmp, default_file_mode())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    raise


def write_atomic(path: str, data: bytes) -> None:
  """Writes `data` to `path` through `atomic_path` (umask-respecting mode)."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)


_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def check_local_path(path: str, what: str) -> None:
  """LmError when `path` is a URI (`gs://...`, `s3://...`): runs are read
  and written on a local or shared file system, and a cloud URI would
  otherwise become a local directory named after its scheme (`./gs:/...`).
  `what` names the setting in the sentence ("--workdir").

  Example: check_local_path("gs://b/run", "--workdir") raises "--workdir
  gs://b/run is a gs:// URI; ..."
  """
  m = _URI.match(path or "")
  if m:
    raise LmError(f"{what} {path} is a {m.group(1)}:// URI, and lm reads and "
                  "writes runs on a local or shared file system only (cloud "
                  "storage paths are not supported yet); give a path such as "
                  "/mnt/shared/runs/NAME, or copy the files there first.")
