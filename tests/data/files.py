"""Data files the tests write."""

import json


def write(path, text):
  """`text` written to `path` (parents created); returns `path`."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text, encoding="utf-8")
  return path


def write_jsonl(path, rows):
  """One JSON object per line of `path`; returns `path`."""
  return write(path, "".join(json.dumps(r) + "\n" for r in rows))
