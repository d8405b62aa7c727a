"""Hugging Face parity at real model sizes: import, logits, round trip.

  python benchmarks/hf_parity.py [--quick]

For GPT-2 small (124M), BERT-base (`BertForPreTraining`, 110M) and a
Llama-shaped model with grouped-query attention, builds the model in
`transformers` from its config with random weights (no download), saves it
as safetensors, imports it with `lm.interop.hf.read_hf_dir`, and prints one
table: import time, the largest absolute and relative logit differences
against `transformers` on the same random ids (f32, batch 2 x 128, with
right padding in the BERT rows), and whether import -> export ->
`from_pretrained` gives back every tensor exactly. `--quick` uses two
layers of each (a smoke run). Needs the test extras (torch, transformers).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from lm.interop.hf import read_hf_dir, write_hf_dir  # noqa: E402
from lm.models import build_model  # noqa: E402

BATCH, LENGTH = 2, 128


def models(quick: bool):
  layers = 2 if quick else None
  gpt2 = transformers.GPT2Config(n_layer=layers or 12)
  bert = transformers.BertConfig(num_hidden_layers=layers or 12)
  llama = transformers.LlamaConfig(
      vocab_size=32000, hidden_size=768, intermediate_size=2048,
      num_hidden_layers=layers or 12, num_attention_heads=12,
      num_key_value_heads=4, max_position_embeddings=2048, rope_theta=10000.0,
      tie_word_embeddings=False)
  return [("GPT-2 small", transformers.GPT2LMHeadModel, gpt2),
          ("BERT-base (pretraining heads)", transformers.BertForPreTraining,
           bert),
          ("Llama-shaped, GQA 12/4", transformers.LlamaForCausalLM, llama)]


def measure(name, cls, hf_cfg, root):
  torch.manual_seed(0)
  ref = cls(hf_cfg).eval()
  path = os.path.join(root, name.split()[0])
  ref.save_pretrained(path, safe_serialization=True)
  start = time.perf_counter()
  m = read_hf_dir(path)
  import_s = time.perf_counter() - start
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, hf_cfg.vocab_size, (BATCH, LENGTH))
  model = build_model(m.config)
  if m.config.arch == "bert":
    lengths = np.array([LENGTH, LENGTH * 3 // 4])
    mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int32)
    types = (np.arange(LENGTH)[None] >= LENGTH // 2).astype(np.int32) * mask
    with torch.no_grad():
      out = ref(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                token_type_ids=torch.tensor(types))
    want = out.prediction_logits.numpy()
    got, _ = jax.jit(lambda p: model.apply(
        {"params": p}, tokens, token_types=types, segment_ids=mask))(m.params)
    real = mask.astype(bool)
    got, want = np.asarray(got)[real], want[real]
  else:
    with torch.no_grad():
      want = ref(torch.tensor(tokens)).logits.numpy()
    got, _ = jax.jit(lambda p: model.apply({"params": p}, tokens))(m.params)
    got = np.asarray(got)
  diff = np.abs(got - want)
  out_dir = os.path.join(root, name.split()[0] + "-export")
  write_hf_dir(out_dir, m.config, m.params, head=m.head)
  back = cls.from_pretrained(out_dir)
  theirs = back.state_dict()
  same = all(k in theirs and torch.equal(v, theirs[k])
             for k, v in ref.state_dict().items())
  n = sum(v.numel() for v in ref.parameters())
  return (name, n, import_s, float(diff.max()),
          float(diff.max() / np.abs(want).max()), same)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  transformers.logging.set_verbosity_error()
  transformers.logging.disable_progress_bar()
  rows = []
  with tempfile.TemporaryDirectory() as root:
    for name, cls, cfg in models(args.quick):
      rows.append(measure(name, cls, cfg, root))
  print("| model | parameters | import | max abs logit diff | relative | "
        "round trip |")
  print("|---|---|---|---|---|---|")
  for name, n, secs, abs_diff, rel, same in rows:
    print(f"| {name} | {n / 1e6:.1f}M | {secs:.1f} s | {abs_diff:.1e} | "
          f"{rel:.1e} | {'identical' if same else 'DIFFERS'} |")


if __name__ == "__main__":
  main()
