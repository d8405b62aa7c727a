"""The masked-LM + NSP objective: loss against numpy, metrics, accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm import experiments
from lm.errors import LmError
from lm.models.bert import BertModel
from lm.models.config import make_model_config
from lm.experiments import make_objective
from lm.objectives.mlm import mlm_loss, summarize
from lm.parallel import sharding as sharding_lib
from lm.parallel.mesh import make_mesh
from lm.training import optim, step as step_lib
from lm.training.state import init_state

B, T, P, V = 4, 16, 3, 50
CFG = make_model_config("bert_tiny", vocab_size=V, max_len=T, d_model=32,
                        num_heads=2)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  lengths = np.array([T, T - 3, T - 5, T])
  segment_ids = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
  inputs = rng.integers(9, V, (B, T)).astype(np.int32) * segment_ids
  masked = np.stack([np.sort(rng.choice(np.arange(1, n), P, replace=False))
                     for n in lengths]).astype(np.int32)
  weights = np.ones((B, P), np.float32)
  weights[1, 2] = 0.0  # an unused prediction slot
  return {"inputs": inputs,
          "token_types": (np.arange(T)[None] >= lengths[:, None] // 2).astype(np.int32) * segment_ids,
          "positions": np.broadcast_to(np.arange(T, dtype=np.int32), (B, T)) * segment_ids,
          "segment_ids": segment_ids,
          "masked_positions": masked,
          "masked_targets": rng.integers(9, V, (B, P)).astype(np.int32),
          "masked_weights": weights,
          "nsp_labels": np.array([0, 1, 1, 0], np.int32),
          "nsp_weights": np.array([1, 1, 1, 0], np.float32)}  # row 3: filler


@pytest.fixture(scope="module")
def params():
  return jax.jit(lambda k: BertModel(CFG).init(k, jnp.zeros((1, T), jnp.int32)))(
      jax.random.key(0))["params"]


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("nsp", [True, False])
def test_loss_matches_numpy_reference(params, nsp):
  batch = _batch()
  model = BertModel(CFG)
  loss, sums = jax.jit(lambda p, b: mlm_loss(p, b, None, model, deterministic=True,
                                             nsp=nsp))(params, batch)
  full, aux = model.apply({"params": params}, batch["inputs"],
                          token_types=batch["token_types"],
                          positions=batch["positions"],
                          segment_ids=batch["segment_ids"])
  full, nsp_logits = np.asarray(full, np.float64), np.asarray(aux["nsp_logits"], np.float64)
  rows = np.arange(B)[:, None]
  logp = _log_softmax(full[rows, batch["masked_positions"]])       # [B, P, V]
  nll = -np.take_along_axis(logp, batch["masked_targets"][..., None], -1)[..., 0]
  w = batch["masked_weights"]
  mlm = (nll * w).sum() / w.sum()
  nsp_nll = -_log_softmax(nsp_logits)[np.arange(B), batch["nsp_labels"]]
  nsp_mean = (nsp_nll * batch["nsp_weights"]).sum() / batch["nsp_weights"].sum()
  expected = mlm + nsp_mean if nsp else mlm
  assert float(loss) == pytest.approx(expected, rel=1e-5)
  assert float(sums["loss_sum"] / sums["tokens"]) == pytest.approx(expected, rel=1e-5)
  assert float(sums["tokens"]) == w.sum() and float(sums["examples"]) == 3
  m = summarize(jax.device_get(sums), nsp=nsp)
  assert float(m["mlm_loss"]) == pytest.approx(mlm, rel=1e-5)
  argmax_ok = (logp.argmax(-1) == batch["masked_targets"])
  assert float(m["mlm_accuracy"]) == pytest.approx((argmax_ok * w).sum() / w.sum())
  assert ("nsp_accuracy" in m) == nsp
  if nsp:
    nsp_ok = nsp_logits.argmax(-1) == batch["nsp_labels"]
    assert float(m["nsp_accuracy"]) == pytest.approx(
        (nsp_ok * batch["nsp_weights"]).sum() / 3)
    assert float(m["nsp_loss"]) == pytest.approx(nsp_mean, rel=1e-5)


def _config(nsp=True, **kw):
  c = experiments.base_config()
  c.objective = "mlm"
  c.model.size = "bert_tiny"
  c.seq_len = T
  c.mlm.nsp = nsp
  for k, v in kw.items():
    c[k] = v
  return c


def test_gradient_accumulation_equals_the_whole_batch_without_nsp():
  objective = make_objective(_config(nsp=False))
  mesh = make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
  rules = sharding_lib.logical_rules()
  model = BertModel(CFG)
  tx, schedule = optim.make_optimizer(experiments.base_config().optimizer, 10)
  outs = []
  for accum in (1, 2):
    state, _, shardings = init_state(model, tx, mesh, rules, 0, T)
    train, _ = step_lib.jit_steps(model, objective.loss, tx, schedule, 0, mesh,
                                  rules, shardings, accum_steps=accum,
                                  summarize=objective.summarize)
    state, m = train(state, _batch())
    outs.append((jax.device_get(state.params), jax.device_get(m)))
  (p1, m1), (p2, m2) = outs
  assert m1["loss"] == pytest.approx(m2["loss"], rel=1e-5)
  assert m1["mlm_accuracy"] == pytest.approx(m2["mlm_accuracy"])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=3e-6), p1, p2)


def test_objective_refuses_a_decoder_and_the_decoder_objective_refuses_bert():
  with pytest.raises(LmError, match="bidirectional encoder"):
    make_objective(_config()).check_model(make_model_config("tiny", vocab_size=V))
  c = _config()
  c.objective = "causal"
  with pytest.raises(LmError, match="needs a decoder"):
    make_objective(c).check_model(CFG)


def test_flops_per_token_counts_the_output_layer_only_at_predictions():
  objective = make_objective(_config(seq_len=128))
  cfg = make_model_config("bert_base")
  n = 110_106_428
  fpt = objective.flops_per_token(cfg, n)
  d, v = cfg.d_model, cfg.vocab_size
  matmul = n - v * d - 2 * d - 512 * d + v * d * 20 / 128
  assert fpt == pytest.approx(6 * matmul + 12 * 12 * 128 * 768)


@pytest.mark.parametrize("key,value,match", [
    ("mask_rate", 1.5, "config.mlm.mask_rate"),
    ("random_token_rate", 0.3, "exceeds 1"),
    ("segments", "paragraphs", "config.mlm.segments"),
    ("documents", "pages", "config.mlm.documents"),
    ("max_predictions", -1, "config.mlm.max_predictions"),
    ("short_seq_prob", 2.0, "config.mlm.short_seq_prob"),
])
def test_bad_mlm_settings_are_one_sentence_errors(key, value, match):
  c = _config()
  c.mlm[key] = value
  with pytest.raises(LmError, match=match):
    make_objective(c)


def test_documents_auto_splits_text_files_at_blank_lines():
  c = _config()
  c.data.train = "text:/data/*.txt"
  assert make_objective(c).documents == "blank_lines"
  c.data.train = "pystdlib:train"
  assert make_objective(c).documents == "source"


def _train_on(mesh_sizes, devices, steps=2):
  c = _config()
  c.batch_size = B
  objective = make_objective(c)
  mesh = make_mesh(mesh_sizes, devices=devices)
  rules = sharding_lib.logical_rules()
  model = BertModel(CFG)
  opt = experiments.base_config().optimizer
  opt.warmup_steps = 0
  tx, schedule = optim.make_optimizer(opt, 10)
  state, _, shardings = init_state(model, tx, mesh, rules, 0, T)
  train, _ = step_lib.jit_steps(model, objective.loss, tx, schedule, 0, mesh,
                                rules, shardings, summarize=objective.summarize)
  batch = {k: jax.device_put(v, sharding_lib.batch_sharding(mesh))
           for k, v in _batch().items()}
  losses = []
  for _ in range(steps):
    state, m = train(state, batch)
    losses.append(float(m["loss"]))
  return losses, jax.device_get(state.params)


def test_bert_on_a_2x2x2_mesh_matches_one_device():
  ref_losses, ref_params = _train_on({"data": 1, "fsdp": 1, "tensor": 1},
                                     jax.devices()[:1])
  losses, params = _train_on({"data": 2, "fsdp": 2, "tensor": 2}, None)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5),
               params, ref_params)


def test_majority_baseline_counts_only_chosen_predictions():
  from lm.objectives.mlm import majority_baseline
  batches = [{"masked_targets": np.array([[5, 5, 9]]),
              "masked_weights": np.array([[1, 1, 0]], np.float32)},
             {"masked_targets": np.array([[7, 0, 0]]),
              "masked_weights": np.array([[1, 0, 0]], np.float32)}]
  assert majority_baseline(batches) == pytest.approx(2 / 3)
  assert majority_baseline([]) == 0.0
