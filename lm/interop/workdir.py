"""Hugging Face model directories <-> `lm` workdirs (`launch.import_hf`,
`launch.export_hf`).

`import_hf(hf_dir, workdir)` writes a workdir as a training run would:
`config.json` (the experiment config, model, tokenizer and data settings)
and an Orbax checkpoint at step 0, so `launch.sample`, `launch.evaluate`,
`launch.encode`, `launch.predict` and `config.init_from` (fine-tuning) read
it like any run. The run's objective follows the checkpoint: "causal"
(GPT-2, Llama), "mlm" (BERT; NSP is on when the checkpoint has the NSP
head), "classification" (`BertForSequenceClassification`, with its label
names), "contrastive" (a sentence encoder over the backbone:
`launch.encode` then embeds with `pooling`), or "seq2seq" (T5 and BART,
whose decoder start id the run's model records; also "span_corruption",
with as many sentinels as its tokenizer has).

The model keeps its own tokenizer: `tokenizer.json` (read with the
`tokenizers` package; `tokenizer_config.json` and `special_tokens_map.json`
come along for the special tokens) or else the SentencePiece
`tokenizer.model` (or `spiece.model`) it ships. Either is copied into the
workdir, and `config.json` records its path and kind ("hf" or
"sentencepiece"). A T5's SentencePiece model is converted instead
(`lm.interop.sp_tokenizer`, no `transformers` needed): a `tokenizer.json`
with its pieces, then the `extra_ids` sentinels `<extra_id_i>` at T5's ids
(`<extra_id_0>` last; `t5.extra_ids` reads the count from the settings
files beside it) and `</s>` appended, which is what transformers' T5
tokenizer encodes.

A sentence-transformers directory (`modules.json`) imports as
"contrastive" by default, with its Pooling module's pooling, its
Normalize module (`contrastive.normalize`: `launch.encode` returns unit
vectors) and its `max_seq_length`. Only the tensors the checkpoint has are
imported: a BERT without the NSP head is a masked LM without one
(`mlm.nsp` false), a pooler is kept wherever the source had one
(`mlm.pooler`, `contrastive.pooler`), and a head the objective needs but
the checkpoint lacks (the MLM head of a bare `BertModel`) is initialised
from the seed and named once. The model size is recorded as the named size
whose shape matches, else "custom". A chat template
(`chat_template.jinja` or in `tokenizer_config.json`) travels with the
tokenizer, and `generation_config.json` is kept in the workdir.

`export_hf(workdir, out_dir)` writes the run's weights as a directory
`transformers` loads (see `lm.interop.hf.write_hf_dir`), with the
tokenizer files beside them; an `lm`-trained SentencePiece tokenizer also
becomes a `tokenizer.json` that `AutoTokenizer` loads to the same ids
(`lm.interop.sp_tokenizer`; an encoder-decoder's appends EOS, as T5's),
a contrastive run gets the sentence-transformers module files, an
encoder-decoder's `config.json` starts the decoder where `lm` does
(`decoder_start_token_id`: the model's `decoder_start_id`, BART's EOS,
else the tokenizer's pad id), and
`generation_config.json` and the chat template go back out.

Example:
  import_hf("hf/bert-base-uncased", "runs/bert-base-uncased")
  import_hf("hf/t5-v1_1-small", "runs/t5", objective="span_corruption")
  export_hf("runs/imdb", "hf/imdb-classifier", best=True)
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import jax
import numpy as np

from lm import experiments, files
from lm.data.hf_tokenizer import CONFIG_FILES
from lm.data.tokenizer import Tokenizer, load_tokenizer
from lm.errors import LmError
from lm.experiments import load_trained, make_objective
from lm.interop import bert, hf as hf_lib, sp_tokenizer, t5
from lm.interop.tensors import INDEX, WEIGHTS
from lm.models.config import size_name
from lm.models.transformer import count_params
from lm.training.checkpoint import Checkpointer
from lm.training.state import TrainState, init_state
from lm.training.workdir import (copy_tokenizer, read_json, state_layout,
                                 tokenizer_record, write_json_atomic)


@dataclasses.dataclass
class Imported:
  """What `import_hf` wrote."""
  workdir: str
  model: hf_lib.HfModel
  objective: str
  tokenizer: object            # the copied tokenizer (.path, .kind)
  initialised: tuple[str, ...]   # parameters the checkpoint lacked
  n_params: int


# A model directory's tokenizer files, in the order they are looked for
# (spiece.model: T5's SentencePiece model).
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer.model", "spiece.model")


def _find_tokenizer(hf_dir: str, tokenizer: str | None) -> str:
  """`--tokenizer`, else the model directory's tokenizer.json,
  tokenizer.model or spiece.model."""
  if tokenizer:
    if not files.isfile(tokenizer):
      raise LmError(f"--tokenizer {tokenizer} does not exist; name a "
                    "tokenizer.json or a SentencePiece .model file.")
    return tokenizer
  for name in TOKENIZER_NAMES:
    if os.path.isfile(os.path.join(hf_dir, name)):
      return os.path.join(hf_dir, name)
  raise LmError(f"{hf_dir} has no tokenizer.json or tokenizer.model (nor "
                "T5's spiece.model); put the model's tokenizer there or name "
                "it with --tokenizer.")


def _tokenizer_settings(directory: str) -> dict:
  """The `tokenizer_config.json` and `special_tokens_map.json` in
  `directory` merged (the second wins), {} when there are none."""
  out = {}
  for name in CONFIG_FILES:
    path = files.join(directory, name)
    if files.isfile(path):
      settings = read_json(path, "fix it or remove it")
      if not isinstance(settings, dict):
        raise LmError(f"{path} is not a JSON object; fix it or remove it.")
      out.update(settings)
  return out


def _t5_tokenizer(source: str, out_dir: str, seq_len: int) -> str:
  """Writes T5's SentencePiece model `source` (`spiece.model`) into
  `out_dir` as a `tokenizer.json` with T5's ids: the pieces, then the
  sentinels `<extra_id_i>` (as many as the settings beside `source` say,
  `t5.extra_ids`) in T5's order, and a post-processor that ends a text with
  `</s>`, as transformers' T5 tokenizer encodes; plus the
  `tokenizer_config.json` naming eos, pad and unk. Returns the
  `tokenizer.json`'s path."""
  directory = files.dirname(files.abspath(source))
  settings = _tokenizer_settings(directory)
  sp = Tokenizer.load(source)
  sentinels = t5.extra_ids(settings, files.join(directory, CONFIG_FILES[0]))
  if None not in sp.piece_ids([sp_tokenizer.SENTINEL.format(0)]):
    sentinels = 0        # the model has its sentinels among its pieces
  if sp.eos_id < 0 or sp.pad_id < 0:
    raise LmError(f"the SentencePiece model {source} has no "
                  f"{'eos' if sp.eos_id < 0 else 'pad'} piece, which T5 "
                  "needs (eos ends every input, pad starts the decoder); "
                  "import the tokenizer that came with the model.")
  spec = sp_tokenizer.tokenizer_json(sp, frame="eos", sentinels=sentinels)
  differs = sp_tokenizer.check_same_ids(sp, spec)
  if differs is not None:
    raise LmError(f"the SentencePiece model {source} has options the "
                  f"tokenizer.json conversion does not reproduce (it encodes "
                  f"{differs[:40]!r} otherwise); pass a tokenizer.json with "
                  "--tokenizer.")
  length = settings.get("model_max_length")
  if not (isinstance(length, int) and 0 < length < 1 << 31):   # 1e30: unset
    length = seq_len
  config = sp_tokenizer.tokenizer_config(sp, frame="eos",
                                         model_max_length=length)
  files.makedirs(out_dir)
  path = files.join(out_dir, "tokenizer.json")
  write_json_atomic(path, spec)
  write_json_atomic(files.join(out_dir, CONFIG_FILES[0]), config)
  return path


