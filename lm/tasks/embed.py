"""Embedding text files with a trained contrastive run (`launch.encode`)."""

from __future__ import annotations

import io

import numpy as np

from lm import experiments, files
from lm.errors import LmError


def read_lines(path: str) -> list[str]:
  """The lines of `path` without their line endings, or one sentence."""
  if not files.isfile(path):
    raise LmError(f"--input {path} does not exist; pass a text file with one "
                  "text per line.")
  lines = files.read_text(path, errors="replace").splitlines()
  if not lines:
    raise LmError(f"--input {path} is empty; pass a text file with one text "
                  "per line.")
  return lines


def encode_file(workdir: str, input_path: str, output_path: str,
                step: int | None = None, batch_size: int = 64, *,
                load_trained):
  """Embeds every line of `input_path` with the run in `workdir`, restored
  by `load_trained(workdir, step)` (`lm.experiments.load_trained`); returns
  (array, written path)."""
  if not output_path.endswith(".npy"):
    raise LmError(f"--output {output_path} must end in .npy (it is written "
                  "with numpy.save).")
  out_dir = files.dirname(files.abspath(output_path))
  if not files.is_uri(out_dir) and not files.isdir(out_dir):
    raise LmError(f"the directory of --output {output_path} does not exist; "
                  "create it first.")
  texts = read_lines(input_path)
  trained = load_trained(workdir, step)
  if not trained.objective.embeds:
    names = experiments.names_where("embeds")
    raise LmError(f"{workdir} holds a {trained.config.objective!r} run; "
                  "embeddings come from a run trained with objective "
                  f"{' or '.join(repr(n) for n in names)} (or a Hugging Face "
                  "encoder imported with launch.import_hf --objective "
                  f"{names[0]}).")
  emb = trained.objective.embed(trained, texts, batch_size=batch_size)
  buf = io.BytesIO()
  np.save(buf, emb)
  files.write_atomic(output_path, buf.getvalue())
  return emb, output_path
