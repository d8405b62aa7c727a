"""Pre-tokenized corpora: ArrayRecord shards of token ids, written once by
`launch.prepare` and read by training as `prepared:DIR[SLICE]` with
`data.pipeline = "stream"` (causal objective), so a very large corpus is
tokenized once, in parallel, instead of on every run.

Layout of DIR:

  tokens-00000-of-00008.array_record, ...
      one record per source document, in the source's order (shard s holds
      a contiguous range of documents): its token ids, without bos/eos, as
      little-endian uint16 (int32 for vocabularies over 2**16); an empty
      document is an empty record.
  tokenizer.model (or tokenizer.json)
      the tokenizer that made them; a run that names no tokenizer takes
      this one, and a run that names another is refused.
  prepared.json
      written last, so a directory without it is an unfinished write:
      {"format": 1, "source": URI, "tokenizer": {"file", "sha256",
      "vocab_size"}, "dtype", "shards": [{"file", "documents", "tokens"}],
      "documents", "tokens"}.

`[a%:b%]` keeps the documents from a% to b% of the count, as `jsonl:`
slices lines. ArrayRecord 0.8 reads and writes local files only: shards
are written to a local temporary file and uploaded, so DIR may be a
`gs://` URI for `launch.prepare`, but training reads a local (or mounted)
DIR.
"""

from __future__ import annotations

import json

import numpy as np

from lm import files
from lm.data import indexed, packing, sources
from lm.data.array_records import RecordFiles, local_only
from lm.data.sources import DocumentSource, content_hash, split_slice
from lm.data.tokenizer import load_tokenizer
from lm.errors import LmError

SCHEME = "prepared"
MANIFEST = "prepared.json"
FORMAT = 1


def shard_name(index: int, count: int) -> str:
  """Example: (3, 8) -> "tokens-00003-of-00008.array_record"."""
  return f"tokens-{index:05d}-of-{count:05d}.array_record"


def stats_name(index: int, count: int) -> str:
  """The JSON a work unit leaves beside its shard until the manifest is
  written. Example: (3, 8) -> "tokens-00003-of-00008.json"."""
  return shard_name(index, count)[:-len(".array_record")] + ".json"


