"""Fine-tune a pretrained encoder on IMDb movie-review sentiment.

  python -m launch.train --config configs/finetune_imdb.py:runs/bert_base \\
      --workdir runs/imdb
  python -m launch.evaluate --workdir runs/imdb --data tfds:imdb_reviews:test --best
  python -m launch.predict --workdir runs/imdb --input reviews.txt --output preds.jsonl

The argument is the pretraining workdir (or WORKDIR/checkpoints/STEP): its
backbone, model size and tokenizer start the run. TFDS `imdb_reviews`:
90% of train to train, the other 10% to pick the best checkpoint, and the
test split to report (`launch.evaluate --data tfds:imdb_reviews:test`).
Reviews are long, so rows keep their first 512 pieces. From a backbone the
run keeps that model's shape and trains at BERT's fine-tuning rate (2e-5,
200 warmup steps). Without an argument it trains from scratch, so it is
bert_mini (4 layers x 256 wide) at lr 1e-3 with 105 warmup steps (5% of the
run): 2e-5 is a rate for nudging pretrained weights, and a random bert_base
at that rate stays near chance (configs/common.py). `:runlocal` is the tiny
variant the tests use.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, "init_from", init_from="", runlocal=False)
  c = common.base_config()
  c.objective = "classification"
  c.seq_len = 512
  c.batch_size = 32
  c.steps = 2100              # ~3 epochs of 22.5k reviews
  c.data.train = "tfds:imdb_reviews:train[:90%]"
  c.data.eval = "tfds:imdb_reviews:train[90%:]"
  c.task.text_field = "text"
  c.task.label_field = "label"
  common.fine_tune(c, args, lr=2e-5, warmup_steps=200, eval_every=300)
  if args["runlocal"]:
    c.seq_len = 64
  return c
