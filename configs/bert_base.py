"""BERT-base (110M, 12×768) pretraining, masked LM + NSP, for TPU or GPU.

  python -m launch.train --config configs/bert_base.py --workdir gs://BUCKET/bert_base
  python -m launch.train --config configs/bert_base.py:dataset=wikipedia/20230601.en ...

Each TFDS example (a Wikipedia article) is a document and each sentence a
segment, as BERT's pretraining data. Batch 256 × 512 tokens, AdamW lr 1e-4
(b2 0.999, eps 1e-6, weight decay 0.01) with 10,000 warmup steps and linear
decay over 1M steps, whole-word masking, bfloat16 compute. Wikipedia has one
split, so the last 1% of it is held out for evaluation. The corpus must be
prepared in array_record format (`tfds build NAME --file_format=array_record`).
`:runlocal` is a tiny CPU variant that only checks the plumbing.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, dataset="wikipedia/20230601.en", runlocal=False)
  c = common.base_config()
  c.objective = "mlm"
  c.model.size = "bert_base"
  c.model.dtype = "bfloat16"
  c.seq_len = 512
  c.batch_size = 256
  c.steps = 1_000_000
  c.log_every = 100
  c.eval_every = 5000
  c.eval_steps = 50
  c.checkpoint_every = 5000
  c.data.train = f"tfds:{args['dataset']}:train[:99%]"
  c.data.eval = f"tfds:{args['dataset']}:train[99%:]"
  c.data.field = "text"
  c.data.tokenizer.vocab_size = 30522
  c.data.tokenizer.model_type = "unigram"
  c.data.tokenizer.max_chars = 200_000_000
  c.mlm.documents = "source"
  c.mlm.segments = "sentences"
  c.mlm.whole_word = True
  common.adamw_linear(c, lr=1e-4, warmup_steps=10_000)
  c.optimizer.eps = 1e-6
  c.mesh.data = -1
  c.mesh.fsdp = 1
  if args["runlocal"]:
    common.runlocal_at_scale(c, "bert_tiny")
  return c
