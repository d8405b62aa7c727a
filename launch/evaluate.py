"""Evaluate a trained model: loss, perplexity and token accuracy on a split.

  python -m launch.evaluate --workdir runs/quickstart
  python -m launch.evaluate --workdir DIR --data text:held_out/*.txt --step 500

Uses the run's eval split unless --data names another source; prints the
metrics and writes them to WORKDIR/eval/<data>-step<N>.json.
"""

from __future__ import annotations

import json
import os
import re

from absl import flags

from launch import common

_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir of a trained run.")
_DATA = flags.DEFINE_string("data", None, "Data URI (default: the run's data.eval).")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: latest).")
_MAX_BATCHES = flags.DEFINE_integer("max_batches", 0, "Batches to evaluate (0 = all).")
_BATCH = flags.DEFINE_integer("batch_size", 0, "Rows per batch (0 = the run's batch_size).")


def evaluate_workdir(workdir: str, data: str | None = None, step: int | None = None,
                     max_batches: int = 0, batch_size: int = 0) -> dict:
  from lm.data import packing, sources
  from lm.errors import LmError
  from lm.training import loop, step as step_lib
  from lm.training.workdir import load_trained
  trained = load_trained(workdir, step)
  c = trained.config
  uri = data or c.data.eval
  if not uri:
    raise LmError(f"the run in {workdir} has no data.eval; name a source with --data.")
  source = sources.open_source(uri, field=c.data.field, data_dir=c.data.data_dir or None)
  stream = packing.cached_stream(source, trained.tokenizer,
                                 os.path.join(workdir, "data"),
                                 max_chars=c.data.max_chars or None)
  batch_size = batch_size or c.batch_size
  objective = loop.objective_for(c)
  eval_fn = step_lib.jit_eval_step(trained.model, objective, trained.mesh,
                                   trained.rules, trained.state_shardings.params)
  metrics = loop.evaluate_stream(stream, eval_fn, trained.params, trained.mesh,
                                 batch_size=batch_size, seq_len=c.seq_len,
                                 max_batches=max_batches or None)
  result = {"data": uri, "step": trained.step,
            "loss": metrics["eval_loss"], "perplexity": metrics["eval_perplexity"],
            "accuracy": metrics["eval_accuracy"], "tokens": int(metrics["eval_tokens"])}
  out_dir = os.path.join(workdir, "eval")
  os.makedirs(out_dir, exist_ok=True)
  name = re.sub(r"[^A-Za-z0-9_.-]+", "_", uri).strip("_")[:80]
  path = os.path.join(out_dir, f"{name}-step{trained.step}.json")
  with open(path + ".tmp", "w") as f:
    json.dump(result, f, indent=2)
  os.replace(path + ".tmp", path)
  result["path"] = path
  return result


def main(argv):
  del argv
  if not _WORKDIR.value:
    common.fail("--workdir is required: the directory of a trained run.")
  common.quiet_logs()
  with common.user_errors():
    r = evaluate_workdir(_WORKDIR.value, _DATA.value, _STEP.value,
                         _MAX_BATCHES.value, _BATCH.value)
  print(f"step {r['step']} on {r['data']}: loss {r['loss']:.4f}, perplexity "
        f"{r['perplexity']:.2f}, token accuracy {r['accuracy']:.4f} over "
        f"{r['tokens']:,} tokens -> {r['path']}", flush=True)


if __name__ == "__main__":
  common.run(main)
