"""The experiment config schema: every key an experiment may set.

Config files (`configs/*.py`) start from `base_config()` and change what they
need. `validate(config)` rejects keys the schema does not know, so a typo in a
config file or a `--config.KEY=VALUE` override stops the run with one sentence
instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from lm.errors import LmError
from lm.models.config import ModelConfig


def base_config() -> ml_collections.ConfigDict:
  """Every key with its default. Model fields beyond `size` are overrides."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 1000
  c.batch_size = 16          # global, across all devices and hosts
  c.seq_len = 256
  c.log_every = 10
  c.eval_every = 200
  c.eval_steps = 20          # batches per periodic eval (0 = whole split)
  c.checkpoint_every = 500
  c.keep_checkpoints = 2     # latest N kept, plus the best by eval loss
  c.async_checkpoints = True
  c.grad_accum_steps = 1     # microbatches per step (batch_size is split)
  c.objective = "causal"     # causal | mlm | contrastive | classification |
                             # tagging | qa (see lm.objectives, lm.tasks)
  c.init_from = ""           # workdir (or WORKDIR/checkpoints/STEP) whose
                             # weights start the backbone (step 0 only;
                             # lm.training.warm_start)
  c.peak_tflops = 0.0        # for MFU; 0 = measure a matmul peak at start
  c.progress_bar = True      # tqdm bar on a terminal (False, or output not a
                             # terminal: one plain line per log step)

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
  c.data.tokenizer = ml_collections.ConfigDict()
  c.data.tokenizer.path = ""   # a .model to load; "" = train one in the workdir
  c.data.tokenizer.vocab_size = 4096
  c.data.tokenizer.model_type = "bpe"
  c.data.tokenizer.byte_fallback = True
  c.data.tokenizer.max_chars = 20_000_000

  # Masked LM + next-sentence prediction (objective "mlm"; lm.data.nsp).
  c.mlm = ml_collections.ConfigDict()
  c.mlm.nsp = True                 # False: one segment per row, no NSP
                                   # loss, no NSP head (BertForMaskedLM)
  c.mlm.pooler = False             # keep a pooler without NSP (an imported
                                   # checkpoint's, for fine-tuning/export)
  c.mlm.documents = "auto"         # source | blank_lines | auto (blank_lines
                                   # for text: files, source otherwise)
  c.mlm.segments = "lines"         # lines | sentences
  c.mlm.mask_rate = 0.15           # fraction of maskable tokens predicted
  c.mlm.mask_token_rate = 0.8      # of those: replaced by [MASK]
  c.mlm.random_token_rate = 0.1    # ... by a random token (rest unchanged)
  c.mlm.whole_word = False         # mask whole sentencepiece words
  c.mlm.max_predictions = 0        # per row; 0 = ceil(seq_len * mask_rate)
  c.mlm.short_seq_prob = 0.1       # rows given a shorter random length

  # Sentence embeddings (objective "contrastive"; lm.objectives.contrastive).
  c.contrastive = ml_collections.ConfigDict()
  c.contrastive.mode = "unsupervised"   # unsupervised (SimCSE) | supervised
  c.contrastive.texts = "lines"         # unsupervised sentences: lines | documents
  c.contrastive.anchor_field = "anchor"      # jsonl / tfds pair fields
  c.contrastive.positive_field = "positive"
  c.contrastive.negative_field = ""          # hard negatives ("" = none)
  c.contrastive.pooling = "cls"         # cls | mean | last
  c.contrastive.projection = True       # tanh(dense) head, training only
  c.contrastive.pooler = False          # carry BERT's pooler (imported; the
                                        # loss does not read it) for export
  c.contrastive.normalize = False       # unit-length embeddings from
                                        # launch.encode (sentence-transformers
                                        # Normalize)
  c.contrastive.temperature = 0.05
  c.contrastive.learn_temperature = False
  c.contrastive.min_temperature = 0.01  # floor of a learned temperature
  c.contrastive.symmetric = False       # also score positives -> anchors
  c.contrastive.eval_candidates = 1000  # held-out pairs ranked in eval
  c.contrastive.sts = ""                # scored pairs for Spearman ("" = none)
  c.contrastive.sts_a_field = "text_a"
  c.contrastive.sts_b_field = "text_b"
  c.contrastive.sts_score_field = "score"

  # Fine-tuning (objective "classification", "tagging" or "qa"; lm.tasks).
  # Fields name the columns of the data (jsonl/csv/tsv/tfds); conll: files
  # always give tokens and tags.
  c.task = ml_collections.ConfigDict()
  c.task.text_field = "text"        # classification text; tagging: the words
  c.task.text_b_field = ""          # second text of a pair ("" = single text)
  c.task.label_field = "label"      # the class; tagging: the tag list
  c.task.question_field = "question"  # qa
  c.task.context_field = "context"
  c.task.answers_field = "answers"
  c.task.id_field = "id"
  c.task.pooling = "auto"           # classification: auto (BERT's pooler,
                                    # 'last' for decoders) | pooler | cls |
                                    # mean | last
  c.task.class_weights = ""         # "balanced" or "label=weight,..." ("" = 1)
  c.task.metric = ""                # best-checkpoint metric ("" = the task's)
  c.task.doc_stride = 128           # qa: tokens between window starts
  c.task.max_question_len = 64      # qa: question tokens kept
  c.task.max_answer_len = 30        # qa: longest predicted span, in tokens

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

  c.sample = ml_collections.ConfigDict()
  c.sample.prompt = ""              # printed sample at the end ("" = none)
  c.sample.max_new_tokens = 64
  c.sample.temperature = 0.0        # 0 = greedy
  c.sample.top_k = 0
  c.sample.top_p = 1.0
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


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises LmError naming the first key the schema does not know or a bad value."""
  _check_keys(config, base_config(), "")
  for key in ("steps", "batch_size", "seq_len", "log_every", "eval_every",
              "checkpoint_every", "keep_checkpoints"):
    if int(config[key]) <= 0:
      raise LmError(f"config.{key}={config[key]} must be a positive integer.")
  if config.grad_accum_steps < 1 or config.batch_size % config.grad_accum_steps:
    raise LmError(f"config.grad_accum_steps={config.grad_accum_steps} must be "
                  f">= 1 and divide config.batch_size={config.batch_size}.")
  if config.eval_steps < 0:
    raise LmError("config.eval_steps must be >= 0 (0 evaluates the whole split).")
  if config.sample.prompt and config.objective != "causal":
    raise LmError(f"config.sample.prompt is set but objective "
                  f"{config.objective!r} does not generate text; clear "
                  "sample.prompt or train with objective 'causal'.")
  if config.data.sampling not in ("shuffle", "random"):
    raise LmError(f"config.data.sampling={config.data.sampling!r} must be "
                  "'shuffle' or 'random'.")
  if config.optimizer.schedule not in ("cosine", "linear", "constant"):
    raise LmError(f"config.optimizer.schedule={config.optimizer.schedule!r} "
                  "must be 'cosine', 'linear' or 'constant'.")
  if not config.data.train:
    raise LmError("config.data.train is empty; name a data source such as "
                  "'pystdlib:train' or 'text:path/*.txt'.")


def _check_keys(config, schema, prefix):
  for key in config.keys():
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
