"""GPT-2 small (124M, 12×768) on a TFDS corpus, for TPU or GPU.

  python -m launch.train --config configs/gpt2_small.py --workdir gs://BUCKET/gpt2_small
  python -m launch.train --config configs/gpt2_small.py:dataset=c4/en ...

Batch 512 × 1024 tokens (0.5M tokens per step), AdamW lr 6e-4 with 2,000
warmup steps and cosine decay to 6e-5, as in the GPT-2/nanoGPT recipe.
The TFDS corpus must be prepared in array_record format
(`tfds build NAME --file_format=array_record`). `:runlocal` is a tiny CPU
variant that only checks the plumbing.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, dataset="lm1b", runlocal=False)
  c = common.base_config()
  c.model.size = "small"
  c.model.dtype = "bfloat16"
  c.seq_len = 1024
  c.batch_size = 512
  c.steps = 600_000
  c.log_every = 100
  c.eval_every = 2000
  c.eval_steps = 50
  c.checkpoint_every = 2000
  c.data.train = f"tfds:{args['dataset']}:train"
  c.data.eval = f"tfds:{args['dataset']}:test"
  c.data.tokenizer.vocab_size = 50257
  c.data.tokenizer.max_chars = 200_000_000
  c.optimizer.lr = 6e-4
  c.optimizer.warmup_steps = 2000
  c.optimizer.min_lr_ratio = 0.1
  c.optimizer.b2 = 0.95
  c.mesh.data = -1
  c.mesh.fsdp = 1
  if args["runlocal"]:
    common.runlocal_at_scale(c, "tiny")
  return c
