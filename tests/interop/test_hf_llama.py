"""Llama import/export parity against transformers (tiny random models, CPU)."""

import json

import numpy as np
import pytest
import torch
import transformers

from lm.errors import LmError
from lm.interop import llama
from lm.interop.tensors import Tensors, read_state, write_state
from lm.models import build_model
from lm.models.config import make_model_config

# Grouped-query attention (4 query heads, 2 key/value heads), a head width
# other than hidden / heads, a non-default RoPE base and untied embeddings.
# initializer_range 0.2 (not 0.02) gives logits of a few units, so greedy
# decoding varies its tokens instead of repeating one.
GQA = dict(vocab_size=97, hidden_size=48, intermediate_size=80,
           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
           head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-5,
           rope_parameters={"rope_type": "default", "rope_theta": 500.0},
           tie_word_embeddings=False, initializer_range=0.2)
# Plain multi-head attention with tied embeddings and the default RoPE base.
TIED = dict(vocab_size=89, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=64, tie_word_embeddings=True,
            initializer_range=0.2)


def save_model(path, seed, config_cls=transformers.LlamaConfig,
               model_cls=transformers.LlamaForCausalLM, **fields):
  """A random model saved to `path`; its RMSNorm gains are randomised too."""
  torch.manual_seed(seed)
  model = model_cls(config_cls(**fields)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("norm.weight"):
        param.uniform_(0.5, 1.5)
  model.save_pretrained(path, safe_serialization=True)
  return model


def load(path):
  """`(cfg, params)` of a saved model directory, through `lm.interop.llama`."""
  with open(path / "config.json") as f:
    cfg = llama.model_config(json.load(f))
  t = Tensors(read_state(str(path)), str(path), kind=llama.KIND,
              prefix=llama.PREFIX)
  return cfg, llama.import_params(t, cfg)


@pytest.fixture(scope="module", params=["gqa", "tied"])
def saved(request, tmp_path_factory):
  """`(path, reference model)` for each of the two configs."""
  fields = GQA if request.param == "gqa" else TIED
  path = tmp_path_factory.mktemp(request.param)
  return path, save_model(path, seed=len(request.param), **fields)


def test_logits_match_transformers(saved):
  path, ref = saved
  cfg, params = load(path)
  assert cfg.tie_embeddings == ref.config.tie_word_embeddings
  assert ("unembed" in params) != cfg.tie_embeddings
  tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 12))
  with torch.no_grad():
    want = ref(torch.tensor(tokens)).logits.numpy()
  got, _ = build_model(cfg).apply({"params": params}, tokens)
  assert np.abs(np.asarray(got) - want).max() <= 1e-4


def test_greedy_generation_matches_transformers_generate(saved):
  from lm.generation.decode import Decoder
  path, ref = saved
  cfg, params = load(path)
  prompt = [5, 17, 42, 8]
  with torch.no_grad():
    want = ref.generate(torch.tensor([prompt]), max_new_tokens=20,
                        do_sample=False, pad_token_id=0,
                        eos_token_id=None)[0, len(prompt):].tolist()
  assert len(set(want)) > 3  # not one token repeated: the test has teeth
  got = Decoder(build_model(cfg)).generate(params, [prompt],
                                           max_new_tokens=20, max_len=40)
  assert got.tokens[0] == want


def test_export_round_trips_through_transformers(saved, tmp_path):
  path, ref = saved
  cfg, params = load(path)
  state = llama.export_state(params, cfg)
  assert ("lm_head.weight" in state) != cfg.tie_embeddings
  write_state(str(tmp_path), state)
  (tmp_path / "config.json").write_text(json.dumps(llama.hf_config(cfg)))
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
  assert type(back) is transformers.LlamaForCausalLM
  assert back.config.head_dim == ref.config.head_dim
  assert (back.config.rope_parameters["rope_theta"]
          == ref.config.rope_parameters["rope_theta"])
  want, got = ref.state_dict(), back.state_dict()
  for name, tensor in want.items():
    assert torch.equal(got[name], tensor), name
  assert llama.model_config(llama.hf_config(cfg)) == cfg


