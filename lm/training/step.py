"""Pure train and eval steps, jitted once with explicit shardings."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lm.parallel import sharding as sharding_lib
from lm.training.state import TrainState

BATCH_KEYS = ("inputs", "targets", "positions", "segment_ids", "loss_mask")


def train_step(state: TrainState, batch, *, model, objective, tx, schedule,
               seed: int):
  """One optimizer update. Randomness is `fold_in(key(seed), step)`."""
  rng = jax.random.fold_in(jax.random.key(seed), state.step)

  def loss_fn(params):
    return objective(params, batch, rng, model, deterministic=False)

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      "loss": loss,
      "accuracy": aux["correct"] / jnp.maximum(aux["tokens"], 1.0),
      "tokens": aux["tokens"],
      "grad_norm": optax.tree.norm(grads),
      "param_norm": optax.tree.norm(params),
      "learning_rate": schedule(state.step),
  }
  return state.replace(step=state.step + 1, params=params,
                       opt_state=opt_state), metrics


def eval_step(params, batch, *, model, objective):
  """Sums (`loss_sum`, `correct`, `tokens`) over one batch, no dropout."""
  _, aux = objective(params, batch, jax.random.key(0), model, deterministic=True)
  return aux


def jit_steps(model, objective, tx, schedule, seed, mesh, rules, state_shardings):
  """Returns (train_step, eval_step), each jitted once over `mesh`.

  The state is donated; batches are sharded over data+fsdp; metrics come back
  replicated.
  """
  batch_s = _batch_shardings(mesh)
  repl = sharding_lib.replicated(mesh)
  train = jax.jit(
      functools.partial(train_step, model=model, objective=objective, tx=tx,
                        schedule=schedule, seed=seed),
      in_shardings=(state_shardings, batch_s),
      out_shardings=(state_shardings, repl),
      donate_argnums=0)
  return (_run_in_mesh(train, mesh, rules),
          jit_eval_step(model, objective, mesh, rules, state_shardings.params))


def jit_eval_step(model, objective, mesh, rules, params_shardings):
  """The jitted `eval_step(params, batch)` on `mesh`."""
  evaluate = jax.jit(
      functools.partial(eval_step, model=model, objective=objective),
      in_shardings=(params_shardings, _batch_shardings(mesh)),
      out_shardings=sharding_lib.replicated(mesh))
  return _run_in_mesh(evaluate, mesh, rules)


def _batch_shardings(mesh):
  return {k: sharding_lib.batch_sharding(mesh) for k in BATCH_KEYS}


def _run_in_mesh(fn, mesh, rules):
  """Calls `fn` with the mesh and logical rules active (for Flax constraints)."""
  @functools.wraps(fn)
  def wrapped(*args):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return fn(*args)
  wrapped.jitted = fn
  return wrapped
