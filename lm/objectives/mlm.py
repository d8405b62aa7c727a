"""Masked language modelling with next-sentence prediction (BERT).

Batches come from `lm.data.nsp`: `inputs`, `token_types`, `positions`,
`segment_ids` (1 at real tokens, 0 at padding) all [B, T];
`masked_positions`, `masked_targets`, `masked_weights` [B, P] (the P
predictions per row, weight 0 for unused slots); `nsp_labels` and
`nsp_weights` [B] (label 0: B follows A; 1: B is from another document;
weight 0 for filler rows).

Loss = mean cross-entropy over the masked predictions of the batch
       + mean NSP cross-entropy over its examples (when `nsp` is on),
as BERT. With `nsp` off (RoBERTa-style) only the MLM term is trained.
"""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import ml_collections

from lm.data import masking, mlm_stream, nsp as nsp_lib, segments as segments_lib
from lm.errors import LmError
from lm.models import flops
from lm.models.bert import BertModel
from lm.objectives import (TokenizedCorpus, build_backbone, open_documents,
                           stream_corpus, streamed)
from lm.objectives.losses import token_cross_entropy
from lm.training.objective import Objective


def config_section() -> ml_collections.ConfigDict:
  """The `mlm` section of the experiment config, with its defaults."""
  s = ml_collections.ConfigDict()
  s.nsp = True                 # False: one segment per row, no NSP
                               # loss, no NSP head (BertForMaskedLM)
  s.pooler = False             # keep a pooler without NSP (an imported
                               # checkpoint's, for fine-tuning/export)
  s.documents = "auto"         # source | blank_lines | auto (blank_lines
                               # for text: files, source otherwise)
  s.segments = "lines"         # lines | sentences
  s.mask_rate = 0.15           # fraction of maskable tokens predicted
  s.mask_token_rate = 0.8      # of those: replaced by [MASK]
  s.random_token_rate = 0.1    # ... by a random token (rest unchanged)
  s.whole_word = False         # mask whole sentencepiece words
  s.max_predictions = 0        # per row; 0 = ceil(seq_len * mask_rate)
  s.short_seq_prob = 0.1       # rows given a shorter random length
  return s


def mlm_loss(params, batch, rng, model, *, deterministic: bool = False,
             nsp: bool = True, return_logits: bool = False):
  """Objective contract: `(params, batch, rng, model) -> (loss, sums)`.

  `sums["loss_sum"] / sums["tokens"]` is the loss: the MLM term is a sum over
  the `tokens` masked predictions, and the NSP sum is scaled by
  predictions / examples so that dividing by `tokens` gives
  mean MLM + mean NSP. (With gradient accumulation the scale is taken per
  microbatch, which weights the NSP term by each microbatch's own ratio.)
  With `return_logits` also the masked predictions `[B, P, V]` with their
  weights and, when NSP counts, the NSP logits `[B, 2]` weighted by the
  same predictions / examples scale (`Objective.distillable`).
  """
  logits, aux = model.apply(
      {"params": params}, batch["inputs"],
      token_types=batch["token_types"], positions=batch["positions"],
      segment_ids=batch["segment_ids"],
      masked_positions=batch["masked_positions"],
      deterministic=deterministic,
      rngs=None if deterministic else {"dropout": rng})          # [B, P, V]
  mlm_sum, mlm_correct, n_pred = token_cross_entropy(
      logits, batch["masked_targets"], batch["masked_weights"])
  if "nsp_logits" in aux:     # a model without the NSP head has no logits
    nsp_sum, nsp_correct, n_ex = token_cross_entropy(
        aux["nsp_logits"][:, None], batch["nsp_labels"][:, None],
        batch["nsp_weights"][:, None])                           # [B, 1, 2]
  else:
    n_ex = jnp.sum(batch["nsp_weights"].astype(jnp.float32))
    nsp_sum = nsp_correct = jnp.zeros((), jnp.float32)
  loss_sum = mlm_sum
  outputs = ((logits, batch["masked_weights"].astype(jnp.float32)),)
  if nsp:
    scale = jax.lax.stop_gradient(n_pred / jnp.maximum(n_ex, 1.0))
    loss_sum = loss_sum + nsp_sum * scale
    if "nsp_logits" in aux:
      outputs += ((aux["nsp_logits"],
                   batch["nsp_weights"].astype(jnp.float32) * scale),)
  sums = {"loss_sum": loss_sum, "correct": mlm_correct, "tokens": n_pred,
          "mlm_loss_sum": mlm_sum, "nsp_loss_sum": nsp_sum,
          "nsp_correct": nsp_correct, "examples": n_ex}
  if return_logits:
    return loss_sum / jnp.maximum(n_pred, 1.0), sums, outputs
  return loss_sum / jnp.maximum(n_pred, 1.0), sums


