"""Streamed masked-LM (+ NSP) input: BERT pretraining rows built while
training runs, with nothing tokenized before step 1 (`data.pipeline =
"stream"` with `objective = "mlm"`).

It is the causal streaming pipeline (`lm.data.streaming`: G row streams
over a seeded document order, rounds of documents read and tokenized in
Grain threads and worker processes, each process reading only its own
streams' documents) with BERT's rows in place of packed windows:

  * A source document is split into documents and segments
    (`config.mlm.documents` / `segments`, as `lm.data.segments`) and each
    segment is tokenized, in the Grain map (`ReadSegments`).
  * Its segments are grouped into chunks of up to max_tokens tokens
    (`nsp.make_chunks`), and stream r's rows are the chunks of its
    documents in order: one row per chunk, the instance built as in
    `lm.data.nsp` (target length, the A|B split, truncation, masking).
  * NSP's random B ("another document") is a uniform document of the
    stream's next source document whose id differs from this one's, so it
    comes from a round the stream reads anyway (the packed pipeline draws
    it from the whole corpus, which a stream does not hold).
  * The row's generator is default_rng([seed, 3, r, k, c]) for chunk c of
    stream r's k-th document: the masking and pairing of a row depend only
    on the seed and where the row is, not on the step, the process count
    or the workers, and k never repeats, so every epoch masks afresh.

A stream's state is (k, c): its next row is chunk c of its k-th document;
the checkpoint stores all G pairs (`RowStreams.state`), so a kill -9
resume is bitwise the uninterrupted run and a run resumed on another
process count sees the same global batches.

Evaluation builds the segment stream of the eval split's first documents
in order, stopping once the chunks the eval batches need are there (all
of them without `eval_steps`), and runs `nsp.mlm_eval_batches` over it.
"""

from __future__ import annotations

import numpy as np

from lm.data import nsp as nsp_lib, segments as segments_lib
from lm.data.streaming import RowStreams, StreamCorpus, InOrder, close_iter
from lm.errors import LmError


class ReadSegments:
  """Grain map: round k -> for each of streams lo .. lo + n - 1 (of G), its
  k-th document as (document id, `SegmentStream` or None, chunks [C, 3]).
  Picklable, so worker processes run it.

  Example: a round of "a b.\\n\\nc d.\\n" and "" (blank_lines, lines) ->
  [(7, stream of 2 documents, 2 chunks), (3, None, empty chunks)].
  """

  def __init__(self, source, tokenizer, order, lo: int, n: int,
               global_rows: int, *, documents: str, segments: str,
               max_len: int):
    self.source, self.tokenizer, self.order = source, tokenizer, order
    self.lo, self.n, self.global_rows = lo, n, global_rows
    self.documents, self.segments, self.max_len = documents, segments, max_len

  def __call__(self, k: int):
    g = int(k) * self.global_rows + self.lo + np.arange(self.n, dtype=np.int64)
    ids = self.order.take(g)
    texts = [self.source[int(d)] if d >= 0 else "" for d in ids]
    streams = segments_lib.encode_texts(
        texts, self.tokenizer, documents=self.documents,
        segments=self.segments)
    out = []
    for d, s in zip(ids.tolist(), streams):
      chunks = (np.zeros((0, 3), np.int64) if s is None
                else nsp_lib.make_chunks(s, self.max_len))
      out.append((int(d), s, chunks))
    return out


def _check_nsp(corpus: StreamCorpus, nsp: bool) -> None:
  if nsp and corpus.n_docs < 2:
    raise LmError(f"Next-sentence prediction needs at least two documents, "
                  f"but {corpus.source.uri!r} has {corpus.n_docs}; add data "
                  "or set --config.mlm.nsp=False.")


