"""The engine's part of the experiment config schema.

`engine_config()` holds the keys every run has (steps, batch, model, data,
optimizer, mesh); each objective declares its own section next to its code
(`Objective.config_sections`), and `lm.experiments.base_config()` assembles
the whole schema, which config files (`configs/*.py`) start from.
`validate(config, schema)` rejects keys the schema does not know, so a typo
in a config file or a `--config.KEY=VALUE` override stops the run with one
sentence instead of being silently ignored, and checks the engine's values.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import ml_collections

from lm.errors import LmError
from lm.models.config import ModelConfig


def engine_config() -> ml_collections.ConfigDict:
  """The engine's keys with their defaults (no objective's section). Model
  fields beyond `size` are overrides."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 1000
  c.batch_size = 16          # global, across all devices and hosts
  c.seq_len = 256
  c.log_every = 10
  c.eval_every = 200
  c.eval_steps = 20          # batches per periodic eval (0 = whole split)
  c.eval_batch_size = 0      # rows per eval batch (0 = batch_size); eval
                             # needs no gradients, so it can take more
  c.checkpoint_every = 500
  c.keep_checkpoints = 2     # latest N kept, plus the best by eval loss
  c.async_checkpoints = True
  c.grad_accum_steps = 1     # microbatches per step (batch_size is split)
  c.objective = ""           # a name of lm.experiments.OBJECTIVES (its
                             # base_config sets the default)
  c.init_from = ""           # workdir (or WORKDIR/checkpoints/STEP) whose
                             # weights start the backbone (step 0 only;
                             # lm.training.warm_start)
  c.peak_tflops = 0.0        # for MFU; 0 = measure a matmul peak at start
  c.progress_bar = True      # tqdm bar on a terminal (False, or output not a
                             # terminal: one plain line per log step)

  # Weights & Biases (optional: pip install -e '.[wandb]'): set a project
  # to log the config, train/eval metrics, the final metrics and the
  # sample; a resumed run continues the same W&B run (its id is kept in the
  # workdir). WANDB_MODE=offline writes it under WORKDIR/wandb only.
  c.wandb = ml_collections.ConfigDict()
  c.wandb.project = ""       # "" = no W&B
  c.wandb.entity = ""        # "" = the default entity of the API key
  c.wandb.name = ""          # "" = the workdir's name

  c.model = ml_collections.ConfigDict()
  c.model.size = "quickstart"
  for f in dataclasses.fields(ModelConfig):
    c.model[f.name] = ml_collections.config_dict.placeholder(
        _placeholder_type(f.type))

  c.data = ml_collections.ConfigDict()
  c.data.train = "pystdlib:train"
  c.data.eval = "pystdlib:validation"
  c.data.field = "text"      # jsonl / tfds feature holding the text
  c.data.data_dir = ""       # TFDS data_dir ("" = TFDS default)
  c.data.max_chars = 0       # cap on corpus characters read (0 = all)
  c.data.sampling = "shuffle"  # "shuffle" windows per epoch or "random" offsets
  c.data.segment_mask = True   # attend only within a packed document
  # "packed": tokenize the corpus once into WORKDIR/data, cut rows from it;
  # "stream": read and tokenize documents while training (lm.data.streaming)
  c.data.pipeline = "packed"
  c.data.workers = 0         # stream: Grain worker processes (0 = none)
  c.data.threads = 2         # stream: reading threads in each process
  c.data.piece_bytes = 16384  # stream: text: files are cut into such pieces
  c.data.tokenizer = ml_collections.ConfigDict()
  c.data.tokenizer.path = ""   # a .model to load; "" = train one in the workdir
  c.data.tokenizer.vocab_size = 4096
  c.data.tokenizer.model_type = "bpe"
  c.data.tokenizer.byte_fallback = True
  c.data.tokenizer.max_chars = 20_000_000

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.lr = 3e-4
  c.optimizer.warmup_steps = 100
  c.optimizer.schedule = "cosine"   # cosine | linear | constant
  c.optimizer.decay_steps = 0       # 0 = config.steps
  c.optimizer.min_lr_ratio = 0.1
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.95
  c.optimizer.eps = 1e-8
  c.optimizer.weight_decay = 0.1
  c.optimizer.decay_norms_and_biases = False
  c.optimizer.clip_norm = 1.0       # 0 = no clipping
  # Runs with a head over a backbone (tasks, contrastive): per-part rates.
  c.optimizer.head_lr = 0.0         # peak rate of the head (0 = lr)
  c.optimizer.layer_decay = 1.0     # layer l of L gets lr * decay^(L - l)
  c.optimizer.freeze_backbone = False  # train the head only (linear probe)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.rules = ()                 # (logical_axis, mesh_axes) overrides
  # Multi-slice: slices each axis spans over DCN (the sizes above are then
  # per slice); a slice is a TPU slice, or a process with dcn_granule="process".
  c.mesh.dcn_data = 1
  c.mesh.dcn_fsdp = 1
  c.mesh.dcn_tensor = 1
  c.mesh.dcn_granule = "slice"

  return c


