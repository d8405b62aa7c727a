"""SentenceEncoder: pooling against numpy, parameter layout, temperature."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm.errors import LmError
from lm.models import build_model
from lm.models.bert import BertModel
from lm.models.config import make_model_config
from lm.models.embedder import SentenceEncoder, check_pooling, pool

V, T = 64, 12
BERT = make_model_config("bert_tiny", vocab_size=V, max_len=32)
GPT = make_model_config("tiny", vocab_size=V, max_len=32)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, V, (3, T)).astype(np.int32)
  lengths = np.array([T, 5, 1])
  mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
  return jnp.asarray(tokens * mask), jnp.asarray(mask)


def _paths(tree):
  return {"/".join(str(k.key) for k in p) for p, _ in
          jax.tree_util.tree_flatten_with_path(nn.meta.unbox(tree))[0]}


def test_pool_matches_numpy():
  rng = np.random.default_rng(0)
  hidden = rng.normal(size=(3, 6, 4)).astype(np.float32)
  seg = np.array([[1] * 6, [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]])
  np.testing.assert_allclose(pool(hidden, seg, "cls"), hidden[:, 0])
  want_mean = np.stack([hidden[i, :n].mean(0) for i, n in enumerate([6, 3, 1])])
  np.testing.assert_allclose(pool(hidden, seg, "mean"), want_mean, rtol=1e-6)
  want_last = np.stack([hidden[i, n - 1] for i, n in enumerate([6, 3, 1])])
  np.testing.assert_allclose(pool(hidden, seg, "last"), want_last)
  np.testing.assert_allclose(pool(hidden, None, "mean"), hidden.mean(1), rtol=1e-6)


@pytest.mark.parametrize("cfg,pooling", [(BERT, "cls"), (BERT, "mean"),
                                         (GPT, "last"), (GPT, "mean")])
def test_embedding_ignores_padding_and_backbone_names_match(cfg, pooling):
  tokens, mask = _batch()
  enc = SentenceEncoder(cfg, pooling=pooling, projection=True)
  params = enc.init({"params": jax.random.key(0)}, tokens, segment_ids=mask)["params"]
  out = enc.apply({"params": params}, tokens, segment_ids=mask)
  assert out["embedding"].shape == (3, cfg.d_model)
  assert out["projected"].shape == (3, cfg.d_model)
  assert not np.allclose(out["embedding"], out["projected"])
  # Garbage in the padding changes nothing.
  noisy = jnp.where(mask > 0, tokens, 7)
  out2 = enc.apply({"params": params}, noisy, segment_ids=mask)
  np.testing.assert_allclose(out["embedding"], out2["embedding"], atol=1e-5)
  # The backbone is the bare model, named as that model names its params.
  bare = BertModel(cfg, heads=False) if cfg.arch == "bert" else build_model(cfg)
  bare_params = jax.eval_shape(lambda: bare.init(
      {"params": jax.random.key(0)}, tokens))["params"]
  assert _paths(params["backbone"]) == _paths(bare_params)
  assert set(params) == {"backbone", "projection"}
  if cfg.arch == "bert":
    assert not any(k in bare_params for k in ("pooler", "mlm_head", "nsp_head"))


def test_learned_temperature_is_a_parameter_with_a_floor():
  tokens, mask = _batch()
  enc = SentenceEncoder(BERT, pooling="mean", temperature=0.1,
                        learn_temperature=True, min_temperature=0.02)
  params = enc.init({"params": jax.random.key(0)}, tokens, segment_ids=mask)["params"]
  assert float(params["log_temperature"]) == pytest.approx(np.log(0.1))
  assert "projection" not in params
  out = enc.apply({"params": params}, tokens, segment_ids=mask)
  assert float(out["temperature"]) == pytest.approx(0.1)
  np.testing.assert_allclose(out["embedding"], out["projected"])
  params = {**params, "log_temperature": jnp.asarray(np.log(1e-4), jnp.float32)}
  out = enc.apply({"params": params}, tokens, segment_ids=mask)
  assert float(out["temperature"]) == pytest.approx(0.02)
  fixed = SentenceEncoder(BERT, pooling="mean", temperature=0.3)
  p2 = fixed.init({"params": jax.random.key(0)}, tokens, segment_ids=mask)["params"]
  assert "log_temperature" not in p2
  assert float(fixed.apply({"params": p2}, tokens, segment_ids=mask)["temperature"]) == pytest.approx(0.3)


def test_pooling_errors_are_one_sentence():
  with pytest.raises(LmError, match="pooling 'cls' reads the first token"):
    check_pooling("transformer", "cls")
  with pytest.raises(LmError, match="is not one of 'cls', 'mean', 'last'"):
    check_pooling("bert", "max")
  check_pooling("bert", "last")
  check_pooling("lstm", "mean")
