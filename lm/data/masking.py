"""BERT's masked-LM corruption of one example, in numpy.

`mask_tokens` picks about `mask_rate` of the maskable positions (at most
`max_predictions`), replaces 80% of them with [MASK], 10% with a random
vocabulary token and leaves 10% unchanged (the rates are options), and
returns the corrupted row with the positions and original tokens to predict,
padded to a fixed `max_predictions` so batches have static shapes.

Whole-word masking picks whole words instead of single pieces. A word is a
word-start token and the maskable non-start tokens after it. Word starts
come from `word_start_table` (for SentencePiece, pieces beginning with "▁",
plus stand-alone pieces: "\\n", "\\t", whitespace-only pieces and specials;
the tokenizer's `word_style` picks the rule, see there) and `word_starts`,
which also starts a word after a stand-alone piece; since these tokenizers use
`add_dummy_prefix=False`, the first token of each maskable run (after [CLS],
[SEP] or another non-maskable token) starts a word as well.

Example (mask_id=6, max_predictions=4, 10 maskable tokens -> 2 chosen):
  tokens           [4, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 5]
  inputs           [4, 11,  6, 13, 14, 15, 16, 42, 18, 19, 20, 5]
  masked_positions [2, 7, 0, 0]
  masked_targets   [12, 17, 0, 0]
  masked_weights   [1., 1., 0., 0.]
"""

from __future__ import annotations

import numpy as np

from lm.errors import LmError

WORD_PREFIX = "\u2581"  # "▁", SentencePiece's whitespace marker
STANDALONE_PIECES = ("\n", "\t")
# Byte-level BPE (GPT-2) writes byte b < 33 as chr(256 + b): "Ġ" is a space.
BYTE_LEVEL_SPACE = "\u0120"
BYTE_LEVEL_WHITESPACE = frozenset(chr(256 + b) for b in (9, 10, 11, 12, 13, 32))
DEFAULT_SUBWORD_PREFIX = "##"


def check_rates(mask_rate: float, mask_token_rate: float,
                random_token_rate: float) -> None:
  """Raises LmError unless the three rates are valid probabilities.

  Example: (0.15, 0.8, 0.1) passes; (0.15, 0.9, 0.2) raises (0.9 + 0.2 > 1).
  """
  for name, value in (("mask_rate", mask_rate),
                      ("mask_token_rate", mask_token_rate),
                      ("random_token_rate", random_token_rate)):
    if not 0.0 <= float(value) <= 1.0:
      raise LmError(f"config.mlm.{name} is {value}, outside [0, 1]; set "
                    f"--config.mlm.{name} to a probability.")
  if mask_token_rate + random_token_rate > 1.0 + 1e-9:
    raise LmError(f"config.mlm.mask_token_rate + config.mlm.random_token_rate "
                  f"= {mask_token_rate} + {random_token_rate} exceeds 1; "
                  "lower one of them (BERT uses 0.8 and 0.1).")


def _piece_rules(tokenizer):
  """(stands_alone, begins_word) predicates on pieces for the tokenizer's
  `word_style` ("sentencepiece" when it has none).

  Example: "wordpiece" -> (never, not piece.startswith("##")).
  """
  style = getattr(tokenizer, "word_style", "sentencepiece")
  if style == "sentencepiece":
    return ((lambda p: p in STANDALONE_PIECES
             or bool(p and not p.strip(WORD_PREFIX))),
            lambda p: p.startswith(WORD_PREFIX))
  if style == "bytelevel":
    return ((lambda p: bool(p) and all(c in BYTE_LEVEL_WHITESPACE for c in p)),
            lambda p: p.startswith(BYTE_LEVEL_SPACE))
  if style == "wordpiece":
    prefix = (getattr(tokenizer, "subword_prefix", "")
              or DEFAULT_SUBWORD_PREFIX)
    return (lambda p: False), (lambda p: not p.startswith(prefix))
  if style == "token":
    return (lambda p: False), (lambda p: True)
  raise LmError(f"Tokenizer word_style {style!r} is unknown; whole-word "
                "masking reads 'sentencepiece', 'wordpiece', 'bytelevel' or "
                "'token' (or set --config.mlm.whole_word=False).")


