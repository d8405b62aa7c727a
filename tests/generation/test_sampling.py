import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lm.generation.sampling import (ban_repeated_ngrams, force_tokens,
                                    generate_uncached, sample_logits)


class PlusOne(nn.Module):
  """A fake model whose logits always put the mass on `last token + 1`."""
  vocab: int = 16

  @nn.compact
  def __call__(self, tokens, deterministic=True):
    logits = jax.nn.one_hot((tokens + 1) % self.vocab, self.vocab) * 20.0
    return logits, {}


def test_greedy_is_argmax():
  logits = jnp.array([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
  np.testing.assert_array_equal(sample_logits(logits, jax.random.key(0)), [1, 0])


def test_top_k_one_is_greedy_at_any_temperature():
  logits = jax.random.normal(jax.random.key(1), (4, 50))
  out = sample_logits(logits, jax.random.key(2), temperature=5.0, top_k=1)
  np.testing.assert_array_equal(out, jnp.argmax(logits, -1))


def test_top_k_and_top_p_restrict_support():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 400)
  topk = {int(sample_logits(logits, k, temperature=1.0, top_k=2)[0]) for k in keys}
  assert topk == {0, 1}
  # mass before token 2 is 0.8 >= 0.75, so top_p=0.75 keeps tokens 0 and 1 only
  topp = {int(sample_logits(logits, k, temperature=1.0, top_p=0.75)[0]) for k in keys}
  assert topp == {0, 1}
  topp_small = {int(sample_logits(logits, k, temperature=1.0, top_p=0.1)[0]) for k in keys}
  assert topp_small == {0}


def test_temperature_sampling_matches_distribution():
  probs = np.array([0.6, 0.3, 0.1])
  logits = jnp.log(jnp.asarray(probs))[None]
  keys = jax.random.split(jax.random.key(3), 3000)
  draws = np.array([int(sample_logits(logits, k, temperature=1.0)[0]) for k in keys[:1500]])
  freq = np.bincount(draws, minlength=3) / len(draws)
  np.testing.assert_allclose(freq, probs, atol=0.05)


def test_generate_with_fake_model_counts_up_and_stops_at_eos():
  model = PlusOne()
  out = generate_uncached(model, {}, [3, 4], max_new_tokens=5, window=8)
  assert out == [5, 6, 7, 8, 9]
  out = generate_uncached(model, {}, [3], max_new_tokens=10, window=4, eos_id=6)
  assert out == [4, 5, 6]
  # longer than the window: the context slides
  out = generate_uncached(model, {}, [0], max_new_tokens=12, window=4)
  assert out == [(i + 1) % 16 for i in range(12)]


def _banned_reference(row, length, n):
  """Tokens whose emission would repeat an n-gram of row[:length]."""
  seq = list(row[:length])
  if n <= 0 or length < n - 1:
    return set()
  tail = seq[length - n + 1:] if n > 1 else []
  return {seq[j + n - 1] for j in range(length - n + 1)
          if seq[j:j + n - 1] == tail}


def test_ban_repeated_ngrams_matches_a_brute_force_reference():
  rng = np.random.default_rng(0)
  seqs = rng.integers(0, 4, size=(16, 12)).astype(np.int32)  # many repeats
  for n in (1, 2, 3, 4):
    for length in (0, 1, 2, 5, 9, 12):
      got = np.asarray(ban_repeated_ngrams(
          jnp.zeros((16, 6)), jnp.asarray(seqs), jnp.asarray(length), n, -1.0))
      for r in range(16):
        assert set(np.flatnonzero(got[r] < 0)) == _banned_reference(
            seqs[r], length, n), (n, length, r)
  # n = 0 is off; a longer n-gram than the buffer bans nothing
  s = jnp.ones((2, 6))
  assert ban_repeated_ngrams(s, jnp.asarray(seqs[:2]), 12, 0, -1.0) is s
  assert not np.any(np.asarray(ban_repeated_ngrams(
      s, jnp.asarray(seqs[:2]), 12, 13, -1.0)) < 0)


def test_forced_tokens_win_under_every_sampler_and_only_where_forced():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(4, 12)) * 5, jnp.float32)
  floor = jnp.finfo(jnp.float32).min
  step = jax.jit(lambda x, i: force_tokens(x, i, 5, 3, 9, floor))
  np.testing.assert_array_equal(step(logits, 2), logits)     # nothing forced
  for index, token in ((0, 3), (5, 9)):
    forced = step(logits, index)
    want = np.full((4, 12), np.finfo(np.float32).min, np.float32)
    want[:, token] = 0.0
    np.testing.assert_array_equal(forced, want)
    for kwargs in (dict(), dict(temperature=0.7), dict(temperature=1.0,
                                                       top_k=4, top_p=0.9)):
      picks = sample_logits(forced, jax.random.key(index), **kwargs)
      assert np.asarray(picks).tolist() == [token] * 4, kwargs
  unforced = force_tokens(logits, 0, 5, None, None, floor)
  np.testing.assert_array_equal(unforced, logits)
