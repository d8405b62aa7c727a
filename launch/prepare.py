"""Tokenize a corpus once into ArrayRecord shards that training streams.

  python -m launch.prepare --data 'jsonl:data/c4/*.jsonl' \\
      --tokenizer runs/c4/tokenizer.model --out data/c4-tokens --shards 64
  python -m launch.train --config configs/gpt2_small.py --workdir runs/c4 \\
      --config.data.pipeline=stream \\
      --config.data.train='prepared:data/c4-tokens[:99%]'

The work runs as an Apache Beam pipeline (`pip install -e '.[prepare]'`):
one work unit per shard, each reading a contiguous range of the source's
documents, tokenizing them and writing one shard. By default it runs on
Beam's DirectRunner in this process; `--workers N` runs N local worker
processes, and `--beam_options` hands any Beam pipeline options to a
cluster runner, e.g.
`--beam_options=runner=DataflowRunner,project=P,region=R,temp_location=gs://B/tmp,setup_file=./setup.py`
(Dataflow, Flink and Spark workers need this package installed).

Documents are those training's stream pipeline reads from the same URI
(`data.pipeline=stream`): a JSON line of a `jsonl:` file, a piece of at
least --piece_bytes of a `text:` file, a record of `tfds:`/`hf:`, a module
of `pystdlib:`. The output directory (a local path or a `gs://` URI) gets
the shards, a copy of the tokenizer and, last, `prepared.json`
(`lm.data.prepared`); training reads a local copy.
"""

from __future__ import annotations

import time

from absl import flags

from launch import common

_DATA = flags.DEFINE_string("data", None, "Data URI of the text to tokenize.")
_TOKENIZER = flags.DEFINE_string(
    "tokenizer", None, "Tokenizer file (tokenizer.model or tokenizer.json).")
_OUT = flags.DEFINE_string("out", None, "Directory to write (local or gs://).")
_SHARDS = flags.DEFINE_integer("shards", 8, "Shards (work units) to write.")
_FIELD = flags.DEFINE_string("field", "text", "Record field of the text "
                             "(jsonl:, tfds:, hf:).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.")
_PIECE_BYTES = flags.DEFINE_integer(
    "piece_bytes", 16384, "text: files are cut into documents of at least "
    "this many bytes, at line starts (as data.piece_bytes).")
_WORKERS = flags.DEFINE_integer(
    "workers", 0, "Local worker processes of the DirectRunner (0: tokenize "
    "in this process).")
_BEAM_OPTIONS = flags.DEFINE_string(
    "beam_options", "", "Beam pipeline options as comma-separated "
    "key=value pairs (e.g. runner=DataflowRunner,project=P).")


def beam_args(options: str, workers: int) -> list[str]:
  """Beam's argv for `--beam_options` and `--workers`.

  Example: ("runner=DataflowRunner,project=p", 0) -> ["--runner=
  DataflowRunner", "--project=p"]; ("", 2) -> ["--runner=DirectRunner",
  "--direct_num_workers=2", "--direct_running_mode=multi_processing"].
  """
  from lm.errors import LmError
  out = []
  for part in filter(None, (p.strip() for p in options.split(","))):
    key, eq, value = part.partition("=")
    if not eq or not key:
      raise LmError(f"--beam_options entry {part!r} is not key=value; write "
                    "e.g. --beam_options=runner=DataflowRunner,project=P.")
    out.append(f"--{key}={value}")
  if not any(a.startswith("--runner=") for a in out):
    out.append("--runner=DirectRunner")
  if workers:
    out += [f"--direct_num_workers={workers}",
            "--direct_running_mode=multi_processing"]
  return out


def _import_beam():
  """`apache_beam`, or one sentence on how to install it; quiet (Beam warns
  at import about cloud clients the pipeline does not use)."""
  import logging
  from lm.errors import LmError
  root = logging.getLogger()
  level = root.level
  root.setLevel(logging.ERROR)
  try:
    import apache_beam
  except ImportError:
    raise LmError("launch.prepare runs on Apache Beam, which is not "
                  "installed; pip install -e '.[prepare]'.") from None
  finally:
    root.setLevel(level)
  return apache_beam