def summarize(sums, nsp: bool = True) -> dict:
  """Metrics from summed `mlm_loss` sums.

  `loss` (the trained total), `mlm_loss`, `mlm_accuracy` (top-1 over masked
  predictions), `perplexity` (of the MLM term) and, with NSP, `nsp_loss` and
  `nsp_accuracy`.
  """
  n_pred = jnp.maximum(sums["tokens"], 1.0)
  n_ex = jnp.maximum(sums["examples"], 1.0)
  mlm = sums["mlm_loss_sum"] / n_pred
  out = {"loss": sums["loss_sum"] / n_pred, "mlm_loss": mlm,
         "perplexity": jnp.exp(jnp.minimum(mlm, 50.0)),
         "mlm_accuracy": sums["correct"] / n_pred}
  if nsp:
    out["nsp_loss"] = sums["nsp_loss_sum"] / n_ex
    out["nsp_accuracy"] = sums["nsp_correct"] / n_ex
  return out


def majority_baseline(batches) -> float:
  """Accuracy of always predicting the most frequent masked target.

  The reference an MLM accuracy should beat, over the same `batches` (numpy
  dicts from `MaskedLM.eval_batches`). Example: targets [5, 5, 7] -> 2/3.
  """
  counts = collections.Counter()
  for batch in batches:
    chosen = batch["masked_weights"] > 0
    counts.update(batch["masked_targets"][chosen].tolist())
  return max(counts.values()) / sum(counts.values()) if counts else 0.0


