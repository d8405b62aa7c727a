"""The Apache Beam pipeline of `launch.prepare`: a corpus tokenized once
into the ArrayRecord shards of a prepared corpus (`lm.data.prepared`).

One work unit per shard (a contiguous range of the source's documents,
`prepared.tokenize_shard`); the runner is Beam's: the DirectRunner in this
process by default, local worker processes with `workers`, or a cluster
runner (Dataflow, Flink, Spark) through `beam_options`. Each unit writes
its shard and a small JSON of its counts beside it; once the pipeline has
finished, the counts go into `prepared.json`, written last.
"""

from __future__ import annotations

import json
import logging
import tempfile

from lm import files
from lm.data import packing, prepared
from lm.data.tokenizer import load_tokenizer
from lm.errors import LmError
from lm.training.workdir import copy_tokenizer


def beam_args(options: str, workers: int) -> list[str]:
  """Beam's argv for `--beam_options` and `--workers`.

  Example: ("runner=DataflowRunner,project=p", 0) -> ["--runner=
  DataflowRunner", "--project=p"]; ("", 2) -> ["--runner=DirectRunner",
  "--direct_num_workers=2", "--direct_running_mode=multi_processing"].
  """
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
  beam = _import_beam()
  from apache_beam.options.pipeline_options import PipelineOptions  # pylint: disable=g-import-not-at-top

  class TokenizeShard(beam.DoFn):
    """Tokenizes and writes one shard (`prepared.tokenize_shard`)."""

    def __init__(self, spec):
      super().__init__()
      self.spec = spec
      self.source = self.tokenizer = None

    def setup(self):
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
