"""Tokenized text columns and the batches of contrastive training.

A `Columns` holds one or more aligned text columns ("anchor", "positive",
"negative" for pairs; "text" for plain sentences) tokenized into one flat
array, cached on disk like the other token streams. Rows are built at batch
time: `[first] + text[:seq_len - 2] + [last]`, then padding, where
first/last are `[CLS]`/`[SEP]` for BERT tokenizers and bos/eos otherwise.

Batches hold, per column c, `c` int32 `[B, T]` token ids and `c_mask` int32
`[B, T]` (1 at real tokens, 0 at padding), plus `weights` float32 `[B]` (0
for filler rows that pad the last evaluation batch).

Example:
  cols = columns_from_texts({"anchor": ["a b"], "positive": ["c"]}, tok)
  rows(cols, "anchor", np.array([0]), seq_len=8, first=4, last=5, pad=0)
  # -> tokens [[4, ids(a b)..., 5, 0, ...]], mask [[1, 1, ..., 0]]
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lm.data import packing
from lm.data.pipeline import ShuffledItems
from lm.errors import LmError


@dataclasses.dataclass
class Columns:
  """Aligned tokenized text columns.

  Attributes:
    tokens: every text's ids, concatenated (int32).
    starts: column name -> `[N + 1]` int64 offsets into `tokens`; text i
      of column c is `tokens[starts[c][i]:starts[c][i + 1]]`.
    scores: `[N]` float64 gold scores (scored pairs) or None.
  """

  tokens: np.ndarray
  starts: dict[str, np.ndarray]
  scores: np.ndarray | None = None

  def __len__(self) -> int:
    return len(next(iter(self.starts.values()))) - 1

  @property
  def names(self) -> list[str]:
    return list(self.starts)


def columns_from_texts(texts: dict[str, Sequence[str]], tokenizer,
                       scores: Sequence[float] | None = None) -> Columns:
  """Tokenizes aligned columns of equal length.

  Example: {"text": ["ab", "c"]} -> Columns with starts {"text": [0, 2, 3]}.
  """
  lengths = {len(v) for v in texts.values()}
  if len(lengths) != 1:
    raise LmError(f"text columns {sorted(texts)} have different lengths "
                  f"{sorted(lengths)}; every column needs one text per row.")
  parts, starts, offset = [], {}, 0
  for name, column in texts.items():
    ids = tokenizer.encode_batch(list(column))
    lens = np.array([len(x) for x in ids], np.int64)
    starts[name] = offset + np.concatenate([[0], np.cumsum(lens)])
    offset = int(starts[name][-1])
    parts.extend(np.asarray(x, np.int32) for x in ids)
  tokens = np.concatenate(parts) if parts else np.zeros((0,), np.int32)
  return Columns(tokens.astype(np.int32), starts,
                 None if scores is None else np.asarray(scores, np.float64))


def cached_columns(key: Sequence, build, cache_dir: str, *,
                   vocab_size: int | None = None) -> Columns:
  """`build()` cached under `cache_dir/columns-<hash of key>/` and mapped.

  `key` must change whenever the texts or tokenizer do (source and
  tokenizer fingerprints). The entry is verified on every load, token ids
  against `vocab_size` when given (see `packing.load_arrays`). Example: the
  first call tokenizes and writes the arrays; later calls only load them.
  """
  def arrays():
    cols = build()
    out = {"tokens": cols.tokens}
    out.update({f"starts.{k}": v for k, v in cols.starts.items()})
    if cols.scores is not None:
      out["scores"] = cols.scores
    return out

  loaded = packing.cached_arrays(key, arrays, cache_dir, "columns",
                                 vocab_size=vocab_size)
  if "tokens" not in loaded:
    raise LmError(f"Tokenized columns under {cache_dir} are missing "
                  "tokens.npy; delete the directory so they are rebuilt.")
  starts = {k[len("starts."):]: np.asarray(v) for k, v in loaded.items()
            if k.startswith("starts.")}
  scores = loaded.get("scores")
  return Columns(loaded["tokens"], starts,
                 None if scores is None else np.asarray(scores))


def rows(cols: Columns, column: str, index: np.ndarray, *, seq_len: int,
         first: int, last: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
  """Token rows `[len(index), seq_len]` and their masks for texts `index`.

  Each row is `[first] + ids[:seq_len - 2] + [last]`, padded with `pad`;
  an index of -1 gives an all-padding row (mask 0).

  Example: ids [7, 8, 9], seq_len 4 -> [first, 7, 8, last], mask [1, 1, 1, 1].
  """
  if seq_len < 3:
    raise LmError(f"config.seq_len={seq_len} leaves no room for text between "
                  "the two special tokens; use seq_len >= 3.")
  starts = cols.starts[column]
  out = np.full((len(index), seq_len), pad, np.int32)
  mask = np.zeros((len(index), seq_len), np.int32)
  for r, i in enumerate(np.asarray(index)):
    if i < 0:
      continue
    ids = cols.tokens[starts[i]:starts[i + 1]][:seq_len - 2]
    n = len(ids) + 2
    out[r, 0] = first
    out[r, 1:n - 1] = ids
    out[r, n - 1] = last
    mask[r, :n] = 1
  return out, mask


class ContrastiveBatches(ShuffledItems):
  """This process's rows of each step's global batch, a pure function of
  the step.

  Items are shuffled once per epoch and taken G at a time
  (`lm.data.pipeline.ShuffledItems`). An item is row i of every column in `columns` (pairs), or,
  with `flatten=True`, one text of any column (unsupervised SimCSE reads
  every text of every column as one sentence, under the name "anchor").

  Example: 10 pairs, G=4: step 0 takes perm_0[0:4], step 2 perm_0[8:10] and
  perm_1[0:2].
  """

  def __init__(self, cols: Columns, columns: Sequence[str], *,
               global_batch_size: int, seq_len: int, seed: int, first: int,
               last: int, pad: int, flatten: bool = False,
               process_index: int = 0, process_count: int = 1):
    missing = [c for c in columns if c not in cols.starts]
    if missing:
      raise LmError(f"the training data has no {missing[0]!r} column (it has "
                    f"{cols.names}); use a source with that field.")
    self.cols, self.columns = cols, list(columns)
    self.flatten = flatten
    self.n_rows = len(cols)
    super().__init__(self.n_rows * (len(self.columns) if flatten else 1),
                     global_batch_size=global_batch_size, seed=seed,
                     process_index=process_index, process_count=process_count,
                     what="items")
    self.row_args = dict(seq_len=seq_len, first=first, last=last, pad=pad)

  def batch(self, step: int) -> dict[str, np.ndarray]:
    items = self.items(step)
    batch = {"weights": np.ones((len(items),), np.float32)}
    if self.flatten:
      which, index = np.divmod(items, self.n_rows)
      tok = np.zeros((len(items), self.row_args["seq_len"]), np.int32)
      mask = np.zeros_like(tok)
      for c, name in enumerate(self.columns):
        sel = which == c
        if sel.any():
          tok[sel], mask[sel] = rows(self.cols, name, index[sel],
                                     **self.row_args)
      batch["anchor"], batch["anchor_mask"] = tok, mask
      return batch
    for name in self.columns:
      batch[name], batch[name + "_mask"] = rows(self.cols, name, items,
                                                **self.row_args)
    return batch


def eval_batches(cols: Columns, columns: Sequence[str], *, batch_size: int,
                 limit: int, seq_len: int, first: int, last: int, pad: int):
  """Rows 0 .. limit-1 of `columns` in order, `batch_size` at a time; the
  last batch is filled with all-padding rows of weight 0.

  Example: limit 5, batch_size 4 -> two batches, the second with weights
  [1, 0, 0, 0].
  """
  if batch_size < 1:
    raise LmError(f"Eval batch size must be positive, got {batch_size}.")
  limit = min(limit, len(cols))
  for s in range(0, limit, batch_size):
    index = np.arange(s, s + batch_size)
    index = np.where(index < limit, index, -1)
    batch = {"weights": (index >= 0).astype(np.float32)}
    for name in columns:
      batch[name], batch[name + "_mask"] = rows(
          cols, name, index, seq_len=seq_len, first=first, last=last, pad=pad)
    yield batch
