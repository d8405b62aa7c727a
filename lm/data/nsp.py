"""BERT pretraining examples: sentence pairs (NSP) with masked-LM targets.

Input is a `SegmentStream` (documents of tokenized segments). Batches are a
pure function of (seed, step, process slice), like `pipeline.TrainBatches`,
so a resumed run continues with exactly the batch that would have come next.

Chunks. Each document's consecutive segments are grouped greedily until the
group's token count reaches max_tokens = seq_len - 3 (NSP) or seq_len - 2
(no NSP); groups of fewer than 2 tokens are dropped (`make_chunks`). One
example is built from one chunk.

Example instance (NSP, `rng` the row's generator):
  * target length = max_tokens, or with probability `short_seq_prob` a
    uniform length in [2, max_tokens); the chunk's first k segments whose
    tokens reach the target are used (at least 2 tokens);
  * A = the first a_end of those k segments, a_end uniform in [1, k) (k = 1:
    the segment is split at a uniform token instead);
  * with probability 0.5, B = the rest (nsp label 0, IsNext); otherwise
    (label 1, random) B = consecutive segments from a uniform segment of a
    uniform OTHER document, as many as reach target - len(A);
  * while len(A) + len(B) > max_tokens the longer side loses a token, A from
    its front, B from its back (ties trim B), keeping the A|B junction;
  * row = [CLS] A [SEP] B [SEP] + padding, token_types 0 for [CLS] A [SEP],
    1 for B [SEP], 0 for padding.
Without NSP (RoBERTa style) the row is [CLS] tokens [SEP] (the chunk's
first k segments cut to max_tokens), token_types 0, nsp label 0.
Then `masking.mask_tokens` corrupts the row with the same `rng`; maskable
positions are real tokens that are not special ids.

  Example (seq_len 12, NSP, IsNext; A = [21, 22], B = [23, 24, 25]):
    inputs      [4, 21, 6, 5, 23, 24, 25, 5, 0, 0, 0, 0]  (22 -> [MASK]=6)
    token_types [0,  0, 0, 0,  1,  1,  1, 1, 0, 0, 0, 0]
    segment_ids [1,  1, 1, 1,  1,  1,  1, 1, 0, 0, 0, 0]
    positions   [0,  1, 2, 3,  4,  5,  6, 7, 0, 0, 0, 0]
    masked_positions [2, 0], masked_targets [22, 0], masked_weights [1, 0]
    nsp_labels 0, nsp_weights 1

Step indexing (`MlmBatches`). Row r of step s is global row g = s * G + r;
it reads chunk perm_e[g % C] of epoch e = g // C with
perm_e = default_rng([seed, 0, e]).permutation(C), and builds the instance
with rng = default_rng([seed, 1, g]). g never repeats, so every epoch pairs
and masks each chunk afresh (dynamic masking). Process p of P builds rows
[p * G/P, (p + 1) * G/P) of each step. Evaluation (`mlm_eval_batches`) reads
the chunks in order with rng = default_rng([seed, 2, i]) for chunk i, so it
is identical on every call.

Batch dict (numpy, B rows): inputs, token_types, segment_ids (1 at real
tokens, 0 at padding: the attention mask), positions: int32 [B, T];
masked_positions, masked_targets: int32 [B, P]; masked_weights: float32
[B, P]; nsp_labels: int32 [B]; nsp_weights: float32 [B] (0 for filler rows).

The builders take the `Tokenizer` (it must have [CLS]/[SEP]/[MASK], see
`train_tokenizer(..., bert_specials=True)`): it supplies the special ids,
the vocabulary for random replacements, and the word starts for whole-word
masking, so callers cannot pass ids and tables that disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from lm.data import masking
from lm.data.pipeline import check_process_slice
from lm.data.segments import SegmentStream
from lm.errors import LmError

KEYS = ("inputs", "token_types", "segment_ids", "positions",
        "masked_positions", "masked_targets", "masked_weights", "nsp_labels",
        "nsp_weights")


def default_max_predictions(seq_len: int, mask_rate: float) -> int:
  """Masked positions per row when not configured: ceil(seq_len * mask_rate),
  ignoring float noise. Example: (128, 0.15) -> 20; (100, 0.15) -> 15."""
  return math.ceil(round(seq_len * mask_rate, 6))


def max_tokens(seq_len: int, nsp: bool) -> int:
  """Tokens of text per row: seq_len minus [CLS] and one or two [SEP].

  Example: (128, True) -> 125; (128, False) -> 126.
  """
  return seq_len - (3 if nsp else 2)


def make_chunks(stream: SegmentStream, max_len: int) -> np.ndarray:
  """[C, 3] int64 rows (document, first segment, end segment) of the chunks.

  Within each document, consecutive segments are grouped until the group has
  at least `max_len` tokens (or the document ends); groups of fewer than 2
  tokens are dropped.

  Example: one document with segment lengths [3, 2, 4, 1], max_len 5 ->
  [[0, 0, 2], [0, 2, 4]] (3 + 2 tokens, then 4 + 1).
  """
  seg_starts = np.asarray(stream.seg_starts, np.int64)
  doc_starts = np.asarray(stream.doc_starts, np.int64)
  doc_tokens = seg_starts[doc_starts[1:]] - seg_starts[doc_starts[:-1]]
  short = doc_tokens < max_len  # one chunk each: the whole document
  parts = [np.stack([np.flatnonzero(short), doc_starts[:-1][short],
                     doc_starts[1:][short]], axis=1)]
  long_chunks = []
  for d in np.flatnonzero(~short).tolist():
    s, e = int(doc_starts[d]), int(doc_starts[d + 1])
    while s < e:
      j = int(np.searchsorted(seg_starts, seg_starts[s] + max_len, "left"))
      j = min(max(j, s + 1), e)
      long_chunks.append((d, s, j))
      s = j
  parts.append(np.asarray(long_chunks, np.int64).reshape(-1, 3))
  chunks = np.concatenate(parts)
  chunks = chunks[np.lexsort((chunks[:, 1], chunks[:, 0]))]
  n_tokens = seg_starts[chunks[:, 2]] - seg_starts[chunks[:, 1]]
  return chunks[n_tokens >= 2]


def _truncate(a: int, b: int, limit: int) -> tuple[int, int]:
  """Lengths after trimming the longer of A, B (ties: B) until a + b <= limit.

  Example: (5, 5, 7) -> (4, 3); (10, 2, 6) -> (4, 2).
  """
  excess = a + b - limit
  if excess <= 0:
    return a, b
  first = min(excess, abs(a - b))  # the longer side down to the shorter
  if a > b:
    a -= first
  else:
    b -= first
  rest = excess - first  # then alternately, B first
  return a - rest // 2, b - (rest + 1) // 2


class RowBuilder:
  """Builds rows (see the module docstring) from chunk indices and rngs."""

  def __init__(self, stream: SegmentStream | None, tokenizer: Any, *,
               seq_len: int,
               nsp: bool, mask_rate: float, mask_token_rate: float,
               random_token_rate: float, whole_word: bool,
               max_predictions: int, short_seq_prob: float):
    if not getattr(tokenizer, "has_bert_specials", False):
      raise LmError(f"Tokenizer {getattr(tokenizer, 'path', tokenizer)} has "
                    "no [CLS]/[SEP]/[MASK] pieces, which masked-LM training "
                    "needs; train one with bert_specials=True (leave "
                    "--config.data.tokenizer.path empty in a new workdir).")
    masking.check_rates(mask_rate, mask_token_rate, random_token_rate)
    if not 0.0 <= short_seq_prob <= 1.0:
      raise LmError(f"config.mlm.short_seq_prob is {short_seq_prob}, outside "
                    "[0, 1]; set --config.mlm.short_seq_prob to a probability.")
    if max_predictions < 0:
      raise LmError(f"config.mlm.max_predictions is {max_predictions}; use a "
                    "non-negative number (0 means ceil(seq_len * mask_rate)).")
    min_len = 5 if nsp else 4
    if seq_len < min_len:
      raise LmError(f"seq_len {seq_len} is too short for masked-LM rows "
                    f"({'[CLS] A [SEP] B [SEP]' if nsp else '[CLS] X [SEP]'} "
                    f"needs at least {min_len}); raise --config.seq_len.")
    if stream is not None and nsp and stream.n_docs < 2:
      raise LmError(f"Next-sentence prediction needs at least two documents, "
                    f"but the corpus has {stream.n_docs}; add data (or split "
                    "it with --config.mlm.documents=blank_lines) or set "
                    "--config.mlm.nsp=False.")
    self.stream = stream
    self.seq_len = int(seq_len)
    self.nsp = bool(nsp)
    self.max_len = max_tokens(seq_len, nsp)
    if stream is not None:   # None: rows from segment data given per call
      self.chunks = make_chunks(stream, self.max_len)
      if not self.chunks.shape[0]:
        raise LmError("The corpus has no document with at least 2 tokens; "
                      "use a larger corpus (--config.data.train).")
    self.mask_rate = float(mask_rate)
    self.mask_token_rate = float(mask_token_rate)
    self.random_token_rate = float(random_token_rate)
    self.short_seq_prob = float(short_seq_prob)
    self.max_predictions = (int(max_predictions)
                            or default_max_predictions(seq_len, mask_rate))
    self.cls_id = int(tokenizer.cls_id)
    self.sep_id = int(tokenizer.sep_id)
    self.mask_id = int(tokenizer.mask_id)
    self.pad_id = int(tokenizer.pad_id)
    vocab = int(tokenizer.vocab_size)
    specials = np.asarray(tokenizer.special_ids, np.int64)
    self.is_special = np.zeros(max(vocab, int(specials.max()) + 1), bool)
    self.is_special[specials] = True
    self.vocab_ids = np.setdiff1d(np.arange(vocab), specials).astype(np.int32)
    self.tables = None
    if whole_word:
      self.tables = (masking.word_start_table(tokenizer),
                     masking.standalone_table(tokenizer))

  @property
  def n_chunks(self) -> int:
    return int(self.chunks.shape[0])

  def empty(self, n: int) -> dict[str, np.ndarray]:
    """`n` all-padding rows (weights 0)."""
    t, p = self.seq_len, self.max_predictions
    out = {k: np.zeros((n, t), np.int32)
           for k in ("inputs", "token_types", "segment_ids", "positions")}
    out.update(masked_positions=np.zeros((n, p), np.int32),
               masked_targets=np.zeros((n, p), np.int32),
               masked_weights=np.zeros((n, p), np.float32),
               nsp_labels=np.zeros(n, np.int32),
               nsp_weights=np.zeros(n, np.float32))
    if self.pad_id:
      out["inputs"][:] = self.pad_id
    return out

  def _span(self, first: int, end: int, keep_last: bool = False,
            data=None) -> np.ndarray:
    """Tokens of segments [first, end) of `data` (the stream by default),
    at most max_len of them (the first ones, or the last ones with
    `keep_last`; truncation never needs more)."""
    data = self.stream if data is None else data
    ss = data.seg_starts
    lo, hi = int(ss[first]), int(ss[end])
    if hi - lo > self.max_len:
      lo, hi = (hi - self.max_len, hi) if keep_last else (lo, lo + self.max_len)
    return np.asarray(data.tokens[lo:hi], np.int32)

  def _other(self, d: int, rng: np.random.Generator):
    """(segment data, document) of the random B: a uniform other document
    of the stream."""
    n_docs = self.stream.n_docs
    other = int(rng.integers(0, n_docs - 1))
    return self.stream, other + (other >= d)

  def pair(self, chunk, rng: np.random.Generator, data=None, other=None
            ) -> tuple[np.ndarray, np.ndarray | None, int]:
    """(A, B or None without NSP, nsp label) for `chunk` = (document, first
    segment, end segment) of `data` (the stream by default); `other(d, rng)`
    picks the segment data and document of a random B (`_other` by
    default)."""
    data = self.stream if data is None else data
    d, first, end = (int(x) for x in chunk)
    ss = np.asarray(data.seg_starts, np.int64)
    target = self.max_len
    if rng.random() < self.short_seq_prob and self.max_len > 2:
      target = int(rng.integers(2, self.max_len))
    # The first k segments of the chunk that reach the target (>= 2 tokens).
    cum = ss[first + 1:end + 1] - ss[first]
    k = min(int(np.searchsorted(cum, max(target, 2), "left")) + 1, end - first)
    if not self.nsp:
      return self._span(first, first + k, data=data), None, 0
    if k >= 2:
      a_end = first + int(rng.integers(1, k))
      a = self._span(first, a_end, keep_last=True, data=data)
      rest = self._span(a_end, first + k, data=data)
    else:
      seg = np.asarray(data.tokens[int(ss[first]):int(ss[first + 1])],
                       np.int32)
      cut = int(rng.integers(1, seg.shape[0]))
      a, rest = seg[max(0, cut - self.max_len):cut], seg[cut:cut + self.max_len]
    if rng.random() < 0.5:
      return a, rest, 0
    odata, o = (other or self._other)(d, rng)
    oss = np.asarray(odata.seg_starts, np.int64)
    lo, hi = int(odata.doc_starts[o]), int(odata.doc_starts[o + 1])
    start = int(rng.integers(lo, hi))
    need = max(target - a.shape[0], 1)
    stop = int(np.searchsorted(oss, oss[start] + need, "left"))
    return a, self._span(start, min(max(stop, start + 1), hi), data=odata), 1

  def fill(self, out: dict[str, np.ndarray], r: int, c: int,
           rng: np.random.Generator) -> None:
    """Writes the instance of chunk `c` into row `r` of `out` (from `empty`)."""
    self.write(out, r, self.pair(self.chunks[c], rng), rng)

  def write(self, out: dict[str, np.ndarray], r: int, pair,
            rng: np.random.Generator) -> None:
    """Writes the row of `pair` = (A, B or None, label), masked with `rng`,
    into row `r` of `out`."""
    a, b, label = pair
    if b is None:
      n_a = min(a.shape[0], self.max_len)
      n_b = 0
      parts = [[self.cls_id], a[:n_a], [self.sep_id]]
    else:
      n_a, n_b = _truncate(a.shape[0], b.shape[0], self.max_len)
      parts = [[self.cls_id], a[a.shape[0] - n_a:], [self.sep_id], b[:n_b],
               [self.sep_id]]
    row = np.concatenate(parts).astype(np.int32)
    n = row.shape[0]
    maskable = ~self.is_special[row]
    maskable[[0, n_a + 1, n - 1]] = False
    starts = None
    if self.tables is not None:
      starts = masking.word_starts(row, *self.tables)
    m = masking.mask_tokens(
        row, maskable, rng, mask_id=self.mask_id, vocab_ids=self.vocab_ids,
        max_predictions=self.max_predictions, mask_rate=self.mask_rate,
        mask_token_rate=self.mask_token_rate,
        random_token_rate=self.random_token_rate, word_starts=starts)
    out["inputs"][r, :n] = m["inputs"]
    if b is not None:
      out["token_types"][r, n_a + 2:n] = 1
    out["segment_ids"][r, :n] = 1
    out["positions"][r, :n] = np.arange(n, dtype=np.int32)
    for k in ("masked_positions", "masked_targets", "masked_weights"):
      out[k][r] = m[k]
    out["nsp_labels"][r] = label
    out["nsp_weights"][r] = 1.0


class MlmBatches:
  """This process's rows of the global masked-LM (+ NSP) batch, by step.

  Args:
    stream: the `SegmentStream` of the training corpus.
    tokenizer: a `Tokenizer` with [CLS]/[SEP]/[MASK] (special ids, vocabulary
      for random replacements, word starts for `whole_word`).
    global_batch_size: G, rows per step over all processes.
    seq_len: T, row length including [CLS] and [SEP]s.
    seed: the data seed (a non-negative int).
    nsp: build sentence pairs with NSP labels (BERT) or single spans
      (RoBERTa).
    mask_rate, mask_token_rate, random_token_rate, whole_word: see
      `masking.mask_tokens`.
    max_predictions: P, masked positions per row; 0 -> ceil(T * mask_rate).
    short_seq_prob: probability of a shorter target length.
    process_index, process_count: this process's slice of each step.

  Example: MlmBatches(stream, tok, global_batch_size=8, seq_len=128,
  seed=0).batch(3) -> {"inputs": [8, 128] int32, ..., "nsp_weights": [8]}
  (see the module docstring for the keys and the row scheme).
  """

  def __init__(self, stream: SegmentStream, tokenizer: Any, *,
               global_batch_size: int, seq_len: int, seed: int,
               nsp: bool = True, mask_rate: float = 0.15,
               mask_token_rate: float = 0.8, random_token_rate: float = 0.1,
               whole_word: bool = False, max_predictions: int = 0,
               short_seq_prob: float = 0.1, process_index: int = 0,
               process_count: int = 1):
    check_process_slice(global_batch_size, process_index, process_count)
    if int(seed) < 0:
      raise LmError(f"The data seed must be non-negative, got {seed}; set "
                    "--config.seed.")
    self._rows = RowBuilder(
        stream, tokenizer, seq_len=seq_len, nsp=nsp, mask_rate=mask_rate,
        mask_token_rate=mask_token_rate, random_token_rate=random_token_rate,
        whole_word=whole_word, max_predictions=max_predictions,
        short_seq_prob=short_seq_prob)
    self.stream = stream
    self.global_batch_size = int(global_batch_size)
    self.seq_len = int(seq_len)
    self.seed = int(seed)
    self.nsp = bool(nsp)
    self.max_predictions = self._rows.max_predictions
    self.process_index = int(process_index)
    self.process_count = int(process_count)
    self.local_batch_size = self.global_batch_size // self.process_count
    self.n_chunks = self._rows.n_chunks
    self._perms: dict[int, np.ndarray] = {}

  @property
  def chunks(self) -> np.ndarray:
    """[C, 3] (document, first segment, end segment), see `make_chunks`."""
    return self._rows.chunks

  def _perm(self, epoch: int) -> np.ndarray:
    """The chunk order of `epoch` (the last two used are cached)."""
    if epoch not in self._perms:
      if len(self._perms) >= 2:
        self._perms.pop(min(self._perms))
      rng = np.random.default_rng([self.seed, 0, epoch])
      self._perms[epoch] = rng.permutation(self.n_chunks)
    return self._perms[epoch]

  def rows(self, step: int) -> np.ndarray:
    """[L] global row numbers g of this process's rows at `step`."""
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    lo = step * self.global_batch_size + self.process_index * (
        self.local_batch_size)
    return np.arange(lo, lo + self.local_batch_size, dtype=np.int64)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's [L, ...] rows of step `step` (keys: `KEYS`)."""
    out = self._rows.empty(self.local_batch_size)
    for r, g in enumerate(self.rows(step).tolist()):
      epoch, slot = divmod(g, self.n_chunks)
      chunk = int(self._perm(epoch)[slot])
      self._rows.fill(out, r, chunk, np.random.default_rng([self.seed, 1, g]))
    return out

  def epoch(self, step: int) -> float:
    """Passes over the chunks consumed before `step`.

    Example: 100 chunks, G=10 -> epoch(25) == 2.5.
    """
    return step * self.global_batch_size / self.n_chunks

  def state(self, step: int) -> dict:
    """A JSON-able summary for checkpoints. Example: {"step": 3, "epoch":
    0.3, "seed": 0, "n_chunks": 80, "nsp": True, ...}."""
    return {
        "step": int(step),
        "epoch": float(self.epoch(step)),
        "seed": self.seed,
        "n_chunks": int(self.n_chunks),
        "n_docs": int(self.stream.n_docs),
        "n_segments": int(self.stream.n_segments),
        "n_tokens": int(len(self.stream)),
        "seq_len": self.seq_len,
        "global_batch_size": self.global_batch_size,
        "nsp": self.nsp,
    }


