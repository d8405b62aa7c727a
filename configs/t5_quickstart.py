"""A small T5 pretrained by span corruption on the Python standard library.

  python -m launch.train --config configs/t5_quickstart.py --workdir runs/t5_quickstart

T5's objective (15% of tokens dropped in spans of mean length 3, each span
replaced by a sentinel the tokenizer reserves; the decoder writes the
spans) on `pystdlib`, which needs no download. About five CPU minutes
for `t5_mini` (4 + 4 blocks of 256). `--config configs/t5_quickstart.py:runlocal`
is the tiny variant the tests use; its run warm-starts the seq2seq
fine-tuning configs (`init_from`).
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.objective = "span_corruption"
  c.model.size = "t5_mini"
  c.seq_len = 128
  c.batch_size = 16
  c.steps = 600
  c.log_every = 50
  c.eval_every = 300
  c.eval_steps = 10
  c.checkpoint_every = 300
  c.data.train = "pystdlib:train"
  c.data.eval = "pystdlib:validation"
  c.data.max_chars = 8_000_000
  c.data.tokenizer.vocab_size = 2048
  c.data.tokenizer.max_chars = 8_000_000
  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 60
  c.optimizer.min_lr_ratio = 0.1
  if args["runlocal"]:
    common.runlocal_quickstart(c, "t5_tiny")
    c.model.num_layers = 2
    c.seq_len = 32
    c.span_corruption.sentinels = 16
  return c