class MaskedLM(Objective):
  """The masked-LM (+ NSP) objective over segment streams (see `lm.objectives`)."""

  name = "mlm"
  head = "pretraining"
  config_sections = {"mlm": config_section}
  bert_specials = True
  distillable = True
  token_field = "inputs"

  def __init__(self, config):
    self.config = config
    m = config.mlm
    self.nsp = bool(m.nsp)
    self.loss = functools.partial(mlm_loss, nsp=self.nsp)
    self.summarize = functools.partial(summarize, nsp=self.nsp)
    self.documents = m.documents
    if m.documents == "auto":
      # By the training data (imported runs have none: their eval data).
      uri = config.data.train or config.data.eval
      self.documents = "blank_lines" if uri.startswith("text:") else "source"
    # Bad mlm settings stop the run before anything is written.
    segments_lib.check_modes(self.documents, m.segments)
    masking.check_rates(m.mask_rate, m.mask_token_rate, m.random_token_rate)
    if m.max_predictions < 0:
      raise LmError(f"config.mlm.max_predictions={m.max_predictions} is "
                    "negative; use 0 (ceil(seq_len * mask_rate)) or a count.")
    if not 0.0 <= m.short_seq_prob <= 1.0:
      raise LmError(f"config.mlm.short_seq_prob={m.short_seq_prob} is outside "
                    "[0, 1]; set it to a probability.")

  backbone_path = ()

  def build_model(self, model_cfg):
    """BERT with the MLM head; the NSP head (and the pooler it reads) only
    with `mlm.nsp`, the pooler alone with `mlm.pooler` (an imported
    checkpoint's pretrained pooler, kept for fine-tuning and export)."""
    if model_cfg.arch != "bert":
      return build_backbone(model_cfg)     # refused by check_model
    return BertModel(model_cfg, nsp=self.nsp,
                     pooler=bool(self.config.mlm.get("pooler", False)))

  @classmethod
  def configure_import(cls, config, params, *, pooling=None, normalize=False,
                       tokenizer=None):
    """NSP (and its head) only when the checkpoint has the NSP head; a
    pooler it has is kept."""
    del pooling, normalize, tokenizer
    config.mlm.nsp = "nsp_head" in params
    config.mlm.pooler = "pooler" in params

  def has_pretrained_pooler(self) -> bool:
    """With NSP (its head reads the pooler), or a kept imported pooler."""
    mlm = self.config.mlm
    return bool(mlm.get("nsp", True) or mlm.get("pooler", False))

  def open_source(self, uri: str, *, train: bool):
    del train
    return open_documents(self.config, uri)

  def check_model(self, model_cfg) -> None:
    if model_cfg.arch != "bert":
      raise LmError(f"config.objective='mlm' needs a bidirectional encoder, "
                    f"but model size {self.config.model.size!r} is a "
                    f"{model_cfg.arch} model; pick a BERT size (e.g. "
                    "'bert_tiny', 'bert_mini', 'bert_base').")

  def open_data(self, source, tokenizer, cache_dir, max_chars):
    if streamed(self.config):
      return stream_corpus(self.config, source, tokenizer, cache_dir)
    stream = segments_lib.cached_segment_stream(
        source, tokenizer, cache_dir, documents=self.documents,
        segments=self.config.mlm.segments, max_chars=max_chars)
    return TokenizedCorpus(stream, tokenizer)

  def _options(self) -> dict:
    m = self.config.mlm
    return dict(nsp=self.nsp, mask_rate=m.mask_rate,
                mask_token_rate=m.mask_token_rate,
                random_token_rate=m.random_token_rate,
                whole_word=m.whole_word, max_predictions=m.max_predictions,
                short_seq_prob=m.short_seq_prob)

  def train_batches(self, corpus, process_index: int, process_count: int,
                    data_state: dict | None = None):
    c = self.config
    if streamed(c):
      return mlm_stream.MlmStreamBatches(
          corpus, corpus.tokenizer, global_batch_size=c.batch_size,
          seq_len=c.seq_len, seed=c.seed, documents=self.documents,
          segments=c.mlm.segments, mode=c.data.sampling,
          process_index=process_index, process_count=process_count,
          data_state=data_state, **self._options())
    # Packed batches are a pure function of the step: data_state unused.
    return nsp_lib.MlmBatches(
        corpus.stream, corpus.tokenizer, global_batch_size=c.batch_size,
        seq_len=c.seq_len, seed=c.seed, process_index=process_index,
        process_count=process_count, **self._options())

  def eval_batches(self, corpus, batch_size: int, max_batches: int | None):
    if streamed(self.config):
      return mlm_stream.eval_batches(
          corpus, corpus.tokenizer, batch_size=batch_size,
          seq_len=self.config.seq_len, seed=self.config.seed,
          max_batches=max_batches, documents=self.documents,
          segments=self.config.mlm.segments, **self._options())
    return nsp_lib.mlm_eval_batches(
        corpus.stream, corpus.tokenizer, batch_size=batch_size,
        seq_len=self.config.seq_len, seed=self.config.seed,
        max_batches=max_batches, **self._options())

  def data_settings(self) -> dict:
    c = self.config
    out = {"batch_size": c.batch_size, "seq_len": c.seq_len, "seed": c.seed,
           "documents": self.documents, "mlm": c.mlm.to_dict()}
    if streamed(c):   # recorded only when set: older runs keep matching
      out.update(pipeline="stream", sampling=c.data.sampling,
                 piece_bytes=c.data.piece_bytes)
    return out

  def max_predictions(self) -> int:
    m = self.config.mlm
    return m.max_predictions or nsp_lib.default_max_predictions(
        self.config.seq_len, m.mask_rate)

  def flops_per_token(self, model_cfg, n_params: int) -> float:
    """6·N + attention, where the tied output layer (V·D) only runs on the
    P masked predictions of each T-token row; lookups are left out."""
    d, v = model_cfg.d_model, model_cfg.vocab_size
    # Lookups (token and type tables) are no matmuls; an untied output
    # kernel is the V·D counted below.
    n = n_params - model_cfg.type_vocab_size * d - v * d
    if not model_cfg.tie_embeddings:
      n -= v * d
    if model_cfg.position == "learned":
      n -= model_cfg.max_len * d
    n += v * d * self.max_predictions() / self.config.seq_len
    return flops.flops_per_token(
        n, model_cfg.num_layers, self.config.seq_len,
        model_cfg.num_heads * model_cfg.head_size)
