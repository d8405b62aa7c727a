"""T5 span corruption: an encoder-decoder learns to fill in dropped spans.

Each training row is a window of the packed token stream (the causal
objective's windows, `lm.data.pipeline.TrainBatches`), `raw_length` tokens
long. A random 15% of its tokens (`noise_density`), in spans of mean length
3 (`mean_span_length`), are the noise; the encoder input keeps the other
tokens with each noise span replaced by one sentinel, and the target lists
the spans, each after its sentinel (Raffel et al. 2020, section 3.1.4):

  tokens   a b c d e f g h        noise: c d, g
  inputs   a b <s0> e f <s1> h </s>
  targets  <s0> c d <s1> g </s>

`raw_length` is the longest window whose corrupted input (with EOS) fits
`config.seq_len`, so every row is one example that fills its row: there is
nothing left to pack, and the batch's segment ids (1 = real, 0 = padding)
only pad the shorter last evaluation rows. The decoder sees the targets
shifted right after the start id (`model.decoder_start_id`; unset, the
pad id, as T5).

The sentinels are control symbols `<extra_id_0>`, `<extra_id_1>`, ...
(`span_corruption.sentinels` of them) that a new tokenizer reserves and a
given one must have. Noise is a pure function of (seed, step, global row):
a batch is the same on any host count and after any resume, as the masked
LM's masking.
"""

from __future__ import annotations

import re

import ml_collections
import numpy as np

from lm.data import packing, pipeline
from lm.errors import LmError
from lm.generation import seq2seq as seq2seq_gen
from lm.models import flops
from lm.objectives import (TokenizedCorpus, build_backbone, open_documents,
                           streamed)
from lm.objectives.losses import token_loss, token_metrics
from lm.training.loop import resolve_model_config
from lm.training.objective import Objective

_SENTINEL = re.compile(r"(<extra_id_\d+>)")
_EVAL_SALT = 0x5EED   # evaluation noise streams apart from training's


def config_section() -> ml_collections.ConfigDict:
  """The `span_corruption` section of the experiment config."""
  s = ml_collections.ConfigDict()
  s.noise_density = 0.15       # fraction of each window's tokens dropped
  s.mean_span_length = 3.0     # mean length of a dropped span
  s.sentinels = 100            # <extra_id_i> pieces the tokenizer reserves
  return s


def sentinel_pieces(n: int) -> tuple[str, ...]:
  """`("<extra_id_0>", ..., "<extra_id_{n-1}>")`, T5's sentinel names."""
  return tuple(f"<extra_id_{i}>" for i in range(n))


def span_counts(length: int, density: float, mean_span: float):
  """`(noise tokens, spans)` of a `length`-token window, as T5 rounds them.

  >>> span_counts(100, 0.15, 3.0)
  (15, 5)
  """
  noise = min(max(int(round(length * density)), 1), length - 1)
  spans = min(max(int(round(noise / mean_span)), 1), length - noise)
  return noise, spans


def corrupted_lengths(length: int, density: float, mean_span: float):
  """`(input length, target length)`, both with EOS, of a window."""
  noise, spans = span_counts(length, density, mean_span)
  return length - noise + spans + 1, noise + spans + 1


def raw_length(seq_len: int, density: float, mean_span: float) -> int:
  """The longest window whose corrupted input fits `seq_len` tokens.

  >>> raw_length(128, 0.15, 3.0)
  141
  """
  fits = [n for n in range(2, 2 * seq_len + 2)
          if corrupted_lengths(n, density, mean_span)[0] <= seq_len]
  return max(fits, default=2)


