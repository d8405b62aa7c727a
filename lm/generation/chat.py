"""Chat templates: a model's own prompt format, as `transformers` applies it.

A chat model ships its template as `chat_template.jinja` or as the
`chat_template` entry of `tokenizer_config.json` (a string, or a list of
`{"name", "template"}` of which "default" is used). Both travel with the
tokenizer into a workdir (`launch.import_hf`) and back out
(`launch.export_hf`). `render` fills it the way `transformers`'
`apply_chat_template` does: Jinja2 in a sandbox with `trim_blocks` and
`lstrip_blocks`, the `messages`, `add_generation_prompt`, the tokenizer's
`bos_token` / `eos_token` strings, and `raise_exception` /
`strftime_now` available to the template. The rendered text carries its own
special tokens (a template that wants `<s>` writes it), so it is encoded
without adding bos (`launch.sample --chat`).

Example:
  template = find_template("runs/llama/tokenizer/tokenizer.json")
  render(template, [{"role": "user", "content": "Hi"}], bos_token="<s>",
         eos_token="</s>")   # -> "<s>[INST] Hi [/INST]"
"""

from __future__ import annotations

import datetime
import json

from lm import files
from lm.errors import LmError

TEMPLATE_FILE = "chat_template.jinja"


def find_template(tokenizer_path: str) -> str | None:
  """The chat template beside the tokenizer file `tokenizer_path`:
  `chat_template.jinja`, else `tokenizer_config.json`'s `chat_template`;
  None when there is neither."""
  directory = files.dirname(files.abspath(tokenizer_path))
  file = files.join(directory, TEMPLATE_FILE)
  if files.isfile(file):
    return files.read_text(file)
  config = files.join(directory, "tokenizer_config.json")
  if not files.isfile(config):
    return None
  try:
    template = json.loads(files.read_bytes(config)).get("chat_template")
  except (OSError, ValueError, AttributeError):
    raise LmError(f"{config} is not a readable JSON object; fix or delete "
                  "it.") from None
  if isinstance(template, list):     # named templates
    named = {t.get("name"): t.get("template") for t in template
             if isinstance(t, dict)}
    template = named.get("default")
  return template if isinstance(template, str) and template else None


def _raise(message):
  raise LmError(f"the chat template refused the conversation: {message}")


def render(template: str, messages: list[dict], *, bos_token: str = "",
           eos_token: str = "", add_generation_prompt: bool = True) -> str:
  """`messages` (`[{"role", "content"}, ...]`) formatted by `template`."""
  try:
    from jinja2 import TemplateError  # pylint: disable=g-import-not-at-top
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise LmError("chat templates need the `jinja2` package; install it with "
                  "`pip install jinja2`.") from None
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
  env.globals["raise_exception"] = _raise
  env.globals["strftime_now"] = (
      lambda fmt: datetime.datetime.now().strftime(fmt))
  env.filters["tojson"] = lambda x, indent=None: json.dumps(
      x, ensure_ascii=False, indent=indent)
  try:
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=bos_token, eos_token=eos_token)
  except TemplateError as e:
    raise LmError(f"the model's chat template does not render ({e}); fix "
                  f"{TEMPLATE_FILE} or the chat_template entry beside the "
                  "tokenizer.") from None
