"""Sample from a trained model with the cached decoder.

  python -m launch.sample --workdir runs/quickstart --prompt "def " --num_samples 2
  python -m launch.sample --workdir DIR --prompt_file prompts.txt --temperature 0.8 \
      --top_k 40 --top_p 0.95 --max_new_tokens 128 --seed 1 --stop "\\n\\n"
  python -m launch.sample --workdir DIR --prompt "import" --beam_size 4
  python -m launch.sample --workdir DIR --prompt "def " --quantize int8
  python -m launch.sample --workdir runs/llama-chat --chat --prompt "Hi!" \
      --system "You are terse." --temperature 0

Loads the latest checkpoint (or --step) and the tokenizer from the workdir;
`--quantize int8` serves it with int8 weights (`lm.models.quantize`).
An encoder-decoder run (span corruption, seq2seq) maps each prompt, as an
input text, to the output text it writes (span corruption fills in the
spans marked `<extra_id_N>`):

  python -m launch.sample --workdir runs/translate --prompt "ein Haus" --temperature 0

Prompts are left-padded into one batch; each prompt gets --num_samples rows.
A prompt starts with the bos token when the tokenizer adds one (`--bos
auto`: lm's tokenizers and Llama's do, GPT-2's does not), as `transformers`
encodes it; `--bos yes|no` forces either. `--chat` formats each prompt as a
user turn with the model's chat template (`chat_template.jinja` or
`tokenizer_config.json`'s `chat_template`, carried by launch.import_hf),
which writes its own special tokens.
"""

from __future__ import annotations