_ST_MODULE = "sentence_transformers.models."
_ST_POOLINGS = {"pooling_mode_cls_token": "cls",
                "pooling_mode_mean_tokens": "mean",
                "pooling_mode_lasttoken": "last"}


@dataclasses.dataclass
class SentenceTransformer:
  """What a sentence-transformers directory's `modules.json` asks for."""
  pooling: str | None = None      # from the Pooling module's config.json
  normalize: bool = False         # a Normalize module follows the pooling
  seq_len: int | None = None      # sentence_bert_config.json max_seq_length


def sentence_transformer(hf_dir: str, *, pooling_given: bool = False
                         ) -> SentenceTransformer:
  """The pooling, normalisation and length of a sentence-transformers model
  directory (`modules.json`, its Pooling module's `config.json`,
  `sentence_bert_config.json`); an empty answer for a plain model directory.

  A module `lm` cannot reproduce (Dense, LayerNorm, ...) or a pooling mode
  other than cls, mean and last token (unless `--pooling` chose one) is one
  sentence: the embeddings would differ from sentence-transformers' own.
  """
  out = SentenceTransformer()
  path = os.path.join(hf_dir, "modules.json")
  listed = os.path.isfile(path)
  # without modules.json, an older layout may still hold 1_Pooling/
  modules = (read_json(path, "fix it or remove it") if listed
             else [{"type": _ST_MODULE + "Pooling", "path": "1_Pooling"}])
  if not (isinstance(modules, list)
          and all(isinstance(m, dict) for m in modules)):
    raise LmError(f"{path} is not a list of modules; fix it or remove it.")
  for module in modules:
    kind = str(module.get("type", ""))
    name = kind.removeprefix(_ST_MODULE)
    if name == "Transformer":
      continue
    if name == "Pooling":
      config = os.path.join(hf_dir, str(module.get("path", "")), "config.json")
      if not os.path.isfile(config):
        if listed:
          raise LmError(f"{path} names a Pooling module without "
                        f"{config}; download the model again.")
        continue
      modes = read_json(config, "fix it or pass --pooling")
      chosen = [ours for key, ours in _ST_POOLINGS.items() if modes.get(key)]
      other = sorted(k for k, v in modes.items()
                     if k.startswith("pooling_mode_") and v
                     and k not in _ST_POOLINGS)
      if (other or len(chosen) > 1) and not pooling_given:
        raise LmError(f"{config} pools with {', '.join(other + chosen)}; lm "
                      "pools with one of cls, mean or last token, so pass "
                      "--pooling to choose one (the embeddings will differ "
                      "from sentence-transformers').")
      out.pooling = chosen[0] if len(chosen) == 1 else None
    elif name == "Normalize":
      out.normalize = True
    else:
      raise LmError(f"{path} has a {kind!r} module, which lm's "
                    "sentence encoder does not have (only Transformer, "
                    "Pooling and Normalize); its embeddings cannot be "
                    "reproduced.")
  bert_config = os.path.join(hf_dir, "sentence_bert_config.json")
  if os.path.isfile(bert_config):
    length = read_json(bert_config, "fix it or remove it").get("max_seq_length")
    if isinstance(length, int) and length > 0:
      out.seq_len = length
  return out


