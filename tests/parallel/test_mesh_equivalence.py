"""The same train steps on different meshes (and with gradient accumulation)
give the same losses and parameters as on one device."""

import jax
import numpy as np
import pytest

from lm.models import build_model
from lm.models.config import make_model_config
from lm.objectives.causal import causal_lm_loss, summarize as causal_summarize
from lm.parallel import sharding as sharding_lib
from lm.parallel.mesh import make_mesh
from lm.training import optim, step as step_lib
from lm.experiments import base_config
from lm.training.state import init_state

B, T, V = 8, 16, 64


def batch_np():
  rng = np.random.default_rng(0)
  tokens = rng.integers(4, V, size=(B, T + 1)).astype(np.int32)
  seg = np.ones((B, T), np.int32)
  seg[:, T // 2:] = 2                               # two packed docs per row
  pos = np.concatenate([np.arange(T // 2)] * 2)[None].repeat(B, 0).astype(np.int32)
  return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "positions": pos,
          "segment_ids": seg, "loss_mask": np.ones((B, T), np.float32)}


def run(mesh_sizes, devices, steps=3, accum=1, **model_kw):
  cfg = make_model_config("tiny", vocab_size=V, max_len=T, **model_kw)
  model = build_model(cfg)
  mesh = make_mesh(mesh_sizes, devices=devices)
  rules = sharding_lib.logical_rules()
  opt = base_config().optimizer
  opt.warmup_steps = 0
  tx, schedule = optim.make_optimizer(opt, 10)
  state, _, shardings = init_state(model, tx, mesh, rules, 0, T)
  train, _ = step_lib.jit_steps(model, causal_lm_loss, tx, schedule, 0, mesh,
                                rules, shardings, accum_steps=accum,
                                summarize=causal_summarize)
  batch = {k: jax.device_put(v, sharding_lib.batch_sharding(mesh))
           for k, v in batch_np().items()}
  losses = []
  for _ in range(steps):
    state, m = train(state, batch)
    losses.append(float(m["loss"]))
  return losses, jax.tree.map(np.asarray, jax.device_get(state.params)), state


@pytest.fixture(scope="module")
def reference():
  return run({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


@pytest.mark.parametrize("sizes", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_meshes_match_one_device(reference, sizes):
  ref_losses, ref_params, _ = reference
  losses, params, state = run(dict(zip(("data", "fsdp", "tensor"), sizes)), None)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5),
               params, ref_params)
  # parameters really are sharded as the rules say
  spec = state.params["token_embed"]["embedding"].sharding.spec
  assert tuple(spec) == ("tensor", "fsdp")


def test_gradient_accumulation_matches_large_batch(reference):
  ref_losses, ref_params, _ = reference
  losses, params, _ = run({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1],
                          accum=4)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5),
               params, ref_params)


def test_checkpoint_moves_to_another_mesh(tmp_path):
  from lm.training.checkpoint import Checkpointer
  from lm.training.state import state_shardings

  def setup(sizes):
    cfg = make_model_config("tiny", vocab_size=V, max_len=T)
    model = build_model(cfg)
    mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), sizes)))
    rules = sharding_lib.logical_rules()
    opt = base_config().optimizer
    opt.warmup_steps = 0
    tx, schedule = optim.make_optimizer(opt, 10)
    abstract, shardings = state_shardings(model, tx, mesh, rules, T)
    train, _ = step_lib.jit_steps(model, causal_lm_loss, tx, schedule, 0, mesh,
                                  rules, shardings,
                                  summarize=causal_summarize)
    batch = {k: jax.device_put(v, sharding_lib.batch_sharding(mesh))
             for k, v in batch_np().items()}
    return model, tx, mesh, rules, abstract, shardings, train, batch

  model, tx, mesh, rules, _, _, train, batch = setup((2, 2, 2))
  state, _, _ = init_state(model, tx, mesh, rules, 0, T)
  for _ in range(2):
    state, _ = train(state, batch)
  ckpt = Checkpointer(str(tmp_path))
  ckpt.save(2, state, {"step": 2}, {})
  ckpt.wait()
  original, m_orig = train(state, batch)

  _, _, _, _, abstract, shardings, train2, batch2 = setup((1, 8, 1))
  restored, _ = ckpt.restore(2, abstract, shardings)
  emb = restored.params["token_embed"]["embedding"]
  assert tuple(emb.sharding.spec) == ("tensor", "fsdp")
  assert emb.sharding.mesh.shape["fsdp"] == 8
  moved, m_moved = train2(restored, batch2)
  np.testing.assert_allclose(float(m_moved["loss"]), float(m_orig["loss"]), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=1e-4, atol=3e-5),
      jax.device_get(moved.params), jax.device_get(original.params))
