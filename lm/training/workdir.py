"""Loading a trained run back from its workdir (for sampling and evaluation)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import jax
import ml_collections

from lm.data.hf_tokenizer import COMPANION_FILES
from lm.data.tokenizer import Tokenizer, load_tokenizer
from lm.errors import LmError
from lm import files
from lm.models import quantize as quantize_lib
from lm.models.config import ModelConfig
from lm.parallel import sharding as sharding_lib
from lm.parallel.mesh import make_mesh
from lm.training import optim
from lm.training.checkpoint import Checkpointer, DamagedCheckpoint
from lm.training.state import model_params, state_shardings


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
  if not files.isdir(workdir):
    raise LmError(f"workdir {workdir} does not exist; pass the --workdir of a "
                  "run trained with launch.train.")
  path = files.join(workdir, "config.json")
  if not files.exists(path):
    raise LmError(f"workdir {workdir} holds no trained run (no config.json); "
                  "train one there with launch.train first.")
  return read_json(path, "restore it from the checkpoint or re-run training")


def read_json(path: str, fix: str):
  """The JSON in `path`; LmError "PATH is not valid JSON (why); FIX." when
  it does not parse. Example: read_json("run/config.json", "re-run it")."""
  try:
    return json.loads(files.read_bytes(path))
  except ValueError as e:   # JSONDecodeError, or bytes that are not UTF-8
    why = (f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError)
           else str(e))
    raise LmError(f"{path} is not valid JSON ({why}); {fix}.") from None


def write_text_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file, so a reader never
  sees half of it."""
  files.write_text_atomic(path, text)


def write_json_atomic(path: str, obj) -> None:
  """Writes `obj` as indented JSON to `path` atomically (the workdir's
  `config.json`)."""
  write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True))


def tokenizer_record(tok, workdir: str | None = None) -> dict:
  """What `config.json` records of a run's tokenizer: its file (relative to
  `workdir` when it lies inside it, so the workdir can move), kind
  ("sentencepiece" or "hf"), size and fingerprint (checked on every load).

  Example: tokenizer_record(tok, "runs/q") -> {"path": "tokenizer.model", ...}.
  """
  path = tok.path
  if workdir is not None:
    path = files.relative_to(path, workdir) or path
  return {"path": path, "kind": tok.kind, "vocab_size": tok.vocab_size,
          "sha256": tok.fingerprint()}


def copy_tokenizer(path: str, out_dir: str) -> list[str]:
  """Copies the tokenizer file `path` into `out_dir` under its standard
  name: a `tokenizer.json` or a SentencePiece `tokenizer.model` (and its
  `.vocab`), with the special-token, settings and chat-template files
  beside it (`COMPANION_FILES`). Returns the copies,
  the tokenizer first."""
  files.makedirs(out_dir)
  json_file = path.endswith(".json")
  pairs = [(path, "tokenizer.json" if json_file else "tokenizer.model")]
  # the special tokens, settings and chat template, when present
  pairs += [(files.join(files.dirname(path), n), n) for n in COMPANION_FILES]
  if not json_file:
    pairs.append((os.path.splitext(path)[0] + ".vocab", "tokenizer.vocab"))
  copied = []
  for source, name in pairs:
    target = files.join(out_dir, name)
    if files.abspath(source) != files.abspath(target) and files.isfile(source):
      files.copyfile(source, target)
    if files.isfile(target):
      copied.append(target)
  return copied


def own_tokenizer(tok, workdir: str):
  """The run's tokenizer as a copy inside `workdir` (made when `tok` lives
  elsewhere): `workdir/tokenizer.model`, or `workdir/tokenizer/tokenizer.json`
  for a Hugging Face tokenizer."""
  if files.relative_to(tok.path, workdir) is not None:
    return tok
  out_dir = workdir if tok.kind != "hf" else files.join(workdir, "tokenizer")
  copy = load_tokenizer(copy_tokenizer(tok.path, out_dir)[0])
  if copy.fingerprint() != tok.fingerprint():
    raise LmError(f"copying the tokenizer {tok.path} into {workdir} gave "
                  "another file; check the disk and re-run.")
  return copy


def load_recorded_tokenizer(workdir: str, resolved: dict):
  """The tokenizer `resolved` (a `config.json` or checkpoint record) names,
  read relative to `workdir`, after checking its sha256 fingerprint."""
  record = resolved.get("tokenizer") or {}
  path = record.get("path") or "tokenizer.model"
  full = path if files.isabs(path) else files.join(workdir, path)
  if not files.exists(full):
    raise LmError(f"the tokenizer {full} of the run in {workdir} is missing; "
                  "restore it from a copy of the workdir (the run cannot be "
                  "used without the tokenizer it was trained with).")
  tok = load_tokenizer(full)
  if record.get("sha256") and tok.fingerprint() != record["sha256"]:
    raise LmError(f"the tokenizer {full} is not the one the run in {workdir} "
                  f"was trained with (fingerprint {tok.fingerprint()}, "
                  f"recorded {record['sha256']}); restore the original file.")
  return tok


