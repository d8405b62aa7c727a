"""nanoGPT's CPU recipe: a character-level GPT on Tiny Shakespeare.

  python -m launch.train --config configs/shakespeare_char.py \
      --workdir runs/shakespeare_char
  python -m launch.train --config configs/shakespeare_char.py:path=/data/input.txt ...

4 layers, 4 heads, d=128, block 64, batch 12, 2,000 steps, lr 1e-3 with
warmup 100 and cosine decay to 1e-4 at step 2,000, dropout 0, AdamW
(b2 0.99, weight decay 0.1), clipping at 1.0; train/validation are the first
90% and last 10% of the file in order. nanoGPT reports validation loss 1.88.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, path="../shared/data/tinyshakespeare/input.txt",
                          runlocal=False)
  c = common.base_config()
  c.model.size = "shakespeare"
  c.seq_len = 64
  c.batch_size = 12
  c.steps = 2000
  c.log_every = 50
  c.eval_every = 500
  c.eval_steps = 0               # the whole validation split
  c.checkpoint_every = 1000
  c.data.train = f"text:{args['path']}[:90%]"
  c.data.eval = f"text:{args['path']}[90%:]"
  c.data.sampling = "random"     # random windows, as nanoGPT's get_batch
  c.data.tokenizer.model_type = "char"
  c.data.tokenizer.byte_fallback = False
  c.data.tokenizer.vocab_size = 70
  c.optimizer.lr = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.decay_steps = 2000
  c.optimizer.min_lr_ratio = 0.1
  c.optimizer.b2 = 0.99
  c.optimizer.weight_decay = 0.1
  c.optimizer.clip_norm = 1.0
  c.sample.prompt = "ROMEO:"
  c.sample.max_new_tokens = 200
  c.sample.temperature = 0.8
  c.sample.top_k = 200
  if args["runlocal"]:
    c.steps = 20
    c.log_every = 5
    c.eval_every = 10
    c.eval_steps = 4
    c.checkpoint_every = 10
    c.sample.max_new_tokens = 16
    c.progress_bar = False
  return c
