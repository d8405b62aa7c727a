"""Cached decoding equals a full recompute; samplers and beam search behave."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.generation import decode
from lm.generation.sampling import generate_uncached
from lm.models.config import make_model_config
from lm.models.transformer import DecoderLM


def tiny_model(**kw):
  cfg = make_model_config("tiny", vocab_size=97, max_len=32, **kw)
  model = DecoderLM(cfg)
  params = model.init({"params": jax.random.key(0)},
                      jnp.zeros((1, 8), jnp.int32))["params"]
  return model, params


def full_logits(model, params, rows, valid):
  """Logits of a full forward over padded rows (padding = segment 0), one
  compiled forward per shape."""
  positions = np.maximum(np.cumsum(valid, 1) - 1, 0)
  forward = jax.jit(lambda p, r, pos, seg: model.apply(
      {"params": p}, r, positions=pos, segment_ids=seg)[0])
  return np.asarray(forward(params, jnp.asarray(rows), jnp.asarray(positions),
                            jnp.asarray(valid.astype(np.int32))))


@pytest.mark.parametrize("kw", [
    dict(position="learned"),
    dict(position="rope", num_kv_heads=2),
    dict(position="rope", num_kv_heads=1, scan_layers=False),
    dict(position="sinusoidal", num_kv_heads=2),
])
def test_cached_logits_equal_full_recompute(kw):
  model, params = tiny_model(**kw)
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(4, 97, n)) for n in (3, 6, 1)]
  new = rng.integers(4, 97, size=(3, 7)).astype(np.int32)
  tokens, valid, positions = decode.left_pad(prompts)
  cache = decode.init_cache(model, 3, tokens.shape[1] + new.shape[1])
  step = jax.jit(lambda *a: decode.forward_step(model, params, *a))
  logits, cache = step(cache, jnp.asarray(tokens), jnp.asarray(positions),
                       jnp.asarray(valid))
  cached = [np.asarray(logits)]
  pos = positions[:, -1] + 1
  for i in range(new.shape[1]):
    step_logits, cache = step(
        cache, jnp.asarray(new[:, i:i + 1]),
        jnp.asarray(pos[:, None] + i), jnp.ones((3, 1), bool))
    cached.append(np.asarray(step_logits))
  cached = np.concatenate(cached, axis=1)
  rows = np.concatenate([tokens, new], 1)
  all_valid = np.concatenate([valid, np.ones_like(new, bool)], 1)
  full = full_logits(model, params, rows, all_valid)
  np.testing.assert_allclose(cached[all_valid], full[all_valid], rtol=1e-5, atol=1e-5)
  # each row also matches its own run without the left padding (padded on
  # the right instead, which a causal row never sees: one shape, one compile)
  width = rows.shape[1]
  alone = np.zeros((len(prompts), width), np.int32)
  alone_valid = np.zeros((len(prompts), width), bool)
  for r, p in enumerate(prompts):
    row = np.concatenate([p, new[r]])
    alone[r, :len(row)], alone_valid[r, :len(row)] = row, True
  ref = full_logits(model, params, alone, alone_valid)
  for r in range(len(prompts)):
    np.testing.assert_allclose(cached[r][all_valid[r]], ref[r][alone_valid[r]],
                               rtol=1e-5, atol=1e-5)


def test_greedy_generate_equals_uncached_argmax_loop():
  model, params = tiny_model(position="rope", num_kv_heads=2)
  prompts = [[5, 6, 7], [9]]
  gen = decode.Decoder(model, chunk=4).generate(
      params, prompts, max_new_tokens=10, max_len=32)
  for prompt, got in zip(prompts, gen.tokens):
    ref = generate_uncached(model, params, prompt, max_new_tokens=10, window=16)
    assert got == ref
  assert gen.finish_reasons == ["length", "length"]


@pytest.mark.parametrize("scan", [True, False])
def test_a_cache_grown_between_chunks_decodes_as_a_full_one(scan):
  """`Decoder` starts from a short cache and doubles it between chunks
  (min_cache 4: 8, 16, then 23 slots); greedy tokens equal the uncached
  argmax loop, and a grown cache's logits equal a full-size one's."""
  model, params = tiny_model(position="learned", scan_layers=scan)
  prompts = [[5, 6, 7], [9]]
  dec = decode.Decoder(model, chunk=3, min_cache=4)
  gen = dec.generate(params, prompts, max_new_tokens=20, max_len=32)
  for prompt, got in zip(prompts, gen.tokens):
    assert got == generate_uncached(model, params, prompt, max_new_tokens=20,
                                    window=32)
  assert sorted(length for _, length in dec._shapes) == [8]   # started short
  tokens, valid, positions = decode.left_pad(prompts)
  step = jax.jit(lambda *a: decode.forward_step(model, params, *a))
  short = decode.init_cache(model, 2, 4)
  full = decode.init_cache(model, 2, 9)
  outs = []
  for cache in (short, full):
    _, cache = step(cache, jnp.asarray(tokens), jnp.asarray(positions),
                    jnp.asarray(valid))
    if cache is not full:
      cache = model.grow_cache(cache, 9)
    assert jax.tree.map(jnp.shape, cache) == jax.tree.map(jnp.shape, full)
    logits, _ = step(cache, jnp.asarray([[11], [12]]),
                     jnp.asarray(positions[:, -1:] + 1), jnp.ones((2, 1), bool))
    outs.append(np.asarray(logits))
  np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-6)


def test_sampling_is_seeded_and_stops():
  model, params = tiny_model()
  dec = decode.Decoder(model, temperature=1.0, top_k=20, chunk=3)
  a = dec.generate(params, [[4, 5]], max_new_tokens=12, max_len=32, seed=1)
  b = dec.generate(params, [[4, 5]], max_new_tokens=12, max_len=32, seed=1)
  c = dec.generate(params, [[4, 5]], max_new_tokens=12, max_len=32, seed=2)
  assert a.tokens == b.tokens and a.tokens != c.tokens
  eos = a.tokens[0][4]
  first = a.tokens[0].index(eos)
  d = dec.generate(params, [[4, 5]], max_new_tokens=12, max_len=32, seed=1, eos_id=eos)
  assert d.tokens[0] == a.tokens[0][:first] and d.finish_reasons == ["eos"]
  target = a.tokens[0][1]
  e = dec.generate(params, [[4, 5]], max_new_tokens=12, max_len=32, seed=1,
                   stop_check=lambda ids: target in ids)
  assert e.finish_reasons == ["stop"] and len(e.tokens[0]) <= 3 + 1


def test_context_overflow_is_refused():
  model, params = tiny_model()
  with pytest.raises(ValueError, match="exceeds the context"):
    decode.Decoder(model).generate(params, [[1] * 30], max_new_tokens=5, max_len=32)


def test_beam_search_width_one_is_greedy_and_wider_scores_no_worse():
  model, params = tiny_model(position="rope")
  prompts = [[5, 6, 7], [11, 12]]
  greedy = decode.Decoder(model).generate(params, prompts, max_new_tokens=6, max_len=32)
  beams, _ = decode.beam_generate(model, params, prompts, beam_size=1,
                                  max_new_tokens=6, max_len=32, eos_id=3, alpha=0.0)
  assert [b[0] for b in beams] == greedy.tokens

  def logprob(prompt, cont):
    seq = jnp.asarray([list(prompt) + list(cont)])
    logp = jax.nn.log_softmax(model.apply({"params": params}, seq)[0][0])
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(cont)))

  wide, scores = decode.beam_generate(model, params, prompts, beam_size=4,
                                      max_new_tokens=6, max_len=32, eos_id=3, alpha=0.0)
  for p, g, w, s in zip(prompts, greedy.tokens, wide, scores):
    assert len(w) == 4
    assert s == sorted(s, reverse=True)
    assert logprob(p, w[0]) >= logprob(p, g) - 1e-4
    assert logprob(p, w[0]) == pytest.approx(s[0], abs=1e-3)


import flax.linen as nn  # noqa: E402


class CountingFake(nn.Module):
  """A fake cached model: always predicts `last token + 1` (mod V).

  It keeps a per-row token counter in the 'cache' collection so that it
  follows the decode contract (cache init, valid mask, reorder_cache).
  """
  vocab: int = 50

  @nn.compact
  def __call__(self, tokens, *, positions=None, segment_ids=None,
               deterministic=True, decode=False, valid=None):
    if decode:
      seen = self.variable("cache", "seen", jnp.zeros, (tokens.shape[0],), jnp.int32)
      if valid is not None and self.has_variable("cache", "seen"):
        seen.value = seen.value + valid.sum(-1).astype(jnp.int32)
    logits = jax.nn.one_hot((tokens + 1) % self.vocab, self.vocab) * 30.0
    return logits, {}

  def reorder_cache(self, cache, indices):
    return jax.tree.map(lambda x: jnp.take(x, indices, axis=0), cache)


def test_decoder_with_fake_model_counts_up():
  fake = CountingFake()
  gen = decode.Decoder(fake, chunk=5).generate({}, [[3, 4], [10]], max_new_tokens=7,
                                               max_len=16)
  assert gen.tokens == [[5, 6, 7, 8, 9, 10, 11], [11, 12, 13, 14, 15, 16, 17]]
  sampled = decode.Decoder(fake, temperature=0.7, top_k=3, top_p=0.5).generate(
      {}, [[48]], max_new_tokens=4, max_len=16, seed=5)
  assert sampled.tokens == [[49, 0, 1, 2]]          # wraps modulo V
  stopped = decode.Decoder(fake).generate({}, [[1]], max_new_tokens=10, max_len=16,
                                          eos_id=4)
  assert stopped.tokens == [[2, 3]] and stopped.finish_reasons == ["eos"]
  beams, scores = decode.beam_generate(fake, {}, [[7]], beam_size=3, max_new_tokens=4,
                                       max_len=16, eos_id=49)
  assert beams[0][0] == [8, 9, 10, 11] and scores[0][0] >= scores[0][1]


class CyclingFake(CountingFake):
  """Always predicts `10 + (last + 1) % 3`: greedy loops 11 10 12 11 ..."""

  @nn.compact
  def __call__(self, tokens, *, positions=None, segment_ids=None,
               deterministic=True, decode=False, valid=None):
    if decode:
      self.variable("cache", "seen", jnp.zeros, (tokens.shape[0],), jnp.int32)
    logits = jax.nn.one_hot(10 + (tokens + 1) % 3, self.vocab) * 30.0
    return logits, {}


def _greedy_without_repeats(prompt_last, steps, n, vocab=50):
  """Numpy reference: CyclingFake's greedy choice among the tokens that do
  not repeat an n-gram of the generated ones (ties -> lowest id)."""
  out, last = [], prompt_last
  for _ in range(steps):
    scores = np.zeros(vocab)
    scores[10 + (last + 1) % 3] = 30.0
    if len(out) >= n - 1:
      tail = out[len(out) - n + 1:] if n > 1 else []
      for j in range(len(out) - n + 1):
        if out[j:j + n - 1] == tail:
          scores[out[j + n - 1]] = -np.inf
    last = int(np.argmax(scores))
    out.append(last)
  return out


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_blocks_the_loop_as_the_reference(n):
  fake = CyclingFake()
  looped = decode.Decoder(fake, chunk=4).generate(
      {}, [[12]], max_new_tokens=9, max_len=16).tokens[0]
  assert looped == [11, 10, 12] * 3
  gen = decode.Decoder(fake, chunk=4, no_repeat_ngram=n).generate(
      {}, [[12], [12]], max_new_tokens=9, max_len=16).tokens
  want = _greedy_without_repeats(12, 9, n)
  assert gen == [want, want]
  grams = [tuple(want[i:i + n]) for i in range(len(want) - n + 1)]
  assert len(set(grams)) == len(grams)
  beams, _ = decode.beam_generate(fake, {}, [[12]], beam_size=1,
                                  max_new_tokens=9, max_len=16, eos_id=49,
                                  alpha=0.0, no_repeat_ngram=n)
  assert beams[0][0] == want
  wide, _ = decode.beam_generate(fake, {}, [[12]], beam_size=3,
                                 max_new_tokens=9, max_len=16, eos_id=49,
                                 no_repeat_ngram=n)
  for beam in wide[0]:
    grams = [tuple(beam[i:i + n]) for i in range(len(beam) - n + 1)]
    assert len(set(grams)) == len(grams), beam
