"""ArrayRecord files as random-access records: `arrayrecord:GLOB[SLICE]`
text corpora, and the shards of pre-tokenized corpora (`lm.data.prepared`).

`arrayrecord:GLOB[a%:b%]` reads one document per record, in file order
then record order; the slice keeps records a% to b% of the total count (as
`jsonl:` slices lines). A record is UTF-8 text, or, when the first
non-empty record of the first file is a JSON object, every record is a
JSON object and the document is its `data.field`. Records of serialized
`tf.train.Example`s (what `tfds build --file_format=array_record` writes)
are read through their TFDS dataset, `tfds:NAME`.

ArrayRecord 0.8 reads local files only (its reader opens paths itself),
so a `gs://` glob is refused with a sentence saying to copy or mount it.
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np

from lm import files
from lm.data.documents import DocumentSource, content_hash
from lm.data.sources import decode_text, glob_files, split_slice
from lm.errors import LmError

SCHEME = "arrayrecord"


def local_only(uri: str, path: str) -> None:
  """One sentence for a cloud path, which ArrayRecord cannot open."""
  if files.is_uri(path):
    raise LmError(f"Data URI {uri!r}: ArrayRecord reads local files only; "
                  "copy the files to local disk (gcloud storage cp -r) or "
                  "mount the bucket (gcsfuse) and name that path.")


class RecordFiles:
  """Records of ArrayRecord files by global index, a reader per file,
  thread and process (picklable: workers open their own).

  Example: RecordFiles(["a.array_record"]).read(3) -> b"the fourth record".
  """

  def __init__(self, paths, counts=None):
    self.paths = list(paths)
    if counts is None:
      counts = [self._open(p).num_records() for p in self.paths]
    self.ends = np.cumsum(np.asarray(counts, np.int64))
    self._local = threading.local()

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_local"] = None
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._local = threading.local()

  def __len__(self) -> int:
    return int(self.ends[-1]) if len(self.ends) else 0

  @staticmethod
  def _open(path: str):
    from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
    try:
      reader = array_record_module.ArrayRecordReader(
          path, "readahead_buffer_size:0")
    except (RuntimeError, OSError) as e:
      raise LmError(f"{path} could not be opened as an ArrayRecord file "
                    f"({str(e).splitlines()[0]}); check the file.") from None
    if not reader.ok():
      raise LmError(f"{path} could not be opened as an ArrayRecord file (it "
                    "does not have the format); check the file.")
    return reader

  def locate(self, i: int) -> tuple[int, int]:
    """(file, record within it) of global record `i`."""
    f = int(np.searchsorted(self.ends, i, side="right"))
    return f, int(i) - (int(self.ends[f - 1]) if f else 0)

  def read(self, i: int) -> bytes:
    f, j = self.locate(i)
    local = self._local.__dict__
    if local.get("pid") != os.getpid():   # a forked worker: its own readers
      local.clear()
      local["pid"] = os.getpid()
    reader = local.get(f)
    if reader is None:
      reader = local[f] = self._open(self.paths[f])
    return reader.read([j])[0]


class ArrayRecordSource(DocumentSource):
  """`arrayrecord:` documents (module docstring)."""

  def __init__(self, uri: str, paths: list[str], field: str,
               fraction: tuple[float, float]):
    self.uri, self.field, self.fraction = uri, field, fraction
    self.records = RecordFiles(paths)
    self._stats = [files.identity(p) for p in paths]
    total = len(self.records)
    self._lo = int(total * fraction[0] / 100)
    self._hi = int(total * fraction[1] / 100)
    self.json = False
    for i in range(min(total, 64)):
      data = self.records.read(i).strip()
      if data:
        self.json = data[:1] == b"{" and _is_object(data)
        break

  def __len__(self) -> int:
    return self._hi - self._lo

  def _get(self, i: int) -> str:
    g = self._lo + i
    f, j = self.records.locate(g)
    path = self.records.paths[f]
    text = decode_text(path, self.records.read(g))
    if not self.json:
      return text
    if not text.strip():
      return ""
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise LmError(f"{path} record {j} is not valid JSON ({e.msg}), though "
                    "the file's first record is a JSON object; write every "
                    "record as one.") from None
    value = obj.get(self.field) if isinstance(obj, dict) else None
    if not isinstance(value, str):
      have = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
      raise LmError(f"{path} record {j} has no text field {self.field!r} (it "
                    f"has {have}); pick the field with --config.data.field.")
    return value

  def fingerprint(self) -> str:
    return content_hash([self.uri, self.field, self.fraction, self._stats,
                         self.json])


def _is_object(data: bytes) -> bool:
  try:
    return isinstance(json.loads(data), dict)
  except (ValueError, UnicodeDecodeError):
    return False


def open_array_records(uri: str, rest: str, field: str) -> ArrayRecordSource:
  """`arrayrecord:GLOB[SLICE]` as an `ArrayRecordSource`."""
  pattern, fraction = split_slice(uri, rest)
  local_only(uri, pattern)
  src = ArrayRecordSource(uri, glob_files(uri, pattern), field, fraction)
  if not len(src):
    raise LmError(f"Data URI {uri!r} selects no records of "
                  f"{len(src.records)}; check the files and the slice.")
  return src
