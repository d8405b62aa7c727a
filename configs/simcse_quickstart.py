"""Unsupervised SimCSE on a CPU in minutes: sentence embeddings from dropout
noise alone.

  python -m launch.train --config configs/simcse_quickstart.py --workdir runs/simcse
  python -m launch.evaluate --workdir runs/simcse
  # from a masked-LM run's weights and tokenizer instead of from scratch:
  python -m launch.train --config configs/simcse_quickstart.py \\
      --workdir runs/simcse_mlm --config.init_from=runs/bert_quickstart

Each docstring and each function body of the standard library (`pystdlib`)
is one sentence; a sentence encoded twice with different dropout masks is its
own positive and the rest of the batch are negatives (no pairs are used for
training). The eval lines report how well the embeddings retrieve a held-out
function from its docstring. `:runlocal` is the tiny variant the tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, runlocal=False)
  c = common.base_config()
  c.objective = "contrastive"
  c.model.size = "bert_mini"
  c.model.dropout = 0.1
  c.model.attention_dropout = 0.1
  c.seq_len = 64
  c.batch_size = 64
  c.steps = 300
  c.log_every = 20
  c.eval_every = 150
  c.eval_steps = 0
  c.checkpoint_every = 150
  c.data.train = "pystdlib:train"
  c.data.eval = "pystdlib:validation"
  c.data.tokenizer.vocab_size = 2048
  c.data.tokenizer.max_chars = 8_000_000
  c.contrastive.mode = "unsupervised"
  c.contrastive.pooling = "cls"
  c.contrastive.projection = True
  c.contrastive.temperature = 0.05
  c.optimizer.lr = 5e-4
  c.optimizer.warmup_steps = 30
  c.optimizer.schedule = "linear"
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.01
  if args["runlocal"]:
    c.model.size = "bert_tiny"
    c.seq_len = 32
    c.batch_size = 8
    c.steps = 6
    c.log_every = 2
    c.eval_every = 3
    c.checkpoint_every = 3
    c.contrastive.eval_candidates = 32
    c.data.tokenizer.vocab_size = 512
    c.data.tokenizer.max_chars = 300_000
    c.progress_bar = False
  return c
