"""EncoderDecoderLM: sizes, masks, relative buckets, cached decoding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import LmError
from lm.generation import seq2seq
from lm.models import build_model
from lm.models.config import make_model_config
from lm.models.encoder_decoder import relative_buckets
from lm.models.transformer import count_params

T5 = dict()
VASWANI = dict(position="sinusoidal", norm="layernorm", norm_position="post",
               mlp="relu", use_bias=True, tie_embeddings=True,
               scale_attention=True, num_decoder_layers=3)


def next_logits(model, params, length):
  """`(x, y) -> logits` of the token after decoder prefix `y`, from a full
  (teacher-forced) forward over `y` padded to `length`: the decoder is
  causal, so the padding after `y` changes nothing before it. One compile
  per input length instead of one eager forward per token."""
  fwd = jax.jit(lambda x, y: model.apply({"params": params}, x, y)[0][0])

  def logits(x, y):
    padded = np.zeros((1, length), np.int32)
    padded[0, :len(y)] = y
    return np.array(fwd(jnp.asarray([x]), jnp.asarray(padded))[len(y) - 1])
  return logits


def tiny(kw, **more):
  cfg = make_model_config("t5_tiny", vocab_size=61, **kw, **more)
  model = build_model(cfg)
  params = model.init({"params": jax.random.key(0)},
                      jnp.ones((1, 6), jnp.int32),
                      jnp.ones((1, 4), jnp.int32))["params"]
  return model, params


def test_t5_small_has_hf_t5_v1_1_small_parameter_count():
  import torch
  import transformers
  hf = transformers.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024,
                             num_layers=8, num_heads=6,
                             feed_forward_proj="gated-gelu",
                             tie_word_embeddings=False)
  with torch.device("meta"):
    ref = transformers.T5ForConditionalGeneration(hf)
  # transformers 5 ties lm_head to `shared` in memory; a v1.1 checkpoint
  # stores its own lm_head, so count every stored tensor once (the encoder's
  # and decoder's embed_tokens are `shared` under other names)
  want = sum(t.numel() for k, t in ref.state_dict().items()
             if not k.endswith("embed_tokens.weight"))
  model = build_model(make_model_config("t5_small"))
  shapes = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0)}, jnp.ones((1, 8), jnp.int32),
      jnp.ones((1, 4), jnp.int32)))["params"]
  assert count_params(shapes) == want == 76_961_152
  base = build_model(make_model_config("t5_base"))
  shapes = jax.eval_shape(lambda: base.init(
      {"params": jax.random.key(0)}, jnp.ones((1, 8), jnp.int32),
      jnp.ones((1, 4), jnp.int32)))["params"]
  assert shapes["encoder"]["layers"]["attention"]["query"]["kernel"].value.shape == (
      12, 768, 12, 64)


def _reference_bucket(rel, bidirectional, n, max_distance):
  out = 0
  if bidirectional:
    n //= 2
    out = n if rel > 0 else 0
    rel = abs(rel)
  else:
    rel = max(-rel, 0)
  exact = n // 2
  if rel < exact:
    return out + rel
  far = exact + int(math.log(rel / exact) / math.log(max_distance / exact)
                    * (n - exact))
  return out + min(far, n - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_buckets_match_the_definition(bidirectional):
  rel = np.arange(-200, 201)
  got = relative_buckets(jnp.asarray(rel), bidirectional=bidirectional,
                         num_buckets=32, max_distance=128)
  want = [_reference_bucket(int(r), bidirectional, 32, 128) for r in rel]
  assert np.asarray(got).tolist() == want


@pytest.mark.parametrize("kw", [T5, VASWANI], ids=["t5", "vaswani"])
def test_padding_and_packing_are_masked(kw):
  model, params = tiny(kw)
  rng = np.random.default_rng(0)
  a_in, a_out = rng.integers(2, 61, 5), rng.integers(2, 61, 3)
  b_in, b_out = rng.integers(2, 61, 4), rng.integers(2, 61, 4)
  fwd = jax.jit(lambda *a, **k: model.apply({"params": params}, *a, **k)[0])

  def alone(x, y):
    return np.asarray(fwd(jnp.asarray(x)[None], jnp.asarray(y)[None]))[0]

  # padding: garbage after the real input tokens changes nothing
  x = np.concatenate([a_in, rng.integers(2, 61, 3)])
  seg = np.array([1] * 5 + [0] * 3)
  padded = np.asarray(fwd(x[None], a_out[None],
                          input_segment_ids=seg[None]))[0]
  np.testing.assert_allclose(padded, alone(a_in, a_out), atol=2e-5)
  # packing: two examples in one row equal each example alone
  inputs = np.concatenate([a_in, b_in])[None]
  outputs = np.concatenate([a_out, b_out])[None]
  in_seg = np.array([[1] * 5 + [2] * 4])
  out_seg = np.array([[1] * 3 + [2] * 4])
  in_pos = np.array([list(range(5)) + list(range(4))])
  out_pos = np.array([list(range(3)) + list(range(4))])
  packed = np.asarray(fwd(inputs, outputs, input_segment_ids=in_seg,
                          decoder_segment_ids=out_seg, input_positions=in_pos,
                          decoder_positions=out_pos))[0]
  np.testing.assert_allclose(packed[:3], alone(a_in, a_out), atol=2e-5)
  np.testing.assert_allclose(packed[3:], alone(b_in, b_out), atol=2e-5)


@pytest.mark.parametrize("kw", [T5, VASWANI, dict(scan_layers=False)],
                         ids=["t5", "vaswani", "t5-loop"])
def test_cached_decoding_equals_teacher_forcing(kw):
  model, params = tiny(kw)
  inputs = [[5, 6, 7, 8, 9], [10, 11]]
  tokens, seg = seq2seq.right_pad(inputs)
  out = np.random.default_rng(1).integers(2, 61, (2, 6)).astype(np.int32)
  out[:, 0] = 0                                            # start id
  want = np.asarray(model.apply({"params": params}, tokens, out,
                                input_segment_ids=seg)[0])
  dm = seq2seq.decoding_model(model)
  cache = seq2seq.init_cache(model, 2, tokens.shape[1], 6)
  prefill = jax.jit(lambda p, c, t, s: seq2seq._prefill(model, dm, p, c, t, s, 0))
  step = jax.jit(lambda p, c, tok, i: seq2seq._step(dm, p, c, tok, i))
  logits, cache = prefill(params, cache, tokens, seg)
  got = [np.asarray(logits)]
  for i in range(1, 6):
    logits, cache = step(params, cache, jnp.asarray(out[:, i]), jnp.asarray(i))
    got.append(np.asarray(logits))
  np.testing.assert_allclose(np.stack(got, 1), want, rtol=1e-5, atol=1e-5)


def test_greedy_and_beam_decoding():
  model, params = tiny(T5)
  inputs = [[5, 6, 7, 8, 9], [10, 11]]
  gen = seq2seq.Seq2SeqDecoder(model).generate(
      params, inputs, max_new_tokens=7, start_id=0)
  logits = next_logits(model, params, 8)
  for x, got in zip(inputs, gen.tokens):       # argmax over full forwards
    y = [0]
    for _ in range(7):
      y.append(int(np.argmax(logits(x, y))))
    assert got == y[1:]
  beams, scores = seq2seq.beam_generate(model, params, inputs, beam_size=1,
                                        max_new_tokens=7, start_id=0,
                                        eos_id=60, alpha=0.0)
  assert [b[0] for b in beams] == [
      g[:g.index(60)] if 60 in g else g for g in gen.tokens]
  wide, wide_scores = seq2seq.beam_generate(
      model, params, inputs, beam_size=3, max_new_tokens=7, start_id=0,
      eos_id=60, alpha=0.0)
  assert all(len(b) == 3 for b in wide)
  assert all(w[0] >= s[0] - 1e-5 for w, s in zip(wide_scores, scores))
  sampled = seq2seq.Seq2SeqDecoder(model, temperature=1.0).generate
  a = sampled(params, inputs, max_new_tokens=7, start_id=0, seed=3).tokens
  assert a == sampled(params, inputs, max_new_tokens=7, start_id=0,
                      seed=3).tokens


def test_t5_options_outside_encoder_decoder_are_refused():
  with pytest.raises(LmError, match="relative"):
    make_model_config("tiny", vocab_size=10, position="relative")
  with pytest.raises(LmError, match="rope"):
    make_model_config("t5_tiny", vocab_size=10, position="rope")


def test_no_repeat_ngram_greedy_and_beam_follow_the_reference():
  model, params = tiny(T5)
  inputs, n, steps = [[5, 6, 7, 8, 9], [10, 11]], 2, 8
  gen = seq2seq.Seq2SeqDecoder(model, no_repeat_ngram=n).generate(
      params, inputs, max_new_tokens=steps, start_id=0)
  forward = next_logits(model, params, steps + 1)
  for x, got in zip(inputs, gen.tokens):   # full forwards, banned in numpy
    y = [0]
    for _ in range(steps):
      logits = forward(x, y)
      out = y[1:]
      for j in range(len(out) - n + 1):
        if out[j:j + n - 1] == out[len(out) - n + 1:]:
          logits[out[j + n - 1]] = -np.inf
      y.append(int(np.argmax(logits)))
    assert got == y[1:]
    grams = [tuple(got[i:i + n]) for i in range(len(got) - n + 1)]
    assert len(set(grams)) == len(grams)
  beams, _ = seq2seq.beam_generate(model, params, inputs, beam_size=1,
                                   max_new_tokens=steps, start_id=0, eos_id=60,
                                   alpha=0.0, no_repeat_ngram=n)
  assert [b[0] for b in beams] == [
      g[:g.index(60)] if 60 in g else g for g in gen.tokens]