def _tables(tokenizer) -> tuple[np.ndarray, np.ndarray]:
  """(starts, standalone) bool [V] tables; see `word_start_table`."""
  n = tokenizer.vocab_size
  specials = set(tokenizer.special_ids)
  stands_alone, begins_word = _piece_rules(tokenizer)
  starts = np.zeros(n, bool)
  alone = np.zeros(n, bool)
  for i in range(n):
    piece = tokenizer.id_to_piece(i)
    if i in specials or stands_alone(piece):
      alone[i] = starts[i] = True
    elif begins_word(piece):
      starts[i] = True
  return starts, alone


def word_start_table(tokenizer) -> np.ndarray:
  """bool [V]: True for ids that begin a word.

  The rule follows `tokenizer.word_style` ("sentencepiece" when absent); in
  every style the special ids (`tokenizer.special_ids`: pad, unk, bos, eos,
  [CLS], [SEP], [MASK]) stand alone and so begin a word.

  * "sentencepiece": a piece begins a word when it starts with "▁"
    (SentencePiece's space) or stands alone: "\\n", "\\t" and
    whitespace-only pieces ("▁▁▁▁", indentation). Byte pieces and pieces
    without "▁" continue the word before them. Example: pieces ["[PAD]",
    ..., "\\n", "▁def", "ine", "<0xE6>"] -> [True, ..., True, True, False,
    False].
  * "bytelevel" (GPT-2): pieces starting with "Ġ" (a space) begin words;
    whitespace-only pieces ("Ċ", "ĠĠĠ") stand alone. Example: ["Ġdef",
    "ine", "ĊĠĠĠ"] -> [True, False, True].
  * "wordpiece" (BERT): pieces starting with `tokenizer.subword_prefix`
    ("##") continue a word, every other piece begins one. Example:
    ["un", "##believ", "##able", "!"] -> [True, False, False, True].
  * "token": every piece is a word of its own.
  """
  return _tables(tokenizer)[0]


def standalone_table(tokenizer) -> np.ndarray:
  """bool [V]: True for ids that form a word by themselves ("\\n", "\\t",
  whitespace-only pieces and the special ids), so the token after one starts
  a new word.

  Example: pieces ["[PAD]", ..., "\\n", "▁▁▁▁", "▁def", "ine"] -> [True, ...,
  True, True, False, False].
  """
  return _tables(tokenizer)[1]


def word_starts(tokens: np.ndarray, starts: np.ndarray,
                standalone: np.ndarray | None = None) -> np.ndarray:
  """bool [T]: which tokens of a row begin a word.

  `starts` and `standalone` are the [V] tables of `word_start_table` and
  `standalone_table`; a token also starts a word when the token before it
  stands alone. Example: pieces ["▁x", "\\n", "def", "ine"] -> [True, True,
  True, False].
  """
  tokens = np.asarray(tokens)
  out = starts[tokens].copy()
  if standalone is not None and tokens.shape[0] > 1:
    out[1:] |= standalone[tokens[:-1]]
  return out


def _choose_words(maskable: np.ndarray, word_starts_: np.ndarray, n: int,
                  rng: np.random.Generator) -> np.ndarray:
  """Positions of whole words chosen in random order while they fit in `n`.

  Example: maskable [F, T, T, T, T], word starts [F, T, F, T, F], n=2 ->
  [1, 2] or [3, 4] (words (1, 2) and (3, 4)).
  """
  idx = np.flatnonzero(maskable)
  prev_maskable = np.zeros_like(maskable)
  prev_maskable[1:] = maskable[:-1]
  is_start = (word_starts_ | ~prev_maskable)[idx]
  bounds = np.flatnonzero(np.append(is_start, True))  # [W + 1] into idx
  lengths = np.diff(bounds)
  chosen, total = [], 0
  for w in rng.permutation(lengths.shape[0]):
    if total >= n:
      break
    if total + lengths[w] > n:
      continue
    chosen.append(w)
    total += int(lengths[w])
  if not chosen:
    return np.zeros(0, np.int64)
  return np.concatenate([idx[bounds[w]:bounds[w + 1]] for w in chosen])


