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
    control_symbols: more pieces the tokenizer must reserve (a new one is
      trained with them as control symbols; a given one must have them),
      e.g. span corruption's sentinels.
    backbone_path: where the pretrained backbone sits in the parameter tree
      (() = the whole tree), for `config.init_from`.
    best_metric: `(eval metric, "min" | "max")` that picks the checkpoint
      kept as best.
    count_key: the key of `sums` that counts what a batch scores, and the
      name of that count in the logged metrics ("tokens", "examples", ...).
    labels: class or tag names in id order (tasks), else None.
    config_sections: the experiment-config sections this objective reads
      beyond the engine's (`lm.training.experiment.engine_config`), as
      `{section: function returning its defaults}`; `lm.experiments`
      assembles the whole schema from every registered objective's.
    head: the kind of model it trains, which the interop layer maps to
      Hugging Face classes: "lm" (next-token head), "pretraining" (masked
      LM, NSP when on), "encoder" (a pooled sentence encoder), or a
      `lm.models.task_model.HEADS` task head.
    generates_text, embeds, predicts, scores_sts: what the entry points
      serve for a trained run (`launch.sample`, `encode`, `predict`,
      `evaluate --sts`).
    distillable: `loss(..., return_logits=True)` also returns the
      predictions a teacher's can be matched with (knowledge distillation,
      `lm.objectives.distill`): `(loss, sums, outputs)`, `outputs` a tuple
      of `(logits [..., C], weights [...])`, float32 weights saying how much
      each row of logits counts in the loss's `tokens` normaliser.
    token_field: the batch field holding the model's input token ids
      ("inputs", "tokens"), where distillation's input augmentation
      replaces tokens; "" when there is none.
  """

  name: str = ""
  config: Any = None
  loss: Callable[..., Any]
  summarize: Callable[[dict], dict]
  bert_specials: bool = False
  control_symbols: tuple[str, ...] = ()
  backbone_path: tuple[str, ...] = ()
  best_metric: tuple[str, str] = ("eval_loss", "min")
  count_key: str = "tokens"
  labels: list[str] | None = None
  stored: dict | None = None   # a trained run's stored data settings (tasks)
  # `data_settings()` keys known only once the training data is read (a
  # task's label vocabulary): the resume check before the data is opened
  # leaves them to the one after
  data_derived: tuple[str, ...] = ()
  config_sections: dict[str, Callable[[], Any]] = {}
  head: str = ""
  # What the entry points may ask of a trained run of this objective:
  generates_text: bool = False   # launch.sample (a decoder's text)
  embeds: bool = False           # launch.encode (sentence embeddings)
  predicts: bool = False         # launch.predict (labels, tags, answers)
  scores_sts: bool = False       # launch.evaluate --sts (`set_sts`)
  transduces: bool = False       # launch.sample: input text -> output text
                                 # (`transduce`, encoder-decoders)
  distillable: bool = False      # loss(..., return_logits=True)
  token_field: str = ""          # the batch's input token ids

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
    """The tokenized, disk-cached form of a source (with `.tokens`), or a
    streamed one (`lm.data.streaming.StreamCorpus`, see `data_record`)."""

  @abc.abstractmethod
  def train_batches(self, data, process_index: int, process_count: int,
                    data_state: dict | None = None):
    """`.batch(step)` (this process's rows), `.epoch(step)` and
    `.state(step)` (the JSON data position a checkpoint stores), as
    `lm.data.pipeline.TrainBatches`. The engine asks for consecutive steps
    from the start step; `data_state` is the checkpoint's `.state` when
    resuming (None for a fresh run): step-indexed batches, a pure function
    of the step, ignore it, streamed ones (`lm.data.streaming`) continue
    from it."""

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

  def data_record(self, data) -> tuple[dict, str]:
    """What the run records of its training data (in `config.json`'s
    `batch`, checked on resume) and how the start line describes it; by
    default its token count. Its keys start with "train_" (the resume check
    before the data is read skips them). Example: ({"train_tokens": 1234},
    "1,234 tokens")."""
    record = getattr(data, "record", None)
    if record is not None:   # streamed data: documents, not tokens
      return record(), data.describe()
    n = int(len(data.tokens))
    return {"train_tokens": n}, f"{n:,} tokens"

  def evaluate(self, data, eval_fn, params, mesh, *, batch_size: int,
               max_batches: int | None) -> dict | None:
    """Metrics that are not sums over batches (retrieval, F1, ...), as
    `eval_<metric>`; None (the default) lets the engine sum `eval_fn` over
    `eval_batches` and `summarize` the totals."""
    del data, eval_fn, params, mesh, batch_size, max_batches
    return None

  @classmethod
  def configure_import(cls, config, params: dict, *,
                       pooling: str | None = None,
                       normalize: bool = False, tokenizer=None) -> None:
    """Sets this objective's config keys that say which parts an imported
    parameter tree `params` and its `tokenizer` have
    (`lm.interop.workdir.import_hf`); for objectives that `embeds`, also
    the pooling and unit-length output of the sentence-transformers
    modules. The default sets nothing."""
    del config, params, pooling, normalize, tokenizer

  @classmethod
  def imported_params(cls, params: dict) -> dict:
    """The tree this objective's model holds, from an imported checkpoint's
    `params` (the bare model's, or a task model's); the default keeps it."""
    return params

  def set_source(self, source: "Objective") -> None:
    """Called before `check_model` with the objective of the run
    `config.init_from` names (built from its stored config), when there is
    one and it can be read; the default ignores it."""
    del source

  def set_sts(self, uri: str) -> None:
    """Makes `evaluate` score the STS pairs at `uri` (`scores_sts` only)."""
    raise NotImplementedError(f"objective {self.name!r} scores no STS pairs")

  def transduce(self, trained, texts, *, max_new_tokens: int,
                temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                beam_size: int = 0, seed: int = 0, batch_size: int = 16,
                no_repeat_ngram: int | None = None,
                length_penalty: float = 0.6) -> list[str]:
    """The output text for each input text of a trained run
    (`lm.training.workdir.Trained`), `batch_size` inputs per decode; only
    objectives with `transduces`. `no_repeat_ngram` n > 0 bans repeated
    n-grams (None: the objective's default); `length_penalty` is beam
    search's alpha."""
    raise NotImplementedError(f"objective {self.name!r} maps no text to text")

  def embed(self, trained, texts, *, batch_size: int = 64):
    """`[len(texts), D]` float32 sentence embeddings from the trained run
    (`lm.training.workdir.Trained`); only objectives with `embeds`."""
    raise NotImplementedError(f"objective {self.name!r} gives no embeddings")

  def has_pretrained_pooler(self) -> bool:
    """Whether a run of this objective holds a trained BERT pooler (a run
    warm-started from it can use it); False by default."""
    return False

  @property
  def serves(self) -> str:
    """The objective a trained run answers as (`launch.predict`'s output
    format): its own name; a distilled student's is its teacher's."""
    return self.name

  def frozen_inputs(self, mesh, rules, seq_len: int):
    """`(tree, shardings)` of arrays the loss reads but training never
    changes (a distillation teacher's parameters), placed on `mesh`; the
    train step passes them as `loss(..., frozen=tree)`. Not in the
    optimizer state or the checkpoints. None (the default): no such input."""
    del mesh, rules, seq_len
    return None

  def extra_params(self, model_cfg, rng):
    """Trainable parameters the loss adds to the model's (a distillation
    projection), as a tree of `nn.LogicallyPartitioned` initial values built from
    `rng`, or None (the default). They live under `params["objective"]`:
    trained, checkpointed and resumed with the model's, and dropped when a
    finished run is loaded to serve (`Trained.params` is the model's
    alone)."""
    del model_cfg, rng
    return None

  def start_params(self, params, shardings):
    """The parameters a fresh run starts from, given the seeded (or
    `init_from`) ones (`shardings`: their placement); the default keeps
    them. Not called when a run resumes."""
    del shardings
    return params

  def after_training(self, run, params) -> str:
    """What the loop prints when training ends ("" = nothing, the
    default); `run` is the loop's `Run`, `params` the final parameters."""
    del run, params
    return ""