def _experiment_config(m: hf_lib.HfModel, objective: str, tok,
                       seq_len: int, st: SentenceTransformer):
  """The experiment config of the imported run (no data sources)."""
  c = experiments.base_config()
  c.objective = objective
  c.data.train = ""
  c.data.eval = ""
  c.data.tokenizer.path = tok.path
  c.seq_len = seq_len
  c.model.size = size_name(m.config)
  for key, value in dataclasses.asdict(m.config).items():
    c.model[key] = value
  experiments.objective_class(objective).configure_import(
      c, m.params, pooling=st.pooling, normalize=st.normalize, tokenizer=tok)
  return c


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


def _checked_objective(m: hf_lib.HfModel, objective: str, tok, source: str,
                       seq_len: int, st: SentenceTransformer):
  """(config, objective) of the imported run with tokenizer `tok`; an
  LmError when the tokenizer does not fit the model or the objective."""
  if tok.vocab_size > m.config.vocab_size:
    raise LmError(f"the tokenizer {source} has {tok.vocab_size} tokens but "
                  f"the model only {m.config.vocab_size} embeddings; import "
                  "the tokenizer that came with the model.")
  config = _experiment_config(m, objective, tok, seq_len, st)
  obj = make_objective(config, stored={"labels": m.labels} if m.labels else None)
  obj.check_model(m.config)
  if obj.bert_specials and not tok.has_bert_specials:
    raise LmError(f"the tokenizer {source} has no [CLS]/[SEP]/[MASK] "
                  "tokens, which a BERT run needs; import the tokenizer "
                  "that came with the model.")
  missing = [p for p, i in zip(obj.control_symbols,
                               tok.piece_ids(obj.control_symbols))
             if i is None]
  if missing:
    raise LmError(f"the tokenizer {source} has no {missing[0]!r}, which "
                  f"--objective={objective} reserves; import the tokenizer "
                  "that came with the model.")
  return config, obj


