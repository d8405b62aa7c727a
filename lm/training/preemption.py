"""The SIGTERM flag the training loop polls at step boundaries."""

from __future__ import annotations

import signal
import threading

import jax


class PreemptionFlag:
  """Asks the loop to save at the next step boundary and stop.

  One process: a SIGTERM handler (the previous one is put back afterwards).
  Several processes: they must all stop at the same step, so the decision is
  Orbax's preemption sync point, which JAX's distributed runtime arms from a
  SIGTERM on any host; no Python handler is installed to shadow it.
  """

  def __init__(self, signalled: bool = False):
    self.signalled = signalled
    self._previous = None
    if (jax.process_count() == 1
        and threading.current_thread() is threading.main_thread()):
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.signalled = True

  def reached(self, ckpt, step: int) -> bool:
    if jax.process_count() > 1:
      return bool(ckpt.manager.reached_preemption(step))
    return self.signalled

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None
