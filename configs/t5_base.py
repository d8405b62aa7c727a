"""T5 v1.1 base (248M) pretrained by span corruption on C4, for TPU or GPU.

  python -m launch.train --config configs/t5_base.py --workdir gs://BUCKET/t5_base

T5's recipe: C4 (`c4/en`, TFDS; prepare it in array_record format with
`tfds build c4/en --file_format=array_record`), 512-token inputs (568-token
windows, 114-token targets at noise density 0.15 and mean span 3), batch
128, a 32,000-piece unigram tokenizer with 100 sentinels, bfloat16 compute,
AdamW at 1e-3 with 10,000 warmup steps and a linear decay over 524,288
steps. The model's table has 32,128 rows (T5's padding to a multiple of
128); `:runlocal` is a tiny CPU variant that only checks the plumbing.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, dataset="c4/en", runlocal=False)
  c = common.base_config()
  c.objective = "span_corruption"
  c.model.size = "t5_base"
  c.model.dtype = "bfloat16"
  c.seq_len = 512
  c.batch_size = 128
  c.steps = 524_288
  c.log_every = 100
  c.eval_every = 5000
  c.eval_steps = 50
  c.checkpoint_every = 5000
  c.data.train = f"tfds:{args['dataset']}:train"
  c.data.eval = f"tfds:{args['dataset']}:validation"
  c.data.field = "text"
  c.data.tokenizer.vocab_size = 32000
  c.data.tokenizer.model_type = "unigram"
  c.data.tokenizer.max_chars = 200_000_000
  common.adamw_linear(c, lr=1e-3, warmup_steps=10_000)
  c.mesh.data = -1
  c.mesh.fsdp = 1
  if args["runlocal"]:
    common.runlocal_at_scale(c, "t5_tiny")
    c.span_corruption.sentinels = 16
  return c
