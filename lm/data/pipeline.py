"""Deterministic, step-indexed batches from a packed token stream.

A training batch is a pure function of the step (and seed), never of how
many batches were drawn before: a run resumed at step s sees exactly the
batches the uninterrupted run would have seen, on any number of hosts. Each
host builds only its slice of the global batch (`TrainBatches.batch`), and
`to_global` assembles the slices into one `jax.Array` sharded over the mesh.

Global row g of step s is row `s * G + g_in_step` of an endless row sequence:

  * mode "shuffle": the stream is cut into non-overlapping windows at
    offsets k * seq_len; row g reads window perm_e[g % n_windows] of epoch
    e = g // n_windows, perm_e = default_rng([seed, e]).permutation(n_windows),
    so each epoch visits every window exactly once.
  * mode "random" (nanoGPT's get_batch): the G start offsets of step s are
    default_rng([seed, s]).integers(0, n_tokens - seq_len, size=G).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import jax
import numpy as np

from lm.data.packing import TokenStream, make_rows
from lm.errors import LmError

MODES = ("shuffle", "random")


def _check_length(stream: TokenStream, seq_len: int) -> None:
  """Raises LmError unless the stream holds at least one row of seq_len + 1."""
  if seq_len < 1:
    raise LmError(f"seq_len must be positive, got {seq_len}; set "
                  "--config.seq_len.")
  if len(stream) < seq_len + 1:
    raise LmError(f"The corpus has {len(stream)} tokens, fewer than one row of "
                  f"seq_len + 1 = {seq_len + 1}; use a larger corpus or a "
                  "smaller --config.seq_len.")


def check_process_slice(global_batch_size: int, process_index: int,
                        process_count: int) -> None:
  """Raises LmError unless each process can take an equal slice of the rows."""
  if global_batch_size < 1 or global_batch_size % process_count:
    raise LmError(f"Global batch size {global_batch_size} is not a positive "
                  f"multiple of the process count {process_count}; set "
                  "--config.batch_size accordingly.")
  if not 0 <= process_index < process_count:
    raise LmError(f"process_index {process_index} is outside "
                  f"[0, {process_count}).")


class EpochPermutations:
  """`perms(epoch)`: the order of `n` items in `epoch`,
  `default_rng([seed, epoch]).permutation(n)`; the last two are cached.

  Example: EpochPermutations(0, 4)(1) -> e.g. array([2, 0, 3, 1]).
  """

  def __init__(self, seed: int, n: int):
    self.seed, self.n = int(seed), int(n)
    self._cache: dict[int, np.ndarray] = {}

  def __call__(self, epoch: int) -> np.ndarray:
    if epoch not in self._cache:
      if len(self._cache) >= 2:
        self._cache.pop(min(self._cache))
      rng = np.random.default_rng([self.seed, epoch])
      self._cache[epoch] = rng.permutation(self.n)
    return self._cache[epoch]

  def take(self, g: np.ndarray) -> np.ndarray:
    """The items at global positions `g` of the endless shuffled sequence
    perm_0, perm_1, ...: position g is `perm_{g // n}[g % n]`.

    Example: n = 4, g = [3, 4] -> [perm_0[3], perm_1[0]].
    """
    epochs, slots = np.divmod(np.asarray(g, np.int64), self.n)
    out = np.empty_like(epochs)
    for e in np.unique(epochs):
      sel = epochs == e
      out[sel] = self(int(e))[slots[sel]]
    return out


class TrainBatches:
  """This process's rows of the global training batch, by step.

  Example: a stream of 9 tokens, seq_len 4, global_batch_size 2 and mode
  "shuffle" has n_windows = 2 (offsets 0 and 4), so each step is one epoch:
    TrainBatches(s, global_batch_size=2, seq_len=4, seed=0).batch(0)
    -> {"inputs": [2, 4] int32, "targets": ..., "segment_ids": ...,
        "positions": ..., "loss_mask": ...}
  whose rows are windows perm_0[0] and perm_0[1].
  With process_count=2, process 0 gets row 0 and process 1 row 1 of that.
  """

  def __init__(self, stream: TokenStream, *, global_batch_size: int,
               seq_len: int, seed: int, mode: str = "shuffle",
               process_index: int = 0, process_count: int = 1):
    if mode not in MODES:
      raise LmError(f"Unknown data mode {mode!r}; use one of {list(MODES)} "
                    "(--config.data.sampling).")
    check_process_slice(global_batch_size, process_index, process_count)
    _check_length(stream, seq_len)
    self.stream = stream
    self.global_batch_size = global_batch_size
    self.seq_len = seq_len
    self.seed = int(seed)
    self.mode = mode
    self.process_index = process_index
    self.process_count = process_count
    self.local_batch_size = global_batch_size // process_count
    self.n_tokens = len(stream)
    self.n_windows = max(1, (self.n_tokens - 1) // seq_len)
    self._perms = EpochPermutations(self.seed, self.n_windows)

  def _local_rows(self) -> slice:
    """This process's row range within a step's G rows."""
    lo = self.process_index * self.local_batch_size
    return slice(lo, lo + self.local_batch_size)

  def starts(self, step: int) -> np.ndarray:
    """[L] window start offsets of this process's rows at `step`.

    Example (shuffle, n_windows=2, seq_len=4, G=2): step 0 -> 4 * perm_0.
    """
    if step < 0:
      raise ValueError(f"step must be >= 0, got {step}")
    rows = self._local_rows()
    if self.mode == "random":
      rng = np.random.default_rng([self.seed, step])
      high = self.n_tokens - self.seq_len  # last valid start is high - 1
      return rng.integers(0, high, size=self.global_batch_size)[rows]
    g = step * self.global_batch_size + np.arange(
        self.global_batch_size, dtype=np.int64)[rows]
    return self._perms.take(g) * self.seq_len

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """This process's [L, seq_len] rows of step `step` (see `make_rows`)."""
    return make_rows(self.stream, self.starts(step), self.seq_len)

  def epoch(self, step: int) -> float:
    """Passes over the stream consumed before `step`.

    Example: n_windows=100, G=10 -> epoch(25) == 2.5.
    """
    rows = step * self.global_batch_size
    if self.mode == "shuffle":
      return rows / self.n_windows
    return rows * self.seq_len / self.n_tokens

  def state(self, step: int) -> dict:
    """A JSON-able summary for checkpoints. Example: {"step": 3, "epoch":
    0.3, "mode": "shuffle", "seed": 0, "n_tokens": 1001, ...}."""
    return {
        "step": int(step),
        "epoch": float(self.epoch(step)),
        "mode": self.mode,
        "seed": self.seed,
        "n_tokens": int(self.n_tokens),
        "seq_len": int(self.seq_len),
        "global_batch_size": int(self.global_batch_size),
    }


