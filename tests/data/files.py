"""Data files the tests write, and the check of a refusal's sentence."""

import json

import pytest

from lm.errors import LmError


def write(path, text):
  """`text` written to `path` (parents created); returns `path`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def write_jsonl(path, rows):
  """One JSON object per line of `path`; returns `path`."""
  return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def one_sentence(fn, *args, **kwargs) -> str:
  """The LmError message of `fn(*args, **kwargs)`, checked to be one
  sentence (no newline, a final period)."""
  with pytest.raises(LmError) as e:
    fn(*args, **kwargs)
  msg = str(e.value)
  assert "\n" not in msg and msg.endswith(".")
  return msg
