"""Write sentence embeddings of a contrastive run to a .npy file.

  python -m launch.encode --workdir runs/code_search --input texts.txt \\
      --output emb.npy

Reads one text per line of --input (row i of the output is line i; a blank
line is embedded as an empty text) and writes float32 `[N, D]` pooled
embeddings, without the training-only projection head, from the latest
checkpoint (or --step). Runs on one host.
"""

from __future__ import annotations

import os

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a contrastive run.")
_INPUT = flags.DEFINE_string("input", None, "Text file, one text per line.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .npy embeddings.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Texts per forward pass.")


def read_lines(path: str) -> list[str]:
  """The lines of `path` without their line endings, or one sentence."""
  from lm.errors import LmError
  if not os.path.isfile(path):
    raise LmError(f"--input {path} does not exist; pass a text file with one "
                  "text per line.")
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = f.read().splitlines()
  if not lines:
    raise LmError(f"--input {path} is empty; pass a text file with one text "
                  "per line.")
  return lines


def encode_file(workdir: str, input_path: str, output_path: str,
                step: int | None = None, batch_size: int = 64):
  """Embeds every line of `input_path`; returns (array, written path)."""
  import numpy as np
  from lm.errors import LmError
  from lm.objectives.contrastive import embed_texts
  from lm.training.workdir import load_trained
  if not output_path.endswith(".npy"):
    raise LmError(f"--output {output_path} must end in .npy (it is written "
                  "with numpy.save).")
  out_dir = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(out_dir):
    raise LmError(f"the directory of --output {output_path} does not exist; "
                  "create it first.")
  texts = read_lines(input_path)
  emb = embed_texts(load_trained(workdir, step), texts, batch_size=batch_size)
  tmp = output_path[:-len(".npy")] + ".tmp.npy"
  np.save(tmp, emb)
  os.replace(tmp, output_path)
  return emb, output_path


def main(argv):
  del argv
  for flag, what in ((_WORKDIR, "the directory of a contrastive run"),
                     (_INPUT, "a text file with one text per line"),
                     (_OUTPUT, "the .npy file to write")):
    if not flag.value:
      common.fail(f"--{flag.name} is required: {what}.")
  common.quiet_logs()
  with common.user_errors():
    emb, path = encode_file(_WORKDIR.value, _INPUT.value, _OUTPUT.value,
                            _STEP.value, _BATCH.value)
  print(f"wrote {emb.shape[0]:,} x {emb.shape[1]} embeddings to {path}",
        flush=True)


if __name__ == "__main__":
  common.run(main)