def _placeholder_type(annotation):
  text = str(annotation)
  if "bool" in text:
    return bool
  if "float" in text:
    return float
  if "int" in text:
    return int
  return str


def validate(config: ml_collections.ConfigDict,
             schema: ml_collections.ConfigDict | None = None) -> None:
  """Raises LmError naming the first key `schema` does not know or a bad
  engine value. `schema` None checks the engine's own sections only (the
  objective sections are then the caller's: `lm.experiments.validate`)."""
  _check_keys(config, engine_config() if schema is None else schema, "",
              others=schema is None)
  for key in ("steps", "batch_size", "seq_len", "log_every", "eval_every",
              "checkpoint_every", "keep_checkpoints"):
    if int(config[key]) <= 0:
      raise LmError(f"config.{key}={config[key]} must be a positive integer.")
  if config.grad_accum_steps < 1 or config.batch_size % config.grad_accum_steps:
    raise LmError(f"config.grad_accum_steps={config.grad_accum_steps} must be "
                  f">= 1 and divide config.batch_size={config.batch_size}.")
  if config.eval_batch_size < 0:
    raise LmError(f"config.eval_batch_size={config.eval_batch_size} must be "
                  ">= 0 (0 evaluates in batches of config.batch_size).")
  if config.eval_steps < 0:
    raise LmError("config.eval_steps must be >= 0 (0 evaluates the whole split).")
  if config.data.sampling not in ("shuffle", "random"):
    raise LmError(f"config.data.sampling={config.data.sampling!r} must be "
                  "'shuffle' or 'random'.")
  if config.data.pipeline not in ("packed", "stream"):
    raise LmError(f"config.data.pipeline={config.data.pipeline!r} must be "
                  "'packed' or 'stream'.")
  if config.data.pipeline == "stream" and config.data.max_chars:
    raise LmError("config.data.max_chars does not apply to "
                  "data.pipeline='stream', which reads documents in a "
                  "shuffled order; slice the data URI instead (e.g. "
                  "'jsonl:data/*.jsonl[:10%]') or set data.max_chars=0.")
  if config.optimizer.schedule not in ("cosine", "linear", "constant"):
    raise LmError(f"config.optimizer.schedule={config.optimizer.schedule!r} "
                  "must be 'cosine', 'linear' or 'constant'.")
  if config.wandb.project and importlib.util.find_spec("wandb") is None:
    raise LmError(f"config.wandb.project={config.wandb.project!r} needs the "
                  "wandb package; pip install -e '.[wandb]', or clear "
                  "config.wandb.project.")
  if not config.data.train:
    raise LmError("config.data.train is empty; name a data source such as "
                  "'pystdlib:train' or 'text:path/*.txt'.")


def _check_keys(config, schema, prefix, others=False):
  """LmError for the first key of `config` not in `schema`; `others` lets
  top-level keys outside `schema` (objective sections) pass unchecked."""
  for key in config.keys():
    if key not in schema and others:
      continue
    if key not in schema:
      where = prefix.rstrip(".") or "the top level"
      raise LmError(f"unknown config key '{prefix}{key}'; valid keys at "
                    f"{where} are: {', '.join(sorted(schema.keys()))}.")
    value, expected = config[key], schema[key]
    if isinstance(expected, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise LmError(f"config key '{prefix}{key}' must be a section, not {value!r}.")
      _check_keys(value, expected, f"{prefix}{key}.")


def model_overrides(config: ml_collections.ConfigDict) -> dict:
  """The model fields the experiment set explicitly (everything but `size`)."""
  out = {}
  for key, value in config.model.items():
    if key != "size" and value is not None:
      out[key] = value
  return out
