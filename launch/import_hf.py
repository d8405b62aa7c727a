"""Import a Hugging Face model directory (local or gs://) as an `lm` run.

  python -m launch.import_hf --hf_dir hf/bert-base-uncased --workdir runs/bert-base-uncased
  python -m launch.import_hf --hf_dir hf/gpt2 --workdir runs/gpt2
  python -m launch.import_hf --hf_dir hf/all-MiniLM-L6-v2 --workdir runs/minilm \\
      --objective contrastive        # a sentence encoder for launch.encode
  python -m launch.import_hf --hf_dir hf/flan-t5-small --workdir runs/flan-t5-small
  python -m launch.import_hf --hf_dir hf/bart-base --workdir runs/bart-base

Reads `config.json` and `model.safetensors` (or sharded safetensors; a
pickled `pytorch_model.bin` is refused) of a GPT-2, Llama, BERT
(`BertModel`, `BertForMaskedLM`, `BertForPreTraining`,
`BertForSequenceClassification`, `BertForTokenClassification`,
`BertForQuestionAnswering`), T5 model (`T5ForConditionalGeneration`:
T5 v1.0, v1.1, Flan-T5) or BART model (`BartForConditionalGeneration`,
`BartModel`; its decoder starts from its `decoder_start_token_id`) and
writes a workdir with the resolved config, the model's own tokenizer and
a step-0 checkpoint, which launch.sample, launch.evaluate, launch.encode,
launch.predict and `config.init_from` (the fine-tuning configs) accept.
The tokenizer is the directory's tokenizer.json, else its SentencePiece
tokenizer.model or spiece.model; a T5's SentencePiece model becomes a
tokenizer.json with T5's sentinels `<extra_id_i>` and ids (the classic T5
layout ships only spiece.model).
"""

from __future__ import annotations

from absl import flags

from launch import common

_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory (a local path or a gs:// URI).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The new lm workdir to write.")
_OBJECTIVE = flags.DEFINE_string(
    "objective", None, "The run's objective (default: the checkpoint's: causal, "
    "mlm, classification, tagging, qa or seq2seq; contrastive for a sentence-"
    "transformers directory); 'contrastive' makes a BERT a sentence encoder, "
    "'span_corruption' continues a T5's pretraining.")
_POOLING = flags.DEFINE_string(
    "pooling", None, "--objective=contrastive: cls, mean or last (default: the "
    "sentence-transformers pooling when the directory has one, else cls for "
    "BERT and last for decoders).")
_SEQ_LEN = flags.DEFINE_integer("seq_len", None, "The run's seq_len (default: "
                                "the positions the model has, at most 512 "
                                "for BERT and 1024 otherwise).")
_TOKENIZER = flags.DEFINE_string("tokenizer", None, "A tokenizer.json or "
                                 ".model to use instead of the directory's "
                                 "(tokenizer.json, tokenizer.model or "
                                 "spiece.model).")


def main(argv):
  del argv
  for flag, what in ((_HF_DIR, "a Hugging Face model directory"),
                     (_WORKDIR, "the lm workdir to write")):
    if not flag.value:
      common.fail(f"--{flag.name} is required: {what}.")
  common.quiet_logs()
  with common.user_errors():
    from lm.interop.workdir import import_hf
    r = import_hf(_HF_DIR.value, _WORKDIR.value, objective=_OBJECTIVE.value,
                  pooling=_POOLING.value, seq_len=_SEQ_LEN.value,
                  tokenizer=_TOKENIZER.value)
  from lm.models.config import describe, size_name
  print(f"imported {r.model.architecture} (model size "
        f"{size_name(r.model.config)}: {describe(r.model.config)}, vocab "
        f"{r.model.config.vocab_size}; "
        f"{r.n_params:,} parameters) as a {r.objective!r} run in "
        f"{r.workdir}; tokenizer {r.tokenizer.path} ({r.tokenizer.kind})",
        flush=True)
  if r.initialised:
    print(f"note: the checkpoint has no {', '.join(r.initialised)}; "
          "initialised at random (train or fine-tune before relying on them)",
          flush=True)


if __name__ == "__main__":
  common.run(main)
