"""The objective contract: what the engine calls, typed, with defaults.

Every objective (`lm.objectives`) and fine-tuning task (`lm.tasks`)
subclasses `Objective`; the engine (`lm.training.loop`, `step`,
`warm_start`, `workdir`) reads these members and nothing else, and is handed
the objective (through `lm.experiments.make_objective`) instead of looking
it up. Abstract methods must be implemented; the attributes below them are
defaults a subclass overrides when it differs.

Example (the shape of `lm.objectives.causal.CausalLM`):

  class CausalLM(Objective):
    name = "causal"
    def __init__(self, config):
      self.config = config
      self.loss, self.summarize = causal_lm_loss, summarize
    def build_model(self, model_cfg): ...
    ...
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import Any


class Objective(abc.ABC):
  """One objective bound to an experiment config (`self.config`).

  Attributes (set by the subclass or its `__init__`):
    name: the `config.objective` value it serves.
    loss: `(params, batch, rng, model, *, deterministic) -> (loss, sums)`;
      `sums` are float32 sums over the batch: `loss_sum` (differentiated),
      `tokens` (its normaliser) and whatever `summarize` reads.
    summarize: `sums -> metrics` (`loss`, `accuracy`, ...), from sums added
      over batches and hosts; works inside `jit` and on host numbers.
    bert_specials: the tokenizer must reserve [CLS], [SEP] and [MASK].
    backbone_path: where the pretrained backbone sits in the parameter tree
      (() = the whole tree), for `config.init_from`.
    best_metric: `(eval metric, "min" | "max")` that picks the checkpoint
      kept as best.
    count_key: the key of `sums` that counts what a batch scores, and the
      name of that count in the logged metrics ("tokens", "examples", ...).
    labels: class or tag names in id order (tasks), else None.
  """

  name: str = ""
  config: Any = None
  loss: Callable[..., Any]
  summarize: Callable[[dict], dict]
  bert_specials: bool = False
  backbone_path: tuple[str, ...] = ()
  best_metric: tuple[str, str] = ("eval_loss", "min")
  count_key: str = "tokens"
  labels: list[str] | None = None

  @abc.abstractmethod
  def check_model(self, model_cfg) -> None:
    """LmError when the architecture cannot serve this objective."""

  @abc.abstractmethod
  def build_model(self, model_cfg):
    """The Flax module trained (`lm.models.build_model`, or a wrapper)."""

  @abc.abstractmethod
  def open_source(self, uri: str, *, train: bool):
    """The data named by `uri`, None for ""."""

  @abc.abstractmethod
  def open_data(self, source, tokenizer, cache_dir: str, max_chars):
    """The tokenized, disk-cached form of a source; has `.tokens`."""

  @abc.abstractmethod
  def train_batches(self, data, process_index: int, process_count: int):
    """`.batch(step)` (this process's rows, a pure function of the step),
    `.epoch(step)` and `.state(step)`, as `lm.data.pipeline.TrainBatches`."""

  @abc.abstractmethod
  def eval_batches(self, data, batch_size: int,
                   max_batches: int | None) -> Iterator[dict]:
    """A fixed evaluation set, identical on every call."""

  @abc.abstractmethod
  def data_settings(self) -> dict:
    """The settings that decide which batches a step sees (a resumed run
    must match them; tasks keep their labels here)."""

  @abc.abstractmethod
  def flops_per_token(self, model_cfg, n_params: int) -> float:
    """Training FLOPs per input token, for MFU."""

  def evaluate(self, data, eval_fn, params, mesh, *, batch_size: int,
               max_batches: int | None) -> dict | None:
    """Metrics that are not sums over batches (retrieval, F1, ...), as
    `eval_<metric>`; None (the default) lets the engine sum `eval_fn` over
    `eval_batches` and `summarize` the totals."""
    del data, eval_fn, params, mesh, batch_size, max_batches
    return None
