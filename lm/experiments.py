"""The one place that names objectives: the registry, and the engine's
entry points bound to it.

`lm.training` (the engine) knows no objective by name and imports none: the
loop, the steps, warm starts and `load_trained` are handed
`make_objective`, and everything else comes from the objective's own
methods. Everything a user runs (`launch/`, the interop layer, the
benchmarks) goes through here:

  base_config()                        the whole experiment config schema:
                                       the engine's keys and every
                                       objective's own sections
  validate(config)                     one sentence for an unknown key or
                                       a bad value
  make_objective(config, stored=None)  the objective `config.objective`
                                       names (see `OBJECTIVES`)
  train(config, workdir, preempted=None)   `lm.training.loop.train`
  prepare(config, workdir)             `lm.training.loop.prepare`
  evaluate_untrained(config, workdir)  the seeded model's eval metrics
  stored_objective(workdir)            a run's objective, from its config
  load_trained(workdir, step=None, best=False, quantize=None)
                                       a trained run, restored (int8
                                       weights with quantize="int8")

Adding an objective is one module with a class on the contract of
`lm.training.objective.Objective` (its config section declared beside it
in `config_sections`) and one line in `REGISTRY` below.

Example:
  from lm import experiments
  summary = experiments.train(config, "runs/q")
  trained = experiments.load_trained("runs/q")
"""

from __future__ import annotations

import ml_collections

from lm.errors import LmError
from lm.objectives.causal import CausalLM
from lm.objectives.contrastive import Contrastive
from lm.objectives.distill import Distill
from lm.objectives.mlm import MaskedLM
from lm.objectives.seq2seq import Seq2Seq
from lm.objectives.span_corruption import SpanCorruption
from lm.tasks.classification import Classification
from lm.tasks.qa import QuestionAnswering
from lm.tasks.token_classification import Tagging
from lm.training import experiment, loop
from lm.training import workdir as workdir_lib

# config.objective -> (class, whether it takes a trained run's stored data
# settings: the fine-tuning tasks keep their label vocabulary there)
REGISTRY = {
    "causal": (CausalLM, False),
    "mlm": (MaskedLM, False),
    "contrastive": (Contrastive, False),
    "span_corruption": (SpanCorruption, False),
    "seq2seq": (Seq2Seq, False),
    "classification": (Classification, True),
    "tagging": (Tagging, True),
    "qa": (QuestionAnswering, True),
    "distill": (Distill, True),
}
OBJECTIVES = tuple(REGISTRY)


def _sections() -> dict:
  """Every registered objective's config sections, `{name: defaults fn}`."""
  out = {}
  for cls, _ in REGISTRY.values():
    for name, defaults in cls.config_sections.items():
      if out.setdefault(name, defaults) is not defaults:
        raise AssertionError(f"two objectives declare config section {name!r}")
  return out


def base_config() -> ml_collections.ConfigDict:
  """Every key an experiment may set, with its default: the engine's
  (`lm.training.experiment.engine_config`) and each objective's section.
  Config files start from this and change what they need."""
  c = experiment.engine_config()
  c.objective = OBJECTIVES[0]
  for name, defaults in _sections().items():
    c[name] = defaults()
  return c


def validate(config: ml_collections.ConfigDict) -> None:
  """LmError (one sentence) for the first key the schema does not know, an
  unknown objective, or a bad value of the engine or of the objective."""
  experiment.validate(config, base_config())
  cls = objective_class(config.objective)
  if config.sample.prompt and "sample" not in cls.config_sections:
    owners = [o for o, (c, _) in REGISTRY.items()
              if "sample" in c.config_sections]
    raise LmError(f"config.sample.prompt is set but objective "
                  f"{config.objective!r} does not generate text; clear "
                  "sample.prompt or train with objective "
                  f"{' or '.join(repr(o) for o in owners)}.")


def names_where(attribute: str) -> list[str]:
  """The registered objectives whose class sets `attribute` true, in
  registry order. Example: names_where("generates_text") -> ["causal"]."""
  return [name for name, (cls, _) in REGISTRY.items()
          if getattr(cls, attribute)]


def objective_for_head(head: str) -> str:
  """The registered objective that trains a model with `head` (what an
  imported checkpoint's head makes it). Example: "pretraining" -> "mlm"."""
  names = [n for n, (cls, _) in REGISTRY.items() if cls.head == head]
  if len(names) != 1:
    raise LmError(f"no single objective trains a {head!r} head "
                  f"(found {names or 'none'}).")
  return names[0]


def objective_class(name: str):
  """The registered class `config.objective=name` selects (one sentence
  for an unknown name)."""
  if name not in REGISTRY:
    raise LmError(f"config.objective={name!r} is not known; use one "
                  f"of {', '.join(repr(o) for o in OBJECTIVES)}.")
  return REGISTRY[name][0]


def make_objective(config, stored=None):
  """The objective `config.objective` names, bound to the experiment config.

  `stored` is a trained task run's stored data settings (`config.json`'s
  `batch`: its label vocabulary and label counts), None when they come from
  the training data.
  """
  cls = objective_class(config.objective)
  if cls is Distill:     # the student's objective is the teacher's
    return Distill(config, stored, make_student=make_objective,
                   load_teacher=_load_teacher, read_teacher=_read_teacher)
  takes_stored = REGISTRY[config.objective][1]
  return cls(config, stored) if takes_stored else cls(config)


def _read_teacher(workdir: str) -> tuple[dict, str]:
  """A distillation teacher's recorded config and its tokenizer's path
  (checked by fingerprint), without reading its checkpoints."""
  record = workdir_lib.read_resolved(workdir)
  return record, workdir_lib.load_recorded_tokenizer(workdir, record).path


def _load_teacher(workdir: str):
  """A distillation teacher: its trained run (the best checkpoint when it
  keeps one, else the newest) and its recorded config."""
  return (load_trained(workdir, best=True), workdir_lib.read_resolved(workdir))


def train(config, workdir: str, preempted=None) -> dict:
  """Trains (or resumes) `config` in `workdir` (`lm.training.loop.train`)."""
  validate(config)
  return loop.train(config, workdir, make_objective, preempted)


def prepare(config, workdir: str, lock=None):
  """The checked run of `config` in `workdir` (`lm.training.loop.prepare`)."""
  validate(config)
  return loop.prepare(config, workdir, make_objective, lock=lock)


def evaluate_untrained(config, workdir: str) -> dict:
  """The eval metrics of the model as `config.seed` initialises it."""
  validate(config)
  return loop.evaluate_untrained(config, workdir, make_objective)


def stored_objective(workdir: str):
  """The objective of the run in `workdir`, from its stored config (no
  checkpoint is read): what entry points ask before restoring weights."""
  return workdir_lib.stored_objective(workdir_lib.read_resolved(workdir),
                                     make_objective)


def load_trained(workdir: str, step: int | None = None, *,
                 best: bool = False,
                 quantize: str | None = None) -> workdir_lib.Trained:
  """The trained run in `workdir` (`lm.training.workdir.load_trained`);
  `quantize="int8"` serves it with int8 weights (`lm.models.quantize`)."""
  return workdir_lib.load_trained(workdir, step, best=best,
                                  make_objective=make_objective,
                                  quantize=quantize)
