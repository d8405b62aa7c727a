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
  common.sentence_encoder(c, mode="supervised", pooling="mean", projection=False,
                          steps=200, eval_every=100)
  c.contrastive.symmetric = True
  c.contrastive.eval_candidates = 1000
  common.adamw_linear(c, lr=1e-3, warmup_steps=40)
  if args["runlocal"]:
    common.runlocal_encoder(c)
    c.contrastive.eval_candidates = 32
  return c
