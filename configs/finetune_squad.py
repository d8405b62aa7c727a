"""Fine-tune a pretrained encoder for SQuAD v1.1 extractive QA.

  python -m launch.train --config configs/finetune_squad.py:runs/bert_base \\
      --workdir runs/squad
  python -m launch.evaluate --workdir runs/squad --best
  python -m launch.predict --workdir runs/squad --text "Who wrote it?" \\
      --context "The novel was written by Jane Austen in 1813."

The argument is the pretraining workdir (or WORKDIR/checkpoints/STEP).
Rows are [CLS] question [SEP] context window [SEP], 384 pieces, windows
every 128 context pieces; answers are the best start/end span of at most 30
pieces over an example's windows. Eval lines report SQuAD exact match and
F1 on `squad` validation (TFDS), or on `data=DIR` with `DIR/train.jsonl`
and `DIR/dev.jsonl` (fields id, question, context, answers {"text": [...],
"answer_start": [...]}). `:runlocal` is the tiny variant the tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "init_from", init_from="", data="",
                          runlocal=False)
  c = common.base_config()
  c.objective = "qa"
  c.model.size = "bert_base"
  c.seq_len = 384
  c.batch_size = 32
  c.steps = 5500              # ~2 epochs of 88k questions
  c.log_every = 50
  c.eval_every = 1000
  c.eval_steps = 0
  c.checkpoint_every = 1000
  c.keep_checkpoints = 1
  c.data.train = "tfds:squad:train"
  c.data.eval = "tfds:squad:validation"
  if args["data"]:
    c.data.train = f"jsonl:{args['data']}/train.jsonl"
    c.data.eval = f"jsonl:{args['data']}/dev.jsonl"
  c.task.doc_stride = 128
  c.task.max_question_len = 64
  c.task.max_answer_len = 30
  c.optimizer.lr = 5e-5
  c.optimizer.warmup_steps = 550
  c.optimizer.schedule = "linear"
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.01
  if args["init_from"]:
    common.from_backbone(c, args["init_from"])
  if args["runlocal"]:
    if not args["init_from"]:
      c.model.size = "bert_tiny"
    c.seq_len = 48
    c.batch_size = 8
    c.steps = 4
    c.log_every = 2
    c.eval_every = 2
    c.checkpoint_every = 2
    c.task.doc_stride = 8
    c.task.max_question_len = 16
    c.task.max_answer_len = 8
    c.data.tokenizer.vocab_size = 512
    c.optimizer.lr = 1e-3
    c.optimizer.warmup_steps = 1
    c.progress_bar = False
  return c