import codecs

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a trained run.")
_PROMPT = flags.DEFINE_multi_string("prompt", [], "Prompt text (repeatable).")
_PROMPT_FILE = flags.DEFINE_string("prompt_file", None, "File with one prompt per line.")
_NUM = flags.DEFINE_integer("num_samples", 1, "Samples per prompt.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.8, "0 = greedy.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0 = all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus mass in (0, 1].")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 128, "Tokens to generate.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_STOP = flags.DEFINE_multi_string("stop", [], "Stop string (repeatable; \\n escapes ok).")
_BEAM = flags.DEFINE_integer("beam_size", 0, "Beam search with this many beams (0 = sample).")
_ALPHA = flags.DEFINE_float("length_penalty", 0.6, "Beam search length penalty alpha.")
_NO_REPEAT = flags.DEFINE_integer(
    "no_repeat_ngram", None, "Never repeat an n-gram of the generated text "
    "(e.g. 3; 0 = off; default: the run's seq2seq.no_repeat_ngram for an "
    "encoder-decoder run, off otherwise).")
_SHOW_IDS = flags.DEFINE_bool("show_ids", False, "Also print the generated token ids.")
_BOS = flags.DEFINE_enum("bos", "auto", ["auto", "yes", "no"],
                         "Start prompts with the bos token: auto follows the "
                         "tokenizer (lm's tokenizers and Llama's add it, "
                         "GPT-2's does not).")
_CHAT = flags.DEFINE_bool("chat", False, "Format each prompt as a user turn "
                          "with the model's chat template (from the imported "
                          "tokenizer), then generate the reply.")
_SYSTEM = flags.DEFINE_string("system", None, "With --chat: a system message "
                              "before the user turn.")
_QUANTIZE = common.define_quantize_flag()


def _check_args():
  from lm.errors import LmError
  if not _WORKDIR.value:
    raise LmError("--workdir is required: the directory of a trained run.")
  if not 0.0 < _TOP_P.value <= 1.0:
    raise LmError(f"--top_p={_TOP_P.value} is outside (0, 1]; use e.g. 0.9, or 1 to disable.")
  if _TEMPERATURE.value < 0:
    raise LmError(f"--temperature={_TEMPERATURE.value} is negative; use 0 for greedy or a positive value.")
  if _TOP_K.value < 0:
    raise LmError(f"--top_k={_TOP_K.value} is negative; use 0 to disable or a positive count.")
  if _NUM.value < 1 or _MAX_NEW.value < 1:
    raise LmError("--num_samples and --max_new_tokens must be at least 1.")
  if _SYSTEM.value and not _CHAT.value:
    raise LmError("--system is the system message of a chat; add --chat (or "
                  "drop --system).")
  if _BEAM.value < 0:
    raise LmError(f"--beam_size={_BEAM.value} is negative; use 0 to sample or >= 1 beams.")
  if _NO_REPEAT.value is not None and _NO_REPEAT.value < 0:
    raise LmError(f"--no_repeat_ngram={_NO_REPEAT.value} is negative; use 0 "
                  "to allow repeats or an n-gram length such as 3.")


def _prompts() -> list[str]:
  from lm.errors import LmError
  prompts = [codecs.decode(p, "unicode_escape") for p in _PROMPT.value]
  if _PROMPT_FILE.value:
    try:
      from lm import files
      text = files.read_text(_PROMPT_FILE.value)
      prompts += [line for line in text.replace("\r\n", "\n").split("\n")
                  if line.strip()]
    except OSError as e:
      raise LmError(f"cannot read --prompt_file {_PROMPT_FILE.value} ({e.strerror}); "
                    "check the path.") from None
  if not prompts:
    raise LmError("give a prompt with --prompt TEXT or --prompt_file FILE.")
  return prompts


def _chat_prompts(trained, prompts: list[str]) -> list[str]:
  """Each prompt as a user turn (after `--system`) in the chat template."""
  from lm.errors import LmError
  from lm.generation import chat
  tok = trained.tokenizer
  template = chat.find_template(tok.path)
  if template is None:
    raise LmError(f"{trained.workdir} has no chat template beside its "
                  f"tokenizer {tok.path} (chat_template.jinja or "
                  "tokenizer_config.json's chat_template); drop --chat, or "
                  "import a chat model with launch.import_hf.")
  system = [{"role": "system", "content": _SYSTEM.value}] if _SYSTEM.value else []
  return [chat.render(template, [*system, {"role": "user", "content": p}],
                      bos_token=tok.id_to_piece(tok.bos_id),
                      eos_token=tok.id_to_piece(tok.eos_id))
          for p in prompts]


def _transduce(objective, texts: list[str]) -> None:
  """An encoder-decoder run: each prompt is an input text, printed with the
  output text the model writes for it (`--num_samples` each)."""
  from lm import experiments
  from lm.errors import LmError
  if _CHAT.value or _STOP.value:
    raise LmError("--chat and --stop are for decoder-only runs; an "
                  "encoder-decoder run maps each --prompt to one output.")
  trained = experiments.load_trained(_WORKDIR.value, _STEP.value,
                                     quantize=_QUANTIZE.value)
  rows = [t for t in texts for _ in range(_NUM.value)]
  outputs = objective.transduce(
      trained, rows, max_new_tokens=_MAX_NEW.value,
      temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
      beam_size=_BEAM.value, seed=_SEED.value,
      no_repeat_ngram=_NO_REPEAT.value, length_penalty=_ALPHA.value)
  for i, (text, out) in enumerate(zip(rows, outputs)):
    print(f"=== sample {i} ===\ninput: {text}\noutput: {out}", flush=True)


def main(argv):
  del argv
  common.quiet_logs()
  with common.user_errors():
    _check_args()
    prompts = _prompts()
    from lm import experiments
    from lm.errors import LmError
    from lm.generation.text import generate_text
    objective = experiments.stored_objective(_WORKDIR.value)
    if objective.transduces:
      _transduce(objective, prompts)
      return
    if not objective.generates_text:
      names = experiments.names_where("generates_text")
      raise LmError(f"{_WORKDIR.value} holds a model trained with objective "
                    f"{objective.name!r}, which does not generate text; "
                    "sample from a run trained with objective "
                    f"{' or '.join(repr(n) for n in names)}.")
    trained = experiments.load_trained(_WORKDIR.value, _STEP.value,
                                     quantize=_QUANTIZE.value)
    add_bos = {"auto": None, "yes": True, "no": False}[_BOS.value]
    shown = prompts
    if _CHAT.value:
      prompts = _chat_prompts(trained, prompts)
      if _BOS.value == "auto":
        add_bos = False        # the template writes its own special tokens
    outputs = generate_text(
        trained.model, trained.params, trained.tokenizer, trained.mesh, prompts,
        num_samples=_NUM.value,
        temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value,
        max_new_tokens=_MAX_NEW.value, seed=_SEED.value,
        stops=[codecs.decode(s, "unicode_escape") for s in _STOP.value],
        beam_size=_BEAM.value, length_penalty=_ALPHA.value, add_bos=add_bos,
        no_repeat_ngram=_NO_REPEAT.value or 0)
  per_prompt = len(outputs) // len(shown)
  for i, sample in enumerate(outputs):
    head = f"=== sample {i} ({sample.finish_reason}, {len(sample.ids)} tokens) ==="
    if _CHAT.value:
      print(f"{head}\nuser: {shown[i // per_prompt]}\nassistant: "
            f"{sample.text}", flush=True)
    else:
      print(f"{head}\n{sample.prompt}{sample.text}", flush=True)
    if _SHOW_IDS.value:
      print(f"ids: {sample.ids}", flush=True)


if __name__ == "__main__":
  common.run(main)
