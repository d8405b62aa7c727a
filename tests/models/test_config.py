"""Tests for lm.models.config: validation, the size table, GPT-2 sizes."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import LmError
from lm.models import build_model
from lm.models.config import SIZES, ModelConfig, make_model_config
from lm.models.transformer import DecoderLM, count_params


def test_tiny_resolves_derived_sizes():
  cfg = make_model_config("tiny", vocab_size=64)
  assert (cfg.d_model, cfg.num_layers, cfg.num_heads) == (64, 2, 4)
  assert (cfg.mlp_size, cfg.max_len) == (256, 128)
  assert cfg.kv_heads == 4 and cfg.head_size == 16
  assert cfg.compute_dtype == jnp.float32


def test_defaults_derive_from_width():
  cfg = ModelConfig(vocab_size=10, d_model=96, num_heads=3, num_kv_heads=1)
  assert cfg.head_size == 32 and cfg.mlp_size == 384 and cfg.kv_heads == 1
  cfg = ModelConfig(vocab_size=10, d_model=96, num_heads=5, head_dim=8)
  assert cfg.validate().head_size == 8


@pytest.mark.parametrize("size", sorted(SIZES))
def test_every_size_validates(size):
  cfg = make_model_config(size, vocab_size=1000)
  assert cfg.validate() is cfg


@pytest.mark.parametrize("overrides, fields", [
    (dict(num_heads=5, d_model=128), ("model.num_heads=5", "model.d_model=128",
                                      "model.head_dim")),
    (dict(num_kv_heads=3), ("model.num_kv_heads=3", "model.num_heads=4")),
    (dict(position="alibi"), ("model.position='alibi'", "'rope'")),
    (dict(norm="batchnorm"), ("model.norm=", "'rmsnorm'")),
    (dict(norm_position="middle"), ("model.norm_position=", "'post'")),
    (dict(mlp="tanh"), ("model.mlp=", "'swiglu'", "'geglu'")),
    (dict(remat="some"), ("model.remat=", "'dots'")),
    (dict(dtype="float16"), ("model.dtype=", "'bfloat16'")),
    (dict(param_dtype="int8"), ("model.param_dtype=",)),
    (dict(attention_impl="flash"), ("model.attention_impl=", "'einsum'")),
    (dict(vocab_size=0), ("model.vocab_size=0", "tokenizer")),
    (dict(vocab_size=-3), ("model.vocab_size=-3",)),
    (dict(d_model=0), ("model.d_model=0",)),
    (dict(num_layers=-1), ("model.num_layers=-1",)),
    (dict(d_ff=0), ("model.d_ff=0",)),
    (dict(max_len=0), ("model.max_len=0",)),
    (dict(dropout=1.0), ("model.dropout=1.0",)),
    (dict(attention_dropout=-0.1), ("model.attention_dropout=-0.1",)),
    (dict(attention_impl="cudnn"), ("model.attention_impl='cudnn'",
                                     "model.dtype='bfloat16'")),
    (dict(num_heads=2.0), ("model.num_heads=2.0",)),
    (dict(position="rope", head_dim=15), ("model.position='rope'",
                                          "model.head_dim")),
    (dict(arch="gru"), ("model.arch='gru'", "'transformer'", "'lstm'")),
    (dict(arch="lstm", dropout=1.0), ("model.dropout=1.0",)),
    (dict(arch="lstm", d_model=0), ("model.d_model=0",)),
])
def test_validation_names_the_field(overrides, fields):
  with pytest.raises(LmError) as info:
    make_model_config("tiny", **{"vocab_size": 64, **overrides})
  message = str(info.value)
  for field in fields:
    assert field in message
  assert message.count(". ") == 0  # one sentence


def test_numpy_integers_are_accepted():
  cfg = make_model_config("tiny", vocab_size=np.int64(64),
                          num_layers=np.int32(3))
  assert cfg.num_layers == 3


def test_vocab_can_stay_unset_when_asked():
  cfg = ModelConfig()
  assert cfg.validate(require_vocab=False) is cfg
  with pytest.raises(LmError, match="model.vocab_size"):
    cfg.validate()


def test_unknown_size_lists_sizes():
  with pytest.raises(LmError, match="'giant'.*tiny.*quickstart.*xl"):
    make_model_config("giant", vocab_size=10)


def test_unknown_override_names_key_and_fields():
  with pytest.raises(LmError, match="model.n_layer .*num_layers"):
    make_model_config("tiny", vocab_size=10, n_layer=3)


def test_config_is_frozen_and_replaceable():
  cfg = make_model_config("tiny", vocab_size=64)
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.d_model = 3
  assert dataclasses.replace(cfg, num_layers=3).num_layers == 3


def _abstract_param_count(cfg):
  variables = jax.eval_shape(
      lambda: DecoderLM(cfg).init({"params": jax.random.key(0)},
                                  jnp.zeros((1, 8), jnp.int32)))
  return count_params(variables["params"])


@pytest.mark.parametrize("size, expected", [
    ("small", 124_439_808),
    ("medium", 354_823_168),
    ("large", 774_030_080),
    ("xl", 1_557_611_200),
])
def test_gpt2_parameter_counts(size, expected):
  cfg = make_model_config(size)
  assert cfg.vocab_size == 50257
  assert _abstract_param_count(cfg) == expected


@pytest.mark.parametrize("size, non_embedding", [
    ("tiny", 108_288),
    ("shakespeare", 795_776),
    ("quickstart", 3_225_088),
    ("d384", 10_745_856),
])
def test_small_size_parameter_counts(size, non_embedding):
  cfg = make_model_config(size, vocab_size=1000)
  assert _abstract_param_count(cfg) == non_embedding + 1000 * cfg.d_model


def test_arch_defaults_to_transformer():
  assert make_model_config("tiny", vocab_size=64).arch == "transformer"
  assert make_model_config("lstm_tiny", vocab_size=64).arch == "lstm"


@pytest.mark.parametrize("overrides", [
    dict(num_heads=5),                       # heads need not divide the width
    dict(num_heads=4, num_kv_heads=3),
    dict(position="rope", head_dim=15),
    dict(attention_impl="cudnn"),            # no attention to run
])
def test_lstm_skips_attention_checks(overrides):
  cfg = make_model_config("lstm_tiny", vocab_size=64, **overrides)
  assert cfg.arch == "lstm"
  with pytest.raises(LmError):
    make_model_config("lstm_tiny", vocab_size=64, arch="transformer",
                      **overrides)


def _abstract_lstm_count(cfg):
  variables = jax.eval_shape(
      lambda: build_model(cfg).init({"params": jax.random.key(0)},
                                    jnp.zeros((1, 8), jnp.int32)))
  return count_params(variables["params"])


@pytest.mark.parametrize("size, non_embedding", [
    ("lstm_tiny", 16_640),            # 2 * (8 * 32^2 + 4 * 32)
    ("lstm_shakespeare", 804_608),    # 2 * (8 * 224^2 + 4 * 224)
])
def test_lstm_parameter_counts(size, non_embedding):
  cfg = make_model_config(size, vocab_size=1000)
  assert _abstract_lstm_count(cfg) == non_embedding + 1000 * cfg.d_model


def test_t5_sizes_start_from_t5s_fan_in_initialisation():
  cfg = make_model_config("t5_mini", vocab_size=512)
  assert cfg.init == "t5"
  params = nn.unbox(build_model(cfg).init(
      jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))["params"]
  d, h, n, f = cfg.d_model, cfg.head_size, cfg.num_heads, cfg.mlp_size
  enc = params["encoder"]["layers"]
  for got, want in (
      (params["token_embed"]["embedding"], 1.0),
      (enc["attention"]["query"]["kernel"], (d * h) ** -0.5),
      (enc["attention"]["key"]["kernel"], d ** -0.5),
      (enc["attention"]["out"]["kernel"], (n * h) ** -0.5),
      (enc["mlp"]["wi_gate"]["kernel"], d ** -0.5),
      (enc["mlp"]["wo"]["kernel"], f ** -0.5),
      (params["unembed"]["kernel"], d ** -0.5)):
    assert abs(float(jnp.std(got)) / want - 1) < 0.05, (got.shape, want)
  # GPT-2's initialisation elsewhere; "t5" is refused outside encoder-decoders
  assert make_model_config("tiny", vocab_size=64).init == "normal"
  with pytest.raises(LmError, match="model.init='t5' is an encoder-decoder"):
    make_model_config("tiny", vocab_size=64, init="t5")
