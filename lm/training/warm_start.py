"""Starting a run from another run's weights (`config.init_from`).

`config.init_from` names the workdir of a trained run (masked LM, causal,
contrastive or a fine-tuned task), or one of its checkpoints
(`WORKDIR/checkpoints/STEP`). At step 0 its latest (or that step's)
parameters replace the new model's
backbone, the subtree at `objective.backbone_path`; everything else (a
projection head, a new task head, the optimizer state) starts fresh. A
resumed run ignores `init_from`: its own checkpoint already holds the
weights.

The two runs must share the architecture (only the fields in
`FREE_FIELDS`, which change how the same weights are computed with, may
differ) and the tokenizer; every backbone parameter must exist in the
source with the same shape. Source parameters the backbone does not have
(BERT's MLM and NSP heads) are dropped.

Example:
  python -m launch.train --config configs/simcse_quickstart.py \\
      --workdir runs/simcse --config.init_from=runs/bert_quickstart
"""

from __future__ import annotations

import dataclasses
import os

import jax

from lm.errors import LmError
from lm.models.config import recorded_model
from lm.training.workdir import load_trained

# Model fields a run may change against its init_from source.
FREE_FIELDS = frozenset({"dropout", "attention_dropout", "remat", "dtype",
                         "attention_impl"})


def split_source(init_from: str) -> tuple[str, int | None]:
  """`(workdir, step)` of `config.init_from`: a workdir (its latest step,
  None) or one of its checkpoints, `WORKDIR/checkpoints/STEP`.

  Example: "runs/bert/checkpoints/300" -> ("runs/bert", 300);
  "runs/bert" -> ("runs/bert", None).
  """
  path = os.path.normpath(init_from)
  parent, last = os.path.split(path)
  if last.isdigit() and os.path.basename(parent) == "checkpoints":
    return os.path.dirname(parent), int(last)
  return init_from, None


def check_model(source_model: dict, model_cfg, workdir: str) -> None:
  """LmError naming the first architecture field that differs."""
  new = dataclasses.asdict(model_cfg)
  source_model = recorded_model(source_model)   # older runs lack new fields
  for key in sorted(set(source_model) | set(new)):
    if key in FREE_FIELDS:
      continue
    if source_model.get(key) != new.get(key):
      raise LmError(f"config.init_from={workdir} holds a model with "
                    f"model.{key}={source_model.get(key)!r}, but this run "
                    f"builds model.{key}={new.get(key)!r}; use the source "
                    "run's model size and settings.")


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def graft(params, shardings, source_params, backbone_path: tuple, workdir: str):
  """`params` with the subtree at `backbone_path` taken from `source_params`.

  Each backbone leaf is looked up by its path (relative to the backbone) in
  `source_params`, cast to the new leaf's dtype and placed with the new
  leaf's sharding.
  """
  target = params
  target_shardings = shardings
  for key in backbone_path:
    if key not in target:
      raise LmError(f"the model has no {key!r} parameters to initialise "
                    f"from {workdir}.")
    target, target_shardings = target[key], target_shardings[key]

  flat_source = {_path_name(p): v for p, v in
                 jax.tree_util.tree_flatten_with_path(source_params)[0]}

  def take(path, leaf, sharding):
    name = _path_name(path)
    if name not in flat_source and name.startswith("pooler/"):
      raise LmError(f"config.init_from={workdir} has no pretrained BERT "
                    "pooler (masked-LM runs with NSP train one); set "
                    "config.task.pooling to 'auto', 'cls' or 'mean'.")
    if name not in flat_source:
      raise LmError(f"config.init_from={workdir} has no parameter {name!r} "
                    "that this model's backbone needs; initialise from a run "
                    "of the same architecture.")
    src = flat_source[name]
    if tuple(src.shape) != tuple(leaf.shape):
      raise LmError(f"parameter {name!r} is {tuple(src.shape)} in "
                    f"config.init_from={workdir} but {tuple(leaf.shape)} "
                    "here; use the source run's model size and tokenizer.")
    return jax.device_put(src.astype(leaf.dtype), sharding)

  new = jax.tree_util.tree_map_with_path(take, target, target_shardings)
  if not backbone_path:
    return new
  out = dict(params)
  node = out
  for key in backbone_path[:-1]:
    node[key] = dict(node[key])
    node = node[key]
  node[backbone_path[-1]] = new
  return out


def start_from(workdir: str, params, shardings, objective, make_objective):
  """`params` with the backbone of `workdir`'s latest checkpoint (or the
  checkpoint `workdir` names, see `split_source`) grafted in at
  `objective.backbone_path` (see `graft`); `make_objective` builds the
  source run's objective (which says where its backbone sits)."""
  source_dir, step = split_source(workdir)
  source = load_trained(source_dir, step, make_objective=make_objective)
  tree = source.params
  for key in source.objective.backbone_path:
    tree = tree[key]
  return graft(params, shardings, tree, tuple(objective.backbone_path),
               workdir)