def import_hf(hf_dir: str, workdir: str, **options) -> Imported:
  """Writes the Hugging Face model in `hf_dir` as an `lm` run in `workdir`
  (`options`: objective, pooling, seq_len, tokenizer, seed).

  Either may be a URI. safetensors reads local files (memory-mapped), so a
  `gs://` model directory is first copied to a temporary directory."""
  if files.is_uri(workdir):
    files.check_bucket(workdir, "--workdir")
  if files.exists(files.join(workdir, "config.json")) or files.isdir(
      files.join(workdir, "checkpoints")):
    raise LmError(f"{workdir} already holds a run; import into a new "
                  "--workdir.")
  if not files.is_uri(hf_dir):
    return _import_hf(hf_dir, workdir, recorded=os.path.abspath(hf_dir),
                      **options)
  files.check_bucket(hf_dir, "--hf_dir")
  if not files.isfile(files.join(hf_dir, "config.json")):
    raise LmError(f"--hf_dir {hf_dir} holds no config.json; pass the "
                  "directory of a Hugging Face model (save_pretrained).")
  with files.local_dir(hf_dir, upload=False) as local:
    return _import_hf(local, workdir, recorded=files.abspath(hf_dir), **options)


def _import_hf(hf_dir: str, workdir: str, *, recorded: str,
               objective: str | None = None, pooling: str | None = None,
               seq_len: int | None = None, tokenizer: str | None = None,
               seed: int = 0) -> Imported:
  """`import_hf` from the local directory `hf_dir` (`recorded`: the
  directory the user named, kept in the run's config)."""
  m = hf_lib.read_hf_dir(hf_dir)
  is_st = os.path.isfile(os.path.join(hf_dir, "modules.json"))
  # The checkpoint's head names the objective that trains it; an encoder
  # may also import as a sentence encoder (an objective that embeds), which
  # a sentence-transformers directory is unless asked.
  native = experiments.objective_for_head(m.head)
  encoders = experiments.names_where("embeds")
  pretrained = m.config.arch == "bert" and m.architecture not in bert.TASK_HEADS
  objective = objective or (encoders[0] if is_st and pretrained else native)
  if objective not in experiments.OBJECTIVES:
    raise LmError(f"--objective={objective!r} is not one of "
                  f"{', '.join(experiments.OBJECTIVES)}.")
  allowed = (native,)
  if m.config.arch == "bert":
    allowed += tuple(encoders)
  elif m.config.arch == "encoder_decoder":   # fine-tuning or more pretraining
    allowed += tuple(n for n in experiments.OBJECTIVES if n != native
                     and experiments.objective_class(n).head in t5.HEADS)
  if objective not in allowed:
    raise LmError(f"a {m.architecture} imports as {' or '.join(allowed)}, "
                  f"not {objective!r}; drop --objective or pick one of those.")
  embeds = objective in encoders
  if pooling and not embeds:
    raise LmError(f"--pooling applies to --objective="
                  f"{' or '.join(encoders)} only.")
  st = SentenceTransformer()
  if embeds:
    st = sentence_transformer(hf_dir, pooling_given=bool(pooling))
    st.pooling = pooling or st.pooling or (
        "cls" if m.config.arch == "bert" else "last")
  seq_len = seq_len or st.seq_len or min(
      m.config.max_len, 512 if m.config.arch == "bert" else 1024)
  if m.config.position == "learned" and seq_len > m.config.max_len:
    raise LmError(f"--seq_len={seq_len} exceeds the model's "
                  f"{m.config.max_len} positions; lower it.")

  source = _find_tokenizer(hf_dir, tokenizer)
  # The tokenizer is staged outside the workdir until every check has
  # passed, so a refused import writes nothing.
  with tempfile.TemporaryDirectory(prefix="lm-import-") as staging:
    if m.model_type == t5.MODEL_TYPE and not source.lower().endswith(".json"):
      tok = load_tokenizer(_t5_tokenizer(source, staging, seq_len))
    else:
      tok = load_tokenizer(copy_tokenizer(source, staging)[0])
    _checked_objective(m, objective, tok, source, seq_len, st)
    tok = load_tokenizer(copy_tokenizer(
        tok.path, files.join(workdir, "tokenizer"))[0])
  config, obj = _checked_objective(m, objective, tok, source, seq_len, st)
  model = obj.build_model(m.config)
  mesh, rules, tx, abstract, shardings = state_layout(config, obj, model,
                                                      m.config)
  params, fresh = _merge(abstract.params,
                         type(obj).imported_params(m.params))
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
      "imported_from": {"hf_dir": recorded,
                        "architecture": m.architecture,
                        "initialised": sorted(fresh)},
  }
  best_metric, best_mode = obj.best_metric
  ckpt = Checkpointer(workdir, keep=1, async_save=False,
                      best_metric=best_metric, best_mode=best_mode)
  ckpt.save(0, state, {"step": 0}, resolved, force=True)
  ckpt.wait()
  ckpt.close()
  generation = os.path.join(hf_dir, GENERATION_CONFIG)
  if os.path.isfile(generation):      # carried to launch.export_hf
    write_json_atomic(files.join(workdir, GENERATION_CONFIG),
                      read_json(generation, "fix it or remove it"))
  write_json_atomic(files.join(workdir, "config.json"), resolved)
  return Imported(workdir, m, objective, tok, tuple(fresh),
                  count_params(params))


