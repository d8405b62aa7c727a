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
    from lm.data.prepare_pipeline import prepare
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
