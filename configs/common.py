"""Shared config snippets and argument parsing for `get_config(arg)`."""

from __future__ import annotations

from lm.errors import LmError
from lm.training.experiment import base_config  # noqa: F401  (re-exported)


def parse_arg(arg: str | None, **defaults) -> dict:
  """Parses `key=value,key2=value2` (or a bare flag `runlocal`) into a dict.

  >>> parse_arg("runlocal,steps=10", runlocal=False, steps=100)
  {'runlocal': True, 'steps': 10}
  """
  out = dict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, sep, value = part.partition("=")
    if key not in defaults:
      raise LmError(f"config argument {key!r} is not known; valid arguments "
                    f"are {', '.join(sorted(defaults))}.")
    if not sep:
      out[key] = True
    else:
      kind = type(defaults[key])
      out[key] = (value.lower() in ("1", "true", "yes")) if kind is bool else kind(value)
  return out
