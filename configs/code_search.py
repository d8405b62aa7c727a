"""Code search: docstring <-> function embeddings on the Python standard
library, trained contrastively on a CPU.

  python -m launch.train --config configs/code_search.py --workdir runs/code_search
  python -m launch.evaluate --workdir runs/code_search
  python -m launch.encode --workdir runs/code_search --input queries.txt --output q.npy

Needs no download: `pystdlib` pairs each documented function's docstring
(the anchor) with its source without the docstring (the positive). Held-out
pairs come from the held-out files (`pystdlib:validation`); the eval lines
report recall@1/@10 and MRR of each docstring's function among all of them.
`benchmarks/code_search.py` prints the same metrics next to a TF-IDF
baseline. `--config configs/code_search.py:runlocal` is the tiny variant the
tests use.
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
  c.steps = 200
  c.log_every = 20
  c.eval_every = 100
  c.eval_steps = 0
  c.checkpoint_every = 100
  c.data.train = "pystdlib:train"
  c.data.eval = "pystdlib:validation"
  c.data.tokenizer.vocab_size = 2048
  c.data.tokenizer.max_chars = 8_000_000
  c.contrastive.mode = "supervised"
  c.contrastive.pooling = "mean"
  c.contrastive.projection = False
  c.contrastive.temperature = 0.05
  c.contrastive.symmetric = True
  c.contrastive.eval_candidates = 1000
  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 40
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
