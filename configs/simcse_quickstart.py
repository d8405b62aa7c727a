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
  common.sentence_encoder(c, mode="unsupervised", pooling="cls", projection=True,
                          steps=300, eval_every=150)
  common.adamw_linear(c, lr=5e-4, warmup_steps=30)
  if args["runlocal"]:
    common.runlocal_encoder(c)
    c.contrastive.eval_candidates = 32
  return c
