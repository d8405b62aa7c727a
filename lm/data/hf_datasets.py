"""Hugging Face `datasets` splits by URI, read like a TFDS data source.

`open_split("hf:...")` gives `(split, name, split_name)`: `len(split)`
examples, `split[i]` the i-th as a dict of fields, and `split.dataset_info`
(`features` with the ClassLabel names, `version` the dataset's fingerprint),
which is what the `tfds:` readers of `lm.data.sources`, `records` and
`pairs` take, so pretraining text, contrastive pairs and task records all
read `hf:` URIs through the same code as `tfds:`.

URIs (the part after `hf:`):

  REPO[/CONFIG][:SPLIT]   a dataset on the Hugging Face Hub (REPO is
                          `NAME` or `NAMESPACE/NAME`; a CONFIG follows only
                          `NAMESPACE/NAME`), e.g. 'hf:stanfordnlp/imdb:test',
                          'hf:nyu-mll/glue/sst2:validation'
                          (`datasets.load_dataset`; cached by `datasets`).
  DIR[:SPLIT]             a local (or gs://) directory: one written by
                          `save_to_disk` (a Dataset, or a DatasetDict whose
                          SPLIT is taken), or one of Parquet files
                          (`DIR/*.parquet`, or `DIR/SPLIT/*.parquet`, or
                          `DIR/SPLIT-*.parquet`). A directory is any path
                          starting with '/', '.', '~' or a URI scheme.

SPLIT defaults to `train`. The data stays in Arrow files memory-mapped by
`datasets`, so a large split is not read into memory to open it.
"""

from __future__ import annotations

import types

from lm import files
from lm.errors import LmError, first_line

_EXAMPLE = "hf:stanfordnlp/imdb:train"


class HfSplit:
  """One split of a `datasets.Dataset`: `len`, `[i]` -> dict of fields."""

  def __init__(self, ds, name: str, split: str):
    self.ds = ds
    self.name, self.split = name, split
    self.dataset_info = types.SimpleNamespace(
        features=ds.features, version=getattr(ds, "_fingerprint", None))

  def __len__(self) -> int:
    return len(self.ds)

  def __getitem__(self, i: int) -> dict:
    return self.ds[int(i)]


def _is_dir(spec: str) -> bool:
  return files.is_uri(spec) or spec.startswith(("/", ".", "~"))


def _split_spec(rest: str) -> tuple[str, str]:
  """("NAME/CONFIG" or DIR, SPLIT) of the URI part after "hf:"."""
  scheme = files.scheme(rest)
  if scheme:                       # gs://b/dir:validation
    body = rest[len(scheme) + 3:]
    where, sep, split = body.rpartition(":")
    return (f"{scheme}://{where}", split) if sep else (rest, "train")
  where, sep, split = rest.rpartition(":")
  return (where, split) if sep else (rest, "train")


def _datasets():
  try:
    import datasets  # pylint: disable=g-import-not-at-top  (optional, slow)
  except ImportError:
    raise LmError("hf: data URIs need the Hugging Face `datasets` package; "
                  "install it with pip install -e '.[hf]'.") from None
  datasets.logging.set_verbosity_error()
  datasets.disable_progress_bars()
  return datasets


def _from_dir(uri: str, path: str, split: str):
  datasets = _datasets()
  if not files.isdir(path):
    raise LmError(f"Data URI {uri!r}: {path} is not a directory; give a "
                  "save_to_disk or Parquet directory, or a Hub dataset name "
                  f"(e.g. {_EXAMPLE!r}).")
  saved = [n for n in ("dataset_dict.json", "state.json", "dataset_info.json")
           if files.exists(files.join(path, n))]
  if saved:
    try:
      ds = datasets.load_from_disk(files.expand(path))
    except Exception as e:  # pylint: disable=broad-except
      raise LmError(f"Data URI {uri!r}: {path} could not be loaded with "
                    f"datasets.load_from_disk ({first_line(e)}); write it "
                    "again with save_to_disk.") from None
    if isinstance(ds, datasets.DatasetDict):
      if split not in ds:
        raise LmError(f"Data URI {uri!r}: {path} has no split {split!r}; its "
                      f"splits are {sorted(ds)}.")
      ds = ds[split]
    return ds
  for pattern in (f"{split}/*.parquet", f"{split}-*.parquet", "*.parquet"):
    found = files.glob(files.join(files.expand(path), pattern))
    if found:
      break
  if not found:
    raise LmError(f"Data URI {uri!r}: {path} holds neither a save_to_disk "
                  "dataset nor Parquet files (*.parquet); point it at one.")
  try:
    return datasets.load_dataset("parquet", data_files=found, split="train")
  except Exception as e:  # pylint: disable=broad-except
    raise LmError(f"Data URI {uri!r}: the Parquet files in {path} could not "
                  f"be read ({first_line(e)}); check them.") from None


def _from_hub(uri: str, name: str, split: str):
  datasets = _datasets()
  parts = name.split("/")
  repo, config = ("/".join(parts[:2]), parts[2]) if len(parts) == 3 else (
      name, None)
  try:
    return datasets.load_dataset(repo, config, split=split)
  except Exception as e:  # pylint: disable=broad-except  (hub, network, split)
    raise LmError(f"Hugging Face dataset {name!r} split {split!r} could not "
                  f"be loaded ({first_line(e)}); check the name, config and "
                  "split and the network (or set HF_HUB_OFFLINE=1 with the "
                  "dataset in the HF cache), or save it with save_to_disk and "
                  "pass that directory.") from None


def open_split(uri: str, rest: str) -> tuple[HfSplit, str, str]:
  """(split, name, split name) of `hf:REST` (see the module docstring).

  Example: open_split("hf:./sst2_saved:validation", "./sst2_saved:validation")
  -> (HfSplit of 872 examples, "./sst2_saved", "validation").
  """
  if not rest:
    raise LmError(f"Data URI {uri!r} names no dataset; write e.g. "
                  f"{_EXAMPLE!r} or 'hf:./saved_dir:train'.")
  where, split = _split_spec(rest)
  ds = (_from_dir(uri, where, split) if _is_dir(where)
        else _from_hub(uri, where, split))
  if len(ds) == 0:
    raise LmError(f"Hugging Face dataset {where!r} split {split!r} has no "
                  "examples; pick another split.")
  return HfSplit(ds, where, split), where, split
