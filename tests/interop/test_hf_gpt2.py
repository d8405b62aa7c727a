"""GPT-2 import parity against transformers (tiny random model, CPU)."""

import numpy as np
import pytest
import torch
import transformers

from lm.errors import LmError
from lm.interop.hf import load_hf_dir
from lm.models import build_model


def test_gpt2_logits_match_transformers(tmp_path):
  torch.manual_seed(0)
  hf_cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32,
                                   n_layer=2, n_head=4)
  ref = transformers.GPT2LMHeadModel(hf_cfg).eval()
  ref.save_pretrained(tmp_path, safe_serialization=True)
  cfg, params = load_hf_dir(str(tmp_path))
  tokens = np.random.default_rng(0).integers(0, 97, (2, 12))
  with torch.no_grad():
    want = ref(torch.tensor(tokens)).logits.numpy()
  got, _ = build_model(cfg).apply({"params": params}, tokens)
  assert np.abs(np.asarray(got) - want).max() < 1e-4


def test_pickle_checkpoints_and_other_models_are_refused(tmp_path):
  (tmp_path / "config.json").write_text('{"model_type": "gpt2", "vocab_size": 8, '
                                        '"n_positions": 8, "n_embd": 8, '
                                        '"n_layer": 1, "n_head": 2}')
  (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
  with pytest.raises(LmError, match="would have to be unpickled"):
    load_hf_dir(str(tmp_path))
  (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
  with pytest.raises(LmError, match="holds a 'whisper' model"):
    load_hf_dir(str(tmp_path))


def test_greedy_generation_matches_transformers_generate(tmp_path):
  from lm.generation.decode import Decoder
  torch.manual_seed(1)
  hf_cfg = transformers.GPT2Config(vocab_size=97, n_positions=40, n_embd=32,
                                   n_layer=2, n_head=4)
  ref = transformers.GPT2LMHeadModel(hf_cfg).eval()
  ref.save_pretrained(tmp_path, safe_serialization=True)
  cfg, params = load_hf_dir(str(tmp_path))
  prompt = [5, 17, 42, 8]
  with torch.no_grad():
    want = ref.generate(torch.tensor([prompt]), max_new_tokens=20,
                        do_sample=False, pad_token_id=0,
                        eos_token_id=None)[0, len(prompt):].tolist()
  got = Decoder(build_model(cfg)).generate(params, [prompt],
                                           max_new_tokens=20, max_len=40)
  assert got.tokens[0] == want
