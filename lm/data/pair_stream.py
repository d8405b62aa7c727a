"""Streamed contrastive input (`data.pipeline = "stream"` with
`objective = "contrastive"`): sentences and pairs read and tokenized while
training runs, in Grain threads and worker processes, nothing tokenized
before step 1.

Unsupervised (SimCSE) sentences (`SentenceBatches`). The row streams of
`lm.data.streaming` over the training documents: stream r reads the
documents at positions k * G + r of the seeded document order, and its
rows are their sentences in order (the non-empty stripped lines, or the
whole document with `contrastive.texts = "documents"`), one per step. A
stream's state is (k, i), its next row being sentence i of its k-th
document; the checkpoint stores every stream's pair, so a resume is
bitwise and process counts see the same global batches.

Supervised pairs (`PairBatches`). One record is one row, so the batch stays
a pure function of the step, as in the packed pipeline
(`lm.data.pipeline.ShuffledItems`: records shuffled once per epoch, G per
step); the records of the next steps are read and tokenized ahead of
training. Records come from a random-access source without being read up
front: `jsonl:` lines through their byte-offset index (`lm.data.indexed`),
`tfds:` and `hf:` examples through their data source (`PairRecords`). Two
differences from the packed pipeline, which reads every record first: a
record whose anchor or positive is empty is a row of weight 0 (it leaves
the loss and the negatives), and anchors are not deduplicated. `pystdlib:`
pairs are built in memory as before (they are a few thousand).

Rows are those of `lm.data.pair_batches.rows`: [first] + ids[:T - 2] +
[last], padded, with masks; held-out and STS pairs stay in memory.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from lm import files
from lm.data import indexed, pairs as pairs_lib, sources, tfds_source
from lm.data.pair_batches import Columns, rows as column_rows
from lm.data.pipeline import ShuffledItems
from lm.data.streaming import RowStreams, StreamCorpus, close_iter
from lm.errors import LmError


def sentences(text: str, texts: str) -> list[str]:
  """The training sentences of one document: its non-empty stripped lines,
  or the stripped document (`texts = "documents"`).

  Example: (" a \\n\\nb", "lines") -> ["a", "b"].
  """
  parts = text.splitlines() if texts == "lines" else [text]
  return [p.strip() for p in parts if p.strip()]


def token_rows(ids: Sequence[Sequence[int]], *, seq_len: int, first: int,
               last: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
  """`pair_batches.rows` of token id lists (None: an all-padding row)."""
  lens = [0 if x is None else len(x) for x in ids]
  cols = Columns(np.asarray([t for x in ids if x is not None for t in x],
                            np.int32),
                 {"t": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)})
  index = np.asarray([-1 if x is None else i for i, x in enumerate(ids)])
  return column_rows(cols, "t", index, seq_len=seq_len, first=first,
                     last=last, pad=pad)


# --- unsupervised sentences ---------------------------------------------------


class ReadSentences:
  """Grain map: round k -> the token ids of the sentences of the k-th
  document of streams lo .. lo + n - 1 (of G), one list per stream.

  Example: documents "a\\nb" and "" -> [[ids(a), ids(b)], []].
  """

  def __init__(self, source, tokenizer, order, lo: int, n: int,
               global_rows: int, texts: str):
    self.source, self.tokenizer, self.order = source, tokenizer, order
    self.lo, self.n, self.global_rows, self.texts = lo, n, global_rows, texts

  def __call__(self, k: int):
    g = int(k) * self.global_rows + self.lo + np.arange(self.n, dtype=np.int64)
    per = [sentences(self.source[int(d)], self.texts)
           for d in self.order.take(g)]
    flat = [s for doc in per for s in doc]
    encoded = self.tokenizer.encode_batch(flat) if flat else []
    out, i = [], 0
    for doc in per:
      out.append([np.asarray(e, np.int32) for e in encoded[i:i + len(doc)]])
      i += len(doc)
    return out


class SentenceBatches(RowStreams):
  """This process's SimCSE rows of each step, streamed (module docstring):
  `anchor`, `anchor_mask` [L, T] int32 and `weights` [L].

  Example: SentenceBatches(corpus, global_batch_size=8, seq_len=32, seed=0,
  texts="lines", first=2, last=3, pad=0).batch(0)["anchor"] -> [8, 32].
  """

  def __init__(self, corpus: StreamCorpus, *, global_batch_size: int,
               seq_len: int, seed: int, texts: str, first: int, last: int,
               pad: int, process_index: int = 0, process_count: int = 1,
               data_state: dict | None = None):
    if seq_len < 3:
      raise LmError(f"config.seq_len={seq_len} leaves no room for text "
                    "between the two special tokens; use seq_len >= 3.")
    self.row_args = dict(seq_len=seq_len, first=first, last=last, pad=pad)
    self.texts = texts
    super().__init__(
        corpus, global_batch_size=global_batch_size, seed=seed,
        mode="shuffle", process_index=process_index,
        process_count=process_count, data_state=data_state,
        fn_factory=lambda order, lo, n, g: ReadSentences(
            corpus.source, corpus.tokenizer, order, lo, n, g, texts))

  def item(self, stored, j: int):
    return stored[j]

  def _next(self, j: int) -> np.ndarray:
    k, i = int(self.k[j]), int(self.t[j])
    for _ in range(self.corpus.n_docs + 1):
      doc = self._doc(k, j)
      if i < len(doc):
        break
      k, i = k + 1, 0
    else:
      raise LmError(f"{self.corpus.source.uri} has no non-empty "
                    f"{self.texts}; point data.train at text.")
    self.k[j], self.t[j] = (k, i + 1) if i + 1 < len(doc) else (k + 1, 0)
    return doc[i]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    self._step(step)
    ids = [self._next(j) for j in range(self.local)]
    self._stepped()
    tok, mask = token_rows(ids, **self.row_args)
    return {"anchor": tok, "anchor_mask": mask,
            "weights": np.ones((len(ids),), np.float32)}

  def state_extra(self) -> dict:
    return {"seq_len": int(self.row_args["seq_len"]), "texts": self.texts}


# --- supervised pairs ---------------------------------------------------------


class PairRecords(sources.DocumentSource):
  """The (anchor, positive[, negative]) texts of each record of a
  random-access source, read when asked for.

  Example: open_pair_records("jsonl:pairs.jsonl", fields=("q", "d"))
  .texts(3) -> ("a question", "its answer").
  """

  def __init__(self, uri: str, get, n: int, fields: Sequence[str],
               where, key: Sequence[Any], prepare=None):
    self.uri, self._get_record, self._n = uri, get, n
    self.fields, self._where, self._key = list(fields), where, list(key)
    self.prepare = prepare

  def __len__(self) -> int:
    return self._n() if callable(self._n) else self._n

  def texts(self, i: int) -> tuple[str, ...] | None:
    """The fields of record `i` as texts; None for a blank record."""
    obj = self._get_record(i)
    if obj is None:
      return None
    out = []
    for name in self.fields:
      if name not in obj:
        raise LmError(f"{self._where(i)} has no field {name!r} (it has "
                      f"{sorted(obj)}); set config.contrastive.anchor_field/"
                      "positive_field/negative_field to its text fields.")
      value = pairs_lib.as_text(obj[name])
      if value is None:
        raise LmError(f"{self._where(i)}: field {name!r} is a "
                      f"{pairs_lib.type_name(obj[name])}, not text; set "
                      "config.contrastive.anchor_field/positive_field/"
                      "negative_field to its text fields.")
      out.append(value)
    return tuple(out)

  def _get(self, i: int) -> str:
    return "\n".join(self.texts(i) or ())

  def fingerprint(self) -> str:
    return sources.content_hash([self.uri, self.fields, self._key])


def open_pair_records(uri: str, *, fields: Sequence[str],
                      data_dir: str | None = None) -> PairRecords | None:
  """The records of a `jsonl:`, `tfds:` or `hf:` pair URI as `PairRecords`
  (fields: anchor, positive and, if any, negative); None for `pystdlib:`
  (built in memory)."""
  scheme, _, rest = uri.partition(":")
  if scheme == "jsonl":
    src = indexed.open_indexed(uri, field="")
    records = PairRecords(uri, src.record, src.__len__, fields, src.where,
                          [src.fingerprint()], prepare=src.prepare)
    first = _first_object(src.paths[0])
    if first is not None:   # a wrong field stops the run before it starts
      PairRecords(uri, lambda i: first, 1, fields,
                  lambda i: f"{src.paths[0]} line 1", []).texts(0)
    return records
  if scheme in ("tfds", "hf"):
    ds, name, split = tfds_source.open_split(uri, rest, data_dir, example="snli")
    version = getattr(getattr(ds, "dataset_info", None), "version", None)
    label = tfds_source.dataset_label(uri)
    records = PairRecords(
        f"{scheme}:{name}:{split}", ds.__getitem__, len(ds), fields,
        _Example(f"{label} dataset {name!r}"), [name, split, str(version)])
    if len(ds):
      records.texts(0)
    return records
  return None


def _first_object(path: str) -> dict | None:
  """The first non-blank line of a JSON-lines file, parsed (None if the
  first 64 KiB hold none, or it is not an object: the index reports
  those)."""
  with files.open(path, "rb") as f:
    head = f.read(1 << 16).decode("utf-8", errors="replace")
  for line in head.splitlines()[:-1] or head.splitlines():
    if line.strip():
      try:
        obj = json.loads(line)
      except json.JSONDecodeError:
        return None
      return obj if isinstance(obj, dict) else None
  return None


class _Example:
  """Where example i of a dataset is, for messages (picklable)."""

  def __init__(self, label: str):
    self.label = label

  def __call__(self, i: int) -> str:
    return f"{self.label} example {i}"


class ReadPairRows:
  """Grain map: step -> this process's rows of that step (the records
  `items(step)`, tokenized), a pure function of the step."""

  def __init__(self, source: PairRecords, tokenizer, order: ShuffledItems,
               names, row_args: dict):
    self.source, self.tokenizer, self.order = source, tokenizer, order
    self.names, self.row_args = list(names), row_args

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    records = [self.source.texts(int(i)) for i in self.order.items(int(step))]
    ok = [r is not None and bool(r[0].strip()) and bool(r[1].strip())
          for r in records]
    batch = {"weights": np.asarray(ok, np.float32)}
    for c, name in enumerate(self.names):
      texts = [r[c] if keep else "" for r, keep in zip(records, ok)]
      ids = self.tokenizer.encode_batch(texts)
      batch[name], batch[name + "_mask"] = token_rows(
          [x if keep else None for x, keep in zip(ids, ok)], **self.row_args)
    return batch


class PairBatches(ShuffledItems):
  """This process's supervised rows of each step, a pure function of the
  step, read ahead in Grain (module docstring). Keys as
  `pair_batches.ContrastiveBatches`.
  """

  def __init__(self, corpus: StreamCorpus, names: Sequence[str], *,
               global_batch_size: int, seq_len: int, seed: int, first: int,
               last: int, pad: int, process_index: int = 0,
               process_count: int = 1):
    if seq_len < 3:
      raise LmError(f"config.seq_len={seq_len} leaves no room for text "
                    "between the two special tokens; use seq_len >= 3.")
    super().__init__(corpus.n_docs, global_batch_size=global_batch_size,
                     seed=seed, process_index=process_index,
                     process_count=process_count, what="records")
    self.corpus = corpus
    order = ShuffledItems(corpus.n_docs, global_batch_size=global_batch_size,
                          seed=seed, process_index=process_index,
                          process_count=process_count, what="records")
    self._fn = ReadPairRows(corpus.source, corpus.tokenizer, order,
                            names, dict(seq_len=seq_len, first=first,
                                        last=last, pad=pad))
    self._it, self._next = None, None

  def batch(self, step: int) -> dict[str, np.ndarray]:
    if self._it is None or step != self._next:
      self.close()
      self._it = self.corpus.rounds(self._fn, step, 1 << 50)
    self._next = step + 1
    return next(self._it)

  def close(self) -> None:
    if self._it is not None:
      close_iter(self._it)
      self._it = None
