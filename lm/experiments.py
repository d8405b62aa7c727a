"""The one place that names objectives: the registry, and the engine's
entry points bound to it.

`lm.training` (the engine) knows no objective by name and imports none: the
loop, the steps, warm starts and `load_trained` are handed
`make_objective`, and everything else comes from the objective's own
methods. Everything a user runs (`launch/`, the interop layer, the
benchmarks) goes through here:

  make_objective(config, stored=None)  the objective `config.objective`
                                       names (see `OBJECTIVES`)
  train(config, workdir, preempted=None)   `lm.training.loop.train`
  prepare(config, workdir)             `lm.training.loop.prepare`
  evaluate_untrained(config, workdir)  the seeded model's eval metrics
  load_trained(workdir, step=None, best=False)  a trained run, restored

Adding an objective is one module with a class on the contract of
`lm.objectives` (or `lm.tasks` for fine-tuning) and one line in
`OBJECTIVES` below.

Example:
  from lm import experiments
  summary = experiments.train(config, "runs/q")
  trained = experiments.load_trained("runs/q")
"""

from __future__ import annotations

from lm.errors import LmError
from lm.objectives.causal import CausalLM
from lm.objectives.contrastive import Contrastive
from lm.objectives.mlm import MaskedLM
from lm.tasks.classification import Classification
from lm.tasks.qa import QuestionAnswering
from lm.tasks.token_classification import Tagging
from lm.training import loop
from lm.training import workdir as workdir_lib

# config.objective -> (class, whether it takes a trained run's stored data
# settings: the fine-tuning tasks keep their label vocabulary there)
REGISTRY = {
    "causal": (CausalLM, False),
    "mlm": (MaskedLM, False),
    "contrastive": (Contrastive, False),
    "classification": (Classification, True),
    "tagging": (Tagging, True),
    "qa": (QuestionAnswering, True),
}
OBJECTIVES = tuple(REGISTRY)


def make_objective(config, stored=None):
  """The objective `config.objective` names, bound to the experiment config.

  `stored` is a trained task run's stored data settings (`config.json`'s
  `batch`: its label vocabulary and label counts), None when they come from
  the training data.
  """
  if config.objective not in REGISTRY:
    raise LmError(f"config.objective={config.objective!r} is not known; use one "
                  f"of {', '.join(repr(o) for o in OBJECTIVES)}.")
  cls, takes_stored = REGISTRY[config.objective]
  return cls(config, stored) if takes_stored else cls(config)


def train(config, workdir: str, preempted=None) -> dict:
  """Trains (or resumes) `config` in `workdir` (`lm.training.loop.train`)."""
  return loop.train(config, workdir, make_objective, preempted)


def prepare(config, workdir: str, lock=None):
  """The checked run of `config` in `workdir` (`lm.training.loop.prepare`)."""
  return loop.prepare(config, workdir, make_objective, lock=lock)


def evaluate_untrained(config, workdir: str) -> dict:
  """The eval metrics of the model as `config.seed` initialises it."""
  return loop.evaluate_untrained(config, workdir, make_objective)


def load_trained(workdir: str, step: int | None = None, *,
                 best: bool = False) -> workdir_lib.Trained:
  """The trained run in `workdir` (`lm.training.workdir.load_trained`)."""
  return workdir_lib.load_trained(workdir, step, best=best,
                                  make_objective=make_objective)