def mask_tokens(tokens: np.ndarray, maskable: np.ndarray,
                rng: np.random.Generator, *, mask_id: int,
                vocab_ids: np.ndarray, max_predictions: int,
                mask_rate: float = 0.15, mask_token_rate: float = 0.8,
                random_token_rate: float = 0.1,
                word_starts: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
  """BERT's masking of one row (see the module docstring for an example).

  Args:
    tokens: [T] int token ids.
    maskable: [T] bool, the positions that may be chosen (not [CLS], [SEP],
      padding or other special ids).
    rng: the row's random generator.
    mask_id: the [MASK] id.
    vocab_ids: [V'] ids that random replacements are drawn from uniformly
      (the vocabulary without special ids).
    max_predictions: P, the length of the outputs; at most P are chosen.
    mask_rate: n = min(P, max(1, round(maskable.sum() * mask_rate))) positions
      are chosen (0 when nothing is maskable), uniformly among maskable ones.
    mask_token_rate, random_token_rate: each chosen position becomes
      `mask_id` with the first probability, a random `vocab_ids` token with
      the second, and stays unchanged otherwise.
    word_starts: [T] bool, or None. When given, whole words are chosen in
      random order and added while they fit within n (so fewer than n
      positions may be chosen); a word is a start plus the maskable
      non-start tokens after it, and the first token of each maskable run
      is a start too.

  Returns:
    inputs [T] int32 (the corrupted row), masked_positions [P] int32 (sorted
    ascending, then 0), masked_targets [P] int32 (the original tokens, then
    0), masked_weights [P] float32 (1 for chosen, then 0).
  """
  check_rates(mask_rate, mask_token_rate, random_token_rate)
  if max_predictions < 0:
    raise LmError(f"config.mlm.max_predictions is {max_predictions}; use a "
                  "non-negative number (0 means ceil(seq_len * mask_rate)).")
  tokens = np.asarray(tokens)
  maskable = np.asarray(maskable, bool)
  n_maskable = int(np.count_nonzero(maskable))
  n = 0
  if n_maskable:
    n = min(max_predictions, max(1, int(round(n_maskable * mask_rate))))
  if n == 0:
    chosen = np.zeros(0, np.int64)
  elif word_starts is None:
    chosen = rng.choice(np.flatnonzero(maskable), size=n, replace=False)
  else:
    chosen = _choose_words(maskable, np.asarray(word_starts, bool), n, rng)
  chosen = np.sort(chosen)
  k = chosen.shape[0]
  inputs = tokens.astype(np.int32)
  targets = inputs[chosen]
  if k:
    u = rng.random(k)
    replaced = inputs[chosen]
    replaced = np.where(u < mask_token_rate, mask_id, replaced)
    is_random = (u >= mask_token_rate) & (
        u < mask_token_rate + random_token_rate)
    n_random = int(np.count_nonzero(is_random))
    if n_random:
      vocab_ids = np.asarray(vocab_ids)
      replaced[is_random] = vocab_ids[rng.integers(0, vocab_ids.shape[0],
                                                   size=n_random)]
    inputs[chosen] = replaced
  positions = np.zeros(max_predictions, np.int32)
  out_targets = np.zeros(max_predictions, np.int32)
  weights = np.zeros(max_predictions, np.float32)
  positions[:k] = chosen
  out_targets[:k] = targets
  weights[:k] = 1.0
  return {"inputs": inputs, "masked_positions": positions,
          "masked_targets": out_targets, "masked_weights": weights}
