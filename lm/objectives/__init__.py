"""Pretraining objectives, chosen by `config.objective`.

An objective is the one place that knows what a batch holds and what the loss
is; the loop (`lm.training.loop`) and the steps (`lm.training.step`) only
call it, and are handed it: `lm.experiments.make_objective(config)` (the one
registry of names) returns one of:

  "causal"  `CausalLM` (lm.objectives.causal): next-token prediction on packed
            documents, for the decoder and LSTM architectures.
  "mlm"     `MaskedLM` (lm.objectives.mlm): masked LM plus next-sentence
            prediction on `[CLS] A [SEP] B [SEP]` pairs, for BERT encoders.
  "contrastive"  `Contrastive` (lm.objectives.contrastive): SimCSE / InfoNCE
            sentence embeddings with global in-batch negatives, on any
            backbone.
  "classification", "tagging", "qa"  the fine-tuning tasks of `lm.tasks`,
            on the same contract.

Each subclasses the typed contract `lm.training.objective.Objective`, whose
docstrings say what the engine calls and what it guarantees; this package
holds what the pretraining objectives share (`open_documents`,
`build_backbone`).
"""

from __future__ import annotations

from lm.data import array_records, indexed, prepared, sources, streaming
from lm.errors import LmError
from lm.models import build_model


def open_documents(config, uri: str, *, token_ids: bool = False):
  """`lm.data.sources.open_source` of `uri` with the config's field and
  TFDS data_dir (offset-indexed `text:`/`jsonl:` files in stream mode);
  None for an empty URI. A pre-tokenized `prepared:` corpus
  (`lm.data.prepared`) only where the objective reads token ids
  (`token_ids`) and in stream mode."""
  if not uri:
    return None
  if uri.partition(":")[0] == prepared.SCHEME:
    if not token_ids:
      raise LmError(f"Data URI {uri!r} is a pre-tokenized corpus, which only "
                    "causal training reads; objective "
                    f"{config.objective!r} needs the text: point data.train "
                    "at the source the corpus was prepared from.")
    if not streamed(config):
      raise LmError(f"Data URI {uri!r} is a pre-tokenized corpus, read by "
                    "the streaming pipeline; add "
                    "--config.data.pipeline=stream.")
    return prepared.open_prepared(uri)
  scheme, _, rest = uri.partition(":")
  if scheme == array_records.SCHEME:
    return array_records.open_array_records(uri, rest, config.data.field)
  if (config.data.get("pipeline", "packed") == "stream"
      and uri.partition(":")[0] in indexed.SCHEMES):
    return indexed.open_indexed(uri, field=config.data.field,
                                piece_bytes=config.data.piece_bytes)
  return sources.open_source(uri, field=config.data.field,
                             data_dir=config.data.data_dir or None)


def streamed(config) -> bool:
  """Whether the config asks for the streaming pipeline (`data.pipeline`)."""
  return config.data.get("pipeline", "packed") == "stream"


def stream_corpus(config, source, tokenizer, cache_dir):
  """`lm.data.streaming.StreamCorpus` of `source` with the config's workers
  and threads (the offset index of a text:/jsonl: source is cached in
  `cache_dir`)."""
  return streaming.StreamCorpus(source, tokenizer, cache_dir=cache_dir,
                                workers=config.data.workers,
                                threads=config.data.threads)


def build_backbone(model_cfg):
  """The bare model of `model_cfg` (what causal and masked LM train)."""
  return build_model(model_cfg)


class TokenizedCorpus:
  """A tokenized stream (`.stream`, its `.tokens`) with the tokenizer whose
  special ids the objective's batches use (masked LM, span corruption)."""

  def __init__(self, stream, tokenizer):
    self.stream = stream
    self.tokenizer = tokenizer

  @property
  def tokens(self):
    return self.stream.tokens
