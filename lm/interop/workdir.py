"""Hugging Face model directories <-> `lm` workdirs (`launch.import_hf`,
`launch.export_hf`).

`import_hf(hf_dir, workdir)` writes a workdir as a training run would:
`config.json` (the experiment config, model, tokenizer and data settings)
and an Orbax checkpoint at step 0, so `launch.sample`, `launch.evaluate`,
`launch.encode`, `launch.predict` and `config.init_from` (fine-tuning) read
it like any run. The run's objective follows the checkpoint: "causal"
(GPT-2, Llama), "mlm" (BERT; NSP is on when the checkpoint has the NSP
head), "classification" (`BertForSequenceClassification`, with its label
names), or "contrastive" when asked (a sentence encoder over the
backbone: `launch.encode` then embeds with `pooling`).

The model keeps its own tokenizer: `tokenizer.json` (read with the
`tokenizers` package; `tokenizer_config.json` and `special_tokens_map.json`
come along for the special tokens) or else the SentencePiece
`tokenizer.model` it ships. Either is copied into the workdir, and
`config.json` records its path and kind ("hf" or "sentencepiece").

`export_hf(workdir, out_dir)` writes the run's weights as a directory
`transformers` loads (see `lm.interop.hf.write_hf_dir`), with the
tokenizer files beside them.

Example:
  import_hf("hf/bert-base-uncased", "runs/bert-base-uncased")
  export_hf("runs/imdb", "hf/imdb-classifier", best=True)
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from lm.data.hf_tokenizer import CONFIG_FILES
from lm.errors import LmError
from lm.interop import bert, hf as hf_lib
from lm.interop.tensors import INDEX, WEIGHTS

OBJECTIVES = ("causal", "mlm", "classification", "tagging", "qa",
              "contrastive")
_BASE_SIZE = {"transformer": "small", "bert": "bert_base"}


@dataclasses.dataclass
class Imported:
  """What `import_hf` wrote."""
  workdir: str
  model: hf_lib.HfModel
  objective: str
  tokenizer: object            # the copied tokenizer (.path, .kind)
  initialised: tuple[str, ...]   # parameters the checkpoint lacked
  n_params: int


def _find_tokenizer(hf_dir: str, tokenizer: str | None) -> str:
  """`--tokenizer`, else the model directory's tokenizer.json or
  tokenizer.model."""
  if tokenizer:
    if not os.path.isfile(tokenizer):
      raise LmError(f"--tokenizer {tokenizer} does not exist; name a "
                    "tokenizer.json or a SentencePiece .model file.")
    return tokenizer
  for name in ("tokenizer.json", "tokenizer.model"):
    if os.path.isfile(os.path.join(hf_dir, name)):
      return os.path.join(hf_dir, name)
  raise LmError(f"{hf_dir} has no tokenizer.json or tokenizer.model; put "
                "the model's tokenizer there or name it with --tokenizer.")


def _default_pooling(hf_dir: str, arch: str) -> str:
  """A sentence-transformers directory's pooling (`1_Pooling/config.json`),
  else "cls" for BERT and "last" for decoders."""
  path = os.path.join(hf_dir, "1_Pooling", "config.json")
  if os.path.isfile(path):
    from lm.training.workdir import read_json  # pylint: disable=g-import-not-at-top
    modes = read_json(path, "fix it or pass --pooling")
    if modes.get("pooling_mode_mean_tokens"):
      return "mean"
    if modes.get("pooling_mode_lasttoken"):
      return "last"
    if modes.get("pooling_mode_cls_token"):
      return "cls"
  return "cls" if arch == "bert" else "last"


def _experiment_config(m: hf_lib.HfModel, objective: str, tok_path: str,
                       seq_len: int, pooling: str):
  """The experiment config of the imported run (no data sources)."""
  from lm.training import experiment  # pylint: disable=g-import-not-at-top
  c = experiment.base_config()
  c.objective = objective
  c.data.train = ""
  c.data.eval = ""
  c.data.tokenizer.path = tok_path
  c.seq_len = seq_len
  c.model.size = _BASE_SIZE[m.config.arch]
  for key, value in dataclasses.asdict(m.config).items():
    c.model[key] = value
  if objective == "mlm":
    c.mlm.nsp = "nsp_head" in m.params
  if objective == "classification":
    c.task.pooling = "pooler"
  if objective == "contrastive":
    c.contrastive.pooling = pooling
    c.contrastive.projection = False
  return c


def _params_for(m: hf_lib.HfModel, objective: str) -> dict:
  """The checkpoint's tree for the objective's model."""
  if objective == "contrastive":
    backbone = dict(m.params.get("backbone", m.params))
    for head in bert.HEADS:
      backbone.pop(head, None)
    return {"backbone": backbone}
  return m.params


def _abstract(tree) -> bool:
  """Whether `tree` holds shapes (`jax.ShapeDtypeStruct`) only."""
  return all(isinstance(x, jax.ShapeDtypeStruct)
             for x in jax.tree_util.tree_leaves(tree))


def _merge(init, imported, prefix=""):
  """`imported` cast onto the tree `init` (arrays, or the shapes of an
  abstract one); returns (tree, paths only in init). Subtrees only in
  `init` are taken from it when it holds arrays, and left out otherwise.

  A leaf whose shape differs is an LmError (the mapping and our model
  disagree)."""
  out, fresh = {}, []
  for key, value in init.items():
    name = f"{prefix}{key}"
    if key not in imported:
      if not _abstract(value):
        out[key] = value
      fresh.append(name)
    elif isinstance(value, dict):
      out[key], more = _merge(value, imported[key], name + "/")
      fresh += more
    else:
      got = imported[key]
      if tuple(got.shape) != tuple(value.shape):
        raise LmError(f"imported parameter {name} is {tuple(got.shape)} but the "
                      f"model has {tuple(value.shape)}; the checkpoint's "
                      "config.json does not describe its weights.")
      out[key] = np.asarray(got, value.dtype)
  extra = sorted(set(imported) - set(init))
  if extra:
    raise LmError(f"the checkpoint has parameters {prefix}{extra[0]} that the "
                  "model does not; its config.json does not describe its "
                  "weights.")
  return out, fresh


def import_hf(hf_dir: str, workdir: str, *, objective: str | None = None,
              pooling: str | None = None, seq_len: int | None = None,
              tokenizer: str | None = None, seed: int = 0) -> Imported:
  """Writes the Hugging Face model in `hf_dir` as an `lm` run in `workdir`."""
  from lm.data.tokenizer import load_tokenizer  # pylint: disable=g-import-not-at-top
  from lm.models.transformer import count_params  # pylint: disable=g-import-not-at-top
  from lm.objectives import make_objective  # pylint: disable=g-import-not-at-top
  from lm.training.checkpoint import Checkpointer  # pylint: disable=g-import-not-at-top
  from lm.training.state import TrainState, init_state  # pylint: disable=g-import-not-at-top
  from lm.training.workdir import (  # pylint: disable=g-import-not-at-top
      copy_tokenizer, state_layout, tokenizer_record, write_json_atomic)

  if os.path.exists(os.path.join(workdir, "config.json")) or os.path.isdir(
      os.path.join(workdir, "checkpoints")):
    raise LmError(f"{workdir} already holds a run; import into a new "
                  "--workdir.")
  m = hf_lib.read_hf_dir(hf_dir)
  objective = objective or m.objective
  if objective not in OBJECTIVES:
    raise LmError(f"--objective={objective!r} is not one of "
                  f"{', '.join(OBJECTIVES)}.")
  allowed = ((m.objective,) if m.objective == "causal"
             else (m.objective, "contrastive"))
  if objective not in allowed:
    raise LmError(f"a {m.architecture} imports as {' or '.join(allowed)}, "
                  f"not {objective!r}; drop --objective or pick one of those.")
  if pooling and objective != "contrastive":
    raise LmError("--pooling applies to --objective=contrastive only.")
  pooling = pooling or _default_pooling(hf_dir, m.config.arch)
  seq_len = seq_len or min(m.config.max_len, 512 if m.config.arch == "bert"
                           else 1024)
  if m.config.position == "learned" and seq_len > m.config.max_len:
    raise LmError(f"--seq_len={seq_len} exceeds the model's "
                  f"{m.config.max_len} positions; lower it.")

  source = _find_tokenizer(hf_dir, tokenizer)
  tok = load_tokenizer(copy_tokenizer(source,
                                     os.path.join(workdir, "tokenizer"))[0])
  if tok.vocab_size > m.config.vocab_size:
    raise LmError(f"the tokenizer {source} has {tok.vocab_size} tokens but "
                  f"the model only {m.config.vocab_size} embeddings; import "
                  "the tokenizer that came with the model.")
  config = _experiment_config(m, objective, tok.path, seq_len, pooling)
  stored = {"labels": m.labels} if m.labels else None
  obj = make_objective(config, stored=stored)
  obj.check_model(m.config)
  if obj.bert_specials and not tok.has_bert_specials:
    raise LmError(f"the tokenizer {source} has no [CLS]/[SEP]/[MASK] "
                  "tokens, which a BERT run needs; import the tokenizer "
                  "that came with the model.")
  model = obj.build_model(m.config)
  mesh, rules, tx, abstract, shardings = state_layout(config, obj, model,
                                                      m.config)
  params, fresh = _merge(abstract.params, _params_for(m, objective))
  if fresh:   # heads the checkpoint lacks: from a seeded initialisation
    state, _, _ = init_state(model, tx, mesh, rules, seed, seq_len, shardings)
    params, _ = _merge(jax.device_get(state.params), params)
    del state
  params = jax.device_put(params, shardings.params)
  with jax.set_mesh(mesh):
    opt_state = jax.jit(tx.init, out_shardings=shardings.opt_state)(params)
  state = TrainState(step=jax.device_put(np.zeros((), np.int32), shardings.step),
                     params=params, opt_state=opt_state)
  resolved = {
      "config": json.loads(config.to_json_best_effort()),
      "model": dataclasses.asdict(m.config),
      "tokenizer": tokenizer_record(tok, workdir),
      "batch": obj.data_settings(),
      "imported_from": {"hf_dir": os.path.abspath(hf_dir),
                        "architecture": m.architecture,
                        "initialised": sorted(fresh)},
  }
  best_metric, best_mode = getattr(obj, "best_metric", ("eval_loss", "min"))
  ckpt = Checkpointer(workdir, keep=1, async_save=False,
                      best_metric=best_metric, best_mode=best_mode)
  ckpt.save(0, state, {"step": 0}, resolved, force=True)
  ckpt.wait()
  ckpt.close()
  write_json_atomic(os.path.join(workdir, "config.json"), resolved)
  return Imported(workdir, m, objective, tok, tuple(fresh),
                  count_params(params))


def export_hf(workdir: str, out_dir: str, *, step: int | None = None,
              best: bool = False) -> list[str]:
  """Writes the run in `workdir` as a Hugging Face model directory."""
  from lm.training.workdir import (  # pylint: disable=g-import-not-at-top
      copy_tokenizer, load_trained)
  for name in ("config.json", INDEX, WEIGHTS):
    if os.path.exists(os.path.join(out_dir, name)):
      raise LmError(f"{out_dir} already holds a model ({name}); export into "
                    "a new directory.")
  trained = load_trained(workdir, step, best=best)
  c, tok = trained.config, trained.tokenizer
  labels = getattr(trained.objective, "labels", None)
  extra = {}
  for key, value in (("pad_token_id", tok.pad_id), ("bos_token_id", tok.bos_id),
                     ("eos_token_id", tok.eos_id)):
    if value is not None and value >= 0:
      extra[key] = int(value)
  written = hf_lib.write_hf_dir(out_dir, trained.model_cfg, trained.params,
                                objective=c.objective, labels=labels,
                                extra=extra)
  return written + copy_tokenizer(tok.path, out_dir)
