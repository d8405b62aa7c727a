"""The one exception type for bad user input.

Anything a user can fix (a config key, a data path, a checkpoint that does not
match) raises `LmError` with one sentence naming what is wrong and how to fix
it. Entry points print the sentence and exit with status 2; they never show a
traceback for an `LmError`.
"""


class LmError(Exception):
  """A problem with the user's config, data, checkpoint or arguments."""
