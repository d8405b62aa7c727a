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
last, blank lines between sentences). `:runlocal` is the tiny variant the
tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "init_from", init_from="", data="",
                          runlocal=False)
  c = common.base_config()
  c.objective = "tagging"
  c.model.size = "bert_base"
  c.seq_len = 128
  c.batch_size = 32
  c.steps = 1400              # ~3 epochs of 14k sentences
  c.log_every = 50
  c.eval_every = 200
  c.eval_steps = 0
  c.checkpoint_every = 200
  c.keep_checkpoints = 1
  c.data.train = "tfds:conll2003:train"
  c.data.eval = "tfds:conll2003:dev"
  if args["data"]:
    c.data.train = f"conll:{args['data']}/train.txt"
    c.data.eval = f"conll:{args['data']}/valid.txt"
  c.task.text_field = "tokens"
  c.task.label_field = "ner"
  c.optimizer.lr = 5e-5
  c.optimizer.warmup_steps = 140
  c.optimizer.schedule = "linear"
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.01
  if args["init_from"]:
    common.from_backbone(c, args["init_from"])
  if args["runlocal"]:
    if not args["init_from"]:
      c.model.size = "bert_tiny"
    c.seq_len = 32
    c.batch_size = 8
    c.steps = 4
    c.log_every = 2
    c.eval_every = 2
    c.checkpoint_every = 2
    c.data.tokenizer.vocab_size = 512
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 1
    c.progress_bar = False
  return c
