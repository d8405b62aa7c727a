"""Fine-tune an encoder-decoder for translation (WMT14 German -> English).

  python -m launch.train --config configs/finetune_translate.py:runs/t5_quickstart \\
      --workdir runs/translate

The argument is a span-corruption workdir (`configs/t5_quickstart.py`) or
an imported T5 (`launch.import_hf`): its model, weights and tokenizer start
the run. Data: TFDS `wmt14_translate/de-en` (fields `de` -> `en`), or
`data=DIR` with `train.jsonl` and `dev.jsonl` records {"de": ..., "en":
...}. BLEU on 64 decoded validation sentences picks the best checkpoint.
Without an argument, `t5_mini` from scratch. `:runlocal` is the tiny variant
the tests use (with `data=DIR`, or TFDS's mock data).
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "init_from", init_from="", data="",
                          runlocal=False)
  c = common.base_config()
  c.seq_len = 128
  c.batch_size = 32
  c.steps = 20000
  common.seq2seq_fine_tune(
      c, args, train="tfds:wmt14_translate/de-en:train",
      eval_="tfds:wmt14_translate/de-en:validation", input_field="de",
      target_field="en", data_ext="jsonl", metric="bleu", target_len=128)
  return c