def _partition(total: int, parts: int, rng) -> np.ndarray:
  """`parts` positive lengths summing to `total`, uniformly at random."""
  cuts = np.sort(rng.choice(np.arange(1, total), parts - 1, replace=False))
  return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(length: int, density: float, mean_span: float,
               rng) -> np.ndarray:
  """bool `[length]`: True at noise tokens. The window alternates kept and
  noise runs, starting with a kept one; the noise token count and the span
  count are `span_counts`, their lengths a random partition each."""
  noise, spans = span_counts(length, density, mean_span)
  noise_runs = _partition(noise, spans, rng)
  kept_runs = _partition(length - noise, spans, rng)
  runs = np.stack([kept_runs, noise_runs], 1).reshape(-1)
  return np.repeat(np.tile([False, True], spans), runs)


def corrupt(tokens: np.ndarray, mask: np.ndarray, sentinels: np.ndarray,
            eos_id: int):
  """`(inputs, targets)` of one window (see the module docstring).

  >>> corrupt(np.array([5, 6, 7, 8]), np.array([0, 1, 1, 0], bool),
  ...         np.array([90, 91]), 1)
  ([5, 90, 8, 1], [90, 6, 7, 1])
  """
  starts = mask & ~np.concatenate([[False], mask[:-1]])
  span_index = np.cumsum(starts) - 1
  inputs, targets = [], []
  for t, noisy, first, i in zip(tokens.tolist(), mask, starts, span_index):
    if not noisy:
      inputs.append(t)
      continue
    if first:
      inputs.append(int(sentinels[i]))
      targets.append(int(sentinels[i]))
    targets.append(t)
  return inputs + [eos_id], targets + [eos_id]


def check_sentinels(seq_len: int, density: float, mean_span: float,
                    sentinels: int) -> None:
  """LmError when a `seq_len`-token row drops more spans than there are
  sentinels."""
  _, spans = span_counts(raw_length(seq_len, density, mean_span), density,
                         mean_span)
  if spans > sentinels:
    raise LmError(
        f"config.span_corruption.sentinels={sentinels} is fewer than the "
        f"{spans} spans a {seq_len}-token row drops; raise it to at least "
        f"{spans} or shorten config.seq_len.")


class SpanCorruptionRows:
  """Corrupts packed windows into fixed-shape encoder-decoder rows."""

  def __init__(self, tokenizer, *, seq_len: int, density: float,
               mean_span: float, sentinels: int, start_id: int | None = None):
    self.seq_len = seq_len
    self.density, self.mean_span = density, mean_span
    self.raw_length = raw_length(seq_len, density, mean_span)
    self.target_len = corrupted_lengths(self.raw_length, density,
                                        mean_span)[1]
    check_sentinels(seq_len, density, mean_span, sentinels)
    ids = tokenizer.piece_ids(sentinel_pieces(sentinels))
    self.sentinels = np.asarray(ids, np.int32)
    self.eos_id, self.pad_id = int(tokenizer.eos_id), int(tokenizer.pad_id)
    # the decoder's first input (None: the pad id the rows are filled with)
    self.start_id = start_id
    self._drop = {int(tokenizer.pad_id), int(tokenizer.bos_id)}

  def rows(self, windows: dict, keys) -> dict[str, np.ndarray]:
    """Rows of `windows` (`packing.make_rows` dicts of `raw_length`), row r
    corrupted with `np.random.default_rng(keys[r])`."""
    r = len(keys)
    out = {
        "inputs": np.full((r, self.seq_len), self.pad_id, np.int32),
        "input_segment_ids": np.zeros((r, self.seq_len), np.int32),
        "decoder_inputs": np.full((r, self.target_len), self.pad_id,
                                  np.int32),
        "targets": np.full((r, self.target_len), self.pad_id, np.int32),
        "decoder_segment_ids": np.zeros((r, self.target_len), np.int32),
        "loss_mask": np.zeros((r, self.target_len), np.float32),
    }
    for i, key in enumerate(keys):
      real = windows["segment_ids"][i] > 0
      toks = windows["inputs"][i][real]
      toks = toks[~np.isin(toks, list(self._drop))]
      if len(toks) < 2:
        continue                     # an all-padding (filler) row
      mask = noise_mask(len(toks), self.density, self.mean_span,
                        np.random.default_rng(key))
      inputs, targets = corrupt(toks, mask, self.sentinels, self.eos_id)
      n, m = len(inputs), len(targets)
      out["inputs"][i, :n] = inputs
      out["input_segment_ids"][i, :n] = 1
      out["targets"][i, :m] = targets
      out["decoder_inputs"][i, 1:m] = targets[:-1]
      if self.start_id is not None:
        out["decoder_inputs"][i, 0] = self.start_id
      out["decoder_segment_ids"][i, :m] = 1
      out["loss_mask"][i, :m] = 1.0
    return out


