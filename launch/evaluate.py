"""Evaluate a trained model on a split with its objective's metrics.

Causal runs report loss, perplexity and token accuracy; masked-LM runs the
total loss, MLM loss and accuracy over the masked predictions, and NSP
accuracy; contrastive runs recall@1, recall@10 and MRR of each held-out
anchor's positive among all candidates, the in-batch loss and accuracy, and
the Spearman correlation of cosine similarity with gold scores when scored
pairs are given (the run's contrastive.sts, or --sts). Fine-tuned runs
report their task's metrics: accuracy, macro-F1 and MCC (classification),
entity precision/recall/F1 (tagging), exact match and F1 (qa).

  python -m launch.evaluate --workdir runs/quickstart
  python -m launch.evaluate --workdir runs/quickstart --full
  python -m launch.evaluate --workdir runs/quickstart --quantize int8
  python -m launch.evaluate --workdir DIR --data text:held_out/*.txt --step 500
  python -m launch.evaluate --workdir runs/code_search --data pystdlib:validation
  python -m launch.evaluate --workdir DIR --sts jsonl:sts.jsonl  # text_a, text_b, score
  python -m launch.evaluate --workdir runs/sst2 --data tsv:sst2/test.tsv --best

Uses the run's eval split unless --data names another source, and the
run's own eval setting: config.eval_steps batches of config.eval_batch_size
(config.batch_size when it is 0; every batch when the run evaluated its
whole split), so on the run's split
the numbers are those its training log shows for that step. --full
evaluates the whole split, --max_batches N the first N batches. Prints the
metrics with what they covered (tokens or examples, and batches) and writes
them to WORKDIR/eval/<data>-step<N>.json. --quantize int8 evaluates the
model served with int8 weights (`lm.models.quantize`), written to
<data>-step<N>-int8.json.
"""

from __future__ import annotations

import json
import re

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a trained run.")
_DATA = flags.DEFINE_string("data", None, "Data URI (default: the run's data.eval).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", None, "Batches to evaluate "
                                     "(default: the run's config.eval_steps; "
                                     "0 = all).")
_FULL = flags.DEFINE_bool("full", False, "Evaluate the whole split (default: "
                          "the run's config.eval_steps batches).")
_BATCH = flags.DEFINE_integer(
    "batch_size", 0,
    "Rows per batch (0 = the run's eval_batch_size, or its batch_size).")
_BEST = flags.DEFINE_bool("best", False, "Use the best checkpoint by the run's "
                          "eval metric (default: the latest).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir for a tfds: "
                                "--data (default: the run's data.data_dir).")
_STS = flags.DEFINE_string("sts", None, "Contrastive runs: scored pairs for "
                           "Spearman (default: the run's contrastive.sts).")
_QUANTIZE = common.define_quantize_flag()


# What the count of each objective counts, in words (where not its name).
_COUNTED = {"mlm": "masked predictions", "contrastive": "pairs",
            "tagging": "scored pieces"}


