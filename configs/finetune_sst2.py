"""Fine-tune a pretrained encoder on SST-2 sentiment (GLUE), BERT-style.

  python -m launch.train --config configs/finetune_sst2.py:runs/bert_base \\
      --workdir runs/sst2
  python -m launch.evaluate --workdir runs/sst2 --best
  python -m launch.predict --workdir runs/sst2 --text "a gripping, funny film"

The argument is the pretraining workdir (or one of its checkpoints,
WORKDIR/checkpoints/STEP): its backbone, model size and tokenizer start the
run; the classifier over BERT's pooled output starts fresh. Data: TFDS
`glue/sst2` (train; validation picks the best checkpoint), or
`data=DIR` for a directory with `train.tsv` and `dev.tsv` (header
`sentence<TAB>label`), e.g. `configs/finetune_sst2.py:runs/bert,data=sst2`.
From a backbone the run keeps that model's shape and trains at BERT's
fine-tuning rate (2e-5, 600 warmup steps). Without an argument it trains
from scratch, so it is bert_mini (4 layers x 256 wide) at lr 1e-3 with 300
warmup steps (5% of the run): 2e-5 is a rate for nudging pretrained weights,
and a random bert_base at that rate stays near chance (configs/common.py).
`:runlocal` is the tiny variant the tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "init_from", init_from="", data="",
                          runlocal=False)
  c = common.base_config()
  c.objective = "classification"
  c.seq_len = 128
  c.batch_size = 32
  c.steps = 6000              # ~3 epochs of 67k sentences
  common.sst2_data(c, args["data"])
  common.fine_tune(c, args, lr=2e-5, warmup_steps=600, eval_every=500)
  c.task.trim_batches = 16    # short sentences: each batch cut to its longest
  if args["runlocal"]:
    c.seq_len = 32
    c.task.trim_batches = 0   # rows of 32: one compiled width is quicker
  return c
