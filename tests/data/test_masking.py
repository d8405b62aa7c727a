"""Tests for lm.data.masking: BERT's 15% / 80-10-10 masking, whole words."""

import numpy as np
import pytest

from lm.data import masking
from lm.data.masking import (mask_tokens, standalone_table, word_start_table,
                             word_starts)
from lm.data.sources import open_source
from lm.data.tokenizer import train_tokenizer
from lm.errors import LmError

PAD, CLS, SEP, MASK = 0, 4, 5, 6
SPECIALS = np.arange(7)
VOCAB = 5000
VOCAB_IDS = np.arange(7, VOCAB)
P = 20


def _rows(n_rows=2000, t=128, seed=0):
  """Random rows laid out as [CLS] text [SEP] text [SEP] pad..."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(7, VOCAB, size=(n_rows, t))
  maskable = np.ones((n_rows, t), bool)
  for r in range(n_rows):
    n = int(rng.integers(10, t + 1))
    a = int(rng.integers(1, n - 3))
    tokens[r, 0], tokens[r, a], tokens[r, n - 1] = CLS, SEP, SEP
    tokens[r, n:] = PAD
    maskable[r, [0, a, n - 1]] = False
    maskable[r, n:] = False
  unk = rng.random((n_rows, t)) < 0.01  # some <unk> in the text
  tokens[unk & maskable] = 1
  maskable &= ~unk
  return tokens, maskable


def _mask_all(tokens, maskable, **kw):
  outs = [mask_tokens(tokens[r], maskable[r], np.random.default_rng([7, r]),
                      mask_id=MASK, vocab_ids=VOCAB_IDS, max_predictions=P,
                      **kw) for r in range(tokens.shape[0])]
  return {k: np.stack([o[k] for o in outs]) for k in outs[0]}


@pytest.fixture(scope="module")
def masked():
  tokens, maskable = _rows()
  return tokens, maskable, _mask_all(tokens, maskable)


def test_shapes_and_dtypes(masked):
  tokens, _, out = masked
  assert out["inputs"].shape == tokens.shape and out["inputs"].dtype == np.int32
  for k, dtype in (("masked_positions", np.int32),
                   ("masked_targets", np.int32),
                   ("masked_weights", np.float32)):
    assert out[k].shape == (tokens.shape[0], P) and out[k].dtype == dtype


def test_fifteen_percent_of_maskable_tokens(masked):
  tokens, maskable, out = masked
  n_maskable = maskable.sum(1)
  expected = np.minimum(P, np.maximum(1, np.round(n_maskable * 0.15)))
  np.testing.assert_array_equal(out["masked_weights"].sum(1), expected)
  # Overall: 15% of the maskable tokens (rows hit by the P cap excluded).
  free = expected < P
  frac = out["masked_weights"][free].sum() / n_maskable[free].sum()
  assert abs(frac - 0.15) < 0.005, frac


def test_chosen_positions_weights_and_targets(masked):
  tokens, maskable, out = masked
  for r in range(tokens.shape[0]):
    k = int(out["masked_weights"][r].sum())
    pos = out["masked_positions"][r, :k]
    assert (np.diff(pos) > 0).all()  # sorted, distinct
    assert maskable[r, pos].all()  # never special or padding
    np.testing.assert_array_equal(out["masked_weights"][r, :k], 1.0)
    assert (out["masked_weights"][r, k:] == 0).all()
    assert (out["masked_positions"][r, k:] == 0).all()
    assert (out["masked_targets"][r, k:] == 0).all()
    np.testing.assert_array_equal(out["masked_targets"][r, :k],
                                  tokens[r, pos])
    untouched = np.ones(tokens.shape[1], bool)
    untouched[pos] = False
    np.testing.assert_array_equal(out["inputs"][r, untouched],
                                  tokens[r, untouched])


def test_eighty_ten_ten(masked):
  tokens, _, out = masked
  w = out["masked_weights"] > 0
  rows = np.nonzero(w)[0]
  pos = out["masked_positions"][w]
  new = out["inputs"][rows, pos]
  old = tokens[rows, pos]
  n = w.sum()
  assert n > 15_000  # std of the 80% share: 0.003; of the 10%: 0.0023
  is_mask = new == MASK
  kept = new == old
  is_random = ~is_mask & ~kept
  # With 5000 ids a random draw equals the original token 0.02% of the time.
  assert abs(is_mask.mean() - 0.8) < 0.012
  assert abs(is_random.mean() - 0.1) < 0.01
  assert abs(kept.mean() - 0.1) < 0.01
  assert np.isin(new[is_random], VOCAB_IDS).all()
  # Random replacements are uniform over the vocabulary ids.
  assert new[is_random].min() < 200 and new[is_random].max() > VOCAB - 200


def test_other_rates():
  tokens, maskable = _rows(300, 64, seed=1)
  out = _mask_all(tokens, maskable, mask_rate=0.3, mask_token_rate=0.0,
                  random_token_rate=0.0)
  assert (out["inputs"] == tokens).all()  # chosen but unchanged
  frac = out["masked_weights"].sum() / np.minimum(
      P, np.maximum(1, np.round(maskable.sum(1) * 0.3))).sum()
  assert frac == 1.0
  out = _mask_all(tokens, maskable, mask_token_rate=1.0, random_token_rate=0)
  w = out["masked_weights"] > 0
  assert (out["inputs"][np.nonzero(w)[0], out["masked_positions"][w]]
          == MASK).all()


def test_nothing_maskable_and_cap():
  tokens = np.array([CLS, 10, 11, SEP, PAD])
  out = mask_tokens(tokens, np.zeros(5, bool), np.random.default_rng(0),
                    mask_id=MASK, vocab_ids=VOCAB_IDS, max_predictions=3)
  assert out["masked_weights"].tolist() == [0, 0, 0]
  np.testing.assert_array_equal(out["inputs"], tokens)
  out = mask_tokens(tokens, tokens == 10, np.random.default_rng(0),
                    mask_id=MASK, vocab_ids=VOCAB_IDS, max_predictions=3)
  assert out["masked_weights"].tolist() == [1, 0, 0]  # at least one
  assert out["masked_positions"][0] == 1 and out["masked_targets"][0] == 10
  long = np.arange(100, 300)
  out = mask_tokens(long, np.ones(200, bool), np.random.default_rng(0),
                    mask_id=MASK, vocab_ids=VOCAB_IDS, max_predictions=5)
  assert out["masked_weights"].sum() == 5  # round(200 * .15) capped at 5
  out = mask_tokens(long, np.ones(200, bool), np.random.default_rng(0),
                    mask_id=MASK, vocab_ids=VOCAB_IDS, max_predictions=0)
  assert out["masked_positions"].shape == (0,)


def test_deterministic_given_rng():
  tokens, maskable = _rows(5, 64)
  a = _mask_all(tokens, maskable)
  b = _mask_all(tokens, maskable)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


@pytest.mark.parametrize("kw, key", [
    (dict(mask_rate=1.5), "config.mlm.mask_rate"),
    (dict(mask_token_rate=-0.1), "config.mlm.mask_token_rate"),
    (dict(random_token_rate=2.0), "config.mlm.random_token_rate"),
    (dict(mask_token_rate=0.9, random_token_rate=0.2),
     "config.mlm.mask_token_rate + config.mlm.random_token_rate"),
])
def test_bad_rates(kw, key):
  with pytest.raises(LmError) as e:
    mask_tokens(np.arange(10), np.ones(10, bool), np.random.default_rng(0),
                mask_id=MASK, vocab_ids=VOCAB_IDS, max_predictions=2, **kw)
  assert key in str(e.value)


# --- whole words --------------------------------------------------------------


def _words(maskable, starts):
  """Word index per position (-1 where not maskable), as the masker sees it."""
  word = np.full(maskable.shape[0], -1)
  w = -1
  for t in range(maskable.shape[0]):
    if not maskable[t]:
      continue
    if starts[t] or t == 0 or not maskable[t - 1]:
      w += 1
    word[t] = w
  return word


def test_whole_words_are_chosen_entirely():
  tokens, maskable = _rows(1000, 128, seed=3)
  rng = np.random.default_rng(5)
  starts = rng.random(tokens.shape) < 0.4  # words of ~2.5 tokens
  n_chosen = n_maskable = 0
  for r in range(tokens.shape[0]):
    out = mask_tokens(tokens[r], maskable[r], np.random.default_rng(r),
                      mask_id=MASK, vocab_ids=VOCAB_IDS, max_predictions=P,
                      word_starts=starts[r])
    k = int(out["masked_weights"].sum())
    pos = out["masked_positions"][:k]
    n = min(P, max(1, round(maskable[r].sum() * 0.15)))
    assert k <= n and (np.diff(pos) > 0).all() and maskable[r, pos].all()
    word = _words(maskable[r], starts[r])
    chosen_words = np.unique(word[pos])
    np.testing.assert_array_equal(np.sort(pos),
                                  np.flatnonzero(np.isin(word, chosen_words)))
    np.testing.assert_array_equal(out["masked_targets"][:k], tokens[r, pos])
    n_chosen += k
    n_maskable += maskable[r].sum()
  # Greedy packing of whole words still reaches close to 15%.
  assert 0.12 < n_chosen / n_maskable <= 0.15


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "tok.model"
  return train_tokenizer(open_source("pystdlib:validation"), str(path),
                         vocab_size=500, max_chars=100_000,
                         bert_specials=True)


def test_word_start_table(tok):
  table = word_start_table(tok)
  alone = standalone_table(tok)
  assert table.shape == alone.shape == (tok.vocab_size,)
  assert table[tok.special_ids].all() and alone[tok.special_ids].all()
  nl, tab = tok.encode("\n")[0], tok.encode("\t")[0]
  assert table[[nl, tab]].all() and alone[[nl, tab]].all()
  for i in range(tok.vocab_size):
    piece = tok.id_to_piece(i)
    if i in tok.special_ids or piece in ("\n", "\t"):
      continue
    assert table[i] == piece.startswith("\u2581"), piece
    assert alone[i] == (piece.strip("\u2581") == ""), piece


def test_word_starts_in_code(tok):
  ids = tok.encode("x = forward(inputs)\n    return self.value\n")
  starts = word_starts(np.array(ids), *masking._tables(tok))
  pieces = [tok.id_to_piece(i) for i in ids]
  for t, piece in enumerate(pieces):
    after_alone = t > 0 and (pieces[t - 1] == "\n"
                             or not pieces[t - 1].strip("\u2581"))
    assert starts[t] == (piece.startswith("\u2581") or piece == "\n"
                         or after_alone), (t, pieces)
  # "return" after the indentation piece starts a word of its own; "("
  # continues "▁for...". The leading "x" has no "▁" (add_dummy_prefix=False):
  # mask_tokens, not this table, makes the first token of a run a start.
  assert pieces[pieces.index("return") - 1] == "\u2581" * 4
  assert starts[pieces.index("return")]
  assert not starts[0] and not starts[pieces.index("(")]