class SpanCorruptionBatches:
  """This process's span-corrupted rows by step (a pure function of it)."""

  def __init__(self, windows: pipeline.TrainBatches, rows: SpanCorruptionRows,
               seed: int):
    self.windows, self.corrupter, self.seed = windows, rows, int(seed)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    w = self.windows
    first = w.process_index * w.local_batch_size
    keys = [(self.seed, step, first + r) for r in range(w.local_batch_size)]
    return self.corrupter.rows(w.batch(step), keys)

  def epoch(self, step: int) -> float:
    return self.windows.epoch(step)

  def state(self, step: int) -> dict:
    return self.windows.state(step)


def span_loss(params, batch, rng, model, *, deterministic: bool = False):
  """Objective contract: teacher-forced cross-entropy over the targets."""
  logits, _ = model.apply(
      {"params": params}, batch["inputs"], batch["decoder_inputs"],
      input_segment_ids=batch["input_segment_ids"],
      decoder_segment_ids=batch["decoder_segment_ids"],
      deterministic=deterministic,
      rngs=None if deterministic else {"dropout": rng})          # [B, T, V]
  return token_loss(logits, batch["targets"], batch["loss_mask"])


summarize = token_metrics   # loss, perplexity and top-1 accuracy of targets


class SpanCorruption(Objective):
  """T5's span-corruption pretraining for `arch="encoder_decoder"`."""

  name = "span_corruption"
  head = "denoising"          # an encoder-decoder; exports as T5
  config_sections = {"span_corruption": config_section}
  backbone_path = ()

  def __init__(self, config):
    self.config = config
    self.loss, self.summarize = span_loss, summarize
    s = config.span_corruption
    if not 0.0 < s.noise_density < 1.0:
      raise LmError(f"config.span_corruption.noise_density={s.noise_density} "
                    "is outside (0, 1); T5 uses 0.15.")
    if not s.mean_span_length >= 1.0:
      raise LmError("config.span_corruption.mean_span_length="
                    f"{s.mean_span_length} is below 1; T5 uses 3.")
    if not (isinstance(s.sentinels, int) and s.sentinels > 0):
      raise LmError(f"config.span_corruption.sentinels={s.sentinels!r} must "
                    "be a positive integer (T5 reserves 100).")
    if streamed(config):
      raise LmError("config.objective='span_corruption' reads step-indexed "
                    "windows; leave config.data.pipeline at 'packed'.")
    check_sentinels(config.seq_len, s.noise_density, s.mean_span_length,
                    s.sentinels)
    self.control_symbols = sentinel_pieces(s.sentinels)

  @classmethod
  def configure_import(cls, config, params, *, pooling=None, normalize=False,
                       tokenizer=None):
    """An imported T5 corrupts with the sentinels its tokenizer has:
    `<extra_id_0>`, `<extra_id_1>`, ... as far as they go (T5's 100); a
    tokenizer without them keeps the default, which the import refuses."""
    del params, pooling, normalize
    n = 0
    while tokenizer is not None and None not in tokenizer.piece_ids(
        sentinel_pieces(n + 1)[-1:]):
      n += 1
    if n:
      config.span_corruption.sentinels = n

  transduces = True

  def transduce(self, trained, texts, *, max_new_tokens, temperature=0.0,
                top_k=0, top_p=1.0, beam_size=0, seed=0, batch_size=16,
                no_repeat_ngram=None, length_penalty=0.6):
    """Fills in the spans marked `<extra_id_N>` in each text: the output
    lists each sentinel and what the model writes for it, e.g.
    "def f(<extra_id_0>):" -> "<extra_id_0>x".)"""
    tok = trained.tokenizer
    pieces = sentinel_pieces(self.config.span_corruption.sentinels)
    ids = tok.piece_ids(pieces)
    by_id = dict(zip(ids, pieces))

    def encode(text):
      out = []
      for part in _SENTINEL.split(text):
        if part in pieces:
          out.append(ids[pieces.index(part)])
        elif part:
          out.extend(tok.encode(part))
      return out

    def decode(row):
      text, run = [], []
      for i in row:
        if i in by_id:
          text.append(tok.decode(run))
          text.append(by_id[i])
          run = []
        else:
          run.append(i)
      return "".join(text + [tok.decode(run)])

    return seq2seq_gen.generate_texts(
        trained.model, trained.params, texts, encode=encode, decode=decode,
        max_input=self.config.seq_len, max_new_tokens=max_new_tokens,
        start_id=trained.model_cfg.decoder_start(tok.pad_id),
        eos_id=tok.eos_id, beam_size=beam_size,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        batch_size=batch_size, no_repeat_ngram=no_repeat_ngram or 0,
        length_penalty=length_penalty)

  def _rows(self, tokenizer) -> SpanCorruptionRows:
    s = self.config.span_corruption
    start = resolve_model_config(self.config,
                                 tokenizer.vocab_size).decoder_start_id
    return SpanCorruptionRows(tokenizer, seq_len=self.config.seq_len,
                              density=s.noise_density,
                              mean_span=s.mean_span_length,
                              sentinels=s.sentinels, start_id=start)

  def build_model(self, model_cfg):
    return build_backbone(model_cfg)

  def check_model(self, model_cfg) -> None:
    if model_cfg.arch != "encoder_decoder":
      raise LmError(
          "config.objective='span_corruption' needs an encoder-decoder, but "
          f"model size {self.config.model.size!r} is a {model_cfg.arch} "
          "model; pick 't5_tiny', 't5_small' or 't5_base'.")

  def open_source(self, uri: str, *, train: bool):
    del train
    return open_documents(self.config, uri)

  def open_data(self, source, tokenizer, cache_dir, max_chars):
    stream = packing.cached_stream(source, tokenizer, cache_dir,
                                   max_chars=max_chars)
    return TokenizedCorpus(stream, tokenizer)

  def train_batches(self, corpus, process_index: int, process_count: int,
                    data_state: dict | None = None):
    del data_state            # a pure function of the step
    c = self.config
    rows = self._rows(corpus.tokenizer)
    windows = pipeline.TrainBatches(
        corpus.stream, global_batch_size=c.batch_size,
        seq_len=rows.raw_length, seed=c.seed, mode=c.data.sampling,
        process_index=process_index, process_count=process_count)
    return SpanCorruptionBatches(windows, rows, c.seed)

  def eval_batches(self, corpus, batch_size: int, max_batches: int | None):
    rows = self._rows(corpus.tokenizer)
    for b, windows in enumerate(pipeline.eval_batches(
        corpus.stream, batch_size=batch_size, seq_len=rows.raw_length,
        max_batches=max_batches)):
      keys = [(self.config.seed, _EVAL_SALT, b, r) for r in range(batch_size)]
      yield rows.rows(windows, keys)

  def data_settings(self) -> dict:
    c = self.config
    return {"batch_size": c.batch_size, "seq_len": c.seq_len, "seed": c.seed,
            "sampling": c.data.sampling,
            "span_corruption": c.span_corruption.to_dict()}

  def flops_per_token(self, model_cfg, n_params: int) -> float:
    return flops.encoder_decoder_flops_per_token(model_cfg, n_params,
                                                 self.config.seq_len)
