"""A small GPT trained on the Python standard library's source, on a CPU.

  python -m launch.train --config configs/quickstart.py --workdir runs/quickstart

Needs no download: the corpus is the running Python's own standard library
(`pystdlib`). Finishes in a few minutes on a 2-core CPU and ends by printing a
generated code sample. `--config configs/quickstart.py:runlocal` is the tiny
variant the tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.model.size = "quickstart"
  c.seq_len = 128
  c.batch_size = 16
  c.steps = 500
  c.log_every = 20
  c.eval_every = 250
  c.eval_steps = 10
  c.checkpoint_every = 250
  c.data.train = "pystdlib:train"
  c.data.eval = "pystdlib:validation"
  c.data.max_chars = 8_000_000
  c.data.tokenizer.vocab_size = 2048
  c.data.tokenizer.max_chars = 8_000_000
  c.optimizer.lr = 2e-3
  c.optimizer.warmup_steps = 50
  c.optimizer.min_lr_ratio = 0.1
  c.sample.prompt = "def "
  c.sample.max_new_tokens = 96
  c.sample.temperature = 0.7
  c.sample.top_k = 40
  if args["runlocal"]:
    common.runlocal_quickstart(c, "tiny")
    c.sample.temperature = 0.0
    c.sample.max_new_tokens = 8
  return c
