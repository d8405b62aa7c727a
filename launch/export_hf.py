"""Export an `lm` run as a Hugging Face model directory.

  python -m launch.export_hf --workdir runs/gpt2_small --out_dir hf/my-gpt2
  python -m launch.export_hf --workdir runs/imdb --out_dir hf/imdb --best

Writes `config.json`, `model.safetensors` and the run's tokenizer files
(`tokenizer.json` and its special-token files; an lm SentencePiece
`tokenizer.model` also as a `tokenizer.json` + `tokenizer_config.json`
that `AutoTokenizer` loads to the same ids) for `transformers`'
`from_pretrained`, plus an imported model's `generation_config.json` and
chat template: causal runs as `GPT2LMHeadModel` or `LlamaForCausalLM` (by
the model's shape), masked-LM runs as `BertForPreTraining` (with NSP) or
`BertForMaskedLM`, contrastive BERT runs as `BertModel` (its pooler kept
when imported with one) with sentence-transformers' `modules.json`,
Pooling/Normalize modules, BERT classifiers (pooling 'pooler') as
`BertForSequenceClassification`, taggers as `BertForTokenClassification`,
QA runs as `BertForQuestionAnswering`, and seq2seq and span-corruption
runs as `T5ForConditionalGeneration` or, BART-shaped (an imported BART),
`BartForConditionalGeneration` (their `decoder_start_token_id` the
model's decoder start id, else the tokenizer's pad id; an lm tokenizer's
`tokenizer.json` appends EOS, as T5's).
"""

from __future__ import annotations

import sys

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of an lm run.")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "The new Hugging Face "
                                "directory (a local path or a gs:// URI).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_BEST = flags.DEFINE_bool("best", False, "Export the best checkpoint by the "
                          "run's eval metric.")


def main(argv):
  del argv
  for flag, what in ((_WORKDIR, "the directory of an lm run"),
                     (_OUT_DIR, "the directory to write")):
    if not flag.value:
      common.fail(f"--{flag.name} is required: {what}.")
  common.quiet_logs()
  with common.user_errors():
    from lm.interop.workdir import export_hf
    written = export_hf(_WORKDIR.value, _OUT_DIR.value, step=_STEP.value,
                        best=_BEST.value,
                        say=lambda m: print(m, file=sys.stderr, flush=True))
  print(f"wrote {', '.join(written)}", flush=True)


if __name__ == "__main__":
  common.run(main)
