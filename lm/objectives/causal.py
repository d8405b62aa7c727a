"""Causal language modelling: predict token t+1 from tokens <= t.

Batches come from `lm.data.pipeline`: `inputs`, `targets`, `positions`,
`segment_ids` and `loss_mask`, all [B, T]. Packed documents are kept apart by
the segment mask when `use_segments` is on.
"""

from __future__ import annotations

import functools

import jax.numpy as jnp
import ml_collections

from lm.data import packing, pipeline, streaming
from lm.errors import LmError
from lm.generation.text import context_length, generate_text
from lm.models import flops
from lm.objectives import (build_backbone, open_documents, stream_corpus,
                           streamed)
from lm.objectives.losses import token_loss, token_metrics
from lm.training.objective import Objective


def config_section() -> ml_collections.ConfigDict:
  """The `sample` section of the experiment config, with its defaults."""
  s = ml_collections.ConfigDict()
  s.prompt = ""              # printed sample at the end ("" = none)
  s.max_new_tokens = 64
  s.temperature = 0.0        # 0 = greedy
  s.top_k = 0
  s.top_p = 1.0
  return s


def causal_lm_loss(params, batch, rng, model, *, deterministic: bool = False,
                   use_segments: bool = True, return_logits: bool = False):
  """Objective contract: `(params, batch, rng, model) -> (loss, metrics)`.

  `metrics` holds sums (`loss_sum`, `correct`, `tokens`) so that evaluation can
  add them over batches and hosts before dividing. With `return_logits`
  also `((logits [B, T, V], loss_mask [B, T]),)` (`Objective.distillable`).
  """
  logits, _ = model.apply(
      {"params": params}, batch["inputs"],
      positions=batch["positions"],
      segment_ids=batch["segment_ids"] if use_segments else None,
      deterministic=deterministic,
      rngs=None if deterministic else {"dropout": rng})
  loss, sums = token_loss(logits, batch["targets"], batch["loss_mask"])
  if return_logits:
    return loss, sums, ((logits, batch["loss_mask"].astype(jnp.float32)),)
  return loss, sums


summarize = token_metrics   # loss, perplexity and token accuracy


class CausalLM(Objective):
  """The causal objective over packed token streams (see `lm.objectives`)."""

  name = "causal"
  head = "lm"
  config_sections = {"sample": config_section}
  generates_text = True
  bert_specials = False
  distillable = True
  token_field = "inputs"

  def __init__(self, config):
    self.config = config
    self.loss = functools.partial(causal_lm_loss,
                                  use_segments=config.data.segment_mask)
    self.summarize = summarize

  backbone_path = ()

  def build_model(self, model_cfg):
    return build_backbone(model_cfg)

  def open_source(self, uri: str, *, train: bool):
    del train
    return open_documents(self.config, uri, token_ids=True)

  def check_model(self, model_cfg) -> None:
    if model_cfg.arch not in ("transformer", "lstm"):
      raise LmError(f"config.objective='causal' needs a decoder, but model "
                    f"size {self.config.model.size!r} is a {model_cfg.arch} "
                    "model; pick a decoder size (e.g. 'quickstart') or "
                    "objective 'mlm'.")

  def open_data(self, source, tokenizer, cache_dir, max_chars):
    if streamed(self.config):
      return stream_corpus(self.config, source, tokenizer, cache_dir)
    return packing.cached_stream(source, tokenizer, cache_dir,
                                 max_chars=max_chars)

  def train_batches(self, stream, process_index: int, process_count: int,
                    data_state: dict | None = None):
    c = self.config
    if streamed(c):
      return streaming.StreamBatches(
          stream, global_batch_size=c.batch_size, seq_len=c.seq_len,
          seed=c.seed, mode=c.data.sampling, process_index=process_index,
          process_count=process_count, data_state=data_state)
    return pipeline.TrainBatches(
        stream, global_batch_size=c.batch_size, seq_len=c.seq_len, seed=c.seed,
        mode=c.data.sampling, process_index=process_index,
        process_count=process_count)

  def eval_batches(self, stream, batch_size: int, max_batches: int | None):
    if streamed(self.config):
      return streaming.eval_batches(stream, batch_size=batch_size,
                                    seq_len=self.config.seq_len,
                                    max_batches=max_batches)
    return pipeline.eval_batches(stream, batch_size=batch_size,
                                 seq_len=self.config.seq_len,
                                 max_batches=max_batches)

  def data_settings(self) -> dict:
    c = self.config
    out = {"batch_size": c.batch_size, "seq_len": c.seq_len, "seed": c.seed,
           "sampling": c.data.sampling}
    if streamed(c):   # recorded only when set: older runs keep matching
      out.update(pipeline="stream", piece_bytes=c.data.piece_bytes)
    return out

  def flops_per_token(self, model_cfg, n_params: int) -> float:
    """6·N + attention (none for the LSTM); N leaves out lookups."""
    n = n_params
    if model_cfg.arch == "transformer" and model_cfg.position == "learned":
      n -= model_cfg.max_len * model_cfg.d_model
    if not model_cfg.tie_embeddings:
      n -= model_cfg.vocab_size * model_cfg.d_model  # input lookup is no matmul
    attn_width = 0
    if model_cfg.arch == "transformer":
      attn_width = model_cfg.num_heads * model_cfg.head_size
    return flops.flops_per_token(n, model_cfg.num_layers,
                                       self.config.seq_len, attn_width)

  def after_training(self, run, params) -> str:
    """The completion of `config.sample.prompt` (when set) with the cached
    decoder and the `sample` settings, shortened to fit the context."""
    c = self.config
    prompt = c.sample.prompt
    if not prompt:
      return ""
    prompt_len = 1 + len(run.tokenizer.encode(prompt))
    ctx = context_length(run.model_cfg, prompt_len, c.sample.max_new_tokens)
    new = min(c.sample.max_new_tokens, ctx - prompt_len)
    text = ""
    if new > 0:
      sample, = generate_text(run.model, params, run.tokenizer, run.mesh,
                              [prompt], temperature=c.sample.temperature,
                              top_k=c.sample.top_k, top_p=c.sample.top_p,
                              max_new_tokens=new, seed=c.seed)
      text = sample.text
    return f"--- sample (step {c.steps}) ---\n{prompt}{text}\n---"