def write_shard(path: str, docs, dtype) -> dict:
  """Writes the token-id arrays `docs` as one ArrayRecord file at `path`
  (atomically: a local temporary file renamed or uploaded); returns its
  {"file", "documents", "tokens"}."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  n_docs = n_tokens = 0
  with files.atomic_path(path) as tmp:
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1")
    try:
      for ids in docs:
        arr = np.asarray(ids, dtype)
        writer.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
        n_docs += 1
        n_tokens += int(arr.shape[0])
    finally:
      writer.close()
  return {"file": files.basename(path), "documents": n_docs,
          "tokens": n_tokens}


def open_text_source(spec: dict):
  """The documents `launch.prepare` tokenizes, as training's stream
  pipeline sees them: `text:`/`jsonl:` through their offset index (a text
  piece or a JSON line per document; the index cached in
  `spec["index_cache"]`), any other URI through `open_source`."""
  uri = spec["uri"]
  if uri.partition(":")[0] == SCHEME:
    raise LmError(f"Data URI {uri!r} is already prepared; point --data at "
                  "its text source.")
  if uri.partition(":")[0] in indexed.SCHEMES:
    src = indexed.open_indexed(uri, field=spec["field"],
                               piece_bytes=spec["piece_bytes"])
    src.prepare(spec.get("index_cache"))
    return src
  return sources.open_source(uri, field=spec["field"],
                             data_dir=spec.get("data_dir"))


def shard_ranges(n_docs: int, n_shards: int) -> list[tuple[int, int]]:
  """Contiguous document ranges, one per shard, sizes within one.
  Example: (10, 3) -> [(0, 4), (4, 7), (7, 10)]."""
  bounds = np.linspace(0, n_docs, n_shards + 1).round().astype(np.int64)
  return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def tokenize_shard(spec: dict, shard: int, source=None, tokenizer=None,
                   batch: int = 256) -> dict:
  """Tokenizes documents `spec["ranges"][shard]` of the source and writes
  them as shard `shard` of `spec["out"]` (one Beam work unit; a retried
  unit rewrites the same file). Returns the shard's entry of the manifest.
  """
  source = source or open_text_source(spec)
  tokenizer = tokenizer or load_tokenizer(spec["tokenizer"])
  lo, hi = spec["ranges"][shard]
  dtype = np.dtype(spec["dtype"])

  def docs():
    for start in range(lo, hi, batch):
      texts = [source[i] for i in range(start, min(start + batch, hi))]
      full = [i for i, t in enumerate(texts) if t]
      encoded = tokenizer.encode_batch([texts[i] for i in full]) if full else []
      out = [()] * len(texts)
      for i, e in zip(full, encoded):
        out[i] = e
      yield from out
  path = files.join(spec["out"], shard_name(shard, len(spec["ranges"])))
  entry = write_shard(path, docs(), dtype)
  entry["first_document"] = lo
  return entry


def write_manifest(directory: str, *, source: str, tokenizer, tokenizer_file,
                   dtype, shards: list[dict]) -> dict:
  """Writes `prepared.json` (the last file of a prepared corpus)."""
  manifest = {
      "format": FORMAT, "source": source,
      "tokenizer": {"file": tokenizer_file, "sha256": tokenizer.fingerprint(),
                    "vocab_size": int(tokenizer.vocab_size)},
      "dtype": np.dtype(dtype).name, "shards": shards,
      "documents": int(sum(s["documents"] for s in shards)),
      "tokens": int(sum(s["tokens"] for s in shards))}
  files.write_text_atomic(files.join(directory, MANIFEST),
                          json.dumps(manifest, indent=1) + "\n")
  return manifest


def read_manifest(directory: str, uri: str) -> dict:
  """The manifest of a prepared corpus, or one sentence on what is wrong."""
  path = files.join(directory, MANIFEST)
  if not files.exists(path):
    what = ("has shards but no prepared.json, so its write did not finish"
            if files.isdir(directory) and any(
                n.startswith("tokens-") for n in files.listdir(directory))
            else "is not a prepared corpus (no prepared.json)")
    raise LmError(f"Data URI {uri!r}: {directory} {what}; run "
                  f"`python -m launch.prepare --out {directory} ...` first.")
  try:
    manifest = json.loads(files.read_text(path))
    shards = manifest["shards"]
    np.dtype(manifest["dtype"])
    manifest["tokenizer"]["sha256"]
  except (ValueError, KeyError, TypeError) as e:
    raise LmError(f"Data URI {uri!r}: {path} is damaged ({e}); prepare the "
                  "corpus again.") from None
  if manifest.get("format") != FORMAT:
    raise LmError(f"Data URI {uri!r}: {path} has format "
                  f"{manifest.get('format')!r}, not {FORMAT}; prepare the "
                  "corpus again with this version.")
  for shard in shards:
    if not files.exists(files.join(directory, shard["file"])):
      raise LmError(f"Data URI {uri!r}: shard {shard['file']} is missing "
                    f"from {directory}; copy it back or prepare again.")
  return manifest


class PreparedTokens(DocumentSource):
  """The documents of a prepared corpus as token ids (`token_ids`), read by
  record from its ArrayRecord shards. Picklable: readers are opened per
  process.

  Example: src = open_prepared("prepared:/data/c4"); len(src) -> 364613570;
  src.token_ids(0) -> array([812, 9, ...], dtype=uint16).
  """

  def __init__(self, uri: str, directory: str, manifest: dict,
               fraction: tuple[float, float]):
    self.uri, self.directory, self.manifest = uri, directory, manifest
    self.dtype = np.dtype(manifest["dtype"]).newbyteorder("<")
    self.records = RecordFiles(
        [files.join(directory, s["file"]) for s in manifest["shards"]],
        [s["documents"] for s in manifest["shards"]])
    total = len(self.records)
    a, b = fraction
    self._lo, self._hi = int(total * a / 100), int(total * b / 100)
    self.fraction = fraction

  def __len__(self) -> int:
    return self._hi - self._lo

  @property
  def tokenizer_path(self) -> str:
    return files.join(self.directory, self.manifest["tokenizer"]["file"])

  def check_tokenizer(self, tokenizer) -> None:
    """LmError unless `tokenizer` is the one the corpus was prepared with."""
    want = self.manifest["tokenizer"]["sha256"]
    if tokenizer.fingerprint() != want:
      raise LmError(f"Data URI {self.uri!r} was tokenized with "
                    f"{self.tokenizer_path}, not {tokenizer.path}; leave "
                    "--config.data.tokenizer.path empty (the run takes the "
                    "corpus's tokenizer) or prepare the corpus with yours.")

  def token_ids(self, i: int) -> np.ndarray:
    """The token ids of document `i` (of the slice)."""
    return np.frombuffer(self.records.read(self._lo + int(i)), self.dtype)

  def _get(self, i: int) -> str:
    raise LmError(f"Data URI {self.uri!r} holds token ids, not text; it is "
                  "read by causal training with data.pipeline='stream'.")

  def fingerprint(self) -> str:
    return content_hash([self.uri, self.manifest["tokenizer"]["sha256"],
                         self.manifest["documents"], self.manifest["tokens"],
                         self.fraction])


def open_prepared(uri: str) -> PreparedTokens:
  """`prepared:DIR[a%:b%]` as a `PreparedTokens` (see the module docstring)."""
  scheme, _, rest = uri.partition(":")
  if scheme != SCHEME:
    raise ValueError(f"not a prepared URI: {uri!r}")
  directory, fraction = split_slice(uri, rest)
  if not directory:
    raise LmError(f"Data URI {uri!r} names no directory; write e.g. "
                  "'prepared:data/c4-tokens'.")
  directory = files.expand(directory)
  local_only(uri, directory)
  manifest = read_manifest(directory, uri)
  src = PreparedTokens(uri, directory, manifest, fraction)
  if not len(src):
    raise LmError(f"Data URI {uri!r} selects no documents of the "
                  f"{manifest['documents']} prepared; check the slice.")
  return src


def token_dtype(vocab_size: int):
  """The stored dtype for a vocabulary (as the packed token streams)."""
  return packing.token_dtype(vocab_size)
