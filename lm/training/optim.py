"""AdamW with warmup + cosine/linear decay, clipping and masked weight decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# Parameter names that are never weight-decayed unless configured otherwise.
_NO_DECAY_NAMES = ("bias", "scale")


def learning_rate_schedule(opt_cfg, steps: int) -> optax.Schedule:
  """Linear warmup from 0 to `lr`, then cosine or linear decay to `lr*min_lr_ratio`.

  Decay ends at `opt_cfg.decay_steps` (0 means the run's `steps`); after that
  the rate stays at the floor.
  """
  peak = float(opt_cfg.lr)
  floor = peak * float(opt_cfg.min_lr_ratio)
  warmup = int(opt_cfg.warmup_steps)
  total = int(opt_cfg.decay_steps) or int(steps)
  decay = max(total - warmup, 1)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak * jnp.minimum(1.0, (step + 1.0) / max(warmup, 1))
    frac = jnp.clip((step - warmup) / decay, 0.0, 1.0)
    if opt_cfg.schedule == "cosine":
      decayed = floor + 0.5 * (peak - floor) * (1.0 + jnp.cos(jnp.pi * frac))
    elif opt_cfg.schedule == "linear":
      decayed = peak + (floor - peak) * frac
    else:
      decayed = jnp.asarray(peak, jnp.float32)
    return jnp.where(step < warmup, warm, decayed)

  return schedule


def decay_mask(params, decay_norms_and_biases: bool = False):
  """True for parameters that get weight decay: matrices, not norms, biases
  or scalars (a learned temperature).

  Example: {'mlp': {'wi': [D,F], 'bias': [F]}, 'ln': {'scale': [D]}}
  -> {'mlp': {'wi': True, 'bias': False}, 'ln': {'scale': False}}.
  """
  def keep(path, leaf):
    if getattr(leaf, "ndim", 1) == 0:
      return False
    if decay_norms_and_biases:
      return True
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in path]
    return not any(n in _NO_DECAY_NAMES or n.endswith("_bias") for n in names)
  return jax.tree_util.tree_map_with_path(keep, params)


def make_optimizer(opt_cfg, steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
  schedule = learning_rate_schedule(opt_cfg, steps)
  parts = []
  if opt_cfg.clip_norm and opt_cfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(opt_cfg.clip_norm)))
  parts.append(optax.scale_by_adam(b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps))
  if opt_cfg.weight_decay:
    parts.append(optax.add_decayed_weights(
        float(opt_cfg.weight_decay),
        mask=lambda p: decay_mask(p, opt_cfg.decay_norms_and_biases)))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule
