"""What the fine-tuning tasks share: labels, cached rows, batches, contract.

A task reads labelled records (`lm.data.records`) through a column mapping
in `config.task`, turns each example into fixed-length rows of token ids
(one row per example; QA may make several windows per example), caches the
rows on disk next to the other token files, and feeds them to the training
loop in shuffled global batches (`lm.data.pipeline.RowBatches`).

The label vocabulary comes from the training data (the class names a TFDS
`ClassLabel` declares, in its order, or the sorted distinct labels of a
file) and is stored with the run (`config.json`, under `batch.labels`), so a
resumed run, `launch.evaluate` and `launch.predict` map ids back to the same
names. Subclasses (`Classification`, `Tagging`, `QuestionAnswering`) supply
the fields they read, the rows they make, the loss and the evaluation.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import ml_collections
import numpy as np

from lm.data import packing, pipeline, records
from lm.errors import LmError
from lm.models import flops
from lm.models.config import make_model_config
from lm.models.task_model import TaskModel
from lm.training import experiment
from lm.training.objective import Objective
from lm.training.step import eval_totals


def config_section() -> ml_collections.ConfigDict:
  """The `task` section of the experiment config (every task), with its
  defaults."""
  # Fields name the columns of the data (jsonl/csv/tsv/tfds); conll: files
  # always give tokens and tags.
  s = ml_collections.ConfigDict()
  s.text_field = "text"        # classification text; tagging: the words
  s.text_b_field = ""          # second text of a pair ("" = single text)
  s.label_field = "label"      # the class; tagging: the tag list
  s.question_field = "question"  # qa
  s.context_field = "context"
  s.answers_field = "answers"
  s.id_field = "id"
  s.pooling = "auto"           # classification: auto (BERT's pooler,
                               # 'last' for decoders) | pooler | cls |
                               # mean | last
  s.class_weights = ""         # "balanced" or "label=weight,..." ("" = 1)
  s.metric = ""                # best-checkpoint metric ("" = the task's)
  s.doc_stride = 128           # qa: tokens between window starts
  s.max_question_len = 64      # qa: question tokens kept
  s.max_answer_len = 30        # qa: longest predicted span, in tokens
  s.trim_batches = 0           # >0: cut each batch to its longest row,
                               # rounded up to a multiple of this (one
                               # compile per width; 0 = rows keep seq_len)
  s.group_by_length = 0        # >0: draw batches from pools of this many
                               # batches sorted by length (needs
                               # trim_batches; 0 = plain shuffle)
  return s


@dataclasses.dataclass
class TaskData:
  """Tokenized rows of one split and the records they came from.

  Attributes:
    arrays: name -> `[N, ...]` arrays, one row per model input row.
    records: the `lm.data.records.Records` read (for answers and words).
  """
  arrays: dict[str, np.ndarray]
  records: object

  @property
  def tokens(self) -> np.ndarray:
    return self.arrays["tokens"].reshape(-1)

  def __len__(self) -> int:
    return len(self.arrays["tokens"])


def padding_settings(task_config) -> tuple[int, int]:
  """`(trim_batches, group_by_length)` of a `task` config section, checked;
  0 where a stored run's config predates them."""
  trim = task_config.get("trim_batches", 0)
  group = task_config.get("group_by_length", 0)
  for name, value in (("trim_batches", trim), ("group_by_length", group)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise LmError(f"config.task.{name}={value!r} must be a non-negative "
                    "integer (0 turns it off).")
  if group and not trim:
    raise LmError(f"config.task.group_by_length={group} groups rows by length "
                  "only to cut their padding; set config.task.trim_batches "
                  "(for example 16) as well, or group_by_length=0.")
  return trim, group


def frame_ids(tokenizer, arch: str) -> tuple[int, int, int]:
  """`(first, separator, pad)` ids around a row's texts: [CLS], [SEP] for
  BERT; bos, eos for the others (which have no separator of their own)."""
  if arch == "bert":
    return tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
  return tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id


def sort_labels(values: Sequence[str]) -> list[str]:
  """Distinct labels, numerically when all are integers, else as strings.

  Example: ["10", "2", "2"] -> ["2", "10"]; ["pos", "neg"] -> ["neg", "pos"].
  """
  distinct = set(values)
  if distinct and all(re.fullmatch(r"-?\d+", v) for v in distinct):
    return sorted(distinct, key=int)
  return sorted(distinct)


def parse_class_weights(spec: str, labels: Sequence[str],
                        counts: np.ndarray) -> np.ndarray | None:
  """Per-class loss weights from `config.task.class_weights`.

  "" gives None (all 1); "balanced" gives `n / (C * count_c)` from the
  training labels' `counts`; "pos=2,neg=0.5" names weights by label (labels
  not named get 1).

  Example: "balanced", labels [a, b], counts [3, 1] -> [0.667, 2.0].
  """
  if not spec:
    return None
  if spec == "balanced":
    missing = [l for l, n in zip(labels, counts) if n == 0]
    if missing:
      raise LmError("config.task.class_weights='balanced' needs every label "
                    f"in the training data, but {missing[:3]} never occur; "
                    "name the weights instead ('label=weight,...').")
    return (counts.sum() / (len(labels) * counts)).astype(np.float32)
  out = np.ones(len(labels), np.float32)
  for part in filter(None, spec.split(",")):
    name, sep, value = part.rpartition("=")
    if not sep or name not in labels:
      raise LmError(f"config.task.class_weights entry {part!r} does not name "
                    f"a label; write 'label=weight,...' with labels from "
                    f"{list(labels)[:10]}, or 'balanced'.")
    try:
      out[labels.index(name)] = float(value)
    except ValueError:
      raise LmError(f"config.task.class_weights entry {part!r} has no number "
                    "after '='; write e.g. 'pos=2.0'.") from None
    if not out[labels.index(name)] >= 0:
      raise LmError(f"config.task.class_weights entry {part!r} is negative; "
                    "weights must be >= 0.")
  return out


def label_ids(values: Sequence[str], labels: Sequence[str], uri: str
              ) -> np.ndarray:
  """int32 ids of `values` in `labels`; a label outside the vocabulary is
  an LmError naming it."""
  index = {l: i for i, l in enumerate(labels)}
  out = np.empty(len(values), np.int32)
  for i, v in enumerate(values):
    if v not in index:
      raise LmError(f"{uri} example {i} has label {v!r}, which the training "
                    f"data never uses (labels: {list(labels)[:10]}); "
                    "evaluate on data with the training labels.")
    out[i] = index[v]
  return out


class Task(Objective):
  """The objective contract (`lm.objectives`) for fine-tuning.

  `stored` is a trained run's `data_settings()` as its `config.json` holds
  them (evaluation and prediction: the labels and their training counts
  come from there, not from the data opened). Subclasses set `name`,
  `main_metric`, `metrics` (those `evaluate`
  reports, without the `eval_` prefix), `train_keys` (the arrays a training
  batch carries) and implement `fields`, `read_labels`, `make_rows`, `loss`,
  `summarize` and `evaluate`.
  """

  name = ""
  config_sections = {"task": config_section}
  main_metric = ""
  metrics: tuple[str, ...] = ()
  train_keys: tuple[str, ...] = ()
  data_derived = ("labels", "label_counts")
  head = "sequence"           # the TaskModel head (lm.models.task_model.HEADS)
  backbone_path = ("backbone",)
  distillable = True          # each task's loss(..., return_logits=True)
  token_field = "tokens"

  def __init__(self, config, stored: dict | None = None):
    self.config = config
    overrides = {**experiment.model_overrides(config), "vocab_size": 1}
    self.arch = make_model_config(config.model.size, **overrides).arch
    self.bert_specials = self.arch == "bert"
    self.stored = stored      # a trained run's data settings, or None
    labels = (stored or {}).get("labels")
    self.labels = [str(l) for l in labels] if labels else None
    metric = config.task.metric or self.main_metric
    if metric not in self.metrics:
      raise LmError(f"config.task.metric={metric!r} is not a {self.name} "
                    f"metric; use one of {', '.join(self.metrics)}.")
    self.best_metric = (f"eval_{metric}", "max")
    self.trim, self.group = padding_settings(config.task)
    if config.data.get("pipeline", "packed") == "stream" and stored is None:
      raise LmError(f"config.objective={self.name!r} reads its labelled "
                    "examples into memory, and data.pipeline='stream' is for "
                    "pretraining corpora (causal, mlm, contrastive); leave "
                    "--config.data.pipeline at 'packed'.")

  # --- model ------------------------------------------------------------------

  def num_labels(self) -> int:
    if self.labels is None:
      raise LmError(f"the {self.name} task has no labels yet; they are read "
                    "from the training data (config.data.train).")
    return len(self.labels)

  def check_model(self, model_cfg) -> None:
    del model_cfg

  def build_model(self, model_cfg):
    return TaskModel(model_cfg, head=self.head, num_labels=self.num_labels(),
                     pooling=self.pooling(),
                     freeze_backbone=bool(self.config.optimizer.freeze_backbone))

  def pooling(self) -> str:
    return "cls"

  # --- prediction inputs (launch.predict; lm.tasks.predict) ----------------

  predicts = True
  second_text_flag = "--text_b"   # the flag giving each text's second part

  def inputs_from_lines(self, path: str, lines: list[str]) -> records.Records:
    """Records of a plain text `--input` file's non-blank `lines`."""
    if "text_b" in self.fields():
      raise LmError(f"a {self.name} run reads two texts per input, so "
                    "--input must be a .jsonl file with the run's field "
                    f"names ({self._input_field_names()}).")
    return records.Records(path, {"text": lines})

  def inputs_from_texts(self, texts: list[str],
                        seconds: list[str]) -> records.Records:
    """Records of command-line `texts`, with `seconds` (the pairs' second
    texts) empty or one per text."""
    pairs = "text_b" in self.fields()
    if pairs != bool(seconds):
      raise LmError(f"this run {'needs' if pairs else 'takes no'} a second "
                    "text (--text_b); its task reads "
                    f"{'pairs' if pairs else 'single texts'}.")
    columns = {"text": texts}
    if seconds:
      columns["text_b"] = seconds
    return records.Records("--text", columns)

  def input_fields(self) -> dict:
    """The task's fields without labels or answers."""
    return {role: spec for role, spec in self.fields().items()
            if role not in ("label", "tags", "answers")}

  def _input_field_names(self) -> str:
    return ", ".join(f for f, _ in self.input_fields().values())

  # --- data -------------------------------------------------------------------

  def fields(self) -> dict[str, tuple[str, str]]:
    raise NotImplementedError

  def open_source(self, uri: str, *, train: bool):
    del train
    if not uri:
      return None
    return records.open_records(uri, self.fields(),
                                data_dir=self.config.data.data_dir or None)

  def read_labels(self, records) -> list[str]:
    raise NotImplementedError

  def make_rows(self, records, tokenizer) -> dict[str, np.ndarray]:
    raise NotImplementedError

  def settings(self) -> dict:
    """The task settings that decide the rows (and so the cache key)."""
    t = self.config.task
    return {"fields": {k: list(v) for k, v in sorted(self.fields().items())},
            "class_weights": t.class_weights}

  def open_data(self, source, tokenizer, cache_dir: str, max_chars):
    del max_chars
    if self.labels is None:
      self.labels = self.read_labels(source)
      if not self.labels:
        raise LmError(f"{source.uri} has no labels; check "
                      "config.task.label_field.")
    key = (self.name, source.fingerprint(), tokenizer.fingerprint(),
           self.config.seq_len, self.labels, self.settings(), self.arch)
    arrays = packing.cached_arrays(
        key, lambda: self.make_rows(source, tokenizer), cache_dir, self.name,
        vocab_size=tokenizer.vocab_size)
    if len(arrays["tokens"]) == 0:
      raise LmError(f"{source.uri} gives no {self.name} examples; check the "
                    "data and config.task fields.")
    return TaskData(arrays, source)

  def train_batches(self, data: TaskData, process_index: int,
                    process_count: int, data_state: dict | None = None):
    del data_state  # batches are a pure function of the step
    c = self.config
    return pipeline.RowBatches(
        {k: data.arrays[k] for k in self.train_keys},
        global_batch_size=c.batch_size, seed=c.seed,
        process_index=process_index, process_count=process_count,
        lengths=self._lengths(data), trim=self.trim, group=self.group)

  def _lengths(self, data: TaskData) -> np.ndarray | None:
    """Each row's length (`pipeline.row_lengths` of its mask) when batches
    are trimmed."""
    return pipeline.row_lengths(data.arrays["mask"]) if self.trim else None

  def eval_batches(self, data: TaskData, batch_size: int,
                   max_batches: int | None):
    limit = None if max_batches is None else max_batches * batch_size
    return pipeline.row_eval_batches(
        {k: data.arrays[k] for k in self.train_keys}, batch_size=batch_size,
        limit=limit, lengths=self._lengths(data), trim=self.trim)

  def data_settings(self) -> dict:
    c = self.config
    out = {"batch_size": c.batch_size, "seq_len": c.seq_len, "seed": c.seed,
           "task": self.name, "labels": list(self.labels or []),
           **self.settings()}
    # recorded only when set, so runs from before these settings resume
    if self.trim:
      out["trim_batches"] = self.trim
    if self.group:
      out["group_by_length"] = self.group
    return out

  def flops_per_token(self, model_cfg, n_params: int) -> float:
    """6·N + attention per row token; N leaves out the lookup tables and
    any LM head the task head never reads."""
    return flops.encoder_flops_per_token(model_cfg, n_params,
                                               self.config.seq_len)

  # --- evaluation -------------------------------------------------------------

  def eval_sums(self, data: TaskData, eval_fn, params, mesh, *,
                batch_size: int, max_batches: int | None, keep=()):
    """Sums of the eval step's outputs over the eval batches, and the
    per-row outputs named in `keep` (real rows only, in row order) with the
    row `index`."""
    totals, kept = eval_totals(
        eval_fn, params, mesh,
        self.eval_batches(data, batch_size, max_batches),
        keep=(*keep, "index"),
        width=self.config.seq_len if self.trim else None)
    if kept and self.trim:    # trimmed rows come shortest first
      order = np.argsort(kept["index"], kind="stable")
      kept = {k: v[order] for k, v in kept.items()}
    if totals is None:
      raise LmError("the evaluation data yields no rows; use a larger split.")
    return totals, kept
