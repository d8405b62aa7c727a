"""Predictions of a fine-tuned run on new inputs (`launch.predict`).

`read_inputs(trained, path=..., text=..., text_b=...)` turns a file or
command-line texts into `lm.data.records.Records` with the columns the run's
task reads, one record per text in the order given; `predict(trained, records)` runs the model and returns one dict
per input:

  classification  {"label", "probability", "probabilities"}
  tagging         {"tags", "entities": [{"type", "text", "start", "end",
                  "words"}]}  (character spans in the space-joined words)
  qa              {"answer", "score", "start", "end"}  (character offsets
                  into the context; score = start + end logit)
  seq2seq         {"output"}  (the decoded text, as the run's evaluation
                  decodes it)

Input files: `.jsonl` objects with the run's field names (config.task:
text_field / text_b_field, question_field / context_field), or any other
file with one text per line (classification and seq2seq: the text;
tagging: words separated by whitespace). QA needs a question and a context, so a JSONL
file or `--text` with `--context`. Several `--text` values are predicted in
order; a `--text_b` / `--context` given once goes with every one of them,
given as often as `--text` the i-th goes with the i-th text.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from lm import experiments, files
from lm.data import pipeline, records as records_lib
from lm.errors import LmError
from lm.training.step import jit_forward


def _task(trained):
  if not trained.objective.predicts:
    tasks = experiments.names_where("predicts")
    raise LmError(f"{trained.workdir} holds a {trained.config.objective!r} "
                  "run; predictions come from a fine-tuned run (objective "
                  f"{', '.join(repr(t) for t in tasks)}).")
  return trained.objective


def read_inputs(trained, *, path: str | None = None,
                text: str | Sequence[str] | None = None,
                text_b: str | Sequence[str] | None = None
                ) -> records_lib.Records:
  """Records to predict on, from `path` or from `text` (one string or a
  list, one record each), with `text_b`: the pair's second text, or the
  context of a QA question (one for every text, or one per text).

  Example: read_inputs(t, text=["a fine film", "dull"]) -> Records with
  columns {"text": ["a fine film", "dull"]} (classification).
  """
  task = _task(trained)
  texts = [text] if isinstance(text, str) else list(text or [])
  seconds = [text_b] if isinstance(text_b, str) else list(text_b or [])
  if (path is None) == (not texts):
    raise LmError("give exactly one of --input (a file) and --text.")
  if texts:
    return _from_texts(task, texts, seconds)
  if path.endswith(".jsonl"):  # read through lm.files: may be a URI
    if seconds:
      raise LmError("--text_b goes with --text; a JSONL --input holds both "
                    "texts in its fields.")
    return records_lib.open_records(f"jsonl:{path}", task.input_fields())
  try:
    lines = files.read_text(path).replace("\r\n", "\n").split("\n")
  except OSError as e:
    raise LmError(f"could not read --input {path} ({e.strerror}); check the "
                  "path.") from None
  lines = [l for l in lines if l.strip()]
  if not lines:
    raise LmError(f"--input {path} has no non-blank lines; write one text "
                  "per line.")
  return task.inputs_from_lines(path, lines)


def _from_texts(task, texts: list[str], seconds: list[str]
                ) -> records_lib.Records:
  """Records of command-line `texts`; `seconds` (the pairs' second texts or
  QA contexts) holds none, one for all, or one per text."""
  flag = task.second_text_flag
  if len(seconds) not in (0, 1, len(texts)):
    raise LmError(f"{len(texts)} --text values but {len(seconds)} {flag} "
                  f"values; give {flag} once (for every text) or once per "
                  "--text.")
  seconds = seconds * len(texts) if len(seconds) == 1 else seconds
  return task.inputs_from_texts(texts, seconds)


def predict(trained, records, *, batch_size: int = 32) -> list[dict]:
  """One prediction dict per record (see the module docstring), from the
  run's model without dropout."""
  task = _task(trained)
  if batch_size < 1:
    raise LmError(f"batch size must be positive, got {batch_size}.")
  if len(records) == 0:
    raise LmError("there is nothing to predict; give at least one input.")
  if task.transduces:      # an encoder-decoder writes text
    return task.predict_texts(trained, list(records.columns["input"]),
                              batch_size=batch_size)
  tok, mesh, model = trained.tokenizer, trained.mesh, trained.model
  arrays = task.make_rows(records, tok, with_labels=False)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  batch_size = -(-batch_size // shards) * shards
  keys = [k for k in ("tokens", "token_types", "mask") if k in arrays]

  def forward(params, batch):
    kwargs = {"token_types": batch["token_types"]} if "token_types" in batch else {}
    return model.apply({"params": params}, batch["tokens"],
                       segment_ids=batch["mask"], **kwargs)

  fn = jit_forward(forward, trained.state_shardings.params, mesh,
                   trained.rules)
  parts = []
  for batch in pipeline.row_eval_batches({k: arrays[k] for k in keys},
                                         batch_size=batch_size):
    real = batch.pop("weights") > 0
    batch.pop("index")
    out = jax.device_get(fn(trained.params, batch))
    parts.append({k: np.asarray(v)[real] for k, v in out.items()})
  outputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  return task.predictions(records, outputs, arrays, tok)
