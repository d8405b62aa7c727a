"""Multi-process start-up: `jax.distributed.initialize` when there are peers.

Explicit flags win (`--coordinator_address`, `--num_processes`,
`--process_id`); otherwise a Cloud TPU VM slice with several workers or a
SLURM job with several tasks is detected from its environment and JAX's own
auto-detection is used. A single process initialises nothing.
"""

from __future__ import annotations

import os

import jax

from lm.errors import LmError


def _auto_detected() -> bool:
  hosts = [h for h in os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
  if len(hosts) > 1:
    return True
  return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None, cpu_collectives: str = "gloo") -> bool:
  """Initialises the distributed runtime if needed; returns whether it did."""
  explicit = coordinator_address is not None
  if explicit:
    if num_processes is None or process_id is None:
      raise LmError("--coordinator_address needs --num_processes and --process_id "
                    "too (or none of the three on TPU VMs and SLURM).")
    if not 0 <= process_id < num_processes:
      raise LmError(f"--process_id={process_id} must be in [0, {num_processes}).")
  elif not _auto_detected():
    return False
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    # CPU processes need a collectives backend for cross-process arrays.
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
  return True


def shutdown() -> None:
  """Leaves the distributed runtime from the main thread, once every process
  is done: the processes meet at a barrier first, so none reaches JAX's
  shutdown barrier while another is still finishing (closing a checkpoint,
  writing metrics) and the exit does not depend on the order in which the
  interpreter joins background threads."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  multihost_utils.sync_global_devices("lm-process-exit")
  jax.distributed.shutdown()
