"""Shared entry-point plumbing: one-sentence errors and quiet logs."""

from __future__ import annotations

import contextlib
import logging as py_logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


@contextlib.contextmanager
def user_errors():
  """Turns `LmError` into one line on stderr and exit status 2."""
  from lm.errors import LmError
  try:
    yield
  except LmError as e:
    fail(str(e))


def load_config(config_flag):
  """The parsed `--config`, or one sentence if the file is missing or broken.

  ml_collections defers config-file errors to the first access of the value;
  touching it here turns them into a clean exit.
  """
  try:
    config = config_flag.value
    if config is None:
      fail("--config is required, e.g. --config configs/quickstart.py.")
    config.keys()
  except (OSError, ImportError, SyntaxError, AttributeError) as e:
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    fail(f"could not load the --config file ({lines[-1] if lines else type(e).__name__}); "
         "check the path and that it defines get_config().")
  return config


def quiet_logs() -> None:
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("absl", "orbax", "jax", "tensorflow_datasets"):
    py_logging.getLogger(name).setLevel(py_logging.ERROR)


def run(main) -> None:
  """Parses flags and calls `main(argv)`; flag errors become one sentence."""
  from absl import flags
  try:
    argv = flags.FLAGS(sys.argv)
  except flags.Error as e:
    text = str(e).strip().splitlines()
    fail(text[-1] if text else "bad command-line flags")
  except Exception as e:  # config file errors raised while parsing --config
    fail(f"could not load the config: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}")
  main(argv)