class MlmStreamBatches(RowStreams):
  """This process's masked-LM rows of each step's global batch, streamed
  (module docstring); the keys of `lm.data.nsp.KEYS`.

  Args:
    corpus: the `StreamCorpus` of the training split.
    tokenizer: a tokenizer with [CLS]/[SEP]/[MASK].
    documents, segments: how source documents are split (config.mlm).
    data_state: the checkpoint's data position, None for a fresh run.
    The rest as `lm.data.nsp.MlmBatches`.

  Example: MlmStreamBatches(corpus, tok, global_batch_size=8, seq_len=64,
  seed=0, documents="source", segments="lines").batch(0)["inputs"] ->
  [8, 64] int32.
  """

  def __init__(self, corpus: StreamCorpus, tokenizer, *,
               global_batch_size: int, seq_len: int, seed: int,
               documents: str, segments: str, mode: str = "shuffle",
               nsp: bool = True, mask_rate: float = 0.15,
               mask_token_rate: float = 0.8, random_token_rate: float = 0.1,
               whole_word: bool = False, max_predictions: int = 0,
               short_seq_prob: float = 0.1, process_index: int = 0,
               process_count: int = 1, data_state: dict | None = None):
    if int(seed) < 0:
      raise LmError(f"The data seed must be non-negative, got {seed}; set "
                    "--config.seed.")
    _check_nsp(corpus, nsp)
    self.rows = nsp_lib.RowBuilder(
        None, tokenizer, seq_len=seq_len, nsp=nsp, mask_rate=mask_rate,
        mask_token_rate=mask_token_rate, random_token_rate=random_token_rate,
        whole_word=whole_word, max_predictions=max_predictions,
        short_seq_prob=short_seq_prob)
    self.seq_len, self.nsp = int(seq_len), bool(nsp)
    self.max_predictions = self.rows.max_predictions
    super().__init__(
        corpus, global_batch_size=global_batch_size, seed=seed, mode=mode,
        process_index=process_index, process_count=process_count,
        data_state=data_state,
        fn_factory=lambda order, lo, n, g: ReadSegments(
            corpus.source, tokenizer, order, lo, n, g, documents=documents,
            segments=segments, max_len=self.rows.max_len))

  def item(self, stored, j: int):
    return stored[j]

  def _no_documents(self) -> LmError:
    return LmError(f"Data source {self.corpus.source.uri!r} has no document "
                   "with at least 2 tokens; check the data URI and field.")

  def _other(self, k: int, j: int, doc_id: int, rng):
    """NSP's random B: a uniform document of stream j's next source
    document after k that has segments and another id."""
    for k2 in range(k + 1, k + 2 + 2 * self.corpus.n_docs):
      d2, s2, _ = self._doc(k2, j)
      if s2 is not None and d2 != doc_id:
        return s2, int(rng.integers(0, s2.n_docs))
    raise LmError(f"Next-sentence prediction needs at least two non-empty "
                  f"documents in {self.corpus.source.uri!r}; add data or set "
                  "--config.mlm.nsp=False.")

  def _fill(self, out, j: int) -> None:
    k, c = int(self.k[j]), int(self.t[j])
    for _ in range(self.corpus.n_docs + 1):
      doc_id, segs, chunks = self._doc(k, j)
      if c < chunks.shape[0]:
        break
      k, c = k + 1, 0
    else:
      raise self._no_documents()
    rng = np.random.default_rng([self.seed, 3, self.lo + j, k, c])
    pair = self.rows.pair(
        chunks[c], rng, data=segs,
        other=lambda d, g: self._other(k, j, doc_id, g))
    self.rows.write(out, j, pair, rng)
    self.k[j], self.t[j] = (k, c + 1) if c + 1 < chunks.shape[0] else (k + 1, 0)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's [L, ...] rows of `step` (the next step only)."""
    self._step(step)
    out = self.rows.empty(self.local)
    for j in range(self.local):
      self._fill(out, j)
    self._stepped()
    return out

  def state_extra(self) -> dict:
    return {"seq_len": self.seq_len, "nsp": self.nsp}


def eval_stream(corpus: StreamCorpus, *, documents: str, segments: str,
                max_len: int, chunks_needed: int | None):
  """The segment stream of the eval split's documents in order, stopping
  once `chunks_needed` chunks are there (None: every document); memoized
  on the corpus."""
  key = ("mlm", documents, segments, max_len, chunks_needed)
  memo = corpus.memo
  if key in memo:
    return memo[key]
  per_round = 64
  fn = ReadSegments(corpus.source, corpus.tokenizer, InOrder(corpus.n_docs),
                    0, per_round, per_round, documents=documents,
                    segments=segments, max_len=max_len)
  parts, n_chunks = [], 0
  it = corpus.rounds(fn, 0, -(-corpus.n_docs // per_round))
  try:
    for round_ in it:
      for _, s, chunks in round_:
        if s is not None:
          parts.append(s)
          n_chunks += chunks.shape[0]
      if chunks_needed is not None and n_chunks >= chunks_needed:
        break
  finally:
    close_iter(it)
  if not n_chunks:
    raise LmError(f"Data source {corpus.source.uri!r} has no document with "
                  "at least 2 tokens; check the data URI and field.")
  stream = segments_lib.concat_segment_streams(parts)
  memo.clear()
  memo[key] = stream
  return stream


def eval_batches(corpus: StreamCorpus, tokenizer, *, batch_size: int,
                 seq_len: int, seed: int, max_batches: int | None,
                 documents: str, segments: str, nsp: bool = True, **options):
  """`nsp.mlm_eval_batches` over the eval split's first documents (as many
  as `max_batches` batches need; all of them for None)."""
  need = None if max_batches is None else max_batches * batch_size
  stream = eval_stream(corpus, documents=documents, segments=segments,
                       max_len=nsp_lib.max_tokens(seq_len, nsp),
                       chunks_needed=need)
  return nsp_lib.mlm_eval_batches(
      stream, tokenizer, batch_size=batch_size, seq_len=seq_len, seed=seed,
      max_batches=max_batches, nsp=nsp, **options)
