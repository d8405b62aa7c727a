"""Decoding for encoder-decoder models: input ids in, output ids out.

Inputs of different lengths are RIGHT-padded (the encoder is bidirectional;
padding is masked out of cross-attention). The encoder runs once; the first
decoder call (the start token) computes every layer's cross-attention keys
and values from its output into the cache, and each later call feeds one
token and reads them back, so a step costs the decoder's self-attention over
the tokens so far and nothing of the encoder's length beyond one dot per key.

`Seq2SeqDecoder(model).generate(params, inputs, ...)` samples (greedy at
temperature 0) inside one jitted `lax.while_loop`; `beam_generate` runs
`lm.generation.beam.beam_search` over the same cached step. Both serve any
model with the contract of `EncoderDecoderLM`: `method="encode"`, and a
`decode=True` variant with `decode_step(tokens, positions, encoded,
encoder_valid)` and `reorder_cache`. Decoding starts from the model's
start id (`ModelConfig.decoder_start`: T5's pad, BART's EOS) and forces
the tokens its config names (`forced_bos_id` first, `forced_eos_id` at the
length limit), as `transformers`' `generate` does for a BART.

Texts (`generate_texts`) are framed as the model's tokenizer frames them:
`x </s>` (T5, and `lm`'s own tokenizers), or `<s> x </s>` when a Hugging
Face `tokenizer.json` adds BOS (BART; `text_bos`).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lm.generation.beam import beam_search
from lm.generation.decode import Generation, cut_eos, unrolled
from lm.generation.sampling import (ban_repeated_ngrams, force_tokens,
                                    sample_logits)


def text_bos(tokenizer) -> int | None:
  """The BOS id an encoder-decoder's texts start with: the tokenizer's when
  it is a Hugging Face `tokenizer.json` that adds one (BART's `<s> x </s>`),
  else None (T5's and `lm`'s SentencePiece framing, `x </s>`)."""
  if getattr(tokenizer, "kind", None) == "hf" and tokenizer.adds_bos:
    return int(tokenizer.bos_id)
  return None


def right_pad(inputs: Sequence[Sequence[int]], pad_id: int = 0):
  """`(tokens, segment_ids)`, each int `[B, S]`, for inputs padded on the
  right (segment 1 = real token, 0 = padding).

  >>> right_pad([[5, 6], [7, 8, 9]])[1].tolist()
  [[1, 1, 0], [1, 1, 1]]
  """
  if not inputs or any(len(x) == 0 for x in inputs):
    raise ValueError("every input needs at least one token")
  width = max(len(x) for x in inputs)
  tokens = np.full((len(inputs), width), pad_id, np.int32)
  seg = np.zeros((len(inputs), width), np.int32)
  for i, x in enumerate(inputs):
    tokens[i, :len(x)] = x
    seg[i, :len(x)] = 1
  return tokens, seg


def decoding_model(model):
  """The `decode=True` variant of an encoder-decoder module (same params)."""
  return type(model)(model.config, decode=True)


def cache_shapes(model, batch: int, input_length: int, output_length: int):
  """Shapes and dtypes of the decoder cache for `batch` rows of
  `input_length` encoder tokens and up to `output_length` decoder tokens
  (traces the model once)."""
  dm = decoding_model(model)
  return jax.eval_shape(
      lambda: dm.init({"params": jax.random.key(0)},
                      jnp.zeros((batch, input_length), jnp.int32),
                      jnp.zeros((batch, output_length), jnp.int32)))["cache"]


def init_cache(model, batch: int, input_length: int, output_length: int,
               shapes=None):
  """An empty decoder cache (see `cache_shapes`)."""
  if shapes is None:
    shapes = cache_shapes(model, batch, input_length, output_length)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def forced_ids(model) -> tuple[int | None, int | None]:
  """`(forced_bos_id, forced_eos_id)` of the model's config (None, None for
  a model whose config has no such fields)."""
  cfg = getattr(model, "config", None)
  return (getattr(cfg, "forced_bos_id", None),
          getattr(cfg, "forced_eos_id", None))


def _prefill(model, dm, params, cache, tokens, seg, start_id):
  """Encodes and runs the start token: `(logits [B, V], cache)`."""
  encoded = model.apply({"params": params}, tokens, segment_ids=seg,
                        method="encode")
  b = tokens.shape[0]
  (logits, _), variables = dm.apply(
      {"params": params, "cache": cache},
      jnp.full((b, 1), start_id, jnp.int32), jnp.zeros((b, 1), jnp.int32),
      encoded, seg != 0, method="decode_step", mutable=["cache"])
  return logits[:, 0], variables["cache"]


def _step(dm, params, cache, tok, position):
  """One cached decoder token per row: `(logits [B, V], cache)`."""
  b = tok.shape[0]
  (logits, _), variables = dm.apply(
      {"params": params, "cache": cache}, tok[:, None],
      jnp.broadcast_to(position, (b,))[:, None].astype(jnp.int32),
      method="decode_step", mutable=["cache"])
  return logits[:, 0], variables["cache"]


class Seq2SeqDecoder:
  """Jitted encode-and-decode for one model and sampler (one compile per
  batch, input width and `max_new_tokens`)."""

  def __init__(self, model, *, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, no_repeat_ngram: int = 0):
    # scanned stacks decode through the same model with a loop over its
    # blocks (`unrolled`): one cache per layer, weights sliced once per call
    model, per_layer = unrolled(model)
    self.model = model
    self._shapes = {}   # (batch, input length, output length) -> shapes
    dm = decoding_model(model)
    forced_bos, forced_eos = forced_ids(model)

    def run(params, cache, tokens, seg, rng, start_id, eos_id, new):
      params = per_layer(params)
      logits, cache = _prefill(model, dm, params, cache, tokens, seg, start_id)
      b = tokens.shape[0]
      out = jnp.zeros((b, new), jnp.int32)

      def cond(carry):
        i, _, _, done, _ = carry
        return (i < new) & ~jnp.all(done)

      def body(carry):
        i, cache, logits, done, out = carry
        floor = jnp.finfo(logits.dtype).min
        logits = ban_repeated_ngrams(logits, out, i, no_repeat_ngram, floor)
        logits = force_tokens(logits, i, new - 1, forced_bos, forced_eos,
                              floor)
        tok = sample_logits(logits, jax.random.fold_in(rng, i),
                            temperature=temperature, top_k=top_k,
                            top_p=top_p).astype(jnp.int32)
        tok = jnp.where(done, 0, tok)
        out = out.at[:, i].set(tok)
        done = done | (tok == eos_id)
        logits, cache = _step(dm, params, cache, tok, i + 1)
        return i + 1, cache, logits, done, out

      i, _, _, _, out = jax.lax.while_loop(
          cond, body, (jnp.asarray(0), cache, logits, jnp.zeros((b,), bool),
                       out))
      return i, out

    self._run = jax.jit(run, static_argnums=(7,))

  def generate(self, params, inputs: Sequence[Sequence[int]], *,
               max_new_tokens: int, start_id: int, eos_id: int | None = None,
               seed: int = 0) -> Generation:
    """Up to `max_new_tokens` output ids per input (EOS cut off)."""
    tokens, seg = right_pad(inputs)
    key = (*tokens.shape, max_new_tokens + 1)
    if key not in self._shapes:
      self._shapes[key] = cache_shapes(self.model, *key)
    cache = init_cache(self.model, *key, shapes=self._shapes[key])
    eos = -1 if eos_id is None else eos_id
    i, out = self._run(params, cache, jnp.asarray(tokens), jnp.asarray(seg),
                       jax.random.key(seed), jnp.asarray(start_id, jnp.int32),
                       jnp.asarray(eos, jnp.int32), max_new_tokens)
    host = np.asarray(out)[:, :int(i)]
    rows = [cut_eos(r, eos_id) for r in host]
    reasons = ["eos" if eos_id is not None and eos_id in r else "length"
               for r in host.tolist()]
    return Generation(rows, reasons)


def beam_generate(model, params, inputs: Sequence[Sequence[int]], *,
                  beam_size: int, max_new_tokens: int, start_id: int,
                  eos_id: int, alpha: float = 0.6, no_repeat_ngram: int = 0):
  """Beam search per input: `(beams, scores)`, best first, as
  `lm.generation.decode.beam_generate`."""
  k = beam_size
  model, per_layer = unrolled(model)
  dm = decoding_model(model)
  forced_bos, forced_eos = forced_ids(model)
  tokens, seg = right_pad([x for x in inputs for _ in range(k)])

  @jax.jit
  def run(params, cache, tokens, seg):
    params = per_layer(params)
    logits, cache = _prefill(model, dm, params, cache, tokens, seg, start_id)

    def step_fn(cache, tok, i):
      return _step(dm, params, cache, tok, i + 1)

    return beam_search(step_fn, cache, logits, beam_size=k,
                       max_new_tokens=max_new_tokens, eos_id=eos_id,
                       reorder_fn=dm.reorder_cache, alpha=alpha,
                       no_repeat_ngram=no_repeat_ngram, forced_bos=forced_bos,
                       forced_eos=forced_eos)

  cache = init_cache(model, *tokens.shape, max_new_tokens + 1)
  seqs, scores = run(params, cache, jnp.asarray(tokens), jnp.asarray(seg))
  seqs, scores = np.asarray(seqs), np.asarray(scores)
  beams = [[cut_eos(seqs[b, j], eos_id) for j in range(k)]
           for b in range(len(inputs))]
  return beams, scores.tolist()


def generate_texts(model, params, texts: Sequence[str], *, encode, decode,
                   max_input: int, max_new_tokens: int, start_id: int,
                   eos_id: int, beam_size: int = 0, temperature: float = 0.0,
                   top_k: int = 0, top_p: float = 1.0, seed: int = 0,
                   batch_size: int = 16, decoder: Seq2SeqDecoder | None = None,
                   bos_id: int | None = None, no_repeat_ngram: int = 0,
                   length_penalty: float = 0.6) -> list[str]:
  """Output text per input text: `encode(text) -> ids` (after `bos_id` when
  given, cut to fit `max_input` with EOS, then EOS), beam search when
  `beam_size` > 1, else `decoder` (or a new `Seq2SeqDecoder` with the
  sampler and `no_repeat_ngram`), `decode(ids)`."""
  if beam_size <= 1 and decoder is None:
    decoder = Seq2SeqDecoder(model, temperature=temperature, top_k=top_k,
                             top_p=top_p, no_repeat_ngram=no_repeat_ngram)
  out = []
  for s in range(0, len(texts), batch_size):
    head = [] if bos_id is None else [bos_id]
    ids = [head + list(encode(t))[:max_input - 1 - len(head)] + [eos_id]
           for t in texts[s:s + batch_size]]
    if beam_size > 1:
      beams, _ = beam_generate(model, params, ids, beam_size=beam_size,
                               max_new_tokens=max_new_tokens,
                               start_id=start_id, eos_id=eos_id,
                               alpha=length_penalty,
                               no_repeat_ngram=no_repeat_ngram)
      rows = [b[0] for b in beams]
    else:
      rows = decoder.generate(params, ids, max_new_tokens=max_new_tokens,
                              start_id=start_id, eos_id=eos_id,
                              seed=seed + s).tokens
    out.extend(decode(r) for r in rows)
  return out
