"""T5 import/export parity against transformers (tiny random models, CPU)."""

import dataclasses
import json

import numpy as np
import pytest
import torch
import transformers

from lm.errors import LmError
from lm.interop import t5
from lm.interop.hf import export_kind, read_hf_dir, write_hf_dir
from lm.interop.tensors import Tensors, read_state
from lm.models import build_model
from lm.models.config import make_model_config

_SHAPE = dict(vocab_size=100, d_model=32, d_kv=8, num_heads=4, d_ff=64,
              relative_attention_num_buckets=8,
              relative_attention_max_distance=16, dropout_rate=0.0)
# T5 v1.1 / Flan-T5: gated-GELU, a separate LM head and unscaled decoder
# output, 2 encoder and 3 decoder blocks; imported with scanned blocks.
GATED = dict(_SHAPE, num_layers=2, num_decoder_layers=3,
             feed_forward_proj="gated-gelu", tie_word_embeddings=False)
# T5 v1.0: ReLU, the head tied to the embedding and the decoder output
# scaled by d_model**-0.5; imported with a Python loop of blocks.
RELU = dict(_SHAPE, num_layers=2, feed_forward_proj="relu",
            tie_word_embeddings=True)
CASES = {"gated": (GATED, True), "relu": (RELU, False)}
# Encoder and decoder lengths beyond relative_attention_max_distance, so
# the far buckets are used; row 1 is right-padded in both.
S, T, S_PAD, T_PAD = 20, 18, 6, 4


def save_model(path, seed, **fields):
  """A random T5ForConditionalGeneration saved to `path`, with its norm
  gains and relative biases randomised and, when untied, its own head."""
  torch.manual_seed(seed)
  model = transformers.T5ForConditionalGeneration(
      transformers.T5Config(**fields)).eval()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name.endswith("layer_norm.weight"):
        param.uniform_(0.5, 1.5)
      elif name.endswith("relative_attention_bias.weight"):
        param.normal_(0.0, 1.0)
    if not fields["tie_word_embeddings"]:
      model.lm_head.weight = torch.nn.Parameter(
          torch.randn_like(model.shared.weight))
  model.save_pretrained(path, safe_serialization=True)
  return model


@pytest.fixture(scope="module", params=sorted(CASES))
def saved(request, tmp_path_factory):
  """`(path, reference model, our config, our params)` for each case."""
  fields, scanned = CASES[request.param]
  path = tmp_path_factory.mktemp(request.param)
  ref = save_model(path, seed=len(request.param), **fields)
  m = read_hf_dir(str(path))
  assert (m.model_type, m.architecture, m.head) == (
      "t5", "T5ForConditionalGeneration", "seq2seq")
  cfg = m.config
  assert cfg.scan_layers and "layers" in m.params["encoder"]
  if not scanned:
    cfg = dataclasses.replace(cfg, scan_layers=False)
    params = t5.import_params(Tensors(read_state(str(path)), str(path),
                                      kind=t5.KIND), cfg)
    assert "layers_1" in params["encoder"] and "layers" not in params["decoder"]
  else:
    params = m.params
  return path, ref, cfg, params


def test_logits_match_transformers_with_padding(saved):
  _, ref, cfg, params = saved
  tied = cfg.tie_embeddings
  assert tied == ref.config.scale_decoder_outputs
  assert ("unembed" in params) != tied
  assert cfg.mlp == ("relu" if tied else "geglu")
  assert cfg.decoder_layers == ref.config.num_decoder_layers
  rng = np.random.default_rng(0)
  inputs = rng.integers(2, cfg.vocab_size, (2, S))
  targets = rng.integers(2, cfg.vocab_size, (2, T))
  targets[:, 0] = 0                                     # decoder start id
  in_mask, out_mask = np.ones((2, S), np.int64), np.ones((2, T), np.int64)
  in_mask[1, S - S_PAD:], out_mask[1, T - T_PAD:] = 0, 0
  inputs, targets = inputs * in_mask, targets * out_mask   # pad id 0
  with torch.no_grad():
    want = ref(input_ids=torch.tensor(inputs),
               attention_mask=torch.tensor(in_mask),
               decoder_input_ids=torch.tensor(targets),
               decoder_attention_mask=torch.tensor(out_mask)).logits.numpy()
  got, _ = build_model(cfg).apply({"params": params}, inputs, targets,
                                  input_segment_ids=in_mask,
                                  decoder_segment_ids=out_mask)
  valid = out_mask.astype(bool)
  assert np.abs(np.asarray(got)[valid] - want[valid]).max() <= 1e-4


def test_export_round_trips_through_transformers(saved, tmp_path):
  _, ref, cfg, params = saved
  assert export_kind(cfg) == "t5"
  write_hf_dir(str(tmp_path), cfg, params, head="seq2seq")
  back = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path))
  assert back.config.scale_decoder_outputs == ref.config.scale_decoder_outputs
  assert back.config.feed_forward_proj == ref.config.feed_forward_proj
  want, got = ref.state_dict(), back.state_dict()
  assert sorted(got) == sorted(want)
  for name, tensor in want.items():
    assert torch.equal(got[name], tensor), name
  with open(tmp_path / "config.json") as f:
    again = t5.model_config(json.load(f))
  assert again == dataclasses.replace(cfg, scan_layers=True)


def test_configs_and_heads_without_an_equivalent_are_refused(saved, tmp_path):
  path, ref, cfg, _ = saved
  hf = json.loads((path / "config.json").read_text())
  (tmp_path / "config.json").write_text(
      json.dumps({**hf, "architectures": ["T5EncoderModel"]}))
  with pytest.raises(LmError, match="holds a T5EncoderModel; T5 imports as "
                     "T5ForConditionalGeneration"):
    read_hf_dir(str(tmp_path))
  with pytest.raises(LmError, match="feed_forward_proj 'gated-silu', which "
                     "our encoder-decoder has no MLP for"):
    t5.model_config({**ref.config.to_dict(), "feed_forward_proj": "gated-silu"})
  with pytest.raises(LmError, match="only sequence-to-sequence runs"):
    write_hf_dir(str(path / "out"), cfg, {}, head="lm")
  original = make_model_config("transformer_base", vocab_size=10)
  with pytest.raises(LmError, match=r"model.position='sinusoidal' \(T5 has "
                     "'relative'\\)"):
    export_kind(original)
  if not cfg.tie_embeddings:    # a separate head with a scaled output
    scaled = t5.model_config({**ref.config.to_dict(),
                              "scale_decoder_outputs": True})
    t = Tensors(read_state(str(path)), str(path), kind=t5.KIND)
    with pytest.raises(LmError, match="lm_head.weight that differs from "
                       "shared.weight"):
      t5.import_params(t, scaled)


def test_greedy_generation_matches_transformers_generate(saved):
  from lm.generation.seq2seq import Seq2SeqDecoder
  _, ref, cfg, params = saved
  inputs = [[5, 17, 42, 8, 9, 30], [11, 12]]
  got = Seq2SeqDecoder(build_model(cfg)).generate(
      params, inputs, max_new_tokens=12, start_id=0)
  for x, ours in zip(inputs, got.tokens):
    # use_cache=False: transformers sizes its cache by the encoder's depth,
    # which fails for the 3-block decoder of the gated case
    with torch.no_grad():
      want = ref.generate(torch.tensor([x]), max_new_tokens=12, min_new_tokens=12,
                          do_sample=False, num_beams=1, decoder_start_token_id=0,
                          eos_token_id=None, pad_token_id=0,
                          use_cache=False)[0, 1:].tolist()
    assert ours == want
