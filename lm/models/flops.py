"""Training FLOPs per token of the models, for MFU (formulas beside the
models they count; each objective picks the one that fits what it runs).

Example: flops_per_token(num_matmul_params=85e6, num_layers=12,
seq_len=1024, attn_width=768) -> 6 * 85e6 + 12 * 12 * 1024 * 768.
"""

from __future__ import annotations


def flops_per_token(num_matmul_params: int, num_layers: int, seq_len: int,
                    attn_width: int) -> float:
  """Training FLOPs per token: 6·N + 12·L·T·(N_heads·H).

  N counts the parameters that take part in matmuls (everything but the
  position table and the input-embedding lookup; the LM head is counted).
  6N is the forward (2N) and backward (4N) matmuls; 12·L·T·(N_heads·H) is the
  attention score and value matmuls (PaLM, appendix B).
  """
  return 6.0 * num_matmul_params + 12.0 * num_layers * seq_len * attn_width


def encoder_flops_per_token(model_cfg, n_params: int, seq_len: int) -> float:
  """`flops_per_token` of a backbone whose hidden states feed a small head
  (sentence embeddings, fine-tuning): N leaves out the lookup tables and
  any LM head that never runs."""
  d, v = model_cfg.d_model, model_cfg.vocab_size
  n = n_params - v * d
  if not model_cfg.tie_embeddings and model_cfg.arch != "bert":
    n -= v * d                  # the decoder's unused output kernel
  if model_cfg.arch == "bert":
    n -= model_cfg.type_vocab_size * d
  if model_cfg.arch != "lstm" and model_cfg.position == "learned":
    n -= model_cfg.max_len * d
  attn = (model_cfg.num_heads * model_cfg.head_size
          if model_cfg.arch != "lstm" else 0)
  return flops_per_token(n, model_cfg.num_layers, seq_len, attn)


def encoder_decoder_flops_per_token(model_cfg, n_params: int,
                                    seq_len: int) -> float:
  """`flops_per_token` of an encoder-decoder per encoder input token: N
  without the input lookup, both stacks' attention at `seq_len`. The
  decoder runs on fewer (target) tokens than the encoder; counting it at
  the encoder's rate overstates the FLOPs (and so MFU) by at most the
  decoder's share."""
  n = n_params - model_cfg.vocab_size * model_cfg.d_model
  return flops_per_token(n, model_cfg.num_layers + model_cfg.decoder_layers,
                         seq_len, model_cfg.num_heads * model_cfg.head_size)
