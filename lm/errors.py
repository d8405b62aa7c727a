"""The one exception type for bad user input.

Anything a user can fix (a config key, a data path, a checkpoint that does not
match) raises `LmError` with one sentence naming what is wrong and how to fix
it. Entry points print the sentence and exit with status 2; they never show a
traceback for an `LmError`.
"""


class LmError(Exception):
  """A problem with the user's config, data, checkpoint or arguments."""


def first_line(exc: BaseException, limit: int = 200) -> str:
  """The first line of `str(exc)` (its type name when empty), cut to
  `limit` characters: the "why" inside an LmError sentence. Example:
  first_line(OSError("disk full\nmore")) -> "disk full"."""
  text = str(exc).strip().splitlines()
  line = text[0] if text else type(exc).__name__
  return line if len(line) <= limit else line[:limit - 3] + "..."
