"""Text in, text out: tokenization, context checks and stop strings around
the cached decoder, for a model loaded from its workdir."""

from __future__ import annotations

import dataclasses

import jax

from lm.errors import LmError
from lm.generation.decode import Decoder, beam_generate


@dataclasses.dataclass
class Sample:
  """One completion: its text (cut at a stop string), the generated token
  ids (EOS excluded), and why it ended ("eos", "stop", "length", "beam")."""
  prompt: str
  text: str
  ids: list[int]
  finish_reason: str


def context_length(model_cfg, prompt_len: int, max_new_tokens: int) -> int:
  """Tokens the model can attend over: `max_len` for Transformers; the LSTM
  has no limit."""
  if model_cfg.arch == "lstm":
    return prompt_len + max_new_tokens
  return model_cfg.max_len


def cut_at_stop(text: str, stops) -> tuple[str, bool]:
  """`text` up to the first stop string, and whether one was found.

  >>> cut_at_stop("a = 1\\n\\nb = 2", ["\\n\\n"])
  ('a = 1', True)
  """
  cuts = [text.index(s) for s in stops if s and s in text]
  return (text[:min(cuts)], True) if cuts else (text, False)


def generate_text(model, params, tokenizer, mesh, prompts: list[str], *,
                  num_samples: int = 1,
                  temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
                  max_new_tokens: int = 128, seed: int = 0, stops=(),
                  beam_size: int = 0, length_penalty: float = 0.6,
                  add_bos: bool | None = None, no_repeat_ngram: int = 0):
  """A `Sample` per row: `num_samples` per prompt, in prompt order.

  A prompt starts with the bos token when `add_bos`, or by default when the
  tokenizer adds it (`tokenizer.adds_bos`: `lm`'s own tokenizers do, GPT-2's
  does not, Llama's does), so the ids are those `transformers` would
  generate from; an empty prompt always starts with bos.

  With `beam_size` > 0 the completions are the best `num_samples` beams.
  `no_repeat_ngram` n > 0: no completion repeats an n-gram of its own
  generated tokens (the prompt's are not counted).
  A prompt that does not leave room for `max_new_tokens` in the model's
  context is refused with one sentence.
  """
  tok, cfg = tokenizer, model.config
  bos = tok.adds_bos if add_bos is None else add_bos
  encoded = [tok.encode(p) for p in prompts]
  encoded = [[tok.bos_id] + ids if bos or not ids else ids for ids in encoded]
  for p, ids in zip(prompts, encoded):
    ctx = context_length(cfg, len(ids), max_new_tokens)
    if len(ids) >= ctx:
      raise LmError(f"the prompt {p[:30]!r}... is {len(ids)} tokens but the "
                    f"model's context is {ctx}; shorten the prompt.")
    if len(ids) + max_new_tokens > ctx:
      raise LmError(f"prompt ({len(ids)} tokens) + --max_new_tokens "
                    f"({max_new_tokens}) exceeds the model's context of {ctx}; "
                    f"lower --max_new_tokens to {ctx - len(ids)} or less.")
  ctx = max(context_length(cfg, len(ids), max_new_tokens) for ids in encoded)
  eos = tok.eos_id
  with jax.set_mesh(mesh):
    if beam_size:
      if num_samples > beam_size:
        raise LmError(f"--num_samples={num_samples} exceeds --beam_size="
                      f"{beam_size}; ask for at most as many samples as beams.")
      beams, _ = beam_generate(model, params, encoded,
                               beam_size=beam_size, max_new_tokens=max_new_tokens,
                               max_len=ctx, eos_id=eos, alpha=length_penalty,
                               no_repeat_ngram=no_repeat_ngram)
      rows = [(p, b[j]) for p, b in zip(prompts, beams) for j in range(num_samples)]
      reasons = ["beam"] * len(rows)
    else:
      batch = [ids for ids in encoded for _ in range(num_samples)]
      labels = [p for p in prompts for _ in range(num_samples)]
      decoder = Decoder(model, temperature=temperature, top_k=top_k,
                        top_p=top_p, no_repeat_ngram=no_repeat_ngram)
      check = (lambda ids: cut_at_stop(tok.decode(ids), stops)[1]) if stops else None
      gen = decoder.generate(params, batch, max_new_tokens=max_new_tokens,
                             max_len=ctx, seed=seed, eos_id=eos, stop_check=check)
      rows, reasons = list(zip(labels, gen.tokens)), gen.finish_reasons
  out = []
  for (prompt, ids), reason in zip(rows, reasons):
    text, _ = cut_at_stop(tok.decode(ids), stops)
    out.append(Sample(prompt, text, list(ids), reason))
  return out
