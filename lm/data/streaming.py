"""Streaming training input on Grain: documents are read, tokenized and
packed while training runs, and nothing is tokenized before step 1.

`data.pipeline = "stream"` selects it (`"packed"`, the default, tokenizes the
corpus once into the data cache and cuts rows from one token stream,
`lm.data.pipeline`). Streaming is for corpora too large to tokenize up
front or to hold: each process reads and tokenizes only the documents its
rows need.

Rows. A step's global batch has G rows (G = `batch_size`), and row r of
every step comes from row stream r: the documents at positions
g = k * G + r (k = 0, 1, 2, ...) of an endless document order, each as
`[bos] + encode(doc) + [eos]` (empty documents skipped), laid end to end.
Stream r's row at its n-th step is the `seq_len + 1` tokens starting at
token n * seq_len of that concatenation, so consecutive rows of a stream
share one token, as the packed pipeline's windows do (concat-and-split
packing). Segment ids, positions and the loss mask are those of
`lm.data.packing.make_rows`: attention and the loss never cross a document
boundary, positions restart at each document and at the row start.

The document order keeps the meaning of `data.sampling`:
  * "shuffle": position g is `perm_e[g % D]` with e = g // D and
    perm_e = default_rng([seed, e]).permutation(D) over the D documents,
    so each epoch reads every document once.
  * "random": every position draws a document uniformly with replacement
    (default_rng([seed, 1, g // 1024]), 1024 positions at a time).

State and resume. A stream's state is (k, t): its next row starts at
token t of its k-th document. The checkpoint stores all G pairs (`state`
gathers them from every process), and a resumed run starts every stream
exactly there, so a kill -9 resume reproduces the uninterrupted run
bitwise. The pairs do not depend on the process count: process p of P
runs only streams [p * G / P, (p + 1) * G / P), reading 1/P of the
documents, and a run resumed on another process count takes its streams'
pairs from the same list, so it sees the same global batches.

Parallelism. The documents a process needs come in rounds: round k is the
k-th document of each of its streams. The rounds are a Grain `MapDataset`
(round index -> document ids -> texts -> token ids, tokenized as one batch)
turned into an `IterDataset` that reads ahead in `data.threads` threads
and, with `data.workers` > 0, in that many worker processes
(`mp_prefetch`), so the training process only cuts rows. The rows do not
depend on the workers or threads: every round is a pure function of its
index.

Evaluation reads the eval split's documents in order, packs them into one
stream and cuts non-overlapping windows from its start
(`lm.data.pipeline.eval_batches`); with `eval_steps` set only the tokens
those batches need are tokenized, once, and kept in memory.
"""

from __future__ import annotations

import numpy as np

from lm.data import packing, pipeline
from lm.data.sources import DocumentSource
from lm.errors import LmError

PIPELINES = ("packed", "stream")
_RANDOM_BLOCK = 1024
_KEY = "streams"


class DocumentOrder:
  """Document ids at positions of the endless order (`data.sampling`).

  Example: DocumentOrder(0, 4, "shuffle").take([0, 4]) -> [perm_0[0],
  perm_1[0]].
  """

  def __init__(self, seed: int, n_docs: int, mode: str):
    if mode not in pipeline.MODES:
      raise LmError(f"Unknown data mode {mode!r}; use one of "
                    f"{list(pipeline.MODES)} (--config.data.sampling).")
    self.seed, self.n_docs, self.mode = int(seed), int(n_docs), mode
    self._perms = pipeline.EpochPermutations(self.seed, self.n_docs)

  def take(self, g) -> np.ndarray:
    g = np.asarray(g, np.int64)
    if self.mode == "shuffle":
      return self._perms.take(g)
    blocks, slots = np.divmod(g, _RANDOM_BLOCK)
    out = np.empty_like(g)
    for b in np.unique(blocks):
      rng = np.random.default_rng([self.seed, 1, int(b)])
      sel = blocks == b
      out[sel] = rng.integers(0, self.n_docs, size=_RANDOM_BLOCK)[slots[sel]]
    return out


