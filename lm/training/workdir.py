"""Loading a trained run back from its workdir (for sampling and evaluation)."""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections

from lm.data.tokenizer import Tokenizer, load_tokenizer
from lm.errors import LmError
from lm.models.config import ModelConfig
from lm.objectives import make_objective
from lm.parallel import sharding as sharding_lib
from lm.parallel.mesh import make_mesh
from lm.training import optim
from lm.training.checkpoint import Checkpointer
from lm.training.state import state_shardings


@dataclasses.dataclass
class Trained:
  workdir: str
  step: int
  config: ml_collections.ConfigDict
  model_cfg: ModelConfig
  model: object
  tokenizer: Tokenizer
  params: object
  state_shardings: object
  mesh: jax.sharding.Mesh
  rules: tuple
  objective: object = None


def read_resolved(workdir: str) -> dict:
  """The `config.json` a training run wrote, or one sentence saying why not."""
  if not os.path.isdir(workdir):
    raise LmError(f"workdir {workdir} does not exist; pass the --workdir of a "
                  "run trained with launch.train.")
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise LmError(f"workdir {workdir} holds no trained run (no config.json); "
                  "train one there with launch.train first.")
  return read_json(path, "restore it from the checkpoint or re-run training")


def read_json(path: str, fix: str):
  """The JSON in `path`; LmError "PATH is not valid JSON (why); FIX." when
  it does not parse. Example: read_json("run/config.json", "re-run it")."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except ValueError as e:   # JSONDecodeError, or bytes that are not UTF-8
    why = (f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError)
           else str(e))
    raise LmError(f"{path} is not valid JSON ({why}); {fix}.") from None


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` as indented JSON to `path` through a temporary file, so a
  reader never sees half of it (the workdir's `config.json`)."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def tokenizer_record(tok) -> dict:
  """What `config.json` records of a run's tokenizer: its file, kind
  ("sentencepiece" or "hf"), size and fingerprint (checked on resume and
  by `init_from`)."""
  return {"path": tok.path, "kind": tok.kind, "vocab_size": tok.vocab_size,
          "sha256": tok.fingerprint()}


def state_layout(config, objective, model, model_cfg: ModelConfig):
  """`(mesh, rules, tx, abstract state, shardings)` to restore (or write) a
  run's train state on this process's devices, data-parallel."""
  mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  rules = sharding_lib.logical_rules(config.mesh.get("rules") or ())
  tx, _ = optim.make_optimizer(
      config.optimizer, config.steps,
      backbone_path=tuple(getattr(objective, "backbone_path", ())),
      num_layers=model_cfg.num_layers)
  abstract, shardings = state_shardings(model, tx, mesh, rules, config.seq_len)
  return mesh, rules, tx, abstract, shardings


def load_trained(workdir: str, step: int | None = None, *,
                 best: bool = False) -> Trained:
  """Config, tokenizer, model and the params of `step` (default: latest;
  with `best`, the kept step with the best eval metric, when one has
  been evaluated)."""
  resolved = read_resolved(workdir)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    raise LmError(f"workdir {workdir} has no checkpoints yet; let training "
                  "reach its first checkpoint_every step.")
  config = ml_collections.ConfigDict(resolved["config"])
  objective = make_objective(config, stored=resolved.get("batch"))
  best_metric, best_mode = getattr(objective, "best_metric",
                                   ("eval_loss", "min"))
  ckpt = Checkpointer(workdir, best_metric=best_metric, best_mode=best_mode)
  steps = ckpt.all_steps()
  if not steps:
    raise LmError(f"workdir {workdir} has no checkpoints yet; let training "
                  "reach its first checkpoint_every step.")
  if step is None:
    step = (ckpt.best_step() if best else None) or steps[-1]
  elif step not in steps:
    raise LmError(f"checkpoint step {step} does not exist in {ckpt_dir}; "
                  f"available steps: {', '.join(map(str, steps))}.")
  model_cfg = ModelConfig(**resolved["model"])
  # The tokenizer the run used: its recorded path (the workdir's own copy
  # unless data.tokenizer.path named another file; a tokenizer.json for
  # imported Hugging Face models).
  tokenizer = load_tokenizer(resolved.get("tokenizer", {}).get("path")
                             or os.path.join(workdir, "tokenizer.model"))
  model = objective.build_model(model_cfg)
  mesh, rules, _, abstract, shardings = state_layout(config, objective, model,
                                                     model_cfg)
  state, _ = ckpt.restore(step, abstract, shardings)
  ckpt.close()
  return Trained(workdir, step, config, model_cfg, model, tokenizer,
                 state.params, shardings, mesh, rules, objective)
