"""Shared config snippets and argument parsing for `get_config(arg)`."""

from __future__ import annotations

from lm.errors import LmError
from lm.experiments import base_config  # noqa: F401  (re-exported)


def parse_arg(arg: str | None, positional: str | None = None,
              **defaults) -> dict:
  """Parses `key=value,key2=value2` (or a bare flag `runlocal`) into a dict.

  With `positional`, a part that is neither `key=value` nor a known flag is
  the value of that key (fine-tuning configs take the backbone workdir so).

  >>> parse_arg("runlocal,steps=10", runlocal=False, steps=100)
  {'runlocal': True, 'steps': 10}
  >>> parse_arg("runs/bert,runlocal", "init_from", init_from="", runlocal=False)
  {'init_from': 'runs/bert', 'runlocal': True}
  """
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, sep, value = part.partition("=")
    if positional and not sep and key not in defaults:
      out[positional] = part
      continue
    if key not in defaults:
      raise LmError(f"config argument {key!r} is not known; valid arguments "
                    f"are {', '.join(sorted(defaults))}.")
    if not sep:
      out[key] = True
    else:
      kind = type(defaults[key])
      out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
  return out


def from_backbone(c, workdir: str) -> None:
  """Starts `c` from the pretraining run in `workdir`: `c.init_from`, and
  the model size and architecture overrides that run used (read from its
  `config.json` when the workdir is there; otherwise `c.model` stays and
  the run checks the two models match when it starts)."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from lm.training.warm_start import FREE_FIELDS, split_source  # pylint: disable=g-import-not-at-top
  c.init_from = workdir
  path = os.path.join(split_source(workdir)[0], "config.json")
  if not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      model = json.load(f)["config"]["model"]
  except (OSError, ValueError, KeyError):
    return      # the run's own checks name the problem when it starts
  for key, value in model.items():
    if key not in FREE_FIELDS and value is not None and key in c.model:
      c.model[key] = value


# A fine-tuning config given no backbone trains its encoder from scratch.
# BERT's fine-tuning rates (2e-5 to 5e-5 over a few hundred warmup steps)
# are sized to nudge pretrained weights: a randomly initialised encoder at
# that rate stays near chance for a whole fine-tuning budget, and a 110M
# bert_base is slow to train from nothing on one task's examples. So a
# from-scratch run is bert_mini (4 layers x 256 wide, 4 heads) at the rate
# small encoders train at from scratch (1e-3, as the masked-LM quickstart),
# warmed up over the first 5% of its steps.
SCRATCH_SIZE = "bert_mini"
SCRATCH_LR = 1e-3
SCRATCH_WARMUP = 0.05       # of config.steps


def fine_tune(c, args: dict, *, lr: float, warmup_steps: int,
              eval_every: int) -> None:
  """What the fine-tuning configs share: BERT's fine-tuning AdamW (linear
  decay to 0, b2 0.999, weight decay 0.01), evaluation on the whole eval
  split every `eval_every` steps with the best checkpoint kept, and the
  tiny `runlocal` variant.

  From a backbone (`args["init_from"]`): that run's model and weights,
  trained at the fine-tuning rate `lr` after `warmup_steps`. Without one:
  `SCRATCH_SIZE` from scratch at `SCRATCH_LR`, warmed up over
  `SCRATCH_WARMUP` of `c.steps` (set `c.steps` before calling). `runlocal`
  is bert_tiny from scratch (or the backbone's model) for a few steps.
  """
  c.eval_every = eval_every
  c.eval_steps = 0            # the whole eval split
  c.checkpoint_every = eval_every
  c.keep_checkpoints = 1      # plus the best by the task's metric
  c.log_every = 50
  if args["init_from"]:
    c.model.size = "bert_base"    # until the backbone's config.json says
    adamw_linear(c, lr=lr, warmup_steps=warmup_steps)
    from_backbone(c, args["init_from"])
  else:
    c.model.size = SCRATCH_SIZE
    adamw_linear(c, lr=SCRATCH_LR,
                 warmup_steps=max(1, round(SCRATCH_WARMUP * c.steps)))
  if args["runlocal"]:
    runlocal(c, None if args["init_from"] else "bert_tiny", steps=4, every=2,
             eval_steps=None, vocab_size=512)
    c.optimizer.warmup_steps = 1


def sentence_encoder(c, *, mode: str, pooling: str, projection: bool,
                     steps: int, eval_every: int) -> None:
  """The CPU sentence-encoder recipe both contrastive quickstarts share:
  bert_mini with dropout 0.1 on the standard library's source, 64x64 rows,
  a whole-split eval, temperature 0.05."""
  c.objective = "contrastive"
  c.model.size = "bert_mini"
  c.model.dropout = 0.1
  c.model.attention_dropout = 0.1
  c.seq_len = 64
  c.batch_size = 64
  c.steps = steps
  c.log_every = 20
  c.eval_every = eval_every
  c.eval_steps = 0
  c.checkpoint_every = eval_every
  c.data.train = "pystdlib:train"
  c.data.eval = "pystdlib:validation"
  c.data.tokenizer.vocab_size = 2048
  c.data.tokenizer.max_chars = 8_000_000
  c.contrastive.mode = mode
  c.contrastive.pooling = pooling
  c.contrastive.projection = projection
  c.contrastive.temperature = 0.05


def sst2_data(c, data: str) -> None:
  """SST-2's sentences and labels: TFDS `glue/sst2` (train; validation as
  the eval split), or `data` (a directory with `train.tsv` and `dev.tsv`,
  header `sentence<TAB>label`) when given."""
  c.data.train = "tfds:glue/sst2:train"
  c.data.eval = "tfds:glue/sst2:validation"
  if data:
    c.data.train = f"tsv:{data}/train.tsv"
    c.data.eval = f"tsv:{data}/dev.tsv"
  c.task.text_field = "sentence"
  c.task.label_field = "label"


def adamw_linear(c, *, lr: float, warmup_steps: int) -> None:
  """AdamW (b2 0.999, weight decay 0.01) with linear warmup and a linear
  decay to zero."""
  c.optimizer.lr = lr
  c.optimizer.warmup_steps = warmup_steps
  c.optimizer.schedule = "linear"
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.01


def runlocal(c, size: str | None, *, steps: int, every: int,
             eval_steps: int | None, vocab_size: int,
             tokenizer_chars: int | None = None,
             data_chars: int | None = None) -> None:
  """The tiny CPU variant (`:runlocal`) of a config, which the tests run:
  model `size` (None keeps the config's), `steps` steps of 8 rows of 32
  tokens with a log line every 2, evals and checkpoints `every` steps over
  `eval_steps` batches (None keeps the config's), a `vocab_size` tokenizer
  trained on `tokenizer_chars` characters and a corpus cut to `data_chars`
  (None keeps the config's), no progress bar."""
  if size is not None:
    c.model.size = size
  c.seq_len = 32
  c.batch_size = 8
  c.steps = steps
  c.log_every = 2
  c.eval_every = every
  if eval_steps is not None:
    c.eval_steps = eval_steps
  c.checkpoint_every = every
  if data_chars is not None:
    c.data.max_chars = data_chars
  c.data.tokenizer.vocab_size = vocab_size
  if tokenizer_chars is not None:
    c.data.tokenizer.max_chars = tokenizer_chars
  c.progress_bar = False


def runlocal_quickstart(c, size: str) -> None:
  """`runlocal` of the quickstarts: 6 steps, evals of 2 batches every 3, a
  512-piece tokenizer and a corpus cut to 300k characters."""
  runlocal(c, size, steps=6, every=3, eval_steps=2, vocab_size=512,
           tokenizer_chars=300_000, data_chars=300_000)


def runlocal_at_scale(c, size: str) -> None:
  """`runlocal` of the at-scale recipes (bf16 on large corpora): float32,
  4 steps with one eval batch at the end, a 300-piece tokenizer."""
  runlocal(c, size, steps=4, every=4, eval_steps=1, vocab_size=300,
           tokenizer_chars=200_000)
  c.model.dtype = "float32"


def runlocal_encoder(c) -> None:
  """The tiny CPU variant of a BERT-sized encoder run that the tests use:
  bert_tiny, 6 steps of 8x32, evals and checkpoints every 3 steps."""
  runlocal(c, "bert_tiny", steps=6, every=3, eval_steps=None, vocab_size=512,
           tokenizer_chars=300_000)


def seq2seq_fine_tune(c, args: dict, *, train: str, eval_: str,
                      input_field: str, target_field: str, data_ext: str,
                      metric: str, target_len: int) -> None:
  """What the seq2seq fine-tuning configs share: `objective="seq2seq"` on
  `train`/`eval_` (or `data=DIR` with `train.<data_ext>` and
  `dev.<data_ext>`), warm-started from `args["init_from"]` (a span
  corruption run or an imported T5) at T5's fine-tuning rate 1e-3 (AdamW,
  linear decay), or `t5_mini` from scratch; the best checkpoint by
  `metric`; `runlocal` a few tiny steps."""
  c.objective = "seq2seq"
  c.data.train, c.data.eval = train, eval_
  if args["data"]:
    c.data.train = f"{data_ext}:{args['data']}/train.{data_ext}"
    c.data.eval = f"{data_ext}:{args['data']}/dev.{data_ext}"
  c.seq2seq.input_field, c.seq2seq.target_field = input_field, target_field
  c.seq2seq.metric, c.seq2seq.target_len = metric, target_len
  c.eval_every = c.checkpoint_every = 500
  c.eval_steps = 0
  c.keep_checkpoints = 1
  c.log_every = 50
  adamw_linear(c, lr=1e-3, warmup_steps=100)
  if args["init_from"]:
    c.model.size = "t5_small"       # until the source's config.json says
    from_backbone(c, args["init_from"])
  else:
    c.model.size = "t5_mini"
  if args["runlocal"]:
    runlocal(c, None if args["init_from"] else "t5_tiny", steps=4, every=2,
             eval_steps=None, vocab_size=300, tokenizer_chars=100_000)
    c.optimizer.warmup_steps = 1
    c.seq2seq.target_len = 12
    c.seq2seq.generate_examples = 4
