"""A damaged tokenized-data cache stops training with one sentence.

One real quickstart run (the shared finished run) fills `WORKDIR/data/`; a byte of a cached
tokens.npy is then flipped (a disk or copy error) and the same command is run
again: it must refuse with one `error:` line naming the damaged directory,
not load the stream and train on it.
"""

import glob
import os

import numpy as np
import pytest

from tests.cli import cli

CONFIG = "configs/quickstart.py:runlocal"


@pytest.fixture
def trained(copy_run):
  """A copy of the shared finished quickstart run (tests/reliability/conftest.py)."""
  return copy_run()


def _flip_middle_data_byte(file: str) -> None:
  """Inverts one byte halfway through the array data of the .npy `file`."""
  with open(file, "rb") as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      np.lib.format.read_array_header_1_0(f)
    else:
      np.lib.format.read_array_header_2_0(f)
    start = f.tell()
    f.seek(0, os.SEEK_END)
    end = f.tell()
  assert end - start > 1000, "a runlocal stream should hold many tokens"
  with open(file, "r+b") as f:
    f.seek(start + (end - start) // 2)
    byte = f.read(1)[0]
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte ^ 0xFF]))


def test_flipped_byte_in_cached_tokens_stops_the_run(trained):
  streams = sorted(glob.glob(os.path.join(trained, "data", "*",
                                          "tokens.npy")))
  assert streams, os.listdir(os.path.join(trained, "data"))
  for stream in streams:
    assert os.path.isfile(os.path.join(os.path.dirname(stream),
                                       "checksums.json"))
  damaged = os.path.dirname(streams[0])
  _flip_middle_data_byte(streams[0])
  result = cli("launch.train", "--config", CONFIG, "--workdir", trained,
               "--config.steps=9")
  output = result.stdout + result.stderr
  assert result.returncode == 2, output[-3000:]
  assert "Traceback" not in output
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, result.stderr[-3000:]
  assert damaged in errors[0]
  assert "tokens.npy" in errors[0] and "delete the directory" in errors[0]
