"""One writer per workdir: an exclusive `flock` on `WORKDIR/lock`.

The training run holds the lock from before its first write until it ends.
The operating system drops it when the process dies, kill -9 included, so a
crashed run leaves no stale lock. The file keeps the holder's host and pid
(rewritten by each holder) so a second writer can say who has the workdir.
Readers (`launch.sample`, `launch.evaluate`, ...) take no lock.

In a multi-process run only process 0 locks; every process learns the
outcome, so the processes of one run never wait on each other's lock.

`flock` is honoured by local file systems and by most network file systems
mounted with locking.

An object store (`gs://` workdir) has no locks, so there the lock is a
lease: the object `WORKDIR/lock`, created only if absent (GCS's
`ifGenerationMatch=0` precondition, so of two runs starting together one
wins), holding the holder's host, pid and a heartbeat time that a thread
rewrites every `HEARTBEAT_SECONDS`. Release deletes it. A lock whose holder
is gone (a dead pid on this same host, or a heartbeat older than
`STALE_SECONDS`: the VM was preempted or deleted) is taken over, so a
resumed run never waits on a dead one for more than that. A live run
refuses a second writer with one sentence. What it does not cover: two
runs that both find the same stale lock in the same instant may both take
it over; do not start two runs on one workdir at once.

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
import threading
import time
import uuid

import jax

from lm import files
from lm.errors import LmError

LOCK_FILE = "lock"
# the lease on an object store: rewritten this often, stale this long after
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 120.0


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
    self.path = files.join(workdir, LOCK_FILE)
    self._fd: int | None = None
    self._lease: _Lease | None = None

  def acquire(self) -> None:
    error = None
    if jax.process_index() == 0:
      if files.is_uri(self.path):
        self._lease = _Lease(self.path, self.workdir)
        error = self._lease.acquire()
      else:
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
    if self._lease is not None:
      self._lease.release()
      self._lease = None
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except OSError:   # EPERM: it exists, owned by someone else
    return True
  return True


class _Lease:
  """The lock object of an object-store workdir (see the module docstring)."""

  def __init__(self, path: str, workdir: str):
    self.path, self.workdir = path, workdir
    self.token = uuid.uuid4().hex
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None

  def _record(self) -> bytes:
    return (json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                        "token": self.token, "heartbeat": time.time()})
            + "\n").encode()

  def _stale(self, info: dict) -> bool:
    age = time.time() - float(info.get("heartbeat", 0))
    if age > STALE_SECONDS:
      return True
    return (info.get("host") == socket.gethostname()
            and not _pid_alive(int(info.get("pid", -1))))

  def acquire(self) -> str | None:
    try:
      if not files.create_new(self.path, self._record()):
        try:
          info = json.loads(files.read_bytes(self.path))
        except (OSError, ValueError):
          info = {}
        if isinstance(info, dict) and info and not self._stale(info):
          age = time.time() - float(info.get("heartbeat", 0))
          return (f"workdir {self.workdir} is being written by another run "
                  f"(pid {info.get('pid')} on host {info.get('host')}, "
                  f"alive {age:.0f} s ago); wait for it to finish or stop "
                  f"it, or use another --workdir (a lock whose run is gone "
                  f"expires {STALE_SECONDS:.0f} s after its last heartbeat).")
        # the holder is gone: take the lock over
        try:
          files.remove(self.path)
        except FileNotFoundError:
          pass
        if not files.create_new(self.path, self._record()):
          return (f"workdir {self.workdir} was locked by another run starting "
                  "at the same moment; use one run per --workdir.")
    except OSError as e:
      return f"cannot write the lock of workdir {self.workdir} ({e})."
    self._thread = threading.Thread(target=self._beat, daemon=True,
                                    name="lm-workdir-lease")
    self._thread.start()
    return None

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_SECONDS):
      try:
        files.write_atomic(self.path, self._record())
      except Exception:  # pylint: disable=broad-except  (retried next beat)
        pass

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    try:
      info = json.loads(files.read_bytes(self.path))
      if info.get("token") == self.token:
        files.remove(self.path)
    except (OSError, ValueError, AttributeError):
      pass
