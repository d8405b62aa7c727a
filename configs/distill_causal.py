"""Distil a trained causal LM into a 2-layer student (knowledge distillation).

  python -m launch.train --config configs/quickstart.py --workdir runs/quickstart
  python -m launch.train --config configs/distill_causal.py:runs/quickstart \\
      --workdir runs/quickstart_distilled

The argument is the teacher's workdir (any causal run, or an imported GPT-2
or Llama). The student is the quickstart's width with 2 of its 4 layers,
trained on the same `pystdlib` data and schedule for the same steps with
the loss 0.5 * T^2 * KL(teacher || student) + 0.5 * next-token loss at
temperature 2 (`lm.objectives.distill`), on the teacher's tokenizer.
`init=teacher` starts it from every other teacher layer (DistilBERT's
initialisation); `alpha=0` trains the same student without the teacher
(the baseline of `benchmarks/distill_sst2.py`). `hidden=1,attention=1` add
TinyBERT's block-output and attention-logit matching with those weights.
`augment=0.1` adds input augmentation: the teacher and the student also
read a copy of each batch with every token replaced by a random one with
that probability (its tokenizer has no [MASK]), the student matching the
teacher there.
`:runlocal` is the tiny variant the tests use (its teacher: a
`configs/quickstart.py:runlocal` run).
"""

from configs import common
from configs import quickstart
from lm.errors import LmError


def get_config(arg=None):
  args = common.parse_arg(arg, "teacher", teacher="", alpha=0.5,
                          temperature=2.0, init="", layers=0, hidden=0.0,
                          attention=0.0, augment=0.0, runlocal=False)
  c = quickstart.get_config("runlocal" if args["runlocal"] else None)
  c.objective = "distill"
  c.distill.teacher = args["teacher"]
  c.distill.alpha = args["alpha"]
  c.distill.temperature = args["temperature"]
  c.distill.hidden_weight = args["hidden"]        # TinyBERT's terms
  c.distill.attention_weight = args["attention"]
  c.distill.augment_prob = args["augment"]
  c.distill.augment_replace = "random"
  if args["init"] not in ("", "teacher"):
    raise LmError(f"config argument init={args['init']!r} is not "
                         "known; use init=teacher or leave it out.")
  c.distill.init_from_teacher_layers = args["init"] == "teacher"
  # half the quickstart's 4 layers (runlocal: half the tiny teacher's 2)
  c.model.num_layers = args["layers"] or (1 if args["runlocal"] else 2)
  c.sample.prompt = ""      # the student serves through launch.sample
  return c
