"""Train (or resume) an experiment.

  python -m launch.train --config configs/quickstart.py --workdir runs/quickstart
  python -m launch.train --config=configs/EXP.py:ARG --workdir=DIR --config.steps=100

Re-running the same command resumes from the latest checkpoint in the workdir.
"""

from __future__ import annotations

import signal

from absl import flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, optionally `path.py:arg`.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for everything the run writes.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0 for multi-process runs (TPU VMs and SLURM are "
    "detected without it).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


class _StartupSigterm:
  """Records a SIGTERM that arrives before the training loop installs its
  own handler, so the run stops cleanly (exit 0, nothing saved)."""

  def __init__(self):
    self.signalled = False
    signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.signalled = True


_EARLY_STOP: _StartupSigterm | None = None


def main(argv):
  early_stop = _EARLY_STOP or _StartupSigterm()   # a SIGTERM while starting up
  if len(argv) > 1:
    common.fail(f"unexpected arguments {argv[1:]}; pass settings as "
                "--config.KEY=VALUE.")
  config = common.load_config(_CONFIG)
  if not _WORKDIR.value:
    common.fail("--workdir is required, e.g. --workdir runs/quickstart.")
  common.quiet_logs()
  from lm import experiments
  from lm.parallel import distributed
  from lm.training import loop
  with common.user_errors():
    peers = distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                                   _PROCESS_ID.value)
    summary = experiments.train(
        config, _WORKDIR.value,
        loop.PreemptionFlag(signalled=early_stop.signalled))
    if peers:       # a failed process leaves through JAX's exit handler
      distributed.shutdown()
  if summary.get("before_start"):
    return
  keys = [k for k in ("loss", "eval_loss", "eval_perplexity", "eval_accuracy")
          if isinstance(summary.get(k), (int, float))]
  if keys:
    print("final: " + ", ".join(f"{k} {summary[k]:.4f}" for k in keys),
          flush=True)


if __name__ == "__main__":
  _EARLY_STOP = _StartupSigterm()
  common.run(main)
