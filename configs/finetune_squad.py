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
"answer_start": [...]}). From a backbone the run keeps that model's shape
and trains at BERT's fine-tuning rate (5e-5, 550 warmup steps). Without an
argument it trains from scratch, so it is bert_mini (4 layers x 256 wide)
at lr 1e-3 with 275 warmup steps (5% of the run): 5e-5 is a rate for
nudging pretrained weights, and a random bert_base at that rate stays near
chance (configs/common.py). `:runlocal` is the tiny variant the tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "init_from", init_from="", data="",
                          runlocal=False)
  c = common.base_config()
  c.objective = "qa"
  c.seq_len = 384
  c.batch_size = 32
  c.steps = 5500              # ~2 epochs of 88k questions
  c.data.train = "tfds:squad:train"
  c.data.eval = "tfds:squad:validation"
  if args["data"]:
    c.data.train = f"jsonl:{args['data']}/train.jsonl"
    c.data.eval = f"jsonl:{args['data']}/dev.jsonl"
  c.task.doc_stride = 128
  c.task.max_question_len = 64
  c.task.max_answer_len = 30
  common.fine_tune(c, args, lr=5e-5, warmup_steps=550, eval_every=1000)
  if args["runlocal"]:
    c.seq_len = 48
    c.task.doc_stride = 8
    c.task.max_question_len = 16
    c.task.max_answer_len = 8
  return c