def _sentencepiece_files(tok, out_dir: str, frame: str, seq_len: int,
                         say) -> list[str]:
  """`tokenizer.json` and `tokenizer_config.json` for an `lm` SentencePiece
  tokenizer, so `AutoTokenizer` encodes to its ids (`lm.interop.sp_tokenizer`);
  a chat template or other settings of an imported model's
  `tokenizer_config.json` are kept."""
  try:
    spec = sp_tokenizer.tokenizer_json(tok, frame=frame)
  except LmError as e:
    say(f"warning: {e}")
    return []
  differs = sp_tokenizer.check_same_ids(tok, spec)
  if differs is not None:
    say(f"warning: the exported tokenizer.json encodes {differs[:40]!r} to "
        "other ids than the SentencePiece model; transformers users should "
        "load tokenizer.model with the sentencepiece package.")
  config_path = os.path.join(out_dir, CONFIG_FILES[0])
  config = {}
  if os.path.isfile(config_path):       # an imported model's own settings
    config = read_json(config_path, "fix it or remove it")
    config.pop("tokenizer_file", None)
  kept = {k: config[k] for k in ("chat_template", "model_max_length")
          if k in config}
  config.update(sp_tokenizer.tokenizer_config(tok, frame=frame,
                                              model_max_length=seq_len), **kept)
  written = [os.path.join(out_dir, "tokenizer.json"), config_path]
  write_json_atomic(written[0], spec)
  write_json_atomic(written[1], config)
  return written