def _pipeline(spec: dict, args: list[str]) -> list[dict]:
  """Runs the Beam pipeline: a work unit per shard; returns the shards'
  manifest entries (read back from the JSON each unit writes)."""
  import json

  beam = _import_beam()
  from apache_beam.options.pipeline_options import PipelineOptions

  from lm import files
  from lm.data import prepared

  class TokenizeShard(beam.DoFn):
    """Tokenizes and writes one shard (`prepared.tokenize_shard`)."""

    def __init__(self, spec):
      super().__init__()
      self.spec = spec
      self.source = self.tokenizer = None

    def setup(self):
      from lm.data.tokenizer import load_tokenizer
      self.source = prepared.open_text_source(self.spec)
      self.tokenizer = load_tokenizer(self.spec["tokenizer"])

    def process(self, shard):
      entry = prepared.tokenize_shard(self.spec, shard, self.source,
                                      self.tokenizer)
      files.write_text_atomic(
          files.join(self.spec["out"], prepared.stats_name(
              shard, len(self.spec["ranges"]))), json.dumps(entry))
      yield shard

  n = len(spec["ranges"])
  with beam.Pipeline(options=PipelineOptions(args)) as p:
    _ = (p | "Shards" >> beam.Create(list(range(n)))
         | "Spread" >> beam.Reshuffle()
         | "Tokenize" >> beam.ParDo(TokenizeShard(spec)))
  entries = []
  for s in range(n):
    side = files.join(spec["out"], prepared.stats_name(s, n))
    entries.append(json.loads(files.read_text(side)))
    files.remove(side)
  return entries


def prepare(data: str, tokenizer_path: str, out: str, *, shards: int,
            field: str = "text", data_dir: str | None = None,
            piece_bytes: int = 16384, workers: int = 0,
            beam_options: str = "") -> dict:
  """Tokenizes `data` into a prepared corpus at `out`; returns the
  manifest. Every refusal comes before anything is written."""
  import tempfile

  from lm import files
  from lm.data import packing, prepared
  from lm.data.tokenizer import load_tokenizer
  from lm.errors import LmError
  from lm.training.workdir import copy_tokenizer

  if shards < 1:
    raise LmError(f"--shards={shards} must be at least 1.")
  if workers < 0:
    raise LmError(f"--workers={workers} must be 0 or more.")
  args = beam_args(beam_options, workers)
  _import_beam()
  out = files.expand(out)
  if files.exists(files.join(out, prepared.MANIFEST)):
    raise LmError(f"--out {out} already holds a prepared corpus; choose a "
                  "new directory or delete it first.")
  tokenizer_path = files.expand(tokenizer_path)
  tok = load_tokenizer(tokenizer_path)
  spec = {"uri": data, "field": field, "data_dir": data_dir,
          "piece_bytes": piece_bytes,
          "dtype": packing.token_dtype(tok.vocab_size).name}
  with tempfile.TemporaryDirectory(prefix="lm-prepare-") as scratch:
    # the source opened (and a text index scanned) before anything is
    # written; the index moves to `out` for the workers to share
    source = prepared.open_text_source({**spec, "index_cache": scratch})
    n_docs = len(source)
    if not n_docs:
      raise LmError(f"Data URI {data!r} has no documents; check the URI and "
                    "--field.")
    files.makedirs(out)
    index_cache = files.join(out, "index")
    if getattr(source, "prepare", None) is not None:
      files.copytree(scratch, index_cache)
    tok_copy = copy_tokenizer(tok.path, out)[0]
    spec.update(out=out, tokenizer=tok_copy, index_cache=index_cache,
                ranges=prepared.shard_ranges(n_docs, min(shards, n_docs)))
    entries = _pipeline(spec, args)
  if files.exists(index_cache):
    files.rmtree(index_cache)
  return prepared.write_manifest(
      out, source=data, tokenizer=tok, tokenizer_file=files.basename(tok_copy),
      dtype=spec["dtype"], shards=entries)


def main(argv):
  del argv
  for flag, what in ((_DATA, "the data URI to tokenize"),
                     (_TOKENIZER, "the tokenizer file"),
                     (_OUT, "the directory to write")):
    if not flag.value:
      common.fail(f"--{flag.name} is required: {what}.")
  common.quiet_logs()
  start = time.time()
  with common.user_errors():
    manifest = prepare(_DATA.value, _TOKENIZER.value, _OUT.value,
                       shards=_SHARDS.value, field=_FIELD.value,
                       data_dir=_DATA_DIR.value,
                       piece_bytes=_PIECE_BYTES.value,
                       workers=_WORKERS.value,
                       beam_options=_BEAM_OPTIONS.value)
  seconds = time.time() - start
  print(f"prepared {manifest['documents']:,} documents, "
        f"{manifest['tokens']:,} tokens in {len(manifest['shards'])} shards "
        f"in {seconds:.1f} s ({manifest['tokens'] / max(seconds, 1e-9):,.0f} "
        f"tokens/s) -> {_OUT.value}; train on "
        f"--config.data.train=prepared:{_OUT.value} "
        "--config.data.pipeline=stream", flush=True)


if __name__ == "__main__":
  common.run(main)
