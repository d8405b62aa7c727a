"""Contrastive sentence embeddings: SimCSE / InfoNCE with global negatives.

The model is `lm.models.embedder.SentenceEncoder` over any backbone. Two
modes (`config.contrastive.mode`):

  "unsupervised"  SimCSE: each sentence is encoded twice in one forward pass
                  with different dropout masks; the two views are each
                  other's positive and every other sentence of the global
                  batch is a negative. Sentences are the lines (or whole
                  documents) of any source; a `pystdlib` source gives its
                  docstrings and function bodies as separate sentences.
  "supervised"    (anchor, positive) pairs from `lm.data.pairs`: `jsonl:` or
                  `tfds:` fields, or `pystdlib` docstring <-> code pairs; an
                  optional hard-negative column adds one negative per row
                  that every anchor of the batch is scored against.

The loss is `lm.objectives.contrastive_loss.info_nce` over the projected
embeddings of the whole global batch (GSPMD gathers them across the mesh;
see that module). Gradient accumulation is refused: it would shrink the
negatives to one microbatch.

Evaluation (`evaluate`) embeds the first `eval_candidates` held-out pairs
(no projection head, no dropout) and reports recall@1, recall@10 and MRR of
each anchor's positive among all of them, the in-batch loss and accuracy,
and, when `config.contrastive.sts` names scored pairs, the Spearman
correlation between cosine similarity and the gold scores.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lm.data import pair_batches, pair_stream, pairs as pairs_lib
from lm.data.streaming import StreamCorpus
from lm.errors import LmError
from lm.models import flops
from lm.models.config import make_model_config
from lm.models.embedder import SentenceEncoder, check_pooling
from lm.objectives import open_documents, stream_corpus, streamed
from lm.objectives.contrastive_loss import info_nce
from lm.tasks import retrieval
from lm.training import experiment
from lm.training.objective import Objective
from lm.training.step import eval_totals, jit_forward

MODES = ("unsupervised", "supervised")
TEXTS = ("lines", "documents")


def config_section() -> ml_collections.ConfigDict:
  """The `contrastive` section of the experiment config, with its defaults."""
  s = ml_collections.ConfigDict()
  s.mode = "unsupervised"   # unsupervised (SimCSE) | supervised
  s.texts = "lines"         # unsupervised sentences: lines | documents
  s.anchor_field = "anchor"      # jsonl / tfds pair fields
  s.positive_field = "positive"
  s.negative_field = ""          # hard negatives ("" = none)
  s.pooling = "cls"         # cls | mean | last
  s.projection = True       # tanh(dense) head, training only
  s.pooler = False          # carry BERT's pooler (imported; the
                            # loss does not read it) for export
  s.normalize = False       # unit-length embeddings from
                            # launch.encode (sentence-transformers
                            # Normalize)
  s.temperature = 0.05
  s.learn_temperature = False
  s.min_temperature = 0.01  # floor of a learned temperature
  s.symmetric = False       # also score positives -> anchors
  s.eval_candidates = 1000  # held-out pairs ranked in eval
  s.sts = ""                # scored pairs for Spearman ("" = none)
  s.sts_a_field = "text_a"
  s.sts_b_field = "text_b"
  s.sts_score_field = "score"
  return s


def contrastive_loss(params, batch, rng, model, *, deterministic: bool = False,
                     symmetric: bool = False):
  """Objective contract: `(params, batch, rng, model) -> (loss, sums)`.

  The batch's columns are encoded in one `[B * K, T]` forward pass: anchor
  and positive (anchor twice when there is no positive column: SimCSE's two
  dropout views) and the hard negative when present. Rows of one example
  stay adjacent, so the reshape keeps every shard's rows on its device.
  Without dropout (`deterministic`), `sums` also carries the unprojected
  `anchor_embedding` and `positive_embedding` `[B, D]` for retrieval.
  """
  names = ["anchor", "positive" if "positive" in batch else "anchor"]
  if "negative" in batch:
    names.append("negative")
  tokens = jnp.stack([batch[n] for n in names], axis=1)          # [B, K, T]
  masks = jnp.stack([batch[n + "_mask"] for n in names], axis=1)
  b, k, t = tokens.shape
  out = model.apply({"params": params}, tokens.reshape(b * k, t),
                    segment_ids=masks.reshape(b * k, t),
                    deterministic=deterministic,
                    rngs=None if deterministic else {"dropout": rng})
  z = out["projected"].reshape(b, k, -1)                         # [B, K, D']
  tau = out["temperature"]
  loss_sum, correct, count = info_nce(
      z[:, 0], z[:, 1], tau, symmetric=symmetric,
      negatives=z[:, 2:] if k > 2 else None, valid=batch["weights"])
  sums = {"loss_sum": loss_sum, "correct": correct, "tokens": count,
          "pairs": count,   # what is counted: anchor-positive pairs
          "temperature_sum": jax.lax.stop_gradient(tau) * count}
  if deterministic:
    e = out["embedding"].reshape(b, k, -1)
    sums["anchor_embedding"] = e[:, 0]
    sums["positive_embedding"] = e[:, 1]
  return loss_sum / jnp.maximum(count, 1.0), sums


def summarize(sums) -> dict:
  """`loss` (mean InfoNCE), `accuracy` (anchors whose top-scored candidate is
  their positive) and `temperature`, from summed `contrastive_loss` sums."""
  n = jnp.maximum(sums["tokens"], 1.0)
  return {"loss": sums["loss_sum"] / n, "accuracy": sums["correct"] / n,
          "temperature": sums["temperature_sum"] / n}


@dataclasses.dataclass
class EvalSources:
  """Held-out pairs for retrieval and scored pairs for Spearman (either may
  be None)."""
  pairs: pairs_lib.PairSource | None
  sts: pairs_lib.PairSource | None

  def __iter__(self):   # texts for a tokenizer, should one be trained on it
    for src in (self.pairs, self.sts):
      if src is not None:
        yield from src


@dataclasses.dataclass
class Tokenized:
  """Tokenized columns and the ids that frame each row."""
  cols: pair_batches.Columns | None
  sts: pair_batches.Columns | None
  first: int
  last: int
  pad: int

  @property
  def tokens(self):
    return self.cols.tokens if self.cols is not None else self.sts.tokens

  def row_args(self, seq_len: int) -> dict:
    return dict(seq_len=seq_len, first=self.first, last=self.last,
                pad=self.pad)


class Contrastive(Objective):
  """The contrastive objective (see `lm.objectives` for the contract)."""

  name = "contrastive"
  head = "encoder"
  config_sections = {"contrastive": config_section}
  embeds = True
  scores_sts = True
  backbone_path = ("backbone",)
  count_key = "pairs"      # what the logged counts count (anchor-positive pairs)

  def __init__(self, config):
    self.config = config
    k = config.contrastive
    if k.mode not in MODES:
      raise LmError(f"config.contrastive.mode={k.mode!r} is not one of "
                    f"{', '.join(repr(m) for m in MODES)}.")
    if k.texts not in TEXTS:
      raise LmError(f"config.contrastive.texts={k.texts!r} is not one of "
                    f"{', '.join(repr(t) for t in TEXTS)}.")
    if not k.temperature > 0 or not k.min_temperature > 0:
      raise LmError(f"config.contrastive.temperature={k.temperature} and "
                    f"min_temperature={k.min_temperature} must be positive.")
    if k.eval_candidates < 2:
      raise LmError(f"config.contrastive.eval_candidates={k.eval_candidates} "
                    "must be at least 2 (a positive and a distractor).")
    if config.grad_accum_steps != 1:
      raise LmError(f"config.grad_accum_steps={config.grad_accum_steps}: "
                    "contrastive negatives are the whole global batch, and "
                    "accumulation would shrink them to one microbatch; set "
                    "grad_accum_steps=1 (shard the batch over more devices "
                    "instead).")
    overrides = {**experiment.model_overrides(config), "vocab_size": 1}
    self.arch = make_model_config(config.model.size, **overrides).arch
    self.bert_specials = self.arch == "bert"
    self.unsupervised = k.mode == "unsupervised"
    self.loss = functools.partial(contrastive_loss, symmetric=bool(k.symmetric))
    self.summarize = summarize

  # --- model ------------------------------------------------------------------

  def check_model(self, model_cfg) -> None:
    check_pooling(model_cfg.arch, self.config.contrastive.pooling)

  @classmethod
  def configure_import(cls, config, params, *, pooling=None, normalize=False,
                       tokenizer=None):
    """The imported encoder's pooling and normalisation, no projection (a
    sentence encoder is used as it is), and its pooler carried to export."""
    del tokenizer
    k = config.contrastive
    k.pooling = pooling or k.pooling
    k.normalize = bool(normalize)
    k.projection = False
    k.pooler = "pooler" in params.get("backbone", params)

  @classmethod
  def imported_params(cls, params):
    """The backbone under `backbone`, keeping its pooler (unused, carried
    to the export) and dropping the pretraining heads."""
    backbone = dict(params.get("backbone", params))
    for head in ("mlm_head", "nsp_head"):
      backbone.pop(head, None)
    return {"backbone": backbone}

  def set_sts(self, uri: str) -> None:
    """Scores the STS pairs at `uri` in `evaluate` (`contrastive.sts`)."""
    self.config.contrastive.sts = uri

  def embed(self, trained, texts, *, batch_size: int = 64) -> np.ndarray:
    """`embed_texts` of the trained run (`launch.encode`)."""
    return embed_texts(trained, texts, batch_size=batch_size)

  def has_pretrained_pooler(self) -> bool:
    """When it carries an imported BERT pooler (`contrastive.pooler`)."""
    return bool(self.config.contrastive.get("pooler", False))

  def build_model(self, model_cfg):
    k = self.config.contrastive
    return SentenceEncoder(model_cfg, pooling=k.pooling,
                           projection=bool(k.projection),
                           temperature=float(k.temperature),
                           learn_temperature=bool(k.learn_temperature),
                           min_temperature=float(k.min_temperature),
                           pooler=bool(k.get("pooler", False))
                           and model_cfg.arch == "bert")

  # --- data -------------------------------------------------------------------

  def _fields(self):
    k = self.config.contrastive
    return (k.anchor_field, k.positive_field)

  def open_source(self, uri: str, *, train: bool):
    c, k = self.config, self.config.contrastive
    data_dir = c.data.data_dir or None
    if train:
      stream = streamed(c) and not uri.startswith("pystdlib")
      if self.unsupervised and not uri.startswith("pystdlib"):
        return open_documents(c, uri)
      if stream:
        pairs_lib.check_pair_uri(uri)
        fields = list(self._fields()) + (
            [k.negative_field] if k.negative_field else [])
        return pair_stream.open_pair_records(uri, fields=fields,
                                             data_dir=data_dir)
      return pairs_lib.open_pairs(
          uri, fields=self._fields(),
          negative_field="" if self.unsupervised else k.negative_field,
          data_dir=data_dir)
    held_out = (pairs_lib.open_pairs(uri, fields=self._fields(),
                                     data_dir=data_dir) if uri else None)
    sts = (pairs_lib.open_scored_pairs(
        k.sts, fields=(k.sts_a_field, k.sts_b_field, k.sts_score_field),
        data_dir=data_dir) if k.sts else None)
    if held_out is None and sts is None:
      return None
    return EvalSources(held_out, sts)

  def open_data(self, source, tokenizer, cache_dir, max_chars):
    if (streamed(self.config) and not isinstance(source, EvalSources)
        and not isinstance(source, pairs_lib.PairSource)):
      return stream_corpus(self.config, source, tokenizer, cache_dir)
    frame = _frame(tokenizer, self.arch)
    if isinstance(source, EvalSources):
      return Tokenized(
          _pair_columns(source.pairs, tokenizer, cache_dir),
          _pair_columns(source.sts, tokenizer, cache_dir), **frame)
    if isinstance(source, pairs_lib.PairSource):
      return Tokenized(_pair_columns(source, tokenizer, cache_dir), None,
                       **frame)
    texts = self.config.contrastive.texts

    def build():
      return pair_batches.columns_from_texts(
          {"text": _sentences(source, texts, max_chars)}, tokenizer)
    cols = pair_batches.cached_columns(
        ("texts", source.fingerprint(), tokenizer.fingerprint(), texts,
         max_chars), build, cache_dir, vocab_size=tokenizer.vocab_size)
    if len(cols) == 0:
      raise LmError(f"{source.uri} has no non-empty {texts}; point "
                    "data.train at text.")
    return Tokenized(cols, None, **frame)

  def train_batches(self, data, process_index: int, process_count: int,
                    data_state: dict | None = None):
    c = self.config
    if isinstance(data, StreamCorpus):
      frame = _frame(data.tokenizer, self.arch)
      if isinstance(data.source, pair_stream.PairRecords):
        names = ["anchor", "positive"] + (
            ["negative"] if c.contrastive.negative_field else [])
        return pair_stream.PairBatches(
            data, names, global_batch_size=c.batch_size, seq_len=c.seq_len,
            seed=c.seed, process_index=process_index,
            process_count=process_count, **frame)
      return pair_stream.SentenceBatches(
          data, global_batch_size=c.batch_size, seq_len=c.seq_len,
          seed=c.seed, texts=c.contrastive.texts, process_index=process_index,
          process_count=process_count, data_state=data_state, **frame)
    # Packed batches are a pure function of the step: data_state unused.
    names = data.cols.names
    if not self.unsupervised:
      names = [n for n in ("anchor", "positive", "negative") if n in names]
    return pair_batches.ContrastiveBatches(
        data.cols, names, global_batch_size=c.batch_size, seed=c.seed,
        flatten=self.unsupervised, process_index=process_index,
        process_count=process_count, **data.row_args(c.seq_len))

  def _limit(self, batch_size: int, max_batches: int | None) -> int:
    limit = self.config.contrastive.eval_candidates
    return limit if max_batches is None else min(limit, max_batches * batch_size)

  def eval_batches(self, data, batch_size: int, max_batches: int | None):
    if data.cols is None:
      return iter(())
    return pair_batches.eval_batches(
        data.cols, ("anchor", "positive"), batch_size=batch_size,
        limit=self._limit(batch_size, max_batches),
        **data.row_args(self.config.seq_len))

  def evaluate(self, data, eval_fn, params, mesh, *, batch_size: int,
               max_batches: int | None) -> dict:
    """Retrieval among the held-out pairs, in-batch loss, and STS Spearman,
    as `eval_<metric>` (see the module docstring)."""
    out = {}
    if data.cols is not None:
      totals, a, p = _embed_pairs(
          eval_fn, params, mesh, self.eval_batches(data, batch_size,
                                                   max_batches))
      out.update({k: float(v) for k, v in self.summarize(totals).items()})
      out.update(retrieval.retrieval_metrics(a, p, ks=(1, 10)))
      out["candidates"] = float(len(a))
      out["pairs"] = float(totals["pairs"])
    if data.sts is not None:
      batches = pair_batches.eval_batches(
          data.sts, ("anchor", "positive"), batch_size=batch_size,
          limit=len(data.sts), **data.row_args(self.config.seq_len))
      _, a, b = _embed_pairs(eval_fn, params, mesh, batches)
      out["sts_spearman"] = retrieval.similarity_spearman(
          a, b, np.asarray(data.sts.scores)[:len(a)])
      out.setdefault("pairs", 0.0)
    return {f"eval_{k}": v for k, v in out.items()}

  def data_settings(self) -> dict:
    c = self.config
    out = {"batch_size": c.batch_size, "seq_len": c.seq_len, "seed": c.seed,
           "contrastive": {k: c.contrastive[k] for k in (
               "mode", "texts", "anchor_field", "positive_field",
               "negative_field")}}
    if streamed(c):   # recorded only when set: older runs keep matching
      out.update(pipeline="stream", piece_bytes=c.data.piece_bytes)
    return out

  def flops_per_token(self, model_cfg, n_params: int) -> float:
    """K · (6·N + attention) per token of a batch row, K = texts encoded
    per row (2, or 3 with hard negatives); N leaves out the lookup tables
    and any LM head the pooled embedding never reaches."""
    k = 3 if (not self.unsupervised and self.config.contrastive.negative_field) else 2
    return k * flops.encoder_flops_per_token(model_cfg, n_params,
                                                   self.config.seq_len)


def _frame(tokenizer, arch: str) -> dict:
  """The ids around each row's text: [CLS] ... [SEP] for BERT, bos ... eos
  otherwise, and the padding id."""
  if arch == "bert":
    return dict(first=tokenizer.cls_id, last=tokenizer.sep_id,
                pad=tokenizer.pad_id)
  return dict(first=tokenizer.bos_id, last=tokenizer.eos_id,
              pad=tokenizer.pad_id)


def _pair_columns(source, tokenizer, cache_dir):
  """Tokenized anchor / positive (/ negative) columns of a PairSource."""
  if source is None:
    return None
  texts = {"anchor": source.anchors, "positive": source.positives}
  if source.negatives is not None:
    texts["negative"] = source.negatives
  return pair_batches.cached_columns(
      ("pairs", source.fingerprint(), tokenizer.fingerprint(), sorted(texts),
       source.scores is not None),
      lambda: pair_batches.columns_from_texts(texts, tokenizer, source.scores),
      cache_dir, vocab_size=tokenizer.vocab_size)


def _sentences(source, texts: str, max_chars: int | None) -> list[str]:
  """Non-empty stripped lines (or whole documents) of `source`, up to
  `max_chars` characters read."""
  out, read = [], 0
  for doc in source:
    if max_chars is not None and read >= max_chars:
      break
    read += len(doc)
    parts = doc.splitlines() if texts == "lines" else [doc]
    out.extend(p.strip() for p in parts if p.strip())
  return out


def _embed_pairs(eval_fn, params, mesh, batches):
  """Sums of the loss terms and the stacked anchor / positive embeddings of
  the real rows of `batches` (`lm.training.step.eval_totals`)."""
  totals, kept = eval_totals(eval_fn, params, mesh, batches,
                             keep=("anchor_embedding", "positive_embedding"))
  if totals is None:
    raise LmError("the evaluation data yields no pairs; use a larger split.")
  return totals, kept["anchor_embedding"], kept["positive_embedding"]


def embed_texts(trained, texts, *, batch_size: int = 64) -> np.ndarray:
  """Unprojected embeddings `[len(texts), D]` float32 of a contrastive run.

  `trained` is `lm.experiments.load_trained(...)` of a contrastive
  workdir; rows are framed and cut to the run's `seq_len` as in training,
  without dropout, and scaled to unit length when `contrastive.normalize`
  (an imported sentence-transformers model with a `Normalize` module).
  Example: embed_texts(load_trained("runs/code_search"),
  ["sort a list"]).shape -> (1, 256).
  """
  config, tok, mesh = trained.config, trained.tokenizer, trained.mesh
  if not trained.objective.embeds:
    raise LmError(f"{trained.workdir} holds a {config.objective!r} run; "
                  "embeddings come from a run trained with objective "
                  f"{Contrastive.name!r} (or a Hugging Face encoder imported "
                  f"with launch.import_hf --objective {Contrastive.name}).")
  if batch_size < 1:
    raise LmError(f"batch size must be positive, got {batch_size}.")
  texts = list(texts)
  if not texts:
    return np.zeros((0, trained.model_cfg.d_model), np.float32)
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  batch_size = -(-batch_size // shards) * shards
  cols = pair_batches.columns_from_texts({"text": texts}, tok)
  frame = _frame(tok, trained.model_cfg.arch)
  model = trained.model

  def encode(params, tokens, mask):
    return model.apply({"params": params}, tokens, segment_ids=mask)["embedding"]

  fn = jit_forward(encode, trained.state_shardings.params, mesh,
                   trained.rules, n_batch_args=2)
  out = []
  for s in range(0, len(texts), batch_size):
    index = np.arange(s, s + batch_size)
    index = np.where(index < len(texts), index, -1)
    tokens, mask = pair_batches.rows(cols, "text", index,
                                     seq_len=config.seq_len, **frame)
    emb = np.asarray(jax.device_get(fn(trained.params, tokens, mask)))
    out.append(emb[index >= 0])
  emb = np.concatenate(out).astype(np.float32)
  if config.contrastive.get("normalize", False):    # sentence-transformers'
    emb /= np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)
  return emb
