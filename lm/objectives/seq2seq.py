"""Sequence-to-sequence fine-tuning: translation, summarization, any text to
text, for `arch="encoder_decoder"`.

Each record gives an input text and a target text (`seq2seq.input_field`
and `seq2seq.target_field` of a `jsonl:`, `csv:`, `tsv:`, `tfds:` or `hf:`
source, e.g. `tfds:wmt14_translate/de-en:train` with fields `de` / `en`, or
`tfds:cnn_dailymail:train` with `article` / `highlights`). One example per
row: the input's ids (cut to `seq_len - 1`) then EOS in the encoder, the
target's (cut to `seq2seq.target_len - 1`) then EOS as the decoder's
teacher-forced targets (both after BOS when the model's Hugging Face
tokenizer adds one, as BART's `<s> x </s>`: `seq2seq_gen.text_bos`),
shifted right after the decoder's start id (`model.decoder_start_id`:
BART's EOS; unset, the pad id, as T5) as its inputs; decoding starts from
the same id.

Every evaluation reports the teacher-forced loss and token accuracy over
the eval split, and generation metrics on its first
`seq2seq.generate_examples` examples, decoded greedily (or by beam search,
`seq2seq.beam_size`) up to `target_len` tokens: BLEU (sacrebleu's corpus
BLEU, 13a tokenization) and ROUGE-1/2/L F-measures (rouge-score, with
stemming), both on a 0-100 scale. `seq2seq.metric` (`bleu` for
translation, `rougeL` for summarization) picks the best checkpoint.

Warm start (`config.init_from`) from a span-corruption or seq2seq run, or an
imported T5 or BART; a decoder-only or encoder-only run is refused.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from lm.data import packing, pipeline, records
from lm.errors import LmError
from lm.generation import seq2seq as seq2seq_gen
from lm.models import flops
from lm.objectives import build_backbone
from lm.objectives.losses import token_loss, token_metrics
from lm.training.loop import resolve_model_config
from lm.training.objective import Objective
from lm.training.step import eval_totals

METRICS = ("bleu", "rouge1", "rouge2", "rougeL", "accuracy")
TRAIN_KEYS = ("inputs", "input_segment_ids", "decoder_inputs", "targets",
              "decoder_segment_ids", "loss_mask")


def config_section() -> ml_collections.ConfigDict:
  """The `seq2seq` section of the experiment config."""
  s = ml_collections.ConfigDict()
  s.input_field = "input"      # the data's source-text field
  s.target_field = "target"    # the data's target-text field
  s.target_len = 64            # decoder tokens per example (with EOS)
  s.metric = "bleu"            # best checkpoint: bleu | rouge1 | rouge2 |
                               # rougeL | accuracy
  s.generate_examples = 64     # eval examples decoded for BLEU / ROUGE
  s.beam_size = 1              # 1: greedy
  s.no_repeat_ngram = 0        # n > 0: outputs never repeat an n-gram
                               # (greedy and beam; 3 is common for summaries)
  return s


def seq2seq_rows(input_ids, target_ids, *, seq_len: int, target_len: int,
                 eos_id: int, pad_id: int, start_id: int | None = None,
                 bos_id: int | None = None) -> dict[str, np.ndarray]:
  """Fixed-shape rows of tokenized examples (see the module docstring);
  the decoder inputs start with `start_id` (None: `pad_id`), inputs and
  targets with `bos_id` when given.

  >>> r = seq2seq_rows([[5, 6, 7]], [[8, 9]], seq_len=4, target_len=3,
  ...                  eos_id=1, pad_id=0)
  >>> r["inputs"].tolist(), r["decoder_inputs"].tolist(), r["targets"].tolist()
  ([[5, 6, 7, 1]], [[0, 8, 9]], [[8, 9, 1]])
  """
  n = len(input_ids)
  out = {"inputs": np.full((n, seq_len), pad_id, np.int32),
         "input_segment_ids": np.zeros((n, seq_len), np.int32),
         "decoder_inputs": np.full((n, target_len), pad_id, np.int32),
         "targets": np.full((n, target_len), pad_id, np.int32),
         "decoder_segment_ids": np.zeros((n, target_len), np.int32),
         "loss_mask": np.zeros((n, target_len), np.float32)}
  head = [] if bos_id is None else [bos_id]
  for i, (x, y) in enumerate(zip(input_ids, target_ids)):
    x = head + list(x[:seq_len - 1 - len(head)]) + [eos_id]
    y = head + list(y[:target_len - 1 - len(head)]) + [eos_id]
    out["inputs"][i, :len(x)] = x
    out["input_segment_ids"][i, :len(x)] = 1
    out["targets"][i, :len(y)] = y
    out["decoder_inputs"][i, 1:len(y)] = y[:-1]
    if start_id is not None:
      out["decoder_inputs"][i, 0] = start_id
    out["decoder_segment_ids"][i, :len(y)] = 1
    out["loss_mask"][i, :len(y)] = 1.0
  return out


def text_scores(hypotheses: list[str], references: list[str]) -> dict:
  """Corpus BLEU and mean ROUGE-1/2/L F-measures, 0-100.

  >>> text_scores(["the cat sat"], ["the cat sat"])["rougeL"]
  100.0
  """
  import sacrebleu  # pylint: disable=g-import-not-at-top
  from rouge_score import rouge_scorer  # pylint: disable=g-import-not-at-top
  out = {"bleu": float(sacrebleu.corpus_bleu(hypotheses, [references]).score)}
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"],
                                    use_stemmer=True)
  totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
  for hyp, ref in zip(hypotheses, references):
    for key, score in scorer.score(ref, hyp).items():
      totals[key] += score.fmeasure
  for key, total in totals.items():
    out[key] = 100.0 * total / max(len(hypotheses), 1)
  return out


def seq2seq_loss(params, batch, rng, model, *, deterministic: bool = False):
  """Objective contract: teacher-forced cross-entropy over the targets
  (evaluation rows of weight 0, the filler of the last batch, count none)."""
  logits, _ = model.apply(
      {"params": params}, batch["inputs"], batch["decoder_inputs"],
      input_segment_ids=batch["input_segment_ids"],
      decoder_segment_ids=batch["decoder_segment_ids"],
      deterministic=deterministic,
      rngs=None if deterministic else {"dropout": rng})
  mask = batch["loss_mask"]
  if "weights" in batch:
    mask = mask * batch["weights"][:, None]
  return token_loss(logits, batch["targets"], mask)


class Seq2SeqData:
  """Cached rows of one split, its records and the tokenizer."""

  def __init__(self, arrays, source, tokenizer):
    self.arrays, self.source, self.tokenizer = arrays, source, tokenizer

  @property
  def tokens(self) -> np.ndarray:
    return self.arrays["inputs"]

  def __len__(self) -> int:
    return len(self.arrays["inputs"])


class Seq2Seq(Objective):
  """Text-to-text fine-tuning of an encoder-decoder."""

  name = "seq2seq"
  head = "seq2seq"
  config_sections = {"seq2seq": config_section}
  backbone_path = ()
  summarize = staticmethod(token_metrics)

  def __init__(self, config):
    self.config = config
    self.loss = seq2seq_loss
    s = config.seq2seq
    if s.metric not in METRICS:
      raise LmError(f"config.seq2seq.metric={s.metric!r} is not one of "
                    f"{', '.join(METRICS)}; use bleu for translation, rougeL "
                    "for summarization.")
    for key in ("target_len", "beam_size"):
      if not (isinstance(s[key], int) and s[key] > 0):
        raise LmError(f"config.seq2seq.{key}={s[key]!r} must be a positive "
                      "integer.")
    n = s.get("no_repeat_ngram", 0)     # runs stored before it existed: 0
    if not (isinstance(n, int) and n >= 0):
      raise LmError(f"config.seq2seq.no_repeat_ngram={n!r} "
                    "must be 0 (off) or an n-gram length such as 3.")
    if not (isinstance(s.generate_examples, int) and s.generate_examples >= 0):
      raise LmError("config.seq2seq.generate_examples="
                    f"{s.generate_examples!r} must be 0 (no BLEU/ROUGE) or a "
                    "count.")
    if s.metric != "accuracy" and not s.generate_examples:
      raise LmError(f"config.seq2seq.metric={s.metric!r} is scored on "
                    "generated text, but config.seq2seq.generate_examples is "
                    "0; decode some examples or pick metric 'accuracy'.")
    if config.data.get("pipeline", "packed") == "stream":
      raise LmError("config.objective='seq2seq' reads its examples into "
                    "memory; leave config.data.pipeline at 'packed'.")
    self.best_metric = (f"eval_{s.metric}", "max")
    self._eval = None      # (model, Seq2SeqDecoder), built at first eval

  def set_source(self, source) -> None:
    if source.head not in ("seq2seq", "denoising"):
      raise LmError(
          f"config.init_from={self.config.init_from} is a {source.name!r} "
          "run, whose model is not an encoder-decoder; start seq2seq from a "
          "span_corruption or seq2seq run, or an imported T5 or BART.")

  def check_model(self, model_cfg) -> None:
    if model_cfg.arch != "encoder_decoder":
      raise LmError(
          "config.objective='seq2seq' needs an encoder-decoder, but model "
          f"size {self.config.model.size!r} is a {model_cfg.arch} model; pick "
          "'t5_tiny', 't5_small' or 't5_base' (or init_from a T5 run).")

  def build_model(self, model_cfg):
    return build_backbone(model_cfg)

  def fields(self) -> dict:
    s = self.config.seq2seq
    return {"input": (s.input_field, "text"), "target": (s.target_field, "text")}

  def open_source(self, uri: str, *, train: bool):
    del train
    if not uri:
      return None
    return records.open_records(uri, self.fields(),
                                data_dir=self.config.data.data_dir or None)

  def open_data(self, source, tokenizer, cache_dir, max_chars):
    del max_chars
    c = self.config
    start = resolve_model_config(c, tokenizer.vocab_size).decoder_start_id
    bos = seq2seq_gen.text_bos(tokenizer)

    def build():
      return seq2seq_rows(
          tokenizer.encode_batch(source.columns["input"]),
          tokenizer.encode_batch(source.columns["target"]),
          seq_len=c.seq_len, target_len=c.seq2seq.target_len,
          eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id, start_id=start,
          bos_id=bos)

    key = (self.name, source.fingerprint(), tokenizer.fingerprint(),
           c.seq_len, c.seq2seq.target_len, sorted(self.fields().items()))
    for name, value in (("decoder_start_id", start), ("bos", bos)):
      if value is not None:     # rows framed otherwise than T5's
        key += ((name, value),)
    arrays = packing.cached_arrays(key, build, cache_dir, self.name)
    if len(arrays["inputs"]) == 0:
      raise LmError(f"{source.uri} gives no examples; check "
                    "config.seq2seq.input_field and target_field.")
    return Seq2SeqData(arrays, source, tokenizer)

  def data_record(self, data) -> tuple[dict, str]:
    n = len(data)
    return {"train_examples": n}, f"{n:,} examples"

  def train_batches(self, data, process_index: int, process_count: int,
                    data_state: dict | None = None):
    del data_state            # a pure function of the step
    c = self.config
    return pipeline.RowBatches(
        {k: data.arrays[k] for k in TRAIN_KEYS}, global_batch_size=c.batch_size,
        seed=c.seed, process_index=process_index, process_count=process_count)

  def eval_batches(self, data, batch_size: int, max_batches: int | None):
    limit = None if max_batches is None else max_batches * batch_size
    return pipeline.row_eval_batches(
        {k: data.arrays[k] for k in TRAIN_KEYS}, batch_size=batch_size,
        limit=limit)

  def data_settings(self) -> dict:
    c = self.config
    return {"batch_size": c.batch_size, "seq_len": c.seq_len, "seed": c.seed,
            "seq2seq": c.seq2seq.to_dict()}

  def flops_per_token(self, model_cfg, n_params: int) -> float:
    return flops.encoder_decoder_flops_per_token(model_cfg, n_params,
                                                 self.config.seq_len)

  # --- generation -------------------------------------------------------------

  transduces = True

  def generate(self, params, tokenizer, texts: list[str]) -> list[str]:
    """Output text for each input text (greedy, or beam search with
    `seq2seq.beam_size`), at most `target_len` tokens; the model and its
    jitted decoder are built once and kept for later evaluations."""
    c = self.config
    if self._eval is None:
      model = self.build_model(
          resolve_model_config(c, tokenizer.vocab_size))
      self._eval = model, seq2seq_gen.Seq2SeqDecoder(
          model, no_repeat_ngram=c.seq2seq.get("no_repeat_ngram", 0))
    model, decoder = self._eval
    return seq2seq_gen.generate_texts(
        model, params, texts, encode=tokenizer.encode, decode=tokenizer.decode,
        max_input=c.seq_len, max_new_tokens=c.seq2seq.target_len,
        start_id=model.config.decoder_start(tokenizer.pad_id),
        eos_id=tokenizer.eos_id, bos_id=seq2seq_gen.text_bos(tokenizer),
        beam_size=c.seq2seq.beam_size, decoder=decoder,
        no_repeat_ngram=c.seq2seq.get("no_repeat_ngram", 0))

  def transduce(self, trained, texts, *, max_new_tokens, temperature=0.0,
                top_k=0, top_p=1.0, beam_size=0, seed=0, batch_size=16,
                no_repeat_ngram=None, length_penalty=0.6):
    """Output text per input text; `no_repeat_ngram` None: the run's
    `seq2seq.no_repeat_ngram`."""
    tok = trained.tokenizer
    if no_repeat_ngram is None:
      no_repeat_ngram = self.config.seq2seq.get("no_repeat_ngram", 0)
    return seq2seq_gen.generate_texts(
        trained.model, trained.params, texts, encode=tok.encode,
        decode=tok.decode, max_input=self.config.seq_len,
        max_new_tokens=max_new_tokens,
        start_id=trained.model_cfg.decoder_start(tok.pad_id),
        eos_id=tok.eos_id, bos_id=seq2seq_gen.text_bos(tok),
        beam_size=beam_size, temperature=temperature,
        top_k=top_k, top_p=top_p, seed=seed, batch_size=batch_size,
        no_repeat_ngram=no_repeat_ngram, length_penalty=length_penalty)

  # --- prediction inputs (launch.predict; lm.tasks.predict) ----------------

  predicts = True
  second_text_flag = "--text_b"

  def input_fields(self) -> dict:
    """The input text's field (a JSONL `--input` may also hold targets)."""
    return {"input": self.fields()["input"]}

  def inputs_from_lines(self, path: str, lines: list[str]) -> records.Records:
    """Records of a plain text `--input` file: one input text per line."""
    return records.Records(path, {"input": lines})

  def inputs_from_texts(self, texts: list[str],
                        seconds: list[str]) -> records.Records:
    if seconds:
      raise LmError("a seq2seq run maps one input text to one output; drop "
                    "--text_b and --context.")
    return records.Records("--text", {"input": texts})

  def predict_texts(self, trained, texts: list[str], *,
                    batch_size: int) -> list[dict]:
    """{"output": text} per input text, decoded as the run's evaluation
    decodes (greedy or `seq2seq.beam_size`, `seq2seq.no_repeat_ngram`, at
    most `target_len` tokens)."""
    s = self.config.seq2seq
    outputs = self.transduce(trained, texts, max_new_tokens=s.target_len,
                             beam_size=s.beam_size, batch_size=batch_size)
    return [{"output": o} for o in outputs]

  def evaluate(self, data, eval_fn, params, mesh, *, batch_size: int,
               max_batches: int | None) -> dict:
    """Teacher-forced loss and accuracy over the eval rows, BLEU and ROUGE
    of generations on the first `generate_examples`, as `eval_*`."""
    totals, _ = eval_totals(eval_fn, params, mesh,
                            self.eval_batches(data, batch_size, max_batches))
    if totals is None:
      raise LmError("the evaluation data yields no rows; use a larger split.")
    out = {f"eval_{k}": float(v) for k, v in token_metrics(totals).items()}
    n = min(self.config.seq2seq.generate_examples, len(data))
    if n:
      hyps = self.generate(params, data.tokenizer,
                           list(data.source.columns["input"][:n]))
      refs = list(data.source.columns["target"][:n])
      out.update({f"eval_{k}": v for k, v in text_scores(hyps, refs).items()})
    return out