class ReadRound:
  """Grain map: round k -> the packed token ids of the k-th document of
  streams `lo .. lo + n - 1` (of G), as (tokens, lengths); an empty
  document has length 0. Picklable, so worker processes run it.

  Example: with n = 2 and documents "ab", "" -> (tokens=[bos, a, b, eos],
  lengths=[4, 0]).
  """

  def __init__(self, source: DocumentSource, tokenizer, order: DocumentOrder,
               lo: int, n: int, global_rows: int):
    self.source, self.tokenizer, self.order = source, tokenizer, order
    self.lo, self.n, self.global_rows = lo, n, global_rows
    self.dtype = packing.token_dtype(tokenizer.vocab_size)

  def __call__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
    g = int(k) * self.global_rows + self.lo + np.arange(self.n, dtype=np.int64)
    ids = self.order.take(g)
    lengths = np.zeros(self.n, np.int64)
    token_ids = getattr(self.source, "token_ids", None)
    if token_ids is not None:     # a prepared corpus: ids, no tokenizing
      docs = [token_ids(int(d)) if d >= 0 else () for d in ids]
      full = [i for i, e in enumerate(docs) if len(e)]
      encoded = [docs[i] for i in full]
    else:
      texts = [self.source[int(d)] if d >= 0 else "" for d in ids]
      full = [i for i, t in enumerate(texts) if t]
      encoded = (self.tokenizer.encode_batch([texts[i] for i in full])
                 if full else [])
    if not full:
      return np.zeros(0, self.dtype), lengths
    tokens, _ = packing.pack_encoded(
        encoded, self.tokenizer.bos_id, self.tokenizer.eos_id, self.dtype)
    lengths[full] = [len(e) + 2 for e in encoded]
    return tokens, lengths


