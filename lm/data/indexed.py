"""Random access into text and JSON-lines files by a byte-offset index.

The streaming pipeline (`lm.data.streaming`) reads documents in a shuffled
order while training runs, so it needs document `i` of a corpus without
reading the documents before it. `text:` and `jsonl:` files give no such
access, so each file is scanned once for line starts (a pass over its bytes
that looks for newlines, far cheaper than tokenizing it) and the documents
become byte ranges:

  * `jsonl:GLOB[SLICE]`: one document per non-blank line, `obj[field]`;
    SLICE cuts the list of documents as for the in-memory reader.
  * `text:GLOB[SLICE]`: each file is cut at line starts into pieces of at
    least `piece_bytes` bytes (the last piece of a file may be shorter),
    and every piece is a document. A file is one document in the packed
    pipeline; streamed, a long file (Tiny Shakespeare, a corpus dump) must
    be cut, or every row of a step would read the same text. SLICE
    `[a%:b%]` keeps the pieces whose first byte lies in the bytes
    `int(size*a/100)` to `int(size*b/100)` of each file, so the 90/10 split
    of one file falls on a piece boundary.

Files are scanned in parallel threads (reads release the GIL, and the
newline search is one vectorised numpy comparison per block). The index
(`file`, `start` and `end` per document) is a data-cache entry
(`lm.data.packing.cached_arrays`, checksummed) named by the files'
identities (path, size, modification time or object generation), so a
later run or a resumed one maps it instead of scanning again.

A document is read with one seek and one ranged read (a ranged GET on an
object store). Compressed files (`.gz`, `.zst`) cannot be read at an
offset and are refused with one sentence.

Written here rather than taken from a library: Grain's random-access
sources read ArrayRecord, Parquet or TFDS files, not plain text or JSON
lines, and a researcher's corpus is usually those.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading

import numpy as np

from lm import files
from lm.data import packing
from lm.data.sources import (BINARY_SNIFF_BYTES, COMPRESSED, DocumentSource,
                             glob_files, content_hash, split_slice,
                             check_not_binary, decode_text)
from lm.errors import LmError

SCHEMES = ("text", "jsonl")
_BLOCK = 4 << 20        # bytes read per scan step
_THREADS = 8            # files scanned at once


def _scan(path: str, every: int | None) -> np.ndarray:
  """Line-start offsets of file `path`: every line start (`every` None), or
  0 and then the first line start at least `every` bytes after the last
  one taken. Offsets equal to the file size (after a final newline) are
  left out. The file is read once, in blocks; memory stays at a block.

  Example: b"ab\\ncd\\nef\\n" -> [0, 3, 6] (every None); with every=4 ->
  [0, 6].
  """
  found = [np.zeros(1, np.int64)]
  target = every      # the next piece starts at the first line start >= it
  offset = 0
  with files.open(path, "rb") as f:
    while True:
      block = f.read(_BLOCK)
      if not block:
        break
      if every is None:
        found.append(np.flatnonzero(np.frombuffer(block, np.uint8) == 10)
                     .astype(np.int64) + offset + 1)
      else:
        picked = []
        at = max(target - offset - 1, 0)   # a newline at target - 1 counts
        while True:
          nl = block.find(b"\n", at)
          if nl < 0:
            break
          picked.append(offset + nl + 1)
          target = picked[-1] + every
          at = target - offset - 1
          if at >= len(block):
            break
        found.append(np.asarray(picked, np.int64))
      offset += len(block)
  out = np.concatenate(found)
  return out[out < offset] if offset else out[:0]


class IndexedFiles(DocumentSource):
  """Documents of text or JSON-lines files by byte range (module docstring).

  Example:
    src = open_indexed("jsonl:data/*.jsonl", field="text")
    src.prepare("/tmp/run/data")   # scans the files once, or maps the index
    len(src), src[3]               # -> (1000, "the fourth document")
  """

  def __init__(self, uri: str, kind: str, paths: list[str], field: str,
               piece_bytes: int, fraction: tuple[float, float]):
    self.uri, self.kind, self.paths = uri, kind, list(paths)
    self.field, self.piece_bytes, self.fraction = field, piece_bytes, fraction
    self._stats = [files.identity(p) for p in self.paths]
    self._index: dict[str, np.ndarray] | None = None
    self._handles = threading.local()
    self._opened: list = []       # every thread's handles, for close()
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_handles"], state["_opened"], state["_lock"] = None, [], None
    if self._index is not None:  # memory maps travel as plain arrays
      state["_index"] = {k: np.asarray(v) for k, v in self._index.items()}
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._handles = threading.local()
    self._lock = threading.Lock()

  def close(self) -> None:
    """Closes the open files of every thread (they reopen when read)."""
    with self._lock:
      opened, self._opened = self._opened, []
    for f in opened:
      f.close()
    self._handles = threading.local()

  def fingerprint(self) -> str:
    return content_hash([self.uri, self.kind, self.field, self.piece_bytes,
                  self.fraction, self._stats])

  def _build(self) -> dict[str, np.ndarray]:
    every = self.piece_bytes if self.kind == "text" else None
    with concurrent.futures.ThreadPoolExecutor(
        min(_THREADS, len(self.paths))) as pool:
      scans = list(pool.map(lambda p: _scan(p, every), self.paths))
    a, b = self.fraction
    parts = {"file": [], "start": [], "end": []}
    for i, (path, starts) in enumerate(zip(self.paths, scans)):
      size = files.getsize(path)
      ends = np.append(starts[1:], size).astype(np.int64)
      keep = ends - starts > 1      # a lone "\n" is a blank line
      if self.kind == "text":
        keep &= ((starts >= int(size * a / 100))
                 & (starts < int(size * b / 100)))
      parts["file"].append(np.full(int(keep.sum()), i, np.int32))
      parts["start"].append(starts[keep])
      parts["end"].append(ends[keep])
    index = {k: np.concatenate(v) if v else np.zeros(0, np.int64)
             for k, v in parts.items()}
    if self.kind == "jsonl":
      n = len(index["start"])
      lo, hi = int(n * a / 100), int(n * b / 100)
      index = {k: v[lo:hi] for k, v in index.items()}
    return index

  def prepare(self, cache_dir: str | None) -> None:
    """Loads the index from `cache_dir` (a data-cache directory), or scans
    the files and writes it there; None keeps a scanned index in memory."""
    if cache_dir is None:
      if self._index is None:
        self._index = self._build()
    else:
      built = self._index
      self._index = packing.cached_arrays(
          [self.fingerprint()], lambda: built or self._build(), cache_dir,
          "index")
    if not len(self._index["start"]):
      raise LmError(f"Data URI {self.uri!r} selects no documents from "
                    f"{len(self.paths)} file(s); check the files and the "
                    "slice.")

  def _arrays(self) -> dict[str, np.ndarray]:
    if self._index is None:
      self.prepare(None)
    return self._index

  def __len__(self) -> int:
    return int(len(self._arrays()["start"]))

  def _read(self, path: str, start: int, end: int) -> bytes:
    handles = self._handles.__dict__
    f = handles.get(path)
    if f is None:
      if len(handles) >= 64:
        closed = list(handles.values())
        for old in closed:
          old.close()
        handles.clear()
        with self._lock:
          self._opened = [h for h in self._opened
                          if all(h is not c for c in closed)]
      f = handles[path] = files.open(path, "rb")
      with self._lock:
        self._opened.append(f)
    f.seek(start)
    return f.read(end - start)

  def _text(self, i: int) -> tuple[str, str, int]:
    """(text, path, start byte) of document `i`."""
    index = self._arrays()
    path = self.paths[int(index["file"][i])]
    start, end = int(index["start"][i]), int(index["end"][i])
    return decode_text(path, self._read(path, start, end)), path, start

  def where(self, i: int) -> str:
    """Where document `i` is, for messages. Example: "a.jsonl at byte 80"."""
    index = self._arrays()
    return (f"{self.paths[int(index['file'][i])]} at byte "
            f"{int(index['start'][i])}")

  def record(self, i: int) -> dict | None:
    """The JSON object of line `i` of a `jsonl:` source (None for a blank
    line). Example: {"text": "the fourth document", "id": 3}."""
    text, path, start = self._text(i)
    if not text.strip():
      return None
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise LmError(f"{path} at byte {start} is not valid JSON ({e.msg}); "
                    "fix the line or use a 'text:' URI.") from None
    if not isinstance(obj, dict):
      raise LmError(f"{path} at byte {start} holds a "
                    f"{type(obj).__name__}, not a JSON object; write one "
                    "object per line.")
    return obj

  def _get(self, i: int) -> str:
    if self.kind == "text":
      return self._text(i)[0]
    obj = self.record(i)
    if obj is None:
      return ""
    path, start = self.where(i).rsplit(" at byte ", 1)
    if self.field not in obj:
      have = sorted(obj)
      raise LmError(f"{path} at byte {start} has no field {self.field!r} "
                    f"(it has {have}); pick the field with "
                    "--config.data.field.")
    value = obj[self.field]
    if not isinstance(value, str):
      raise LmError(f"{path} at byte {start}: field {self.field!r} is a "
                    f"{type(value).__name__}, not a string; pick a text "
                    "field with --config.data.field.")
    return value


def open_indexed(uri: str, *, field: str = "text",
                 piece_bytes: int = 16384) -> IndexedFiles:
  """`text:` or `jsonl:` files as an `IndexedFiles` (index built lazily)."""
  scheme, _, rest = uri.partition(":")
  if scheme not in SCHEMES:
    raise ValueError(f"not an indexed scheme: {uri!r}")
  if piece_bytes < 1:
    raise LmError(f"data.piece_bytes must be positive, got {piece_bytes}; "
                  "set --config.data.piece_bytes (e.g. 16384).")
  pattern, fraction = split_slice(uri, rest)
  paths = glob_files(uri, pattern)
  packed = [p for p in paths if p.lower().endswith(COMPRESSED)]
  if packed:
    raise LmError(f"{packed[0]} is compressed, and data.pipeline='stream' "
                  "reads documents at byte offsets, which a compressed file "
                  "does not allow; decompress the files or use "
                  "data.pipeline='packed'.")
  for path in paths:  # binary files are refused now, as the packed reader does
    with files.open(path, "rb") as f:
      check_not_binary(path, f.read(BINARY_SNIFF_BYTES))
  return IndexedFiles(uri, scheme, paths, field, piece_bytes, fraction)
