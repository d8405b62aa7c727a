"""One writer per workdir: an exclusive `flock` on `WORKDIR/lock`.

The training run holds the lock from before its first write until it ends.
The operating system drops it when the process dies, kill -9 included, so a
crashed run leaves no stale lock. The file keeps the holder's host and pid
(rewritten by each holder) so a second writer can say who has the workdir.
Readers (`launch.sample`, `launch.evaluate`, ...) take no lock.

In a multi-process run only process 0 locks; every process learns the
outcome, so the processes of one run never wait on each other's lock.

`flock` is honoured by local file systems and by most network file systems
mounted with locking; object stores (`gs://`) have no such lock, which the
README states.

Example:
  with WorkdirLock("runs/quickstart"):
    ...                                  # write checkpoints, metrics, ...
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket

import jax

from lm.errors import LmError

LOCK_FILE = "lock"


def _holder(path: str) -> str:
  try:
    with open(path, encoding="utf-8") as f:
      info = json.load(f)
    return f"pid {info['pid']} on host {info['host']}"
  except (OSError, ValueError, KeyError, TypeError):
    return "another process"


class WorkdirLock:
  """The exclusive writer lock of `workdir` (created if missing)."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = os.path.join(workdir, LOCK_FILE)
    self._fd: int | None = None

  def acquire(self) -> None:
    error = None
    if jax.process_index() == 0:
      error = self._acquire_local()
    if jax.process_count() > 1:
      import numpy as np  # pylint: disable=g-import-not-at-top
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      failed = multihost_utils.broadcast_one_to_all(
          np.array(error is not None, np.int32))
      if int(failed) and error is None:
        error = (f"workdir {self.workdir} could not be locked by process 0 of "
                 "this run (see its output)")
    if error:
      raise LmError(error)

  def _acquire_local(self) -> str | None:
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
      return (f"cannot write to workdir {self.workdir} ({e.strerror}); pass a "
              "--workdir this user can write to.")
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        return (f"workdir {self.workdir} is being written by another run "
                f"({_holder(self.path)}); wait for it to finish or stop it, "
                "or use another --workdir.")
      return f"cannot lock workdir {self.workdir} ({e.strerror})."
    record = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
    try:
      os.ftruncate(fd, 0)
      os.pwrite(fd, record.encode() + b"\n", 0)
    except OSError as e:
      os.close(fd)
      return (f"cannot write to workdir {self.workdir} ({e.strerror}); free "
              "space or pass another --workdir.")
    self._fd = fd
    return None

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
