"""Pure train and eval steps, jitted once with explicit shardings.

The steps know objectives only through their contract (`lm.objectives`):
`objective(params, batch, rng, model, *, deterministic) -> (loss, aux)`, where
`aux` holds float32 sums over the batch: `loss_sum` (what is differentiated),
`tokens` (its normaliser) and any further sums the objective's `summarize`
turns into metrics. The train metrics carry one count of what the batch
scored, `aux[count]`: "tokens" by default, "examples" for a classifier.

An objective with frozen inputs (`Objective.frozen_inputs`: a teacher's
parameters for distillation) gets them as `objective(..., frozen=tree)` in
the train step: a jitted argument of its own, placed by its own shardings,
never donated, differentiated, updated or checkpointed.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lm.data.pipeline import to_global
from lm.parallel import sharding as sharding_lib
from lm.training.state import TrainState



def train_step(state: TrainState, batch, frozen=None, *, model, objective, tx,
               schedule, seed: int, summarize, accum_steps: int = 1,
               count: str = "tokens"):
  """One optimizer update. Randomness is `fold_in(key(seed), step)`.

  With `accum_steps` > 1 the global batch is split into that many
  microbatches whose summed gradients (of the summed token losses) are
  divided by the total token count: the same update as the whole batch at
  once, within float32 rounding, at a fraction of the activation memory.
  Metrics are `summarize(sums)` (the objective's own ratios) plus the
  count `sums[count]` under that name (tokens, or examples), the gradient
  and parameter norms and the learning rate.
  """
  rng = jax.random.fold_in(jax.random.key(seed), state.step)
  if frozen is not None:
    objective = functools.partial(objective, frozen=frozen)

  def grads_of(params, micro, micro_rng):
    def loss_sum(params):
      _, aux = objective(params, micro, micro_rng, model, deterministic=False)
      return aux["loss_sum"], aux
    return jax.grad(loss_sum, has_aux=True)(params)

  if accum_steps == 1:
    grads, aux = grads_of(state.params, batch, rng)
  else:
    micro = jax.tree.map(
        lambda x: x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:]),
        batch)                                                       # [A, B/A, T]

    def body(carry, xs):
      i, mb = xs
      g, aux = grads_of(state.params, mb, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (g, aux)), None

    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(grads_of, state.params, first, rng)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (grads, aux), _ = jax.lax.scan(body, zeros, (jnp.arange(accum_steps), micro))
  tokens = jnp.maximum(aux["tokens"], 1.0)
  grads = jax.tree.map(lambda g: g / tokens, grads)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      **summarize(aux),
      count: aux[count],
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(params),
      "learning_rate": schedule(state.step),
  }
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state), metrics


def eval_step(params, batch, *, model, objective):
  """The objective's sums (`loss_sum`, `tokens`, ...) over one batch, no dropout."""
  _, aux = objective(params, batch, jax.random.key(0), model, deterministic=True)
  return aux


def jit_steps(model, objective, tx, schedule, seed, mesh, rules, state_shardings,
              *, summarize, accum_steps: int = 1, count: str = "tokens",
              frozen=None):
  """Returns (train_step, eval_step), each jitted once over `mesh`.

  The state is donated; every batch array is sharded over data+fsdp along
  its first (batch) axis, whatever keys the objective's batches carry;
  metrics come back replicated. `frozen`: `(tree, shardings)` of the
  objective's frozen inputs (`Objective.frozen_inputs`), passed to every
  train step as they are (evaluation scores the trained model alone).
  """
  batch_s = sharding_lib.batch_sharding(mesh)
  repl = sharding_lib.replicated(mesh)
  step = functools.partial(train_step, model=model, objective=objective, tx=tx,
                           schedule=schedule, seed=seed,
                           accum_steps=accum_steps, summarize=summarize,
                           count=count)
  if frozen is None:
    train = run_in_mesh(jax.jit(
        step, in_shardings=(state_shardings, batch_s),
        out_shardings=(state_shardings, repl), donate_argnums=0), mesh, rules)
  else:
    tree, frozen_shardings = frozen
    jitted = run_in_mesh(jax.jit(
        step, in_shardings=(state_shardings, batch_s, frozen_shardings),
        out_shardings=(state_shardings, repl), donate_argnums=0), mesh, rules)

    def train(state, batch):
      return jitted(state, batch, tree)
    train.jitted = jitted.jitted
  return (train,
          jit_eval_step(model, objective, mesh, rules, state_shardings.params))


def jit_eval_step(model, objective, mesh, rules, params_shardings):
  """The jitted `eval_step(params, batch)` on `mesh`."""
  evaluate = jax.jit(
      functools.partial(eval_step, model=model, objective=objective),
      in_shardings=(params_shardings, sharding_lib.batch_sharding(mesh)),
      out_shardings=sharding_lib.replicated(mesh))
  return run_in_mesh(evaluate, mesh, rules)


def eval_outputs(eval_fn, params, mesh, batches):
  """Runs `eval_fn(params, batch)` over global numpy `batches`.

  Every process passes its own rows of each batch; the (replicated) outputs
  come back to the host. Yields `(batch, outputs)` with the whole global
  batch, so callers can read per-row fields such as weights.
  """
  p, n = jax.process_index(), jax.process_count()
  bsharding = sharding_lib.batch_sharding(mesh)
  for batch in batches:
    local = len(next(iter(batch.values()))) // n
    rows = {k: v[p * local:(p + 1) * local] for k, v in batch.items()}
    yield batch, jax.device_get(eval_fn(params, to_global(rows, bsharding)))


def eval_totals(eval_fn, params, mesh, batches, keep=(), width=None):
  """The one eval runner: `eval_fn` over `batches` (`eval_outputs`), its
  outputs summed in float64 over the batches, in batch order.

  `keep` names per-row arrays to collect instead of summing -- outputs of
  the step (embeddings, logits) or fields of the batch (`index`) -- for
  the real rows only (`weights` > 0), concatenated in row order. With
  `width`, batches cut to different widths (`task.trim_batches`) have
  their kept per-token outputs padded back to `width` first (see
  `pad_width`). Returns `(totals, kept)`; `totals` is None when `batches`
  is empty. Example: eval_totals(fn, params, mesh, batches) ->
  ({"loss_sum": 812.5, "tokens": 256.0}, {}).
  """
  totals, kept = None, {k: [] for k in keep}
  for batch, out in eval_outputs(eval_fn, params, mesh, batches):
    if keep:
      real = np.asarray(batch["weights"]) > 0
      for k in keep:
        v = np.asarray(out.pop(k) if k in out else batch[k])
        if width is not None:
          v = pad_width(v, width, batch)
        kept[k].append(v[real])
    sums = {k: np.asarray(v, np.float64) for k, v in out.items()}
    totals = sums if totals is None else {k: totals[k] + sums[k] for k in sums}
  return totals, {k: np.concatenate(v) for k, v in kept.items() if v}


def pad_width(kept: np.ndarray, width: int, batch: dict) -> np.ndarray:
  """A per-token array of a batch cut short (its axis 1 as wide as the
  batch's `mask` or `tokens`) padded back to `width`: -1 for integers, the
  dtype's lowest value for floats. Other arrays come back unchanged.
  Example: logits [8, 16] of a batch cut to 16, width 64 -> [8, 64]."""
  cut = batch.get("mask", batch.get("tokens"))
  if kept.ndim < 2 or cut is None or kept.shape[1] != np.shape(cut)[1] \
      or kept.shape[1] >= width:
    return kept
  fill = (np.finfo(kept.dtype).min if np.issubdtype(kept.dtype, np.floating)
          else -1)
  pad = [(0, 0), (0, width - kept.shape[1])] + [(0, 0)] * (kept.ndim - 2)
  return np.pad(kept, pad, constant_values=fill)


def jit_forward(fn, param_shardings, mesh, rules, n_batch_args: int = 1):
  """`fn(params, *batch_args)` jitted for inference: params placed as
  `param_shardings`, each batch argument split over the batch axes, the
  outputs replicated (every host reads them), run with the mesh and rules
  active. The sharded forward of `launch.encode` and `launch.predict`."""
  bs = sharding_lib.batch_sharding(mesh)
  return run_in_mesh(jax.jit(
      fn, in_shardings=(param_shardings, *[bs] * n_batch_args),
      out_shardings=sharding_lib.replicated(mesh)), mesh, rules)


def run_in_mesh(fn, mesh, rules):
  """Calls `fn` with the mesh and logical rules active (for Flax constraints).

  On a CPU mesh of several (simulated) devices each call also waits for its
  outputs. XLA:CPU runs every device's share of a program on one shared
  worker pool; with several multi-device steps queued (the host runs ahead
  of the devices), the workers can all be blocked in one step's all-reduce
  while another device's share of that step waits for a free worker, and
  XLA aborts the process when the rendezvous times out (40 s). One step in
  flight at a time cannot starve the pool; accelerators are unaffected.
  """
  serial = mesh.devices.size > 1 and mesh.devices.flat[0].platform == "cpu"

  @functools.wraps(fn)
  def wrapped(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      out = fn(*args)
    return jax.block_until_ready(out) if serial else out
  wrapped.jitted = fn
  return wrapped
