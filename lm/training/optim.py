"""AdamW with warmup + cosine/linear decay, clipping and masked weight decay."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from lm.errors import LmError

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


def _names(path) -> list[str]:
  return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def lr_scales(params, *, backbone_path: tuple, num_layers: int,
              head_scale: float = 1.0, layer_decay: float = 1.0,
              freeze_backbone: bool = False):
  """Per-parameter learning-rate multipliers for a head over a backbone.

  Parameters outside `backbone_path` (the head) get `head_scale`. Inside,
  layer-wise decay gives block l of L (0 = nearest the input)
  `layer_decay ** (L - l)`, the embeddings and anything else below the
  blocks `layer_decay ** (L + 1)`, and the final norm and pooler (above the
  blocks) 1; a frozen backbone gets 0. Scanned blocks (`layers`, stacked on
  a leading axis) get an `[L, 1, ...]` array, looped blocks (`layers_3`) a
  scalar.

  Example: L = 2, decay 0.5: layers_1 -> 0.5, layers_0 -> 0.25, token_embed
  -> 0.125, head -> head_scale.
  """
  def scale(path, leaf):
    names = _names(path)
    if tuple(names[:len(backbone_path)]) != tuple(backbone_path):
      return jnp.asarray(head_scale, jnp.float32)
    if freeze_backbone:
      return jnp.zeros((), jnp.float32)
    if layer_decay == 1.0:
      return jnp.ones((), jnp.float32)
    for n in names[len(backbone_path):]:
      if n == "layers":
        depth = jnp.arange(num_layers, dtype=jnp.float32)
        s = layer_decay ** (num_layers - depth)
        return s.reshape((num_layers,) + (1,) * (leaf.ndim - 1))
      if n.startswith("layers_") and n[7:].isdigit():
        return jnp.asarray(layer_decay ** (num_layers - int(n[7:])),
                           jnp.float32)
      if n in ("final_norm", "pooler"):
        return jnp.ones((), jnp.float32)
    return jnp.asarray(layer_decay ** (num_layers + 1), jnp.float32)
  return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_tree(scales_of) -> optax.GradientTransformation:
  """Multiplies each update by `scales_of(updates)` (a tree of the same
  structure, broadcastable leaves); stateless."""
  def init(params):
    del params
    return optax.EmptyState()

  def update(updates, state, params=None):
    del params
    scales = scales_of(updates)
    return jax.tree.map(lambda u, s: u * s.astype(u.dtype), updates,
                        scales), state
  return optax.GradientTransformation(init, update)


def make_optimizer(opt_cfg, steps: int, *, backbone_path: tuple = (),
                   num_layers: int = 0
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW (clipping, masked weight decay) with `learning_rate_schedule`.

  For a head over a backbone (`backbone_path`, non-empty for fine-tuning
  and contrastive runs), `opt_cfg.head_lr`, `layer_decay` and
  `freeze_backbone` scale each parameter's rate (`lr_scales`); a run
  without a separate head rejects them.
  """
  schedule = learning_rate_schedule(opt_cfg, steps)
  head_lr = float(opt_cfg.get("head_lr", 0.0) or 0.0)
  decay = float(opt_cfg.get("layer_decay", 1.0))
  freeze = bool(opt_cfg.get("freeze_backbone", False))
  scaled = head_lr > 0 or decay != 1.0 or freeze
  if scaled and not backbone_path:
    raise LmError("optimizer.head_lr, layer_decay and freeze_backbone apply "
                  "to runs with a head over a backbone (fine-tuning, "
                  "contrastive); remove them for this objective.")
  if not 0.0 < decay <= 1.0:
    raise LmError(f"optimizer.layer_decay={decay} must be in (0, 1] (1 = "
                  "no decay).")
  if head_lr < 0:
    raise LmError(f"optimizer.head_lr={head_lr} must be >= 0 (0 = lr).")
  parts = []
  if opt_cfg.clip_norm and opt_cfg.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(float(opt_cfg.clip_norm)))
  parts.append(optax.scale_by_adam(b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps))
  if opt_cfg.weight_decay:
    parts.append(optax.add_decayed_weights(
        float(opt_cfg.weight_decay),
        mask=lambda p: decay_mask(p, opt_cfg.decay_norms_and_biases)))
  if scaled:
    head_scale = head_lr / float(opt_cfg.lr) if head_lr else 1.0
    parts.append(scale_by_tree(functools.partial(
        lr_scales, backbone_path=tuple(backbone_path), num_layers=num_layers,
        head_scale=head_scale, layer_decay=decay, freeze_backbone=freeze)))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts), schedule