class ShuffledItems:
  """This process's share of each step's global batch of `n_items` items,
  a pure function of the step: items are shuffled once per epoch
  (`EpochPermutations`) and taken G at a time.

  Example: 10 items, G = 4: step 0 takes perm_0[0:4], step 2 takes
  perm_0[8:10] and perm_1[0:2]; with 2 processes, process 1 gets the last
  two of each step's four.
  """

  def __init__(self, n_items: int, *, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1,
               what: str = "examples"):
    check_process_slice(global_batch_size, process_index, process_count)
    if n_items < global_batch_size:
      raise LmError(f"the training data has {n_items} {what}, fewer than "
                    f"config.batch_size={global_batch_size}; use more data or "
                    "a smaller batch.")
    self.n_items = int(n_items)
    self.global_batch_size = global_batch_size
    self.local = global_batch_size // process_count
    self.lo = process_index * self.local
    self.seed = int(seed)
    self._perms = EpochPermutations(self.seed, self.n_items)

  def global_items(self, step: int) -> np.ndarray:
    """Every process's item indices at `step`, in process order."""
    g = step * self.global_batch_size + np.arange(self.global_batch_size,
                                                  dtype=np.int64)
    return self._perms.take(g)

  def items(self, step: int) -> np.ndarray:
    """This process's item indices at `step`."""
    return self.global_items(step)[self.lo:self.lo + self.local]

  def epoch(self, step: int) -> float:
    return step * self.global_batch_size / self.n_items

  def state(self, step: int) -> dict:
    return {"step": int(step), "epoch": float(self.epoch(step)),
            "seed": self.seed, "items": int(self.n_items),
            "global_batch_size": int(self.global_batch_size)}


