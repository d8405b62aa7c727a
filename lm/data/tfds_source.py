"""Datasets as document sources: `tfds:` through `tfds.data_source` and
`hf:` through Hugging Face `datasets` (`lm.data.hf_datasets`), both random
access (`len`, `[i]` -> a dict of fields), and the one-sentence errors of
a TFDS dataset that is missing, misnamed or not prepared.

A dataset that is not prepared is opened with `download=False` first, so a
prepared one never touches the network; when it is not prepared and a 3 s
TCP connect to the probe address fails, the run stops in seconds with one
sentence naming the data_dir flag of the command that runs
(`data_dir_flag`, which each entry point sets) instead of TFDS retrying
its downloads for minutes.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
from collections.abc import Sequence
from typing import Any

from lm import files
from lm.data import hf_datasets
from lm.data.documents import DocumentSource, content_hash
from lm.errors import LmError, first_line


class TfdsSource(DocumentSource):
  """`example[field]` of each example of a `tfds.data_source`, as a str.

  Example: imdb_reviews examples {"text": b"great", "label": 1} with
  field "text" -> documents ["great", ...].
  """

  def __init__(self, uri: str, data_source: Sequence[dict], field: str,
               key: Sequence[Any]):
    self.uri = uri
    self.data_source = data_source
    self.field = field
    self._key = list(key)
    self._len = len(data_source)

  def __len__(self) -> int:
    return self._len

  def _get(self, i: int) -> str:
    value = self.data_source[i][self.field]
    if isinstance(value, bytes):
      return value.decode("utf-8", errors="replace")
    if hasattr(value, "item"):  # numpy scalar / 0-d array of bytes
      value = value.item()
      if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)

  def fingerprint(self) -> str:
    return content_hash([self.uri, self.field, self._key, self._len])


# The flag that sets the TFDS data_dir in the command that is running (each
# entry point sets its own); error sentences name it.
data_dir_flag = "--config.data.data_dir"
# Where `network_reachable` checks for a network: TFDS's own bucket, or
# HOST:PORT from $LM_NETWORK_PROBE (a machine that reaches the internet
# only through a known mirror).
NETWORK_PROBE = "storage.googleapis.com:443"


def network_reachable(timeout: float = 3.0) -> bool:
  """Whether a TCP connection to the probe address opens within `timeout`
  s (a download could start); False offline, in seconds, not minutes."""
  host, _, port = os.environ.get("LM_NETWORK_PROBE",
                                 NETWORK_PROBE).rpartition(":")
  try:
    socket.create_connection((host, int(port)), timeout=timeout).close()
    return True
  except (OSError, ValueError):
    return False


def not_prepared_error(name: str, data_dir: str | None) -> LmError:
  """The sentence for a TFDS dataset that is not prepared in `data_dir` and
  cannot be downloaded here."""
  where = data_dir or "the default TFDS data_dir (~/tensorflow_datasets)"
  return LmError(f"TFDS dataset {name!r} is not prepared in {where} and "
                 "this machine has no network to download it; run `tfds "
                 f"build {name} --file_format=array_record` on a machine "
                 f"with network and pass its data_dir with {data_dir_flag}.")


def tfds_error(name: str, split: str, exc: BaseException) -> LmError:
  """Maps an exception from `tfds.data_source(name, split=split)` to an LmError.

  Example: DatasetNotFoundError for 'imdb_reviwes' -> LmError("TFDS dataset
  'imdb_reviwes' does not exist; ..."); a bad config or split name -> "Could
  not open ..."; anything else (no network, failed preparation, a dataset
  prepared without a random-access format) -> "... could not be downloaded or
  prepared ...; prepare it with `tfds build ...`".
  """
  from tensorflow_datasets.core import registered  # lazy: tfds is heavy
  if isinstance(exc, registered.DatasetNotFoundError):
    return LmError(f"TFDS dataset {name!r} does not exist; check the name "
                   "against `tfds.list_builders()`.")
  reason = first_line(exc)
  if (isinstance(exc, (ValueError, KeyError))
      and re.search(r"split|config", reason, re.IGNORECASE)):
    return LmError(f"Could not open TFDS dataset {name!r} split {split!r} "
                   f"({reason}); check the config and split names.")
  return LmError(f"TFDS dataset {name!r} could not be downloaded or prepared "
                 f"({reason}); prepare it with `tfds build {name} "
                 "--file_format=array_record` on a machine with network and "
                 f"pass its data_dir with {data_dir_flag}.")


def _register_tfds_builders() -> None:
  """Imports TFDS's text, QA, summarization and translation builders
  (glue, conll2003, squad, cnn_dailymail, wmt14_translate): TFDS stops
  registering its older builders at the first package that fails to import
  (e.g. `nearest_neighbors` without h5py), before these."""
  for package in ("text", "question_answering", "summarization", "translate"):
    try:
      importlib.import_module(f"tensorflow_datasets.{package}")
    except ImportError:
      pass


def _tfds_prepared(tfds, name: str, data_dir: str | None) -> bool:
  """Whether TFDS finds `name` prepared in `data_dir` (True when even the
  builder fails: then the real error is the one to report)."""
  try:
    return bool(tfds.builder(name, data_dir=data_dir).is_prepared())
  except Exception:  # pylint: disable=broad-except
    return True


def open_tfds_split(uri: str, rest: str, data_dir: str | None,
                    example: str = "imdb_reviews"):
  """`(tfds.data_source, name, split)` of `tfds:NAME[/CONFIG][:SPLIT]`.

  `rest` is the URI after `tfds:`; SPLIT defaults to `train`. A missing
  name, an unknown or unprepared dataset and an empty split are LmErrors
  (`example` is the dataset name suggested in the missing-name message).
  """
  name, _, split = rest.partition(":")
  split = split or "train"
  if not name:
    raise LmError(f"Data URI {uri!r} names no TFDS dataset; write e.g. "
                  f"'tfds:{example}:train'.")
  import tensorflow_datasets as tfds  # lazy: only tfds: URIs need it
  from tensorflow_datasets.core import registered  # pylint: disable=g-import-not-at-top
  _register_tfds_builders()
  if data_dir:
    data_dir = files.expand(data_dir)
  try:
    try:   # a prepared dataset opens without touching the network
      ds = tfds.data_source(name, split=split, data_dir=data_dir,
                            download=False)
    except registered.DatasetNotFoundError:
      raise
    except Exception:  # pylint: disable=broad-except
      # Not prepared: without a network TFDS would retry its downloads for
      # minutes before failing, so that is said now.
      if not _tfds_prepared(tfds, name, data_dir) and not network_reachable():
        raise not_prepared_error(name, data_dir) from None
      ds = tfds.data_source(name, split=split, data_dir=data_dir)
  except LmError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise tfds_error(name, split, e) from None
  if len(ds) == 0:
    raise LmError(f"TFDS split {split!r} of {name!r} has no examples; pick "
                  "another split.")
  return ds, name, split


def open_split(uri: str, rest: str, data_dir: str | None,
               example: str = "imdb_reviews"):
  """`(split, name, split name)` of a `tfds:` URI (`open_tfds_split`) or an
  `hf:` one (`lm.data.hf_datasets.open_split`), both read the same way:
  `len`, `[i]` -> dict of fields, `dataset_info` (features, version)."""
  if uri.startswith("hf:"):
    return hf_datasets.open_split(uri, rest)
  return open_tfds_split(uri, rest, data_dir, example=example)


def dataset_label(uri: str) -> str:
  """How sentences name the dataset of `uri`: "TFDS" or "Hugging Face"."""
  return "Hugging Face" if uri.startswith("hf:") else "TFDS"


def open_tfds(uri: str, rest: str, field: str,
              data_dir: str | None) -> TfdsSource:
  """`tfds:NAME[/CONFIG][:SPLIT]` through `tfds.data_source`, or `hf:...`
  through `datasets` (see `open_split`)."""
  ds, name, split = open_split(uri, rest, data_dir)
  features = sorted(ds[0].keys())
  if field not in features:
    raise LmError(f"{dataset_label(uri)} dataset {name!r} has no feature "
                  f"{field!r}; available features are {features}; pick one "
                  "with --config.data.field.")
  version = getattr(getattr(ds, "dataset_info", None), "version", None)
  scheme = uri.partition(":")[0]
  return TfdsSource(f"{scheme}:{name}:{split}", ds, field,
                    key=[name, split, str(version)])