def mlm_eval_batches(stream: SegmentStream, tokenizer: Any, *,
                     batch_size: int, seq_len: int, seed: int = 0,
                     max_batches: int | None = None, nsp: bool = True,
                     mask_rate: float = 0.15, mask_token_rate: float = 0.8,
                     random_token_rate: float = 0.1, whole_word: bool = False,
                     max_predictions: int = 0, short_seq_prob: float = 0.1
                     ) -> Iterator[dict[str, np.ndarray]]:
  """Evaluation batches: every chunk once, in order, identical on each call.

  Chunk i is built with rng default_rng([seed, 2, i]) (options as in
  `MlmBatches`). The last batch is filled with all-padding rows whose
  nsp_weights and masked_weights are 0. Stops after `max_batches` (None:
  all).

  Example: 5 chunks, batch_size 2 -> 3 batches; the third holds chunk 4 and
  one filler row (nsp_weights [1, 0]).
  """
  if batch_size < 1:
    raise LmError(f"Eval batch size must be positive, got {batch_size}.")
  if int(seed) < 0:
    raise LmError(f"The data seed must be non-negative, got {seed}; set "
                  "--config.seed.")
  rows = RowBuilder(
      stream, tokenizer, seq_len=seq_len, nsp=nsp, mask_rate=mask_rate,
      mask_token_rate=mask_token_rate, random_token_rate=random_token_rate,
      whole_word=whole_word, max_predictions=max_predictions,
      short_seq_prob=short_seq_prob)
  n_batches = math.ceil(rows.n_chunks / batch_size)
  if max_batches is not None:
    n_batches = min(n_batches, max_batches)
  for b in range(n_batches):
    out = rows.empty(batch_size)
    for r in range(batch_size):
      i = b * batch_size + r
      if i < rows.n_chunks:
        rows.fill(out, r, i, np.random.default_rng([int(seed), 2, i]))
    yield out
