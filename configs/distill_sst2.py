"""Distil a fine-tuned SST-2 classifier into a small BERT.

  python -m launch.train --config configs/finetune_sst2.py:runs/bert,data=DIR \\
      --workdir runs/sst2
  python -m launch.train --config configs/distill_sst2.py:runs/sst2,data=DIR \\
      --workdir runs/sst2_tiny

The argument is the teacher's workdir: a classification run (or an imported
`BertForSequenceClassification`). The student (`size=`, default
`bert_tiny`) is trained on the same sentences (`data=DIR` with `train.tsv`
and `dev.tsv`, header `sentence<TAB>label`, or TFDS `glue/sst2`) with the
teacher's tokenizer and label order, on 0.5 * T^2 * KL(teacher || student) +
0.5 * cross-entropy at temperature 2 (`lm.objectives.distill`); the best
checkpoint by dev accuracy is kept. `alpha=0` is the same student without
the teacher. `augment=0.1` adds input augmentation: each step the teacher
and the student also read a copy of the batch with every word piece
replaced by [MASK] with that probability, and the student matches the
teacher there too. `:runlocal` is the tiny variant the tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "teacher", teacher="", data="",
                          size="bert_tiny", alpha=0.5, temperature=2.0,
                          steps=3000, lr=5e-4, augment=0.0, runlocal=False)
  c = common.base_config()
  c.objective = "distill"
  c.distill.teacher = args["teacher"]
  c.distill.alpha = args["alpha"]
  c.distill.temperature = args["temperature"]
  c.distill.augment_prob = args["augment"]
  c.seq_len = 64
  c.batch_size = 32
  c.steps = args["steps"]
  common.sst2_data(c, args["data"])
  c.task.trim_batches = 16    # short sentences: each batch cut to its longest
  c.model.size = args["size"]
  c.eval_every = c.checkpoint_every = max(c.steps // 6, 1)
  c.eval_steps = 0
  c.keep_checkpoints = 1
  c.log_every = 50
  common.adamw_linear(c, lr=args["lr"], warmup_steps=max(c.steps // 20, 1))
  if args["runlocal"]:
    common.runlocal(c, "bert_tiny", steps=6, every=3, eval_steps=None,
                    vocab_size=512, tokenizer_chars=300_000)
    c.seq_len = 32
    c.task.trim_batches = 0   # rows of 32: one compiled width is quicker
  return c
