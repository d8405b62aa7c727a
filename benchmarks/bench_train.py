"""Training runs for the benchmark scripts: `lm.experiments.train`, and an
exit (not a table built on an unfinished run) when the run was preempted."""

from __future__ import annotations

import sys

from lm import experiments


def train(config, workdir: str) -> dict:
  """The run's summary; exits with a sentence when SIGTERM stopped it
  before its last step (re-running the benchmark with the same workdirs
  resumes it)."""
  summary = experiments.train(config, workdir)
  if summary.get("preempted"):
    sys.exit(f"the run in {workdir} was stopped at step "
             f"{summary.get('step', 0)} before its last; the benchmark stops "
             "here instead of scoring an unfinished run.")
  return summary
