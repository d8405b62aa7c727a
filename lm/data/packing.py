"""Packing: tokenized documents concatenated into one stream, cut into rows.

Every document becomes `[bos] + encode(doc) + [eos]`; the documents are laid
end to end in one flat token array (`TokenStream`), and training rows are
windows of `seq_len + 1` tokens cut from it at any offset (`make_rows`). Each
row carries segment ids, positions and a loss mask so that attention and the
loss never cross a document boundary.

Example (bos=2, eos=3): documents "ab", "c" encoded as [5, 6] and [7] give
  tokens     = [2, 5, 6, 3, 2, 7, 3]
  doc_starts = [0, 4]

The tokenized-data cache. Token streams, segment streams and task rows are
cached as directories of `.npy` files under `WORKDIR/data/` (`save_arrays`),
each with a `checksums.json` that records the sha256, shape and dtype of
every array file. The directory is assembled under a temporary name and
renamed into place, so the checksums always describe exactly the arrays
beside them. Every load (`load_arrays`, and through it `load_stream`,
`cached_arrays`, `cached_stream` and the segment streams) verifies them and,
given the tokenizer's vocabulary size, checks that no token id reaches it
(one vectorised max). A damaged entry -- a changed byte, a missing file, a
missing or unreadable `checksums.json`, an id outside the vocabulary -- is
an `LmError` naming the directory and telling the user to delete it. The
entry is NOT rebuilt behind the user's back: the cache is derived data, so
deleting it is always safe, but a damaged file usually means a disk or copy
problem the user should know about, and a silent rebuild would hide it (and
could take hours on a large corpus). Entries written before checksums
existed are refused the same way, once.

Nothing is written until a caller asks for a cache entry: the `cached_*`
functions write only when their entry is missing, after `build()` succeeds.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence

import numpy as np

from lm.data.sources import DocumentSource
from lm.data.tokenizer import Tokenizer
from lm import files
from lm.errors import LmError
from lm.files import default_dir_mode

PAD_ID = 0
# Documents are tokenized in chunks of at most this many documents / chars.
_CHUNK_DOCS = 1024
_CHUNK_CHARS = 8_000_000
# The file in each cache directory that records its arrays' checksums.
CHECKSUMS = "checksums.json"
_CHECKSUMS_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class TokenStream:
  """A packed token stream.

  Attributes:
    tokens: [N] uint16 (or int32 for vocabularies over 2**16) token ids.
    doc_starts: [D] int64, the offset in `tokens` of each document's bos,
      strictly ascending, `doc_starts[0] == 0`.
  """

  tokens: np.ndarray
  doc_starts: np.ndarray

  def __len__(self) -> int:
    return int(self.tokens.shape[0])

  @property
  def n_docs(self) -> int:
    return int(self.doc_starts.shape[0])


def token_dtype(vocab_size: int) -> np.dtype:
  """uint16 when every id fits in 16 bits, else int32.

  Example: 4096 -> uint16; 100_000 -> int32.
  """
  return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def _chunks(source: DocumentSource,
            max_chars: int | None) -> Iterator[list[str]]:
  """Non-empty documents of `source` in order, in lists of bounded size.

  Stops after the first document at which the running character count
  reaches `max_chars`. Example: docs ["ab", "", "cd", "e"] with max_chars=3
  -> [["ab", "cd"]].
  """
  chunk: list[str] = []
  chunk_chars = total = 0
  for doc in source:
    if not doc:
      continue
    chunk.append(doc)
    chunk_chars += len(doc)
    total += len(doc)
    done = max_chars is not None and total >= max_chars
    if done or len(chunk) >= _CHUNK_DOCS or chunk_chars >= _CHUNK_CHARS:
      yield chunk
      chunk, chunk_chars = [], 0
    if done:
      return
  if chunk:
    yield chunk


def pack_encoded(encoded: Sequence[Sequence[int]], bos: int, eos: int,
          dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
  """Concatenates `[bos] + ids + [eos]` for each id list.

  Returns (tokens, doc_starts relative to this chunk). Example: [[5, 6], [7]]
  with bos=2, eos=3 -> ([2, 5, 6, 3, 2, 7, 3], [0, 4]).
  """
  lens = np.fromiter((len(e) for e in encoded), np.int64, count=len(encoded))
  starts = np.concatenate([[0], np.cumsum(lens + 2)[:-1]]).astype(np.int64)
  out = np.empty(int(lens.sum()) + 2 * len(encoded), dtype)
  body = np.ones(out.shape[0], bool)
  body[starts] = False
  body[starts + lens + 1] = False
  out[starts] = bos
  out[starts + lens + 1] = eos
  if encoded and all(isinstance(e, np.ndarray) for e in encoded):
    out[body] = np.concatenate(encoded)   # pre-tokenized ids (lm.data.prepared)
  else:
    out[body] = np.fromiter((i for e in encoded for i in e), dtype,
                            count=int(lens.sum()))
  return out, starts


def build_stream(source: DocumentSource, tokenizer: Tokenizer, *,
                 max_chars: int | None = None) -> TokenStream:
  """Tokenizes and packs `source` in order (empty documents skipped).

  Stops after the first document that brings the character count to
  `max_chars` (None: all documents).

  Example: documents ["ab", "", "c"] encoded as [5, 6] and [7] (bos=2, eos=3)
  -> TokenStream(tokens=[2, 5, 6, 3, 2, 7, 3], doc_starts=[0, 4]).
  """
  dtype = token_dtype(tokenizer.vocab_size)
  parts, starts, offset = [], [], 0
  for chunk in _chunks(source, max_chars):
    tokens, doc_starts = pack_encoded(tokenizer.encode_batch(chunk),
                               tokenizer.bos_id, tokenizer.eos_id, dtype)
    parts.append(tokens)
    starts.append(doc_starts + offset)
    offset += tokens.shape[0]
  if not parts:
    raise LmError(f"Data source {source.uri!r} has no non-empty documents; "
                  "check the data URI and field.")
  return TokenStream(np.concatenate(parts), np.concatenate(starts))


def _sha256(path: str) -> str:
  """The hex sha256 of the file at `path`, read in large blocks."""
  with files.open(path, "rb") as f:
    return hashlib.file_digest(f, "sha256").hexdigest()


def save_arrays(path: str, arrays: dict[str, np.ndarray], *,
                keep_existing: bool = False) -> None:
  """Writes `path/<name>.npy` for each array and `path/checksums.json`,
  atomically.

  The directory is written under a temporary name and renamed into place, so
  readers see either nothing or every array together with its checksums
  (sha256 of the file, shape, dtype). An existing `path` is replaced, unless
  `keep_existing`: then a `path` that appeared while the arrays were being
  written (another process sharing the cache, building the same
  content-addressed entry) is kept and this copy dropped, so a process
  already reading that entry never sees it removed under it. The
  directory and files get the modes `os.makedirs` and `open` would give them
  under the current umask. Example: save_arrays("/tmp/c/x", {"tokens": t})
  -> /tmp/c/x/tokens.npy, /tmp/c/x/checksums.json.

  On an object store, which has no rename, each file is uploaded in place
  and checksums.json last: an entry counts as there once its checksums.json
  is (`entry_written`), so a reader never takes a half-written one.
  """
  if files.is_uri(path):
    _save_arrays_to_store(path, arrays, keep_existing)
    return
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}-")
  try:
    entries = {}
    for name, array in arrays.items():
      array = np.asanyarray(array)
      file = f"{name}.npy"
      np.save(os.path.join(tmp, file), array)
      entries[file] = {"sha256": _sha256(os.path.join(tmp, file)),
                       "shape": list(array.shape), "dtype": array.dtype.str}
    with open(os.path.join(tmp, CHECKSUMS), "w", encoding="utf-8") as f:
      json.dump({"format": _CHECKSUMS_FORMAT, "files": entries}, f, indent=1,
                sort_keys=True)
    os.chmod(tmp, default_dir_mode())
    if keep_existing:
      try:
        os.rename(tmp, path)  # fails when another writer's `path` is there
      except OSError:
        if not os.path.isdir(path):
          raise
      return
    if os.path.isdir(path):
      shutil.rmtree(path)
    os.replace(tmp, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _save_arrays_to_store(path: str, arrays: dict[str, np.ndarray],
                          keep_existing: bool) -> None:
  """`save_arrays` on an object store (see there)."""
  path = files.abspath(path)
  if entry_written(path):
    if keep_existing:
      return
    files.rmtree(path)
  entries = {}
  for name, array in arrays.items():
    array = np.asanyarray(array)
    buf = io.BytesIO()
    np.save(buf, array)
    data = buf.getvalue()
    files.write_atomic(files.join(path, f"{name}.npy"), data)
    entries[f"{name}.npy"] = {"sha256": hashlib.sha256(data).hexdigest(),
                              "shape": list(array.shape),
                              "dtype": array.dtype.str}
  files.write_text_atomic(files.join(path, CHECKSUMS), json.dumps(
      {"format": _CHECKSUMS_FORMAT, "files": entries}, indent=1,
      sort_keys=True))


def entry_written(path: str) -> bool:
  """Whether the cache entry `path` (a `save_arrays` directory) is there
  in full: locally the directory (renamed into place whole), on an object
  store its checksums.json (uploaded last)."""
  if files.is_uri(path):
    return files.isfile(files.join(path, CHECKSUMS))
  return os.path.isdir(path)


def _read_checksums(path: str, damaged) -> dict[str, dict]:
  """The `files` table of `path/checksums.json`, checked for shape."""
  file = files.join(path, CHECKSUMS)
  if not files.isfile(file):
    raise damaged(f"has no {CHECKSUMS} (it was written by an older version "
                  "or by something else)")
  try:
    entries = json.loads(files.read_bytes(file))["files"]
    for entry in entries.values():
      if not (isinstance(entry["sha256"], str)
              and isinstance(entry["shape"], list)
              and isinstance(entry["dtype"], str)):
        raise TypeError
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    raise damaged(f"has an unreadable {CHECKSUMS}") from None
  return entries


def load_arrays(path: str, names: Sequence[str] | None = None, *,
                mmap: bool = True, vocab_size: int | None = None,
                what: str = "Cached data") -> dict[str, np.ndarray]:
  """The arrays of a directory written by `save_arrays`, verified.

  Args:
    path: the directory.
    names: the arrays to load (file names without `.npy`); None: every
      array its checksums.json lists.
    mmap: memory-map the files (else read them into memory).
    vocab_size: when given, an array named "tokens" must hold ids below it.
    what: how the error sentence names the directory ("Token stream", ...).

  Every file is hashed and compared with checksums.json, and its shape and
  dtype with the recorded ones. Any difference, a missing file, a missing or
  unreadable checksums.json, or a token id >= `vocab_size` raises LmError
  naming `path` and telling the user to delete it (see the module
  docstring). Example: load_arrays("/tmp/c/x")["tokens"][:3] -> [2, 5, 6].
  """
  def damaged(detail: str) -> LmError:
    return LmError(f"{what} {path} {detail}; delete the directory and it "
                   "will be rebuilt from the data on the next run.")

  if names is not None:
    for name in names:
      if not files.isfile(files.join(path, f"{name}.npy")):
        raise damaged(f"is missing {name}.npy")
  entries = _read_checksums(path, damaged)
  if names is None:
    names = sorted(f[:-len(".npy")] for f in entries if f.endswith(".npy"))
  out = {}
  for name in names:
    file = f"{name}.npy"
    full = files.join(path, file)
    if file not in entries:
      raise damaged(f"has no checksum for {file} in {CHECKSUMS}")
    if not files.isfile(full):
      raise damaged(f"is missing {file}")
    entry = entries[file]
    try:
      # an object is read once, hashed and parsed from memory
      data = files.read_bytes(full) if files.is_uri(full) else None
      digest = (_sha256(full) if data is None
                else hashlib.sha256(data).hexdigest())
    except OSError as e:
      raise damaged(f"has an unreadable {file} ({e.strerror or e})") from None
    if digest != entry["sha256"]:
      raise damaged(f"has a {file} that does not match its sha256 in "
                    f"{CHECKSUMS} (the file was changed or damaged)")
    try:
      array = (np.load(full, mmap_mode="r" if mmap else None) if data is None
               else np.load(io.BytesIO(data)))
    except (OSError, ValueError) as e:
      raise damaged(f"has an unreadable {file} ({e})") from None
    if list(array.shape) != entry["shape"] or array.dtype.str != entry["dtype"]:
      raise damaged(f"has a {file} of shape {list(array.shape)} and dtype "
                    f"{array.dtype.str}, not the {entry['shape']} and "
                    f"{entry['dtype']} its {CHECKSUMS} records")
    out[name] = array
  tokens = out.get("tokens")
  if vocab_size is not None and tokens is not None and tokens.size:
    top = int(np.max(tokens))
    low = int(np.min(tokens)) if tokens.dtype.kind == "i" else 0
    if top >= vocab_size or low < 0:
      bad = top if top >= vocab_size else low
      raise damaged(f"holds token id {bad}, outside the tokenizer's "
                    f"vocabulary of {vocab_size} ids (it was made with "
                    "another tokenizer or edited)")
  return out


def cached_arrays(key: Sequence, build, cache_dir: str, prefix: str, *,
                  vocab_size: int | None = None) -> dict[str, np.ndarray]:
  """`build()` (a dict of arrays) cached under
  `cache_dir/<prefix>-<hash of key>/` and memory-mapped.

  `key` must change whenever the data or tokenizer do (their
  fingerprints). The entry is verified on every load (`load_arrays`; with
  `vocab_size`, its "tokens" array must hold ids below it). Example: the
  first call builds and writes the arrays; later calls only load them.
  """
  digest = hashlib.sha256(repr(list(key)).encode()).hexdigest()[:16]
  path = files.join(cache_dir, f"{prefix}-{digest}")
  if not entry_written(path):
    save_arrays(path, build(), keep_existing=True)
  return load_arrays(path, vocab_size=vocab_size, what="Cached arrays")


def save_stream(stream: TokenStream, path: str, *,
                keep_existing: bool = False) -> None:
  """Writes `stream` as a directory `path/` with tokens.npy, doc_starts.npy
  and checksums.json (atomically, see `save_arrays`). Example: save_stream(s,
  "/tmp/c/stream-ab12") -> /tmp/c/stream-ab12/{tokens,doc_starts}.npy.
  """
  save_arrays(path, {"tokens": np.asarray(stream.tokens),
                     "doc_starts": np.asarray(stream.doc_starts, np.int64)},
              keep_existing=keep_existing)


def load_stream(path: str, mmap: bool = True, *,
                vocab_size: int | None = None) -> TokenStream:
  """Reads a stream written by `save_stream` (memory-mapped by default),
  verified against its checksums; with `vocab_size`, every token id must be
  below it (see `load_arrays`).

  Example: load_stream("/tmp/c/stream-ab12").tokens[:3] -> [2, 5, 6].
  """
  arrays = load_arrays(path, ("tokens", "doc_starts"), mmap=mmap,
                       vocab_size=vocab_size, what="Token stream")
  return TokenStream(arrays["tokens"], arrays["doc_starts"])


def stream_cache_path(source: DocumentSource, tokenizer: Tokenizer,
                      cache_dir: str, max_chars: int | None = None) -> str:
  """The cache directory for this source, tokenizer and `max_chars`.

  Example: -> "<cache_dir>/stream-3f9a0c1d2b4e5f60".
  """
  key = repr((source.fingerprint(), tokenizer.fingerprint(), max_chars))
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  return files.join(cache_dir, f"stream-{digest}")


def cached_stream(source: DocumentSource, tokenizer: Tokenizer, cache_dir: str,
                  *, max_chars: int | None = None) -> TokenStream:
  """`build_stream`, cached on disk and memory-mapped.

  The cache entry is named by `source.fingerprint()`, the tokenizer's hash and
  `max_chars`, so a changed corpus or tokenizer gets a new entry; it is
  verified on every load, ids against `tokenizer.vocab_size`. Example:
  the first call tokenizes and writes `cache_dir/stream-<hash>/`; later calls
  only map it.
  """
  path = stream_cache_path(source, tokenizer, cache_dir, max_chars)
  if not entry_written(path):
    save_stream(build_stream(source, tokenizer, max_chars=max_chars), path,
                keep_existing=True)
  return load_stream(path, mmap=True, vocab_size=tokenizer.vocab_size)


def make_rows(stream: TokenStream, starts: np.ndarray,
              seq_len: int) -> dict[str, np.ndarray]:
  """Cuts a `seq_len + 1` token window at each offset in `starts`.

  Args:
    stream: the packed stream.
    starts: [R] int window start offsets; windows running past the end of
      the stream are padded with pad id 0.
    seq_len: T, the row length.

  Returns:
    A dict of [R, T] arrays:
      inputs (int32) window[:-1]; targets (int32) window[1:];
      segment_ids (int32) 1, 2, ... for the documents in the row, 0 = padding;
      positions (int32) index within the document's part of the row;
      loss_mask (float32) 1 where input and target are in the same document.

  Example: docs [2, 5, 6, 3] and [2, 7, 3] (tokens [2, 5, 6, 3, 2, 7, 3]),
  seq_len 4, starts [0, 3]:
    inputs      [[2, 5, 6, 3], [3, 2, 7, 3]]
    targets     [[5, 6, 3, 2], [2, 7, 3, 0]]
    segment_ids [[1, 1, 1, 1], [1, 2, 2, 2]]
    positions   [[0, 1, 2, 3], [0, 0, 1, 2]]
    loss_mask   [[1, 1, 1, 0], [0, 1, 1, 0]]
  """
  n = len(stream)
  starts = np.asarray(starts, np.int64).reshape(-1)
  idx = starts[:, None] + np.arange(seq_len + 1, dtype=np.int64)  # [R, T+1]
  valid = idx < n
  window = stream.tokens[np.minimum(idx, n - 1)].astype(np.int32)
  window[~valid] = PAD_ID
  # doc[r, t]: index of the document holding token idx[r, t].
  doc = np.searchsorted(stream.doc_starts, idx, side="right") - 1  # [R, T+1]
  in_doc, in_valid = doc[:, :-1], valid[:, :-1]  # [R, T]
  # Documents are consecutive, so renumbering is an offset from the first.
  segment_ids = np.where(in_valid, in_doc - in_doc[:, :1] + 1, 0)
  seg_start = np.maximum(stream.doc_starts[in_doc], starts[:, None])
  positions = np.where(in_valid, idx[:, :-1] - seg_start, 0)
  loss_mask = (in_doc == doc[:, 1:]) & valid[:, 1:]
  return {
      "inputs": np.ascontiguousarray(window[:, :-1]),
      "targets": np.ascontiguousarray(window[:, 1:]),
      "segment_ids": segment_ids.astype(np.int32),
      "positions": positions.astype(np.int32),
      "loss_mask": loss_mask.astype(np.float32),
  }
