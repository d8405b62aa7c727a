"""Span-corruption train steps of the encoder-decoder on an 8-device mesh
give the losses and parameters of one device."""

import jax
import numpy as np

from lm.experiments import base_config
from lm.models import build_model
from lm.models.config import make_model_config
from lm.objectives.span_corruption import span_loss, summarize
from lm.parallel import sharding as sharding_lib
from lm.parallel.mesh import make_mesh
from lm.training import optim, step as step_lib
from lm.training.state import init_state

B, S, T, V = 8, 16, 6, 64


def batch_np():
  rng = np.random.default_rng(0)
  in_seg = np.ones((B, S), np.int32)
  in_seg[::2, S - 5:] = 0                       # padded encoder rows
  out_seg = np.ones((B, T), np.int32)
  out_seg[1::2, T - 2:] = 0
  targets = rng.integers(4, V, (B, T)).astype(np.int32) * out_seg
  dec = np.concatenate([np.zeros((B, 1), np.int32), targets[:, :-1]], 1)
  return {"inputs": rng.integers(4, V, (B, S)).astype(np.int32) * in_seg,
          "input_segment_ids": in_seg, "decoder_inputs": dec,
          "targets": targets, "decoder_segment_ids": out_seg,
          "loss_mask": out_seg.astype(np.float32)}


def run(sizes, devices, steps=3):
  model = build_model(make_model_config("t5_tiny", vocab_size=V))
  mesh = make_mesh(dict(zip(("data", "fsdp", "tensor"), sizes)),
                   devices=devices)
  rules = sharding_lib.logical_rules()
  opt = base_config().optimizer
  opt.warmup_steps = 0
  tx, schedule = optim.make_optimizer(opt, 10)
  state, _, shardings = init_state(model, tx, mesh, rules, 0, S)
  train, _ = step_lib.jit_steps(model, span_loss, tx, schedule, 0, mesh, rules,
                                shardings, summarize=summarize)
  batch = {k: jax.device_put(v, sharding_lib.batch_sharding(mesh))
           for k, v in batch_np().items()}
  losses = []
  for _ in range(steps):
    state, m = train(state, batch)
    losses.append(float(m["loss"]))
  return losses, jax.tree.leaves(jax.device_get(state.params))


def test_an_8_device_mesh_matches_one_device():
  ref_losses, ref_params = run((1, 1, 1), jax.devices()[:1])
  losses, params = run((2, 2, 2), None)
  assert ref_losses[-1] < ref_losses[0]
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for a, b in zip(params, ref_params):
    # Adam's normalised update amplifies reduction-order rounding in
    # near-zero gradients; 3e-5 is the tolerance of the decoder mesh tests.
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4,
                               atol=3e-5)