def test_window_less_mistral_imports_as_llama(tmp_path):
  fields = dict(GQA, sliding_window=None)
  ref = save_model(tmp_path, seed=3, config_cls=transformers.MistralConfig,
                   model_cls=transformers.MistralForCausalLM, **fields)
  cfg, params = load(tmp_path)
  tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (1, 10))
  with torch.no_grad():
    want = ref(torch.tensor(tokens)).logits.numpy()
  got, _ = build_model(cfg).apply({"params": params}, tokens)
  assert np.abs(np.asarray(got) - want).max() <= 1e-4


def test_older_config_layout_is_read():
  hf = transformers.LlamaConfig(**TIED).to_dict()
  del hf["rope_parameters"]
  hf.update(rope_theta=2e5, rope_scaling=None)
  assert llama.model_config(hf).rope_theta == 2e5
  assert llama.rope_settings({"rope_parameters": {"rope_type": "default",
                                                  "rope_theta": 5e5}}) == (
                                                      "default", 5e5)


@pytest.mark.parametrize("change, message", [
    (dict(rope_parameters={"rope_type": "linear", "factor": 2.0,
                           "rope_theta": 1e4}),
     "RoPE scaling rope_type 'linear'"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu' but our SwiGLU MLP"),
    (dict(attention_bias=True), "attention_bias=true but"),
])
def test_configs_without_an_equivalent_are_refused(change, message):
  hf = transformers.LlamaConfig(**{**TIED, **change}).to_dict()
  with pytest.raises(LmError, match=message):
    llama.model_config(hf)


def test_older_rope_scaling_and_other_families_are_refused():
  hf = transformers.LlamaConfig(**TIED).to_dict()
  del hf["rope_parameters"]
  hf["rope_scaling"] = {"type": "dynamic", "factor": 2.0}
  with pytest.raises(LmError, match="rope_type 'dynamic'"):
    llama.model_config(hf)
  hf = transformers.MistralConfig(**TIED).to_dict()  # sliding_window 4096
  with pytest.raises(LmError, match="sliding_window=4096"):
    llama.model_config(hf)
  with pytest.raises(LmError, match="model_type 'qwen2'"):
    llama.model_config({**transformers.LlamaConfig(**TIED).to_dict(),
                        "model_type": "qwen2"})


def test_missing_and_misshapen_tensors_are_named(saved):
  path, _ = saved
  with open(path / "config.json") as f:
    hf = json.load(f)
  cfg = llama.model_config(hf)
  state = read_state(str(path))
  del state["model.layers.1.mlp.up_proj.weight"]
  t = Tensors(state, str(path), kind=llama.KIND, prefix=llama.PREFIX)
  with pytest.raises(LmError, match="has no tensor "
                     "'model.layers.1.mlp.up_proj.weight', which a Llama"):
    llama.import_params(t, cfg)
  wide = llama.model_config({**hf, "intermediate_size": 96})
  d, f = hf["hidden_size"], hf["intermediate_size"]
  with pytest.raises(LmError, match=(
      rf"'model.layers.0.mlp.gate_proj.weight' has shape \({f}, {d}\) but "
      rf"config.json implies \(96, {d}\)")):
    llama.import_params(t, wide)


def test_unsupported_names_the_first_mismatch(saved):
  path, _ = saved
  cfg, _ = load(path)
  assert llama.unsupported(cfg) is None
  gpt2 = make_model_config("small", vocab_size=10)
  assert llama.unsupported(gpt2) == (
      "model.position='learned' (Llama has 'rope')")
  swiglu_ln = make_model_config("tiny", vocab_size=10, position="rope",
                                mlp="swiglu", use_bias=False)
  assert llama.unsupported(swiglu_ln) == (
      "model.norm='layernorm' (Llama has 'rmsnorm')")
