"""A small BERT (masked LM + next-sentence prediction) on the Python standard
library's source, on a CPU.

  python -m launch.train --config configs/bert_quickstart.py --workdir runs/bert_quickstart
  python -m launch.evaluate --workdir runs/bert_quickstart

Needs no download: each `pystdlib` file is a document and each source line a
segment, so NSP asks whether segment B is the code that follows segment A.
Finishes in minutes on a 2-core CPU; the eval lines report MLM accuracy on
held-out files. `--config configs/bert_quickstart.py:runlocal` is the tiny
variant the tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.objective = "mlm"
  c.model.size = "bert_mini"
  c.model.dropout = 0.0
  c.model.attention_dropout = 0.0
  c.seq_len = 128
  c.batch_size = 32
  c.steps = 600
  c.log_every = 20
  c.eval_every = 300
  c.eval_steps = 10
  c.checkpoint_every = 300
  c.data.train = "pystdlib:train"
  c.data.eval = "pystdlib:validation"
  c.data.max_chars = 8_000_000
  c.data.tokenizer.vocab_size = 2048
  c.data.tokenizer.max_chars = 8_000_000
  c.mlm.documents = "source"
  c.mlm.segments = "lines"
  common.adamw_linear(c, lr=1e-3, warmup_steps=60)
  if args["runlocal"]:
    common.runlocal_quickstart(c, "bert_tiny")
  return c
