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

Each has the same methods:

  loss(params, batch, rng, model, *, deterministic) -> (loss, aux)
      The pure objective function; `aux` holds float32 sums over the batch:
      `loss_sum` (differentiated), `tokens` (its normaliser) and more.
  summarize(sums) -> dict
      Metrics (`loss`, `accuracy`, ...) from sums of `aux`, added over
      batches and hosts; works inside `jit` and on host numbers.
  check_model(model_cfg)
      LmError when the architecture cannot serve this objective.
  build_model(model_cfg) -> module
      The Flax module trained (`lm.models.build_model`, or a wrapper).
  backbone_path
      Where the pretrained backbone sits in the parameter tree (() = the
      whole tree), for `config.init_from` (`lm.training.warm_start`).
  open_source(uri, *, train) -> source
      The data named by `uri` (`lm.data.sources`, or pairs), None for "".
  open_data(source, tokenizer, cache_dir, max_chars) -> data
      The tokenized, disk-cached form of a corpus this objective reads; it
      has `.tokens`, the flat token ids.
  train_batches(data, process_index, process_count) -> batches
      `.batch(step)` (this process's rows, a pure function of the step),
      `.epoch(step)` and `.state(step)`, as `lm.data.pipeline.TrainBatches`.
  eval_batches(data, batch_size, max_batches) -> iterator of batches
      A fixed evaluation set, identical on every call.
  data_settings() -> dict
      The settings that decide which batches a step sees (a resumed run must
      match them).
  flops_per_token(model_cfg, n_params) -> float
      Training FLOPs per input token, for MFU.
  bert_specials
      Whether the tokenizer must reserve [CLS], [SEP] and [MASK].
  evaluate(data, eval_fn, params, mesh, *, batch_size, max_batches) -> dict
      Optional: metrics that are not sums over batches (retrieval); without
      it `lm.training.loop.evaluate_data` sums `eval_fn` over the batches.
  best_metric
      Optional: `(eval metric, "min" | "max")` that picks the checkpoint
      kept as best; `("eval_loss", "min")` without it.
  count_key
      Optional: the key of `aux` that counts what a batch scores, and the
      name of that count in the train and eval metrics: "tokens" without
      it, "examples" for classification, "windows" for QA rows.
"""

from __future__ import annotations


def open_documents(config, uri: str):
  """`lm.data.sources.open_source` of `uri` with the config's field and
  TFDS data_dir; None for an empty URI."""
  if not uri:
    return None
  from lm.data import sources  # pylint: disable=g-import-not-at-top
  return sources.open_source(uri, field=config.data.field,
                             data_dir=config.data.data_dir or None)


def build_backbone(model_cfg):
  """The bare model of `model_cfg` (what causal and masked LM train)."""
  from lm.models import build_model  # pylint: disable=g-import-not-at-top
  return build_model(model_cfg)
