"""Character-level Tiny Shakespeare: Transformer vs LSTM, through the real loop.

  python benchmarks/shakespeare_char.py --data ../shared/data/tinyshakespeare/input.txt
  python benchmarks/shakespeare_char.py --model lstm --steps 500

Trains `configs/shakespeare_char.py` (nanoGPT's CPU recipe: 4 layers, 4 heads,
d=128) and/or `configs/lstm_shakespeare_char.py` (2-layer LSTM, d=224, a
comparable parameter count), both with block 64, batch 12, 2,000 steps, the
first 90% of the file for training and the last 10% for validation, each in a
fresh workdir, and prints one table row per model: parameters, steps,
validation loss over the whole held-out 10%, and wall time from the start of
the run (tokenizer training, data, compilation, the steps, every evaluation
and the end-of-training sample). nanoGPT reports 1.88 for the Transformer recipe.

  python benchmarks/shakespeare_char.py --model transformer --seeds 0,1,2
      [--nanogpt_repo ~/nanoGPT --nanogpt_ckpt out1337,out1,out2]

Scores each trained Transformer two ways: every next character of the
validation split in windows of 64, and nanoGPT's `estimate_loss` protocol
(the mean of 20 batches of 12 random windows) drawn 200 times, printing the
mean and standard deviation of that estimate. With `--nanogpt_ckpt`
(`out_dir`s of nanoGPT's `train.py`, each holding `ckpt.pt`) and the
clone's path, nanoGPT's models are scored the same way with its own
`model.py` (torch).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_train  # noqa: E402  (benchmarks/bench_train.py)
from configs import lstm_shakespeare_char, shakespeare_char  # noqa: E402
from lm import experiments
from lm.models.transformer import count_params  # noqa: E402

MODELS = {
    # name: (config module, table label, expected module class name)
    "transformer": (shakespeare_char, "transformer 4×128", "DecoderLM"),
    "lstm": (lstm_shakespeare_char, "lstm 2×224", "LstmLM"),
}


def _param_count(model, seq_len: int) -> int:
  variables = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0)},
                         jnp.zeros((1, seq_len), jnp.int32)))
  return count_params(variables["params"])


WINDOW, BATCH = 64, 12       # nanoGPT's block_size and batch_size here


def score(losses, val: np.ndarray, draws: int = 200) -> dict:
  """`losses(x, y) -> [B, T]` per-token losses of a model, scored on `val`
  (token ids): the whole split in windows of WINDOW, and nanoGPT's estimate
  (20 batches of BATCH random windows) over `draws` draws."""
  starts = np.arange(0, len(val) - 1 - WINDOW, WINDOW)
  total = count = 0.0
  for i in range(0, len(starts), BATCH):
    idx = starts[i:i + BATCH]
    x = np.stack([val[j:j + WINDOW] for j in idx])
    y = np.stack([val[j + 1:j + 1 + WINDOW] for j in idx])
    out = np.asarray(losses(x, y), np.float64)
    total, count = total + out.sum(), count + out.size
  estimates = []
  for seed in range(draws):
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(20):
      idx = rng.integers(0, len(val) - WINDOW, BATCH)
      x = np.stack([val[j:j + WINDOW] for j in idx])
      y = np.stack([val[j + 1:j + 1 + WINDOW] for j in idx])
      means.append(float(np.mean(losses(x, y))))
    estimates.append(np.mean(means))
  return {"split": total / count, "mean": float(np.mean(estimates)),
          "sd": float(np.std(estimates, ddof=1))}


def score_lm(workdir: str, text: str) -> dict:
  """`score` of the trained run in `workdir` on the validation text."""
  trained = experiments.load_trained(workdir)

  @jax.jit
  def losses(params, x, y):
    logits, _ = trained.model.apply({"params": params}, x, deterministic=True)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    return -jnp.take_along_axis(logp, y[..., None], -1)[..., 0]
  val = np.asarray(trained.tokenizer.encode(text), np.int32)
  return score(lambda x, y: losses(trained.params, x, y), val)


def score_nanogpt(repo: str, out_dir: str, full: str) -> dict:
  """`score` of nanoGPT's `ckpt.pt` in `out_dir` with the `model.py` of its
  clone `repo`, on the validation split of the file's text `full` (nanoGPT's
  character ids: the sorted characters of the whole file)."""
  import torch  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.abspath(repo))
  model_py = importlib.import_module("model")
  ckpt = torch.load(os.path.join(out_dir, "ckpt.pt"), map_location="cpu")
  model = model_py.GPT(model_py.GPTConfig(**ckpt["model_args"]))
  model.load_state_dict({k.removeprefix("_orig_mod."): v
                         for k, v in ckpt["model"].items()})
  model.eval()
  ids = {ch: i for i, ch in enumerate(sorted(set(full)))}
  val = np.array([ids[ch] for ch in validation_text(full)], np.int64)

  def losses(x, y):
    with torch.no_grad():
      logits, _ = model(torch.from_numpy(x), torch.from_numpy(y))
      logp = torch.log_softmax(logits, -1)
      return -torch.gather(logp, -1, torch.from_numpy(y)[..., None])[
          ..., 0].numpy()
  return score(losses, val)


def run_one(name: str, data: str, steps: int, workdir: str,
            seed: int = 0, full: str = "") -> dict:
  """Trains one model in `workdir`; returns its table row as a dict (a
  Transformer's with `score_lm` on the validation split of `full`, the
  file's text)."""
  module, label, expected = MODELS[name]
  c = module.get_config(f"path={os.path.abspath(data)}")
  c.steps = steps
  c.seed = seed
  c.progress_bar = False
  # Builds the model exactly as `loop.train` will (and the tokenizer and data
  # cache, which `train` then reuses), so a loop that ignores `model.arch`
  # stops here instead of silently training the wrong architecture.
  start = time.perf_counter()   # end to end: tokenizer, data, steps, evals
  run = experiments.prepare(c, workdir)
  if type(run.model).__name__ != expected:
    sys.exit(f"error: the training loop built {type(run.model).__name__} for "
             f"model.arch={run.model_cfg.arch!r}; it must build models with "
             "lm.models.build_model before --model lstm can run.")
  params = _param_count(run.model, c.seq_len)
  summary = bench_train.train(c, workdir)
  wall = time.perf_counter() - start
  row = dict(label=label + (f", seed {seed}" if seed else ""), params=params,
             steps=steps, loss=summary["eval_loss"], wall=wall)
  if name == "transformer":
    row["scores"] = score_lm(workdir, validation_text(full))
  return row


def validation_text(full: str) -> str:
  """The last 10% of the text, as the config's `[90%:]` split and
  nanoGPT's `prepare.py` cut it."""
  return full[int(len(full) * 0.9):]


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", default="../shared/data/tinyshakespeare/input.txt")
  p.add_argument("--model", choices=("transformer", "lstm", "both"),
                 default="both")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--workdir", default=None,
                 help="parent of one workdir per model; default: fresh temp dirs")
  p.add_argument("--seeds", default="0",
                 help="comma-separated config.seed values, one run each")
  p.add_argument("--nanogpt_repo", default=None,
                 help="a nanoGPT clone (its model.py scores --nanogpt_ckpt)")
  p.add_argument("--nanogpt_ckpt", default="",
                 help="comma-separated nanoGPT out_dirs holding ckpt.pt")
  args = p.parse_args()
  if not os.path.exists(args.data):
    sys.exit(f"error: {args.data} does not exist; pass --data PATH to input.txt.")
  outs = [o for o in args.nanogpt_ckpt.split(",") if o]
  if outs and not (args.nanogpt_repo and os.path.isfile(
      os.path.join(args.nanogpt_repo, "model.py"))):
    sys.exit("error: --nanogpt_ckpt needs --nanogpt_repo, a nanoGPT clone "
             "with its model.py.")
  for out in outs:
    if not os.path.isfile(os.path.join(out, "ckpt.pt")):
      sys.exit(f"error: {out} holds no ckpt.pt; pass nanoGPT's out_dir.")
  try:
    seeds = [int(x) for x in args.seeds.split(",")]
  except ValueError:
    sys.exit(f"error: --seeds {args.seeds!r} must be comma-separated integers.")
  with open(args.data, encoding="utf-8") as f:
    full = f.read()
  names = list(MODELS) if args.model == "both" else [args.model]
  rows = []
  for name in names:
    for seed in seeds:
      sub = name + (f"_seed{seed}" if seed else "")
      workdir = (os.path.join(args.workdir, sub) if args.workdir
                 else tempfile.mkdtemp(prefix=f"shakespeare_char_{sub}_"))
      try:
        rows.append(run_one(name, args.data, args.steps, workdir, seed,
                            full))
      finally:
        if args.workdir is None:
          shutil.rmtree(workdir, ignore_errors=True)
  print("| model | params | steps | val loss | wall time (s) |")
  print("|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['label']} | {r['params']:,} | {r['steps']} | "
          f"{r['loss']:.4f} | {r['wall']:.0f} |")
  print("nanoGPT reports val loss 1.88 for the transformer recipe.")
  scored = [(r["label"], r["scores"]) for r in rows if "scores" in r]
  scored += [(f"nanoGPT {out}", score_nanogpt(args.nanogpt_repo, out, full))
             for out in outs]
  if scored:
    print("\n| run | whole validation split | nanoGPT's estimate: mean (sd) "
          "over 200 draws |")
    print("|---|---|---|")
    for label, sc in scored:
      print(f"| {label} | {sc['split']:.4f} | {sc['mean']:.4f} "
            f"({sc['sd']:.3f}) |")


if __name__ == "__main__":
  main()