def evaluate_workdir(workdir: str, data: str | None = None, step: int | None = None,
                     max_batches: int | None = None, batch_size: int = 0,
                     sts: str | None = None, best: bool = False,
                     full: bool = False, data_dir: str | None = None,
                     quantize: str | None = None) -> dict:
  """The metrics of a trained run's checkpoint on a split, as
  `{"data", "step", "objective", <metric>: value, ..., <counted>: n,
  "batches": n, "counted", "scope", "path"}`: `counted` names what the
  objective counts ("tokens", "examples", ...), `scope` says which batches
  were evaluated.

  `max_batches` None evaluates as the run did (`config.eval_steps`); 0, or
  `full`, the whole split; N the first N batches. `data_dir` replaces the
  run's TFDS `data.data_dir`. `quantize="int8"` evaluates the model with
  int8 weights (`lm.models.quantize`); the result then says
  `"quantize": "int8"` and its file name ends in `-int8`.
  """
  from lm import files
  from lm.errors import LmError
  from lm.experiments import make_objective
  from lm.training import loop, step as step_lib
  from lm.experiments import load_trained
  if full and max_batches:
    raise LmError("give --full (the whole split) or --max_batches, not both.")
  if max_batches is not None and max_batches < 0:
    raise LmError(f"--max_batches={max_batches} must be >= 0 (0 evaluates the "
                  "whole split).")
  trained = load_trained(workdir, step, best=best, quantize=quantize)
  c = trained.config
  if full:
    max_batches = 0
  if max_batches is None:
    max_batches = int(c.eval_steps)
    scope = (f"the run's config.eval_steps={max_batches}" if max_batches
             else "the whole split, as the run's config.eval_steps=0")
  else:
    scope = (f"--max_batches={max_batches}" if max_batches
             else "the whole split")
  if data_dir is not None:
    c.data.data_dir = data_dir
  uri = data or c.data.eval
  c.data.eval = uri       # what the objective reads (imported runs: no train)
  if sts is not None:
    if not trained.objective.scores_sts:
      raise LmError(f"--sts scores sentence embeddings, but {workdir} holds a "
                    f"{c.objective!r} run; drop --sts.")
    trained.objective.set_sts(sts)    # into `c`, which the objective reads
    uri = data or ""       # only what was asked for
  objective = make_objective(c, stored=trained.objective.stored)
  source = objective.open_source(uri, train=False)
  if source is None:
    raise LmError(f"the run in {workdir} has no data.eval; name a source with --data.")
  uri = uri or f"sts:{sts}"
  data = objective.open_data(source, trained.tokenizer,
                             files.join(workdir, "data"),
                             c.data.max_chars or None)
  batch_size = batch_size or loop.eval_batch_size(c)
  eval_fn = step_lib.jit_eval_step(trained.model, objective.loss, trained.mesh,
                                   trained.rules, trained.state_shardings.params)
  metrics = loop.evaluate_data(objective, data, eval_fn, trained.params,
                               trained.mesh, batch_size=batch_size,
                               max_batches=max_batches or None)
  if not metrics:
    raise LmError(f"{uri} yields no evaluation batches; use a larger split.")
  result = {"data": uri, "step": trained.step, "objective": c.objective,
            **{k[len("eval_"):]: v for k, v in metrics.items()},
            "scope": scope, "counted": loop.count_key(objective)}
  quantized = (quantize or "none") != "none"
  if quantized:
    result["quantize"] = quantize
  for key in (result["counted"], "batches"):
    if key in result:
      result[key] = int(result[key])
  out_dir = files.join(workdir, "eval")
  files.makedirs(out_dir)
  name = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri).strip("_")[:80]
  suffix = f"-{quantize}" if quantized else ""
  path = files.join(out_dir, f"{name}-step{trained.step}{suffix}.json")
  files.write_text_atomic(path, json.dumps(result, indent=2))
  result["path"] = path
  return result


def main(argv):
  del argv
  if not _WORKDIR.value:
    common.fail("--workdir is required: the directory of a trained run.")
  common.quiet_logs()
  from lm.data import tfds_source  # pylint: disable=g-import-not-at-top
  tfds_source.data_dir_flag = "--data_dir"   # what TFDS sentences tell users
  with common.user_errors():
    r = evaluate_workdir(_WORKDIR.value, _DATA.value, _STEP.value,
                         _MAX_BATCHES.value, _BATCH.value, _STS.value,
                         _BEST.value, _FULL.value, _DATA_DIR.value,
                         _QUANTIZE.value)
  print(summary_line(r), flush=True)


def summary_line(r: dict) -> str:
  """What `main` prints for an `evaluate_workdir` result. Example:
  "step 6 on pystdlib:validation: loss 3.8600, perplexity 47.4649 over
  512 tokens in 2 batches (the run's config.eval_steps=2; --full for the
  whole split) -> runs/q/eval/pystdlib_validation-step6.json"."""
  from lm.training.metrics import describe_eval
  metrics = {k: v for k, v in r.items()
             if k not in ("data", "step", "objective", "scope", "counted",
                          "path", "quantize")}
  hint = "" if "whole split" in r["scope"] else "; --full for the whole split"
  weights = f" ({r['quantize']} weights)" if r.get("quantize") else ""
  return (f"step {r['step']}{weights} on {r['data']}: "
          f"{describe_eval(metrics, r['counted'], _COUNTED.get(r['objective']))}"
          f" ({r['scope']}{hint}) -> {r['path']}")


if __name__ == "__main__":
  common.run(main)
