"""Fine-tune an encoder-decoder for summarization (CNN / DailyMail).

  python -m launch.train --config configs/finetune_summarize.py:runs/t5_quickstart \\
      --workdir runs/summarize

The argument is a span-corruption workdir (`configs/t5_quickstart.py`) or
an imported T5 (`launch.import_hf`). Data: TFDS `cnn_dailymail` (fields
`article` -> `highlights`, inputs cut to 512 tokens), or `data=DIR` with
`train.jsonl` and `dev.jsonl` records {"article": ..., "highlights": ...}.
ROUGE-L on 64 decoded validation articles picks the best checkpoint.
Without an argument, `t5_mini` from scratch. `:runlocal` is the tiny variant
the tests use (with `data=DIR`, or TFDS's mock data).
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "init_from", init_from="", data="",
                          runlocal=False)
  c = common.base_config()
  c.seq_len = 512
  c.batch_size = 16
  c.steps = 20000
  common.seq2seq_fine_tune(
      c, args, train="tfds:cnn_dailymail:train",
      eval_="tfds:cnn_dailymail:validation", input_field="article",
      target_field="highlights", data_ext="jsonl", metric="rougeL",
      target_len=128)
  return c
