"""The same train steps on different meshes (and with gradient accumulation)
give the same losses and parameters as on one device."""

import jax
import numpy as np
import pytest

from lm.models import build_model
from lm.models.config import make_model_config
from lm.objectives.causal import causal_lm_loss
from lm.parallel import sharding as sharding_lib
from lm.parallel.mesh import make_mesh
from lm.training import optim, step as step_lib
from lm.training.experiment import base_config
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
                                rules, shardings, accum_steps=accum)
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
