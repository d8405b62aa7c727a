"""Shared entry-point plumbing: one-sentence errors and quiet logs."""

from __future__ import annotations

import contextlib
import logging as py_logging
import os
import re
import sys
from collections.abc import Mapping

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


def define_quantize_flag():
  """`--quantize none|int8` of the serving entry points (the modes of
  `lm.models.quantize.MODES`): int8 weight-only serving of a float run."""
  from absl import flags
  return flags.DEFINE_enum(
      "quantize", "none", ["none", "int8"],
      "Serve with int8 weights: each dense kernel and the token embedding "
      "as int8 with one float32 scale per output channel, computed at load "
      "time (the checkpoint stays float).")


def quiet_logs() -> None:
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  for name in ("absl", "orbax", "jax", "tensorflow_datasets"):
    py_logging.getLogger(name).setLevel(py_logging.ERROR)


def _define_help_flags() -> None:
  """`--help`/`-h` (the entry point's flags) and `--helpfull` (every flag):
  print the usage on stdout and exit 0 as soon as the flag is parsed."""
  from absl import flags

  class HelpFlag(flags.BooleanFlag):
    def __init__(self, name, short_name, full):
      super().__init__(name, False, "Show this help and exit.", short_name=short_name)
      self._full = full

    def parse(self, argument):
      super().parse(argument)
      if self.value:
        print_usage(full=self._full)
        sys.exit(0)

  for name, short, full in (("help", "h", False), ("helpfull", None, True)):
    if name not in flags.FLAGS:
      flags.DEFINE_flag(HelpFlag(name, short, full))


def print_usage(full: bool = False) -> None:
  """The entry point's docstring, then its flags with their help text (every
  defined flag when `full`), on stdout."""
  from absl import flags
  doc = (sys.modules["__main__"].__doc__ or f"python -m {_main_name()} [flags]").strip()
  if full:
    text = flags.FLAGS.get_help()
  else:  # drop the header naming the module's file: this page is about it
    text = "\n".join(l for l in flags.FLAGS.main_module_help().splitlines()
                     if l.startswith(" "))
  print(doc + "\n\nflags:\n" + text.rstrip() + "\n\nTry --helpfull for every flag, "
        "absl's logging flags included.", flush=True)


def _main_name() -> str:
  spec = getattr(sys.modules["__main__"], "__spec__", None)
  return spec.name if spec else os.path.basename(sys.argv[0])


def _override_paths(argv, flag_name: str) -> list[str]:
  """The dotted keys of `--FLAG.a.b=v` (or `--noFLAG.a.b`) overrides in argv."""
  paths = []
  for arg in argv[1:]:
    if arg == "--":
      break
    m = re.match(rf"^--?(?:no)?{re.escape(flag_name)}\.([^=]+)", arg)
    if m:
      paths.append(m.group(1))
  return paths


def _config_spec(argv, flag_name: str) -> str | None:
  """The value given to `--FLAG` in argv (`--FLAG X` or `--FLAG=X`), or None."""
  spec = None
  for i, arg in enumerate(argv[1:], start=1):
    if arg == "--":
      break
    if re.match(rf"^--?{re.escape(flag_name)}=", arg):
      spec = arg.split("=", 1)[1]
    elif re.match(rf"^--?{re.escape(flag_name)}$", arg) and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def unknown_override(config, path: str, flag_name: str = "config") -> str | None:
  """One sentence if the dotted `path` does not name a field of `config`.

  Example: unknown_override(ConfigDict({"steps": 1}), "stepz") ->
  "unknown config key 'stepz' (--config.stepz); did you mean 'steps'?"
  """
  import difflib
  node, parts = config, path.split(".")
  for i, part in enumerate(parts):
    here = ".".join(parts[:i + 1])
    keys = _field_names(node)
    if keys is None:
      parent = ".".join(parts[:i])
      return (f"config key {parent!r} is a value of type {type(node).__name__}, not a section, so "
              f"--{flag_name}.{path} names nothing; set it as --{flag_name}.{parent}=VALUE.")
    if part not in keys:
      prefix = ".".join(parts[:i] + [""])
      close = difflib.get_close_matches(part, keys, n=1, cutoff=0.6)
      if close:
        hint = f"did you mean {prefix + close[0]!r}?"
      else:
        keys = sorted(keys)
        shown = ", ".join(keys[:12]) + (f" and {len(keys) - 12} more" if len(keys) > 12 else "")
        where = f"{prefix[:-1]!r} has" if prefix else "the config has"
        hint = f"{where} {shown or 'no keys'}."
      return f"unknown config key {here!r} (--{flag_name}.{path}); {hint}"
    node = node[part] if isinstance(node, Mapping) or hasattr(node, "keys") else getattr(node, part)
  return None


def _field_names(node) -> list[str] | None:
  """The keys of a config section, or None for a leaf value."""
  import dataclasses
  if hasattr(node, "keys") and callable(node.keys):
    return [str(k) for k in node.keys()]
  if dataclasses.is_dataclass(node) and not isinstance(node, type):
    return [f.name for f in dataclasses.fields(node)]
  return None


def _config_override_error(argv) -> str | None:
  """The sentence for the first `--config.KEY` override whose key is not in its
  config file, or None. Reloads the config the way the flag does; a file that
  does not load is left to the caller's own message."""
  from absl import flags
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if flag.name != name or not type(flag).__module__.startswith("ml_collections"):
      continue
    paths = _override_paths(argv, name)
    spec = _config_spec(argv, name)
    if not paths or spec is None:
      continue
    try:
      config = flag.parser.parse(spec)
    except Exception:  # the caller reports the file itself
      return None
    for path in paths:
      try:
        sentence = unknown_override(config, path, name)
      except Exception:  # a file that failed to load: as above
        return None
      if sentence:
        return sentence
  return None


def run(main) -> None:
  """Parses flags and calls `main(argv)`; flag errors become one sentence.

  `--help`/`-h` prints the entry point's docstring and flags and exits 0.
  """
  from absl import flags
  _define_help_flags()
  try:
    argv = flags.FLAGS(sys.argv)
  except flags.Error as e:
    text = str(e).strip().splitlines()
    fail(_config_override_error(sys.argv)
         or (text[-1] if text else "bad command-line flags"))
  except Exception as e:  # config file errors raised while parsing --config
    sentence = _config_override_error(sys.argv)
    if sentence:
      fail(sentence)
    lines = [l.strip() for l in str(e).splitlines() if l.strip()]
    fail(f"could not load the --config file ({lines[-1] if lines else type(e).__name__}); "
         "check the path and that it defines get_config().")
  main(argv)
