"""Segment streams: documents split into segments, tokenized per segment.

Masked-LM pretraining with next-sentence prediction needs sentence-like
units and document boundaries, not one flat stream. Each source document is
split into documents (`split_documents`, config.mlm.documents), each document
into segments (`split_segments`, config.mlm.segments), and every segment is
tokenized on its own (no bos/eos). The result is one flat token array with
two offset tables (`SegmentStream`):

  tokens      [N]    the token ids of all segments, end to end;
  seg_starts  [S+1]  offset in `tokens` of each segment's first token, then N;
  doc_starts  [D+1]  index of each document's first segment, then S.

Example: documents "ab\\ncd\\n" and "e" with segments="lines", tokens a..e
encoded as 10..14 ("\\n" as 4):
  segments   "ab\\n", "cd\\n", "e"
  tokens     = [10, 11, 4, 12, 13, 4, 14]
  seg_starts = [0, 3, 6, 7]
  doc_starts = [0, 2, 3]

`cached_segment_stream` stores the arrays under `cache_dir/segments-<hash>/`
(like `packing.cached_stream`, with checksums) and memory-maps them on later
calls, verified (see `lm.data.packing`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

from lm import files
from lm.data.packing import entry_written, load_arrays, save_arrays, token_dtype
from lm.data.sources import DocumentSource
from lm.data.tokenizer import Tokenizer
from lm.errors import LmError

DOCUMENT_MODES = ("source", "blank_lines")
SEGMENT_MODES = ("lines", "sentences")
# Segments are tokenized in batches of at most this many segments / chars.
_CHUNK_SEGMENTS = 16384
_CHUNK_CHARS = 8_000_000
_FILES = ("tokens.npy", "seg_starts.npy", "doc_starts.npy")

# A sentence ends at ., ! or ? followed by whitespace (which is dropped).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
# Whitespace that contains a line break (inside one sentence).
_LINE_BREAK = re.compile(r"[^\S\n]*\n\s*")


def check_modes(documents: str, segments: str) -> None:
  """Raises LmError unless `documents` and `segments` are known modes."""
  if documents not in DOCUMENT_MODES:
    raise LmError(f"Unknown config.mlm.documents value {documents!r}; use one "
                  f"of {list(DOCUMENT_MODES)} (--config.mlm.documents).")
  if segments not in SEGMENT_MODES:
    raise LmError(f"Unknown config.mlm.segments value {segments!r}; use one "
                  f"of {list(SEGMENT_MODES)} (--config.mlm.segments).")


def _lines(text: str) -> list[str]:
  """`text` cut after each "\\n" (kept). Example: "a\\nb" -> ["a\\n", "b"]."""
  lines = [line + "\n" for line in text.split("\n")]
  lines[-1] = lines[-1][:-1]
  return [line for line in lines if line]


def split_documents(text: str, documents: str) -> list[str]:
  """Splits one source document into the documents used for NSP.

  documents="source": the whole text is one document. documents="blank_lines":
  documents are separated by one or more blank lines (empty or whitespace
  only); the blank lines are dropped, every other line is kept as it is,
  "\\n" included; empty documents are dropped.

  Example: "a\\nb\\n\\n  \\nc\\n" with "blank_lines" -> ["a\\nb\\n", "c\\n"];
  with "source" -> ["a\\nb\\n\\n  \\nc\\n"].
  """
  check_modes(documents, SEGMENT_MODES[0])
  if documents == "source":
    return [text] if text else []
  docs, current = [], []
  for line in _lines(text):
    if line.strip():
      current.append(line)
    elif current:
      docs.append("".join(current))
      current = []
  if current:
    docs.append("".join(current))
  return docs


def split_segments(doc: str, segments: str) -> list[str]:
  """Splits a document into segments (the units of NSP's A and B).

  segments="lines": the non-blank lines, each with its trailing "\\n" kept, so
  code keeps its line structure. segments="sentences": sentences ending at
  ".", "!" or "?" followed by whitespace; the whitespace between sentences is
  dropped and line breaks inside a sentence become one space.

  Example: "Hi there. How are\\nyou?  Fine!\\n" with "sentences" ->
  ["Hi there.", "How are you?", "Fine!"]; "x = 1\\n\\n  y = 2\\n" with "lines"
  -> ["x = 1\\n", "  y = 2\\n"].
  """
  check_modes(DOCUMENT_MODES[0], segments)
  if segments == "lines":
    return [line for line in _lines(doc) if line.strip()]
  parts = _SENTENCE_END.split(doc.strip())
  return [s for s in (_LINE_BREAK.sub(" ", p) for p in parts) if s.strip()]


@dataclasses.dataclass(frozen=True)
class SegmentStream:
  """Tokenized segments grouped into documents (see the module docstring).

  Attributes:
    tokens: [N] uint16 (int32 for vocabularies over 2**16) token ids.
    seg_starts: [S+1] int64 offsets into `tokens`; segment i is
      tokens[seg_starts[i]:seg_starts[i+1]] and is never empty.
    doc_starts: [D+1] int64 segment indices; document d holds segments
      doc_starts[d] to doc_starts[d+1] - 1, at least one.
  """

  tokens: np.ndarray
  seg_starts: np.ndarray
  doc_starts: np.ndarray

  def __len__(self) -> int:
    return int(self.tokens.shape[0])

  @property
  def n_docs(self) -> int:
    return int(self.doc_starts.shape[0]) - 1

  @property
  def n_segments(self) -> int:
    return int(self.seg_starts.shape[0]) - 1

  def segment(self, i: int) -> np.ndarray:
    """The tokens of segment `i`.

    Example (the module docstring's stream): segment(1) -> [12, 13, 4].
    """
    return self.tokens[int(self.seg_starts[i]):int(self.seg_starts[i + 1])]


def _documents(source: DocumentSource, documents: str, segments: str,
               max_chars: int | None) -> Iterator[list[str]]:
  """The segments of each non-empty document of `source`, in order.

  Stops after the source document at which the running character count
  reaches `max_chars` (as `packing.build_stream`). Example: source ["a. b.",
  ""] with "source"/"sentences" -> ["a.", "b."].
  """
  total = 0
  for text in source:
    if not text:
      continue
    for doc in split_documents(text, documents):
      segs = split_segments(doc, segments)
      if segs:
        yield segs
    total += len(text)
    if max_chars is not None and total >= max_chars:
      return


def _batches(docs: Iterator[list[str]]) -> Iterator[list[list[str]]]:
  """Documents grouped so that each group has a bounded number of segments.

  Example: with _CHUNK_SEGMENTS=2, [["a"], ["b", "c"], ["d"]] ->
  [["a"], ["b", "c"]], [["d"]].
  """
  group: list[list[str]] = []
  n_segs = n_chars = 0
  for doc in docs:
    group.append(doc)
    n_segs += len(doc)
    n_chars += sum(len(s) for s in doc)
    if n_segs >= _CHUNK_SEGMENTS or n_chars >= _CHUNK_CHARS:
      yield group
      group, n_segs, n_chars = [], 0, 0
  if group:
    yield group


def build_segment_stream(source: DocumentSource, tokenizer: Tokenizer, *,
                         documents: str, segments: str,
                         max_chars: int | None = None) -> SegmentStream:
  """Splits, tokenizes and concatenates `source` (see the module docstring).

  Segments are tokenized in batches with `tokenizer.encode_batch`; segments
  that encode to no tokens and documents left without segments are dropped.
  Reading stops after the source document that brings the character count
  to `max_chars` (None: all).

  Example: source ["ab\\ncd\\n\\ne\\n"] with documents="blank_lines",
  segments="lines" -> 2 documents, 3 segments ("ab\\n", "cd\\n", "e\\n").
  """
  check_modes(documents, segments)
  dtype = token_dtype(tokenizer.vocab_size)
  parts: list[np.ndarray] = []
  seg_lens: list[np.ndarray] = []
  doc_lens: list[int] = []
  for group in _batches(_documents(source, documents, segments, max_chars)):
    flat = [s for doc in group for s in doc]
    encoded = tokenizer.encode_batch(flat)
    lens = np.fromiter((len(e) for e in encoded), np.int64, count=len(encoded))
    parts.append(np.fromiter((i for e in encoded for i in e), dtype,
                             count=int(lens.sum())))
    k = 0
    for doc in group:
      n_kept = int(np.count_nonzero(lens[k:k + len(doc)]))
      if n_kept:
        doc_lens.append(n_kept)
      k += len(doc)
    seg_lens.append(lens[lens > 0])
  if not doc_lens:
    raise LmError(f"Data source {source.uri!r} has no non-empty segments; "
                  "check the data URI and field.")
  lens = np.concatenate(seg_lens)
  seg_starts = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
  doc_starts = np.concatenate([[0], np.cumsum(doc_lens)]).astype(np.int64)
  return SegmentStream(np.concatenate(parts), seg_starts, doc_starts)


def encode_texts(texts: Sequence[str], tokenizer: Tokenizer, *,
                 documents: str, segments: str) -> list[SegmentStream | None]:
  """Each text split, tokenized (one `encode_batch` for all of them) and
  laid out as its own `SegmentStream`; None for a text left without
  segments. What the streaming pipeline does per round of documents.

  Example: ["ab\ncd\n\ne\n", ""] with documents="blank_lines",
  segments="lines" -> [a stream of 2 documents, 3 segments; None].
  """
  check_modes(documents, segments)
  dtype = token_dtype(tokenizer.vocab_size)
  split = [[segs for doc in split_documents(text, documents)
            if (segs := split_segments(doc, segments))] for text in texts]
  flat = [s for docs in split for segs in docs for s in segs]
  encoded = tokenizer.encode_batch(flat) if flat else []
  out: list[SegmentStream | None] = []
  i = 0
  for docs in split:
    ids: list[int] = []
    seg_lens, doc_lens = [], []
    for segs in docs:
      kept = 0
      for e in encoded[i:i + len(segs)]:
        if len(e):
          ids.extend(e)
          seg_lens.append(len(e))
          kept += 1
      i += len(segs)
      if kept:
        doc_lens.append(kept)
    if not doc_lens:
      out.append(None)
      continue
    out.append(SegmentStream(
        np.asarray(ids, dtype),
        np.concatenate([[0], np.cumsum(seg_lens)]).astype(np.int64),
        np.concatenate([[0], np.cumsum(doc_lens)]).astype(np.int64)))
  return out


def concat_segment_streams(streams: Sequence[SegmentStream]) -> SegmentStream:
  """The documents of `streams`, in order, as one stream.

  Example: streams of 2 and 1 documents -> one of 3 documents.
  """
  tokens = np.concatenate([s.tokens for s in streams])
  seg, doc = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
  n_tok = n_seg = 0
  for s in streams:
    seg.append(np.asarray(s.seg_starts[1:], np.int64) + n_tok)
    doc.append(np.asarray(s.doc_starts[1:], np.int64) + n_seg)
    n_tok += len(s)
    n_seg += s.n_segments
  return SegmentStream(tokens, np.concatenate(seg), np.concatenate(doc))


def save_segment_stream(stream: SegmentStream, path: str, *,
                        keep_existing: bool = False) -> None:
  """Writes `stream` as `path/{tokens,seg_starts,doc_starts}.npy`, atomically
  (see `packing.save_arrays`). Example: -> /tmp/c/segments-ab12/tokens.npy, ...
  """
  save_arrays(path, {"tokens": np.asarray(stream.tokens),
                     "seg_starts": np.asarray(stream.seg_starts, np.int64),
                     "doc_starts": np.asarray(stream.doc_starts, np.int64)},
              keep_existing=keep_existing)


def load_segment_stream(path: str, mmap: bool = True, *,
                        vocab_size: int | None = None) -> SegmentStream:
  """Reads a stream written by `save_segment_stream` (memory-mapped),
  verified against its checksums; with `vocab_size`, every token id must be
  below it (see `packing.load_arrays`).

  Example: load_segment_stream("/tmp/c/segments-ab12").n_segments -> 3.
  """
  arrays = load_arrays(path, [f[:-len(".npy")] for f in _FILES], mmap=mmap,
                       vocab_size=vocab_size, what="Segment stream")
  return SegmentStream(arrays["tokens"], arrays["seg_starts"],
                       arrays["doc_starts"])


def segment_cache_path(source: DocumentSource, tokenizer: Tokenizer,
                       cache_dir: str, *, documents: str, segments: str,
                       max_chars: int | None = None) -> str:
  """The cache directory for these inputs and options.

  Example: -> "<cache_dir>/segments-3f9a0c1d2b4e5f60".
  """
  key = repr((source.fingerprint(), tokenizer.fingerprint(), documents,
              segments, max_chars))
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  return files.join(cache_dir, f"segments-{digest}")


def cached_segment_stream(source: DocumentSource, tokenizer: Tokenizer,
                          cache_dir: str, *, documents: str, segments: str,
                          max_chars: int | None = None) -> SegmentStream:
  """`build_segment_stream`, cached on disk and memory-mapped.

  The entry is named by `source.fingerprint()`, the tokenizer's hash,
  `documents`, `segments` and `max_chars`, so changing any of them builds a
  new entry. Example: the first call writes `cache_dir/segments-<hash>/`;
  later calls only map it.
  """
  check_modes(documents, segments)
  path = segment_cache_path(source, tokenizer, cache_dir, documents=documents,
                            segments=segments, max_chars=max_chars)
  if not entry_written(path):
    stream = build_segment_stream(source, tokenizer, documents=documents,
                                  segments=segments, max_chars=max_chars)
    save_segment_stream(stream, path, keep_existing=True)
  return load_segment_stream(path, mmap=True,
                             vocab_size=tokenizer.vocab_size)


def stream_from_segments(docs: Sequence[Sequence[Sequence[int]]],
                         vocab_size: int = 2**16) -> SegmentStream:
  """A `SegmentStream` from token ids (tests, small in-memory corpora).

  Empty segments and documents are dropped. Example: [[[10, 11], [12]],
  [[13]]] -> tokens [10, 11, 12, 13], seg_starts [0, 2, 3, 4],
  doc_starts [0, 2, 3].
  """
  docs = [[list(s) for s in d if len(s)] for d in docs]
  docs = [d for d in docs if d]
  if not docs:
    raise LmError("The segment stream would be empty; give at least one "
                  "non-empty segment.")
  segs = [s for d in docs for s in d]
  lens = np.array([len(s) for s in segs], np.int64)
  tokens = np.array([t for s in segs for t in s], token_dtype(vocab_size))
  return SegmentStream(
      tokens, np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
      np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64))
