"""Unsupervised SimCSE on BERT-base (TPU or GPU), scored on STS-B.

  python -m launch.train --config configs/simcse_bert_base.py \\
      --workdir gs://BUCKET/simcse --config.init_from=gs://BUCKET/bert_base

As the SimCSE paper's unsupervised recipe: start from a pretrained BERT-base
(`configs/bert_base.py`'s workdir, whose weights and tokenizer are taken;
leave `init_from` empty to train from scratch), then one pass over about a
million Wikipedia sentences (each paragraph line is a sentence, the first
`data.max_chars` characters are read), batch 64, length 32, lr 3e-5,
temperature 0.05, [CLS] pooling with the MLP head during training only.
Evaluation is the Spearman correlation on `glue/stsb` validation
(sentence1, sentence2, label), which must be prepared in array_record
format (`tfds build glue/stsb --file_format=array_record`). `:runlocal` is
a tiny CPU variant that only checks the plumbing on `pystdlib`.
"""

from configs import common


def get_config(arg=None):
  args = common.parse_arg(arg, dataset="wikipedia/20230601.en", runlocal=False)
  c = common.base_config()
  c.objective = "contrastive"
  c.model.size = "bert_base"
  c.model.dtype = "bfloat16"
  c.model.dropout = 0.1
  c.model.attention_dropout = 0.1
  c.seq_len = 32
  c.batch_size = 64
  c.steps = 15_625                   # 1M sentences / 64
  c.log_every = 100
  c.eval_every = 250
  c.eval_steps = 0
  c.checkpoint_every = 1000
  c.data.train = f"tfds:{args['dataset']}:train"
  c.data.eval = ""
  c.data.max_chars = 600_000_000
  c.contrastive.mode = "unsupervised"
  c.contrastive.texts = "lines"
  c.contrastive.pooling = "cls"
  c.contrastive.projection = True
  c.contrastive.temperature = 0.05
  c.contrastive.sts = "tfds:glue/stsb:validation"
  c.contrastive.sts_a_field = "sentence1"
  c.contrastive.sts_b_field = "sentence2"
  c.contrastive.sts_score_field = "label"
  c.optimizer.lr = 3e-5
  c.optimizer.warmup_steps = 0
  c.optimizer.schedule = "constant"
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.0
  c.optimizer.clip_norm = 0.0
  if args["runlocal"]:
    c.model.size = "bert_tiny"
    c.model.dtype = "float32"
    c.seq_len = 32
    c.batch_size = 8
    c.steps = 4
    c.log_every = 2
    c.eval_every = 2
    c.checkpoint_every = 2
    c.data.train = "pystdlib:train"
    c.data.eval = "pystdlib:validation"
    c.data.max_chars = 0
    c.contrastive.sts = ""
    c.contrastive.eval_candidates = 32
    c.data.tokenizer.vocab_size = 512
    c.data.tokenizer.max_chars = 300_000
    c.optimizer.lr = 1e-4
    c.progress_bar = False
  return c