def _sentence_transformers_files(c, cfg, out_dir: str) -> list[str]:
  """`modules.json`, the Pooling (and Normalize) module and
  `sentence_bert_config.json` of a contrastive run, so
  `SentenceTransformer(out_dir)` embeds as `launch.encode` does."""
  k = c.contrastive
  modules = [{"idx": 0, "name": "0", "path": "",
              "type": _ST_MODULE + "Transformer"},
             {"idx": 1, "name": "1", "path": "1_Pooling",
              "type": _ST_MODULE + "Pooling"}]
  if k.get("normalize", False):
    modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                    "type": _ST_MODULE + "Normalize"})
    os.makedirs(os.path.join(out_dir, "2_Normalize"), exist_ok=True)
  pooling = {"word_embedding_dimension": cfg.d_model,
             **{key: k.pooling == ours for key, ours in _ST_POOLINGS.items()},
             "pooling_mode_max_tokens": False,
             "pooling_mode_mean_sqrt_len_tokens": False,
             "pooling_mode_weightedmean_tokens": False,
             "include_prompt": True}
  entries = {"modules.json": modules,
           os.path.join("1_Pooling", "config.json"): pooling,
           "sentence_bert_config.json": {"max_seq_length": int(c.seq_len),
                                         "do_lower_case": False}}
  written = []
  for name, value in entries.items():
    path = os.path.join(out_dir, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_json_atomic(path, value)
    written.append(path)
  return written


GENERATION_CONFIG = "generation_config.json"


def export_hf(workdir: str, out_dir: str, *, step: int | None = None,
              best: bool = False, say=lambda _: None) -> list[str]:
  """Writes the run in `workdir` as a Hugging Face model directory: the
  weights as the class the run is, its tokenizer (an `lm` SentencePiece
  model also as a `tokenizer.json` that `AutoTokenizer` loads to the same
  ids), the chat template and `generation_config.json` an imported model
  came with, and for a contrastive run the sentence-transformers modules.
  `say` receives warnings.

  `out_dir` may be a URI: the directory is written in a temporary local
  directory (safetensors writes local files) and uploaded at the end."""
  if files.is_uri(out_dir):
    files.check_bucket(out_dir, "--out_dir")
  for name in ("config.json", INDEX, WEIGHTS):
    if files.exists(files.join(out_dir, name)):
      raise LmError(f"{out_dir} already holds a model ({name}); export into "
                    "a new directory.")
  trained = load_trained(workdir, step, best=best)
  if not files.is_uri(out_dir):
    return _export(trained, workdir, out_dir, say)
  with files.local_dir(out_dir, upload=True) as local:
    written = _export(trained, workdir, local, say)
  return [files.join(out_dir, os.path.relpath(p, local)) for p in written]


def _export(trained, workdir: str, out_dir: str, say) -> list[str]:
  """`export_hf` of `trained` into the local directory `out_dir`."""
  c, tok = trained.config, trained.tokenizer
  labels = trained.objective.labels
  seq2seq = trained.model_cfg.arch == "encoder_decoder"
  extra = {}
  for key, value in (("pad_token_id", tok.pad_id), ("bos_token_id", tok.bos_id),
                     ("eos_token_id", tok.eos_id)):
    if value is not None and value >= 0:
      extra[key] = int(value)
  if seq2seq:       # where lm starts the decoder
    extra["decoder_start_token_id"] = int(
        trained.model_cfg.decoder_start(tok.pad_id))
  written = hf_lib.write_hf_dir(out_dir, trained.model_cfg, trained.params,
                                head=trained.objective.head, labels=labels,
                                extra=extra)
  written += copy_tokenizer(tok.path, out_dir)
  if tok.kind == "sentencepiece":
    frame = ("bert" if trained.model_cfg.arch == "bert"
             else "eos" if seq2seq else "bos" if tok.adds_bos else "none")
    written += _sentencepiece_files(tok, out_dir, frame, int(c.seq_len), say)
  generation = files.join(workdir, GENERATION_CONFIG)
  if files.isfile(generation):      # written as import_hf wrote it
    written.append(os.path.join(out_dir, GENERATION_CONFIG))
    write_json_atomic(written[-1], read_json(generation, "fix it or remove it"))
  if trained.objective.embeds:
    written += _sentence_transformers_files(c, trained.model_cfg, out_dir)
  return sorted(set(written), key=written.index)
