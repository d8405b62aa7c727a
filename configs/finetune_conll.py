"""Fine-tune a pretrained encoder for CoNLL-2003 named-entity recognition.

  python -m launch.train --config configs/finetune_conll.py:runs/bert_base \\
      --workdir runs/conll
  python -m launch.evaluate --workdir runs/conll --data tfds:conll2003:test --best
  python -m launch.predict --workdir runs/conll --text "John Smith flew to Paris"

The argument is the pretraining workdir (or WORKDIR/checkpoints/STEP). Each
word's first sentencepiece piece predicts its BIO tag; eval lines report
entity precision, recall and F1 (exact spans, as seqeval). Data: TFDS
`conll2003` (train; dev picks the best checkpoint), or `data=DIR` for the
CoNLL text files `DIR/train.txt` and `DIR/valid.txt` (token first, tag
last, blank lines between sentences). From a backbone the run keeps that
model's shape and trains at BERT's fine-tuning rate (5e-5, 140 warmup
steps). Without an argument it trains from scratch, so it is bert_mini (4
layers x 256 wide) at lr 1e-3 with 70 warmup steps (5% of the run): 5e-5 is
a rate for nudging pretrained weights, and a random bert_base at that rate
stays near chance (configs/common.py). `:runlocal` is the tiny variant the
tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "init_from", init_from="", data="",
                          runlocal=False)
  c = common.base_config()
  c.objective = "tagging"
  c.seq_len = 128
  c.batch_size = 32
  c.steps = 1400              # ~3 epochs of 14k sentences
  c.data.train = "tfds:conll2003:train"
  c.data.eval = "tfds:conll2003:dev"
  if args["data"]:
    c.data.train = f"conll:{args['data']}/train.txt"
    c.data.eval = f"conll:{args['data']}/valid.txt"
  c.task.text_field = "tokens"
  c.task.label_field = "ner"
  common.fine_tune(c, args, lr=5e-5, warmup_steps=140, eval_every=200)
  if args["runlocal"]:
    c.seq_len = 32
  return c