def row_lengths(mask: np.ndarray) -> np.ndarray:
  """Each row's length: one past its last position with a nonzero `mask`
  (0 for an empty row). Rows are right-padded, so everything from there on
  is padding.

  Example: mask [[1, 1, 0, 0], [1, 0, 1, 0]] -> [2, 3].
  """
  mask = np.asarray(mask) != 0
  width = mask.shape[1]
  last = width - np.argmax(mask[:, ::-1], axis=1)
  return np.where(mask.any(axis=1), last, 0).astype(np.int64)


def trimmed_width(lengths: np.ndarray, multiple: int, width: int) -> int:
  """The width a batch of rows with `lengths` is cut to: its longest row
  rounded up to a multiple of `multiple`, at most `width` (the rows' own).

  Example: lengths [5, 17], multiple 16, width 64 -> 32.
  """
  longest = int(np.max(lengths)) if len(lengths) else 0
  return min(width, max(1, -(-longest // multiple)) * multiple)


def trim_rows(batch: dict[str, np.ndarray], width: int,
              full: int) -> dict[str, np.ndarray]:
  """`batch` with every `[rows, full, ...]` array cut to `[rows, width,
  ...]` (per-token arrays); other arrays (labels, span indices, weights) as
  they are."""
  if width >= full:
    return batch
  return {k: v[:, :width] if np.ndim(v) >= 2 and np.shape(v)[1] == full
          else v for k, v in batch.items()}


class RowBatches(ShuffledItems):
  """Batches of fixed example arrays (fine-tuning: one tokenized example per
  row), shuffled per epoch as `ShuffledItems`.

  `arrays` maps names to arrays with one row per example (`[N, ...]`); each
  batch holds this process's rows of every array plus `weights` float32
  `[L]` (all 1).

  Short examples (a sentence classifier reading 13 tokens in rows of 128)
  need not pay for their padding:
    * `trim` > 0 cuts each batch's per-token arrays (those `[N, T, ...]`,
      T the rows' width) to the global batch's longest row (`lengths`),
      rounded up to a multiple of `trim`: the same loss (padding is masked;
      dropout masks are drawn for the cut shape), one compiled step per
      width, every host cutting to the same width.
    * `group` > 0 also draws each step's rows from a pool of `group`
      batches of the shuffled order, sorted by length (the pool's batches
      taken in a seeded random order), so a batch's rows have similar
      lengths and the cut removes most of the padding (the length grouping
      of BERT-style fine-tuning recipes). A pool's steps hold exactly the
      examples the plain order gives those steps; which of them share a
      batch, and the order of the batches within the pool, change.
  """

  def __init__(self, arrays: dict[str, np.ndarray], *, global_batch_size: int,
               seed: int, process_index: int = 0, process_count: int = 1,
               lengths: np.ndarray | None = None, trim: int = 0,
               group: int = 0):
    super().__init__(len(next(iter(arrays.values()))),
                     global_batch_size=global_batch_size, seed=seed,
                     process_index=process_index, process_count=process_count)
    self.arrays = arrays
    if (trim or group) and lengths is None:
      raise ValueError("trim and group need the rows' lengths")
    if group and not trim:
      raise ValueError("group needs trim")
    self.lengths = None if lengths is None else np.asarray(lengths, np.int64)
    self.trim, self.group = int(trim), int(group)
    self.width = int(np.shape(arrays.get("tokens", next(iter(
        arrays.values()))))[1]) if trim else 0
    self._pool: tuple[int, np.ndarray] | None = None   # (pool, its rows)

  def global_items(self, step: int) -> np.ndarray:
    if not self.group:
      return super().global_items(step)
    g = self.global_batch_size
    pool = step // self.group
    if self._pool is None or self._pool[0] != pool:
      span = self.group * g
      items = self._perms.take(np.arange(pool * span, (pool + 1) * span,
                                         dtype=np.int64))
      items = items[np.argsort(self.lengths[items], kind="stable")]
      order = np.random.default_rng([self.seed, pool, 1]).permutation(
          self.group)
      self._pool = (pool, items.reshape(self.group, g)[order])
    return self._pool[1][step % self.group]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    every = self.global_items(step)
    index = every[self.lo:self.lo + self.local]
    batch = {k: np.asarray(v[index]) for k, v in self.arrays.items()}
    batch["weights"] = np.ones((len(index),), np.float32)
    if self.trim:
      width = trimmed_width(self.lengths[every], self.trim, self.width)
      batch = trim_rows(batch, width, self.width)
    return batch


def row_eval_batches(arrays: dict[str, np.ndarray], *, batch_size: int,
                     limit: int | None = None, lengths: np.ndarray | None = None,
                     trim: int = 0) -> Iterator[dict]:
  """Rows 0 .. limit-1 of `arrays`, `batch_size` at a time, with `weights`
  (1) and `index` (the row number); the last batch is filled with copies of
  its first row, of weight 0 and index -1.

  In row order, unless `trim` > 0: then the rows come shortest first (by
  `lengths`; `index` still names each one) and each batch's per-token
  arrays are cut to its longest row rounded up to a multiple of `trim`
  (`RowBatches`), which changes no output a row's padding does not touch.

  Example: 5 rows, batch_size 4 -> two batches, the second with weights
  [1, 0, 0, 0] and index [4, -1, -1, -1].
  """
  if batch_size < 1:
    raise LmError(f"Eval batch size must be positive, got {batch_size}.")
  first = next(iter(arrays.values()))
  n, width = len(first), np.shape(arrays.get("tokens", first))[1:2]
  limit = n if limit is None else min(limit, n)
  order = np.arange(limit)
  if trim:
    order = order[np.argsort(np.asarray(lengths)[:limit], kind="stable")]
  for s in range(0, limit, batch_size):
    slot = np.arange(s, s + batch_size)
    real = slot < limit
    rows = order[np.where(real, slot, s)]
    batch = {k: np.asarray(v[rows]) for k, v in arrays.items()}
    batch["weights"] = real.astype(np.float32)
    batch["index"] = np.where(real, rows, -1).astype(np.int32)
    if trim and width:
      batch = trim_rows(batch, trimmed_width(np.asarray(lengths)[rows], trim,
                                             width[0]), width[0])
    yield batch


def eval_batches(stream: TokenStream, *, batch_size: int, seq_len: int,
                 max_batches: int | None = None) -> Iterator[dict]:
  """Non-overlapping windows from the start of the stream, in order.

  Windows start at 0, seq_len, 2 * seq_len, ... until every token has been a
  target once (the last window is padded). The last batch is filled up with
  all-padding rows (loss_mask 0). Stops after `max_batches` (None: all).

  Example: 9 tokens, seq_len 4, batch_size 3 -> one batch with rows starting
  at 0 and 4, plus one all-padding row.
  """
  if batch_size < 1:
    raise LmError(f"Eval batch size must be positive, got {batch_size}.")
  _check_length(stream, seq_len)
  n = len(stream)
  n_windows = math.ceil((n - 1) / seq_len)
  n_batches = math.ceil(n_windows / batch_size)
  if max_batches is not None:
    n_batches = min(n_batches, max_batches)
  for b in range(n_batches):
    k = np.arange(b * batch_size, (b + 1) * batch_size, dtype=np.int64)
    starts = np.where(k < n_windows, k * seq_len, n)  # offset n: all padding
    yield make_rows(stream, starts, seq_len)


def to_global(batch: dict[str, np.ndarray],
              sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Assembles every host's local rows into global [G, T] arrays.

  Example: on 2 hosts each holding [4, T] rows and a `P("data")` sharding,
  each entry becomes one [8, T] `jax.Array` sharded along the batch.
  """
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}