def state_layout(config, objective, model, model_cfg: ModelConfig):
  """`(mesh, rules, tx, abstract state, shardings)` to restore (or write) a
  run's train state on this process's devices, data-parallel."""
  mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  rules = sharding_lib.logical_rules(config.mesh.get("rules") or ())
  tx, _ = optim.make_optimizer(
      config.optimizer, config.steps,
      backbone_path=tuple(objective.backbone_path),
      num_layers=model_cfg.num_layers)
  abstract, shardings = state_shardings(
      model, tx, mesh, rules, config.seq_len,
      lambda rng: objective.extra_params(model_cfg, rng))
  return mesh, rules, tx, abstract, shardings


def stored_objective(record: dict, make_objective):
  """The objective of a run, built from its `config.json` record (`record`,
  from `read_resolved`) with its stored data settings; it reads no
  checkpoint. `objective.config` is the run's config."""
  return make_objective(ml_collections.ConfigDict(record["config"]),
                        stored=record.get("batch"))


def load_trained(workdir: str, step: int | None = None, *, make_objective,
                 best: bool = False, quantize: str | None = None) -> Trained:
  """Config, tokenizer, model and the verified params of `step` (default:
  the latest intact checkpoint, falling back past damaged ones with a
  warning; with `best`, the kept step with the best eval metric first).
  Nothing in the workdir is written or moved: readers take no lock.

  `quantize="int8"` serves the model with int8 weights
  (`lm.models.quantize`): `params` and `state_shardings.params` are then
  the quantized tree and its placement; the checkpoint stays float."""
  mode = quantize_lib.check_mode(quantize)
  resolved = read_resolved(workdir)
  ckpt_dir = files.join(workdir, "checkpoints")
  if not files.isdir(ckpt_dir):
    raise LmError(f"workdir {workdir} has no checkpoints yet; let training "
                  "reach its first checkpoint_every step.")
  objective = stored_objective(resolved, make_objective)
  config = objective.config
  best_metric, best_mode = objective.best_metric
  ckpt = Checkpointer(workdir, best_metric=best_metric, best_mode=best_mode,
                      read_only=True)
  steps = ckpt.all_steps()
  if not steps:
    raise LmError(f"workdir {workdir} has no checkpoints yet; let training "
                  "reach its first checkpoint_every step.")
  if step is not None and step not in steps:
    raise LmError(f"checkpoint step {step} does not exist in {ckpt_dir}; "
                  f"available steps: {', '.join(map(str, steps))}.")
  if step is not None:
    order = [step]
  else:
    first = ckpt.best_step() if best else None
    order = ([first] if first is not None else []) + [
        s for s in reversed(steps) if s != first]
  model_cfg = ModelConfig(**resolved["model"])
  # The tokenizer the run used, inside the workdir, checked by fingerprint.
  tokenizer = load_recorded_tokenizer(workdir, resolved)
  model = objective.build_model(model_cfg)
  mesh, rules, _, abstract, shardings = state_layout(config, objective, model,
                                                     model_cfg)
  found = None
  for i, candidate in enumerate(order):
    try:
      state, _ = ckpt.restore(candidate, abstract, shardings)
      found = candidate
      break
    except DamagedCheckpoint as e:
      if step is not None:
        raise LmError(f"checkpoint {ckpt_dir}/{step} is damaged ({e.reason}); "
                      "drop --step to use the newest intact one.") from None
      nxt = order[i + 1] if i + 1 < len(order) else None
      print(f"warning: checkpoint {ckpt_dir}/{candidate} is damaged "
            f"({e.reason}); " + (f"using checkpoint {nxt} instead"
                                 if nxt is not None else
                                 "no other checkpoint is left"),
            file=sys.stderr, flush=True)
  ckpt.close()
  if found is None:
    raise LmError(f"no intact checkpoint in {ckpt_dir} (steps "
                  f"{', '.join(map(str, steps))} are all damaged); restore "
                  "the workdir from a copy.")
  # serving reads the model's parameters alone
  params = model_params(state.params)
  shardings = shardings.replace(params=model_params(shardings.params))
  if mode != "none":
    params, param_shardings = quantize_lib.quantize_trained(
        model, params, shardings.params, config.seq_len, mode)
    shardings = shardings.replace(params=param_shardings)
  return Trained(workdir, found, config, model_cfg, model, tokenizer,
                 params, shardings, mesh, rules, objective)
