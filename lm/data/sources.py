"""Documents by URI: one random-access list of strings per corpus.

`open_source(uri)` turns a URI into a `DocumentSource`: `len(src)` documents,
`src[i]` the i-th document as a `str`, `src.uri`, and `src.fingerprint()`, a
short stable hash of exactly which documents these are (used to name cached
token files).

Supported URIs:

  pystdlib[:train|:validation]   the `.py` files of this Python's standard
                                 library (no tests, no site-packages); one file
                                 per document; a fixed 95/5 split by path.
  text:GLOB[SLICE]               plain-text files, one file per document.
  jsonl:GLOB[SLICE]              JSON lines, one object per line; the document
                                 is `obj[field]`.
  hf:REPO[/CONFIG][:SPLIT]       a Hugging Face dataset (the Hub, or a local or
  hf:DIR[:SPLIT]                 gs:// save_to_disk / Parquet directory), see
                                 `lm.data.hf_datasets`; the document is
                                 `example[field]`.
  tfds:NAME[/CONFIG][:SPLIT]     a TFDS dataset via `tfds.data_source`; the
                                 document is `example[field]`. SPLIT defaults
                                 to `train` and may use TFDS slicing
                                 (`train[:90%]`).

SLICE is `[a%:b%]` (either end optional). For `text:` it keeps characters
`int(len*a/100)` to `int(len*b/100)` of EACH file, so `text:input.txt[:90%]` and
`text:input.txt[90%:]` are nanoGPT's in-order 90/10 split of Tiny Shakespeare.
For `jsonl:` it slices the list of documents.

Reading files (`read_text`, used by every file reader in `lm.data`: `text:`,
`pystdlib`, `jsonl:`, and the csv/tsv/conll/jsonl records and pairs):

  * a file with a NUL byte in its first 8 KiB is binary (an archive, an
    array, a model, or UTF-16 text) and is refused with an LmError naming
    it: read as text it would silently become garbage tokens, and no UTF-8
    text file has NUL bytes. `text:` checks every matching file when the
    source is opened, so a glob that catches a binary file fails before
    anything is read or written.
  * bytes that are not valid UTF-8 are decoded as U+FFFD and the run goes
    on, with ONE warning on stderr per file and process ("warning: PATH is
    not valid UTF-8 (N undecodable bytes) ..."), however often it is read
    (tokenizer training, then tokenization, then the eval split of the same
    file): a few stray bytes in a large corpus are common and harmless, but
    the user should know.
  * a file ending in `.gz` or `.zst` is decompressed first (gzip, or
    Zstandard through the `zstandard` package), so `text:corpus/*.txt.gz` and
    `jsonl:shards/*.jsonl.zst` read as their plain versions; a file that does
    not decompress is one sentence naming it.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import os
import re
import sys
import sysconfig
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from lm import files
from lm.data import tfds_source
from lm.data.documents import DocumentSource, content_hash  # noqa: F401 (re-exported)
from lm.errors import LmError

SCHEMES = ("pystdlib", "text", "jsonl", "tfds", "hf")
# Opened for training by `lm.objectives.open_documents` (ArrayRecord text,
# lm.data.array_records; pre-tokenized corpora, lm.data.prepared).
TRAINING_SCHEMES = ("arrayrecord", "prepared")

# Directories and file names excluded from the `pystdlib` corpus.
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test",
                               "tests", "idle_test", "__pycache__"})
_STDLIB_VALIDATION_PERCENT = 5

# `[a%:b%]` at the very end of a URI; either bound may be omitted.
_SLICE_RE = re.compile(
    r"^(?P<body>.*)\[(?:(?P<a>\d+(?:\.\d+)?)%)?:(?:(?P<b>\d+(?:\.\d+)?)%)?\]$")


# A file with a NUL byte among its first this-many bytes is binary.
BINARY_SNIFF_BYTES = 8192
_COUNTING_HANDLER = "lm.data.count_undecodable"
_undecodable = threading.local()  # .count: bytes replaced by the last decode
_warned_paths: set[str] = set()
_warned_lock = threading.Lock()


def _count_and_replace(err: UnicodeDecodeError) -> tuple[str, int]:
  """Decode error handler: U+FFFD for the bad bytes, counted."""
  _undecodable.count += err.end - err.start
  return "\ufffd", err.end


codecs.register_error(_COUNTING_HANDLER, _count_and_replace)


def check_not_binary(path: str, head: bytes) -> None:
  """LmError when `head` (the first bytes of file `path`) has a NUL byte.

  Example: b"PK\x03\x04\x00..." (a zip) -> LmError("data/x.zip is a binary
  file ..."); b"plain text" -> None.
  """
  at = head.find(b"\0", 0, BINARY_SNIFF_BYTES)
  if at >= 0:
    raise LmError(f"{path} is a binary file, not text (it has a NUL byte at "
                  f"offset {at}); leave it out of the data URI, or re-save it "
                  "as UTF-8 text if it is UTF-16.")


def _warn_undecodable(path: str, count: int) -> None:
  """One stderr warning per file and process about its non-UTF-8 bytes."""
  key = files.abspath(path)
  with _warned_lock:
    if key in _warned_paths:
      return
    _warned_paths.add(key)
  print(f"warning: {path} is not valid UTF-8 ({count} undecodable "
        f"byte{'s' if count != 1 else ''}); they are read as U+FFFD "
        "replacement characters (re-save the file as UTF-8 to keep that "
        "text).", file=sys.stderr, flush=True)


def decode_text(path: str, data: bytes) -> str:
  """`data`, the bytes of file `path`, as UTF-8 text (see the module
  docstring): LmError if it looks binary; invalid bytes become U+FFFD with
  one warning per path.

  Example: b"caf\xe9" -> "caf\ufffd", and "warning: PATH is not valid
  UTF-8 (1 undecodable byte); ..." on stderr the first time for PATH.
  """
  check_not_binary(path, data[:BINARY_SNIFF_BYTES])
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError:
    pass
  _undecodable.count = 0
  text = data.decode("utf-8", errors=_COUNTING_HANDLER)
  _warn_undecodable(path, _undecodable.count)
  return text


COMPRESSED = (".gz", ".zst")


def read_bytes(path: str) -> bytes:
  """The bytes of file `path` (local or a URI), decompressed when its name
  ends in `.gz` or `.zst`. Example: read_bytes("a.txt.gz") -> b"plain"."""
  data = files.read_bytes(path)
  name = path.lower()
  try:
    if name.endswith(".gz"):
      return gzip.decompress(data)
    if name.endswith(".zst"):
      import zstandard  # pylint: disable=g-import-not-at-top  (only .zst)
      with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as r:
        return r.read()
  except (OSError, EOFError, zlib.error) as e:
    raise LmError(f"{path} is not a valid {name.rsplit('.', 1)[-1]} file "
                  f"({e}); re-compress it or drop the extension if it is "
                  "plain text.") from None
  except Exception as e:  # pylint: disable=broad-except  (zstandard.ZstdError)
    if type(e).__module__.startswith("zstandard"):
      raise LmError(f"{path} is not a valid zst file ({e}); re-compress it "
                    "or drop the extension if it is plain text.") from None
    raise
  return data


def read_text(path: str, newline: str | None = None) -> str:
  """The text of file `path`, read as `decode_text` says.

  `newline` as for `open`: None translates "\r\n" and "\r" to "\n"; ""
  keeps the file's exact line endings. Example: a file b"a\r\nb" ->
  "a\nb" (newline=None) or "a\r\nb" (newline="").
  """
  text = decode_text(path, read_bytes(path))
  if newline is None and "\r" in text:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
  return text


# --- files (pystdlib:, text:) -------------------------------------------------


class FileSource(DocumentSource):
  """One document per file, read lazily, optionally a character slice of each.

  Example: files `a.txt` = "abcdefghij", `b.txt` = "0123456789" and
  `fraction=(0, 50)` give documents ["abcde", "01234"].
  """

  def __init__(self, uri: str, paths: Sequence[str],
               fraction: tuple[float, float] = (0.0, 100.0)):
    self.uri = uri
    self.paths = list(paths)
    self.fraction = fraction

  def __len__(self) -> int:
    return len(self.paths)

  def _get(self, i: int) -> str:
    # newline="": the document is the file's exact text ("\r\n" stays).
    text = read_text(self.paths[i], newline="")
    a, b = self.fraction
    if (a, b) == (0.0, 100.0):
      return text
    return text[int(len(text) * a / 100):int(len(text) * b / 100)]

  def fingerprint(self) -> str:
    stats = [files.identity(p) for p in self.paths]
    return content_hash([self.uri, self.fraction, stats])


def _stdlib_files(split: str) -> list[str]:
  """Sorted absolute paths of the stdlib `.py` files (no tests) in `split`.

  A file is in `validation` iff `zlib.crc32(relpath) % 100 < 5`.
  """
  root = sysconfig.get_paths()["stdlib"]
  picked = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS]
    for name in filenames:
      if not name.endswith(".py") or name.startswith("test_"):
        continue
      rel = os.path.relpath(os.path.join(dirpath, name), root)
      is_val = zlib.crc32(rel.encode()) % 100 < _STDLIB_VALIDATION_PERCENT
      if is_val == (split == "validation"):
        picked.append(rel)
  return [os.path.join(root, rel) for rel in sorted(picked)]


def _open_pystdlib(uri: str, rest: str | None) -> FileSource:
  """`pystdlib[:train|:validation]`."""
  split = rest or "train"
  if split not in ("train", "validation"):
    raise LmError(f"Unknown split {split!r} in data URI {uri!r}; "
                  "use 'pystdlib:train' or 'pystdlib:validation'.")
  paths = _stdlib_files(split)
  if not paths:
    raise LmError(f"Found no standard-library .py files for {uri!r} under "
                  f"{sysconfig.get_paths()['stdlib']}; use another data URI.")
  return FileSource(f"pystdlib:{split}", paths)


def split_slice(uri: str, body: str) -> tuple[str, tuple[float, float]]:
  """Splits `GLOB[a%:b%]` into the glob and the percent bounds.

  Example: "data/x.txt[90%:]" -> ("data/x.txt", (90.0, 100.0));
  "data/x.txt" -> ("data/x.txt", (0.0, 100.0)).
  """
  m = _SLICE_RE.match(body)
  if not m:
    return body, (0.0, 100.0)
  a = float(m.group("a")) if m.group("a") else 0.0
  b = float(m.group("b")) if m.group("b") else 100.0
  if not 0.0 <= a <= b <= 100.0:
    raise LmError(f"Bad slice in data URI {uri!r}: need 0% <= start <= end <= "
                  "100%, e.g. '[:90%]' or '[90%:]'.")
  return m.group("body"), (a, b)


def glob_files(uri: str, pattern: str) -> list[str]:
  """Sorted regular files matching `pattern` (`**` recurses; `~` expands)."""
  if not pattern:
    raise LmError(f"Data URI {uri!r} names no files; write e.g. "
                  "'text:data/*.txt'.")
  if files.is_uri(pattern):
    files.check_bucket(pattern, f"data URI {uri!r}:")
  paths = files.glob(pattern)
  if not paths:
    where = ("" if files.is_uri(pattern) else
             f", relative to the current directory {os.getcwd()}")
    raise LmError(f"No files match {pattern!r} (from data URI {uri!r}); check "
                  f"the path and glob{where}.")
  return paths


def _open_text(uri: str, rest: str) -> FileSource:
  """`text:GLOB[SLICE]`: one document per file."""
  pattern, fraction = split_slice(uri, rest)
  paths = glob_files(uri, pattern)
  if all(files.getsize(p) == 0 for p in paths):
    raise LmError(f"All {len(paths)} file(s) matching {pattern!r} are empty; "
                  "point the data URI at files with text.")
  for path in paths:  # binary files are refused now, not mid-tokenization
    if path.lower().endswith(COMPRESSED):
      check_not_binary(path, read_bytes(path)[:BINARY_SNIFF_BYTES])
      continue
    with files.open(path, "rb") as f:
      check_not_binary(path, f.read(BINARY_SNIFF_BYTES))
  return FileSource(uri, paths, fraction)


# --- JSON lines ---------------------------------------------------------------


class ListSource(DocumentSource):
  """Documents held in memory (used for `jsonl:`).

  Example: `ListSource("mem:", ["a", "b"])[1]` -> "b".
  """

  def __init__(self, uri: str, documents: Sequence[str],
               key: Sequence[Any] = ()):
    self.uri = uri
    self.documents = list(documents)
    self._key = list(key)

  def __len__(self) -> int:
    return len(self.documents)

  def _get(self, i: int) -> str:
    return self.documents[i]

  def fingerprint(self) -> str:
    return content_hash([self.uri, self._key])


# JSON names of the Python types `json.loads` returns, for error messages.
_JSON_KINDS = {list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


def read_jsonl_records(
    path: str, *, fix: str = "fix the file or use a 'text:' URI"
) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, object) for each non-blank line of the JSON-lines file
  `path`; `fix` ends the error sentence for a line that is not valid JSON or
  not a JSON object.

  Example: lines '{"text": "a"}', '', '{"text": "b"}' ->
  (1, {"text": "a"}), (3, {"text": "b"}).
  """
  with io.StringIO(read_text(path)) as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        obj = json.loads(line)
      except json.JSONDecodeError as e:
        raise LmError(f"{path} line {lineno} is not valid JSON ({e.msg}); "
                      f"{fix}.") from None
      if not isinstance(obj, dict):
        kind = _JSON_KINDS.get(type(obj), type(obj).__name__)
        raise LmError(f"{path} line {lineno} is a JSON {kind}, not an object "
                      f"with named fields; {fix}.")
      yield lineno, obj


def _read_jsonl(path: str, field: str) -> list[str]:
  """The `field` of every object in the JSON-lines file `path` (blank lines
  skipped).

  Example: lines '{"text": "a"}', '{"text": "b"}' -> ["a", "b"].
  """
  docs = []
  for lineno, obj in read_jsonl_records(path):
    if field not in obj:
      raise LmError(f"{path} line {lineno} has no field {field!r} (it has "
                    f"{sorted(obj)}); pick the field with --config.data.field.")
    value = obj[field]
    if not isinstance(value, str):
      raise LmError(f"{path} line {lineno}: field {field!r} is a "
                    f"{type(value).__name__}, not a string; pick a text "
                    "field with --config.data.field.")
    docs.append(value)
  return docs


def _open_jsonl(uri: str, rest: str, field: str) -> ListSource:
  """`jsonl:GLOB[SLICE]`: one document per line; SLICE cuts the list."""
  pattern, (a, b) = split_slice(uri, rest)
  paths = glob_files(uri, pattern)
  docs = [d for p in paths for d in _read_jsonl(p, field)]
  n = len(docs)
  docs = docs[int(n * a / 100):int(n * b / 100)]
  if not docs:
    raise LmError(f"Data URI {uri!r} selects no documents from {len(paths)} "
                  "file(s); check the files and the slice.")
  stats = [files.identity(p) for p in paths]
  return ListSource(uri, docs, key=[field, stats, len(docs)])


# --- entry point --------------------------------------------------------------


def open_source(uri: str, *, field: str = "text",
                data_dir: str | None = None) -> DocumentSource:
  """Opens the corpus named by `uri` (see the module docstring for URIs).

  Args:
    uri: e.g. "pystdlib:train", "text:data/input.txt[:90%]",
      "jsonl:data/*.jsonl", "tfds:imdb_reviews:train[:90%]".
    field: the record field holding the text (jsonl: and tfds: only).
    data_dir: the TFDS data directory (tfds: only).

  Returns:
    A `DocumentSource`. Example: open_source("pystdlib:validation")[0] is the
    source of one stdlib module.
  """
  scheme, sep, rest = uri.partition(":")
  if scheme == "pystdlib":
    return _open_pystdlib(uri, rest if sep else None)
  if not sep or scheme not in SCHEMES:
    raise LmError(f"Unknown data URI {uri!r}; supported schemes are "
                  + ", ".join(f"'{s}:'" for s in SCHEMES + TRAINING_SCHEMES)
                  + " (e.g. 'text:data/input.txt').")
  if scheme == "text":
    return _open_text(uri, rest)
  if scheme == "jsonl":
    return _open_jsonl(uri, rest, field)
  return tfds_source.open_tfds(uri, rest, field, data_dir)