class StreamCorpus:
  """A document source streamed for one objective: what `open_data`
  returns in stream mode. `n_docs` documents; eval streams are memoized.

  Example: StreamCorpus(src, tok).n_docs -> 1000.
  """

  def __init__(self, source: DocumentSource, tokenizer, *,
               cache_dir: str | None = None, workers: int = 0,
               threads: int = 2):
    prepare = getattr(source, "prepare", None)
    if prepare is not None:   # an offset-indexed file source
      prepare(cache_dir)
    self.source, self.tokenizer = source, tokenizer
    self.n_docs = len(source)
    if not self.n_docs:
      raise LmError(f"Data source {source.uri!r} has no documents; check "
                    "the data URI and field.")
    if workers < 0 or threads < 0:
      raise LmError(f"data.workers={workers} and data.threads={threads} "
                    "must be >= 0; set --config.data.workers (worker "
                    "processes, 0 = none) and --config.data.threads.")
    self.workers, self.threads = int(workers), int(threads)
    self.memo: dict = {}

  def record(self) -> dict:
    """What a run records of its training data (instead of a token count)."""
    return {"train_documents": self.n_docs}

  def describe(self) -> str:
    return f"{self.n_docs:,} documents, streamed"

  def rounds(self, fn, start: int, stop: int):
    """Grain iterator over `fn(k)` for k in [start, stop), read ahead."""
    import grain  # pylint: disable=g-import-not-at-top  (stream mode only)
    ds = grain.MapDataset.range(start, stop).map(fn).to_iter_dataset(
        grain.ReadOptions(num_threads=self.threads,
                          prefetch_buffer_size=max(2, 2 * self.threads)))
    if self.workers:
      from absl import flags  # pylint: disable=g-import-not-at-top
      if not flags.FLAGS.is_parsed():   # Grain's workers read its flags;
        flags.FLAGS.mark_as_parsed()    # outside an absl app, the defaults
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(
          num_workers=self.workers, per_worker_buffer_size=2))
    return iter(ds)

  def eval_stream(self, tokens_needed: int | None) -> packing.TokenStream:
    """The documents in order, packed, stopping once `tokens_needed`
    tokens are there (None: every document); memoized."""
    if tokens_needed in self.memo:
      return self.memo[tokens_needed]
    per_round = 64
    fn = ReadRound(self.source, self.tokenizer,
                   InOrder(self.n_docs), 0, per_round, per_round)
    parts, starts, total = [], [], 0
    n_rounds = -(-self.n_docs // per_round)
    it = self.rounds(fn, 0, n_rounds)
    try:
      for tokens, lengths in it:
        lengths = lengths[lengths > 0]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        parts.append(tokens)
        starts.append(offsets + total)
        total += int(tokens.shape[0])
        if tokens_needed is not None and total >= tokens_needed:
          break
    finally:
      close_iter(it)
    if not total:
      raise LmError(f"Data source {self.source.uri!r} has no non-empty "
                    "documents; check the data URI and field.")
    stream = packing.TokenStream(np.concatenate(parts),
                                 np.concatenate(starts).astype(np.int64))
    self.memo = {tokens_needed: stream}
    return stream


class InOrder:
  """Document order 0, 1, 2, ... (evaluation), clipped to the last."""

  def __init__(self, n_docs: int):
    self.n_docs = n_docs

  def take(self, g) -> np.ndarray:
    g = np.asarray(g, np.int64)
    return np.where(g < self.n_docs, g, -1)


def close_iter(it) -> None:
  close = getattr(it, "close", None)
  if close is not None:
    close()


class RowStreams:
  """The row streams of this process's slice of each step (module
  docstring): every stream's position (k, t), the rounds of documents read
  ahead by `fn` (round k -> what stream j needs of its k-th document,
  `item(stored, j)`), and the data position a checkpoint stores. Steps are
  read in order from the start step (0, or the checkpoint's `data_state`);
  `state(step)` after `batch(step - 1)`. Subclasses cut the rows.
  """

  def __init__(self, corpus: StreamCorpus, *, global_batch_size: int,
               seed: int, mode: str, process_index: int, process_count: int,
               data_state: dict | None, fn_factory):
    pipeline.check_process_slice(global_batch_size, process_index,
                                 process_count)
    self.corpus = corpus
    self.global_batch_size = int(global_batch_size)
    self.seed, self.mode = int(seed), mode
    self.process_count = process_count
    self.local = global_batch_size // process_count
    self.lo = process_index * self.local
    self.order = DocumentOrder(seed, corpus.n_docs, mode)
    g = global_batch_size
    if data_state is None:
      self.next_step = 0
      pairs = np.zeros((g, 2), np.int64)
    else:
      pairs = np.asarray(data_state.get(_KEY, []), np.int64)
      if pairs.shape != (g, 2):
        raise LmError(f"the checkpoint's data position holds {len(pairs)} "
                      f"row streams, not config.batch_size={g}; resume with "
                      "the batch size it was trained with.")
      self.next_step = int(data_state["step"])
    self.k = pairs[self.lo:self.lo + self.local, 0].copy()
    self.t = pairs[self.lo:self.lo + self.local, 1].copy()
    self._fn = fn_factory(self.order, self.lo, self.local, g)
    self._rounds: dict[int, object] = {}
    self._it = None
    self._next_round = 0

  def store(self, payload):
    """What is kept of a round's payload (by default all of it)."""
    return payload

  def item(self, stored, j: int):
    """Stream j's part of a stored round."""
    raise NotImplementedError

  def _doc(self, k: int, j: int):
    """Stream j's k-th document, as `item` gives it."""
    if self._it is None:
      first = int(self.k.min())
      self._it = self.corpus.rounds(self._fn, first, 1 << 50)
      self._next_round = first
    while k not in self._rounds:
      self._rounds[self._next_round] = self.store(next(self._it))
      self._next_round += 1
    return self.item(self._rounds[k], j)

  def _evict(self) -> None:
    low = int(self.k.min())
    for k in [k for k in self._rounds if k < low]:
      del self._rounds[k]

  def _step(self, step: int) -> None:
    if step != self.next_step:
      raise ValueError(f"streamed batches are read in order: step {step} "
                       f"asked, {self.next_step} next")

  def _stepped(self) -> None:
    self._evict()
    self.next_step += 1

  def epoch(self, step: int) -> float:
    """Passes over the documents, estimated from this process's streams."""
    del step
    return float(self.k.mean()) * self.global_batch_size / self.corpus.n_docs

  def state_extra(self) -> dict:
    """Settings recorded with the data position (subclasses add theirs)."""
    return {}

  def state(self, step: int) -> dict:
    """The JSON data position at `step` (the next step), every stream's
    (k, t) gathered from all processes."""
    if step != self.next_step:
      raise ValueError(f"state of step {step} asked at step {self.next_step}")
    local = np.stack([self.k, self.t], axis=1).astype(np.int64)
    if self.process_count > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      pairs = np.asarray(multihost_utils.process_allgather(local)).reshape(
          -1, 2)
    else:
      pairs = local
    return {"step": int(step), "epoch": self.epoch(step), "mode": self.mode,
            "seed": self.seed, "pipeline": "stream",
            "documents": int(self.corpus.n_docs),
            "global_batch_size": int(self.global_batch_size),
            **self.state_extra(), _KEY: pairs.tolist()}

  def close(self) -> None:
    if self._it is not None:
      close_iter(self._it)
      self._it = None


class StreamBatches(RowStreams):
  """This process's causal rows of each step's global batch, streamed
  (module docstring; the steps and state of `RowStreams`).

  Example: G = 4 rows on 2 processes: process 1 runs streams 2 and 3, and
  `batch(0)["inputs"]` is their first rows, [2, seq_len] int32.
  """

  def __init__(self, corpus: StreamCorpus, *, global_batch_size: int,
               seq_len: int, seed: int, mode: str = "shuffle",
               process_index: int = 0, process_count: int = 1,
               data_state: dict | None = None):
    if seq_len < 1:
      raise LmError(f"seq_len must be positive, got {seq_len}; set "
                    "--config.seq_len.")
    self.seq_len = seq_len
    super().__init__(
        corpus, global_batch_size=global_batch_size, seed=seed, mode=mode,
        process_index=process_index, process_count=process_count,
        data_state=data_state,
        fn_factory=lambda order, lo, n, g: ReadRound(
            corpus.source, corpus.tokenizer, order, lo, n, g))

  def store(self, payload):
    tokens, lengths = payload
    return tokens, np.cumsum(lengths)

  def item(self, stored, j: int) -> np.ndarray:
    """Stream j's document (packed ids; empty for an empty text)."""
    tokens, ends = stored
    return tokens[(ends[j - 1] if j else 0):ends[j]]

  def _row(self, j: int):
    """Stream j's next row: (window [T+1], piece lengths), cursor moved."""
    need, t_len = self.seq_len + 1, self.seq_len
    k, t = int(self.k[j]), int(self.t[j])
    pieces, got, moved, empty = [], 0, None, 0
    while got < need:
      doc = self._doc(k, j)
      if not len(doc):
        empty += 1
        if empty > self.corpus.n_docs:
          raise LmError(f"Data source {self.corpus.source.uri!r} has no "
                        "non-empty documents; check the data URI and field.")
        k, t = k + 1, 0
        continue
      empty = 0
      n = min(len(doc) - t, need - got)
      if moved is None and got + n >= t_len:
        at = t + (t_len - got)
        moved = (k + 1, 0) if at == len(doc) else (k, at)
      pieces.append(doc[t:t + n])
      got += n
      k, t = (k + 1, 0) if t + n == len(doc) else (k, t + n)
    self.k[j], self.t[j] = moved
    return pieces

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's [L, seq_len] rows of `step` (the next step only)."""
    self._step(step)
    rows = [self._row(j) for j in range(self.local)]
    self._stepped()
    return _rows(rows, self.seq_len)

  def state_extra(self) -> dict:
    return {"seq_len": int(self.seq_len)}


def _rows(rows, seq_len: int) -> dict[str, np.ndarray]:
  """Rows (each a list of document pieces covering seq_len + 1 tokens) as
  the `make_rows` arrays."""
  r = len(rows)
  window = np.empty((r, seq_len + 1), np.int32)
  segment = np.empty((r, seq_len + 1), np.int32)
  position = np.empty((r, seq_len + 1), np.int32)
  for i, pieces in enumerate(rows):
    window[i] = np.concatenate(pieces)
    lengths = [len(p) for p in pieces]
    segment[i] = np.repeat(np.arange(1, len(pieces) + 1), lengths)
    position[i] = np.concatenate([np.arange(n) for n in lengths])
  return {
      "inputs": np.ascontiguousarray(window[:, :-1]),
      "targets": np.ascontiguousarray(window[:, 1:]),
      "segment_ids": np.ascontiguousarray(segment[:, :-1]),
      "positions": np.ascontiguousarray(position[:, :-1]),
      "loss_mask": (segment[:, :-1] == segment[:, 1:]).astype(np.float32),
  }


def eval_batches(corpus: StreamCorpus, *, batch_size: int, seq_len: int,
                 max_batches: int | None):
  """The eval split's windows in order (`pipeline.eval_batches` over the
  documents packed in order), tokenizing only what `max_batches` needs."""
  need = None if max_batches is None else max_batches * batch_size * seq_len + 1
  stream = corpus.eval_stream(need)
  return pipeline.eval_batches(stream, batch_size=batch_size, seq_len=seq_len,
                               max_batches=max_batches)
