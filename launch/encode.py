"""Write sentence embeddings of a contrastive run to a .npy file.

  python -m launch.encode --workdir runs/code_search --input texts.txt \\
      --output emb.npy

Reads one text per line of --input (row i of the output is line i; a blank
line is embedded as an empty text) and writes float32 `[N, D]` pooled
embeddings, without the training-only projection head, from the latest
checkpoint (or --step). Runs on one host. `--quantize int8` embeds with
int8 weights (`lm.models.quantize`).
"""

from __future__ import annotations

import functools

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a contrastive run.")
_INPUT = flags.DEFINE_string("input", None, "Text file, one text per line.")
_OUTPUT = flags.DEFINE_string("output", None, "Where to write the .npy embeddings.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Texts per forward pass.")
_QUANTIZE = common.define_quantize_flag()


def main(argv):
  del argv
  for flag, what in ((_WORKDIR, "the directory of a contrastive run"),
                     (_INPUT, "a text file with one text per line"),
                     (_OUTPUT, "the .npy file to write")):
    if not flag.value:
      common.fail(f"--{flag.name} is required: {what}.")
  common.quiet_logs()
  with common.user_errors():
    from lm.experiments import load_trained
    from lm.tasks.embed import encode_file
    emb, path = encode_file(
        _WORKDIR.value, _INPUT.value, _OUTPUT.value, _STEP.value, _BATCH.value,
        load_trained=functools.partial(load_trained, quantize=_QUANTIZE.value))
  print(f"wrote {emb.shape[0]:,} x {emb.shape[1]} embeddings to {path}",
        flush=True)


if __name__ == "__main__":
  common.run(main)
