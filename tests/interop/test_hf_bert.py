"""BERT import parity against transformers (tiny random models, CPU)."""

import jax
import numpy as np
import torch
import transformers

from lm.interop.hf import load_hf_dir
from lm.models import build_model


def test_bert_for_pretraining_matches_transformers(tmp_path):
  torch.manual_seed(0)
  hf_cfg = transformers.BertConfig(vocab_size=101, hidden_size=32,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64,
                                   max_position_embeddings=40)
  ref = transformers.BertForPreTraining(hf_cfg).eval()
  ref.save_pretrained(tmp_path, safe_serialization=True)
  cfg, params = load_hf_dir(str(tmp_path))
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, 101, (2, 10))
  types = np.zeros_like(tokens)
  types[:, 5:] = 1                        # two segments per row
  mask = np.ones_like(tokens)
  mask[1, 7:] = 0                         # the second row is padded
  with torch.no_grad():
    out = ref(torch.tensor(tokens), attention_mask=torch.tensor(mask),
              token_type_ids=torch.tensor(types), output_hidden_states=True)
  logits, aux = build_model(cfg).apply({"params": params}, tokens,
                                       token_types=types, segment_ids=mask)
  real = mask.astype(bool)
  mlm = np.abs(np.asarray(logits) - out.prediction_logits.numpy())[real]
  assert mlm.max() < 1e-4
  nsp = np.abs(np.asarray(aux["nsp_logits"]) - out.seq_relationship_logits.numpy())
  assert nsp.max() < 1e-4
  hidden = np.abs(np.asarray(aux["hidden"]) - out.hidden_states[-1].numpy())[real]
  assert hidden.max() < 1e-4
  with torch.no_grad():
    pooled = ref.bert(torch.tensor(tokens), attention_mask=torch.tensor(mask),
                      token_type_ids=torch.tensor(types)).pooler_output.numpy()
  assert np.abs(np.asarray(aux["pooled"]) - pooled).max() < 1e-4


def test_legacy_gamma_beta_layer_norm_names_import(tmp_path):
  """BERT's original release names LayerNorm parameters gamma and beta."""
  from safetensors.numpy import load_file, save_file
  torch.manual_seed(3)
  cfg = transformers.BertConfig(vocab_size=50, hidden_size=16,
                                num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32,
                                max_position_embeddings=24)
  transformers.BertForPreTraining(cfg).save_pretrained(
      tmp_path / "new", safe_serialization=True)
  _, want = load_hf_dir(str(tmp_path / "new"))
  state = load_file(str(tmp_path / "new" / "model.safetensors"))
  renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma")
             .replace("LayerNorm.bias", "LayerNorm.beta"): v
             for k, v in state.items()}
  assert sum(k.endswith("LayerNorm.gamma") for k in renamed) == 6
  (tmp_path / "old").mkdir()
  save_file(renamed, str(tmp_path / "old" / "model.safetensors"))
  (tmp_path / "old" / "config.json").write_text(
      (tmp_path / "new" / "config.json").read_text())
  _, got = load_hf_dir(str(tmp_path / "old"))
  got, want = _flat(got), _flat(want)
  assert got.keys() == want.keys()
  for name, value in got.items():
    np.testing.assert_array_equal(value, want[name], err_msg=name)


def _flat(tree):
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
