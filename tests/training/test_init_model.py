"""`state.init_model`: the rolled layer scan initialises the same parameters."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.models import build_model
from lm.models.config import make_model_config
from lm.training import state as state_lib


@pytest.mark.parametrize("size", ["tiny", "bert_tiny", "t5_tiny"])
def test_rolled_init_draws_the_unrolled_parameters_bit_for_bit(size):
  cfg = make_model_config(size, vocab_size=97, max_len=16)
  assert cfg.scan_layers and 0 < cfg.num_layers <= cfg.scan_unroll
  model = build_model(cfg)
  rolled = state_lib.init_model(model)
  assert rolled.config.scan_unroll == 0 and model.config.scan_unroll > 0

  def init(m):
    def f(rng):
      if cfg.arch == "encoder_decoder":
        x = jnp.zeros((1, 16), jnp.int32)
        return nn.unbox(m.init({"params": rng}, x, x)["params"])
      return nn.unbox(m.init({"params": rng}, jnp.zeros((1, 16), jnp.int32))["params"])
    return jax.jit(f)(jax.random.key(3))

  want, got = init(model), init(rolled)
  assert jax.tree.structure(want) == jax.tree.structure(got)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_models_without_a_layer_scan_are_left_as_they_are():
  model = build_model(make_model_config("tiny", vocab_size=97, max_len=16,
                                        scan_layers=False))
  assert state_lib.init_model(model) is model
