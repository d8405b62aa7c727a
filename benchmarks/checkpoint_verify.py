"""Checkpoint verification: what the on-device digest costs a save and a restore.

  python benchmarks/checkpoint_verify.py                 # GPT-2 small, 3 repeats
  python benchmarks/checkpoint_verify.py --size d384 --repeats 5
  python benchmarks/checkpoint_verify.py --dir /mnt/local_ssd

The state is a real train state of the named size: the model of
`make_model_config(size)` and the AdamW optimizer of `base_config()`,
initialised into its shardings (`init_state`) on a mesh over all devices and
then moved by one AdamW update with random gradients, so that the two Adam
moments hold non-zero values (all-zero moments would cost next to nothing to
write). GPT-2 small: 124M parameters, params + mu + nu ≈ 1.5 GB float32.

Timed, each the median of `--repeats`, verified and plain runs interleaved:

  digest    `lm.training.digest.state_digest(state)` alone (two uint32 sums
            per array and the all-finite flag, one device-to-host copy).
  save      `Checkpointer.save` with `async_save=False` (digest, finiteness
            check, state + data + config + digest items) versus the same
            manager's `save` of the state, data and config items without the
            digest item: what a checkpoint without verification would write.
  restore   `Checkpointer.restore` (reads data + digest, checks the stored
            tree, restores the state, recomputes and compares the digest)
            versus the manager's plain `restore` of the state and data items
            onto the same shardings.

Every timed call has been run once before (compilation, Orbax set-up).
Checkpoints go to a fresh directory under `--dir` (default: the system's
temporary directory) that is deleted at the end; old steps are deleted
outside the timed region. A restore reads files that were just written, so
it mostly reads from the page cache: the figures are the CPU-side costs of a
local disk, not of a cold read from a bucket.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import logging as absl_logging  # noqa: E402
import jax  # noqa: E402
import optax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402

from lm.models import build_model  # noqa: E402
from lm.models.config import make_model_config  # noqa: E402
from lm.models.transformer import count_params  # noqa: E402
from lm.parallel import sharding as sharding_lib  # noqa: E402
from lm.parallel.mesh import make_mesh  # noqa: E402
from lm.training import digest as digest_lib, optim  # noqa: E402
from lm.training.checkpoint import Checkpointer  # noqa: E402
from lm.experiments import base_config  # noqa: E402
from lm.training.state import TrainState, init_state  # noqa: E402


def build_state(size: str, vocab: int, seq_len: int):
  """(state, abstract state, shardings, model config, resolved-config dict)."""
  cfg = make_model_config(size, vocab_size=vocab)
  model = build_model(cfg)
  config = base_config()
  mesh = make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  rules = sharding_lib.logical_rules()
  tx, _ = optim.make_optimizer(config.optimizer, config.steps,
                               num_layers=cfg.num_layers)
  state, abstract, shardings = init_state(model, tx, mesh, rules, 0,
                                          min(seq_len, cfg.max_len))

  def one_update(state):
    leaves, treedef = jax.tree.flatten(state.params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    grads = treedef.unflatten(
        [0.01 * jax.random.normal(k, x.shape, x.dtype)
         for k, x in zip(keys, leaves)])
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return TrainState(step=state.step + 1,
                      params=optax.apply_updates(state.params, updates),
                      opt_state=opt_state)

  with jax.set_mesh(mesh):
    state = jax.jit(one_update, out_shardings=shardings,
                    donate_argnums=0)(state)
  jax.block_until_ready(state)
  resolved = json.loads(json.dumps(
      {"model": dataclasses.asdict(cfg), "config": config.to_dict()},
      default=str))
  return state, abstract, shardings, cfg, resolved


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def bench(size: str, vocab: int, seq_len: int, repeats: int,
          root: str) -> dict:
  state, abstract, shardings, _, resolved = build_state(size, vocab, seq_len)
  leaves = jax.tree.leaves(state)
  nbytes = sum(x.nbytes for x in leaves)

  # (a) the digest alone.
  digest_lib.state_digest(state)                        # compile
  digest_s = [timed(lambda: digest_lib.state_digest(state))
              for _ in range(repeats)]

  workdir = tempfile.mkdtemp(prefix=f"ckpt_verify_{size}_", dir=root)
  ckpt = None
  try:
    # `keep` above the number of saves: the preservation policy never deletes
    # inside a timed save; old steps are deleted by hand between saves.
    ckpt = Checkpointer(workdir, keep=4 * repeats + 8, async_save=False)
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract, shardings)
    step = 0

    def data_state(step):
      return {"step": step, "epoch": 0, "position": 8 * step}

    def save_verified():
      ckpt.save(step, state, data_state(step), resolved)
      ckpt.wait()

    def save_plain():
      ckpt.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state),
          data=ocp.args.JsonSave(data_state(step)),
          config=ocp.args.JsonSave(resolved)))
      ckpt.wait()

    def drop_all_but(keep_step):
      for s in ckpt.manager.all_steps():
        if s != keep_step:
          ckpt.manager.delete(s)

    # (b) saves; warm-up once each, then alternate which goes first.
    saves = {"verified": [], "plain": []}
    variants = {"verified": save_verified, "plain": save_plain}
    for r in range(repeats + 1):
      order = ("verified", "plain") if r % 2 == 0 else ("plain", "verified")
      for name in order:
        step += 1
        dt = timed(variants[name])
        if r > 0:
          saves[name].append(dt)
        drop_all_but(step)
    # Restores read one verified checkpoint (it has the digest item).
    step += 1
    save_verified()
    drop_all_but(step)
    saved = step

    # (c) restores of that step onto the same shardings.
    def restore_verified():
      restored, _ = ckpt.restore(saved, abstract, shardings)
      jax.block_until_ready(restored)

    def restore_plain():
      out = ckpt.manager.restore(saved, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
      jax.block_until_ready(out["state"])

    restores = {"verified": [], "plain": []}
    variants = {"verified": restore_verified, "plain": restore_plain}
    for r in range(repeats + 1):
      order = ("verified", "plain") if r % 2 == 0 else ("plain", "verified")
      for name in order:
        dt = timed(variants[name])
        if r > 0:
          restores[name].append(dt)
  finally:
    if ckpt is not None:
      ckpt.close()
    shutil.rmtree(workdir, ignore_errors=True)
  med = statistics.median
  return dict(size=size, params=count_params(state.params), arrays=len(leaves),
              gb=nbytes / 1e9, digest_s=med(digest_s),
              save_plain=med(saves["plain"]), save_verified=med(saves["verified"]),
              restore_plain=med(restores["plain"]),
              restore_verified=med(restores["verified"]))


def overhead(verified: float, plain: float) -> str:
  return f"{verified - plain:+.2f} s ({100 * (verified - plain) / plain:+.1f}%)"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--size", default="small",
                 help="named model size(s), comma-separated (default: GPT-2 "
                 "small; 'quickstart' or 'd384' for a quick run)")
  p.add_argument("--vocab", type=int, default=50257,
                 help="vocabulary size (default GPT-2's 50257)")
  p.add_argument("--repeats", type=int, default=3,
                 help="timed repeats of each measurement (the median is shown)")
  p.add_argument("--seq_len", type=int, default=128,
                 help="sequence length of the init trace (does not change the "
                 "state)")
  p.add_argument("--dir", default=None,
                 help="directory to write checkpoints under, on local disk "
                 "(default: the system temp dir); a fresh subdirectory is made "
                 "and deleted at the end")
  args = p.parse_args()
  # Orbax warns on every save without metrics (the best-checkpoint policy).
  absl_logging.set_verbosity(absl_logging.ERROR)
  if args.repeats < 1:
    p.error("--repeats must be at least 1")
  print("$ python " + shlex.join(sys.argv), flush=True)
  dev = jax.devices()[0]
  print(f"device: {dev.platform} ({dev.device_kind}) x{len(jax.devices())}; "
        f"median of {args.repeats} repeats; sync saves", flush=True)
  root = args.dir or tempfile.gettempdir()
  os.makedirs(root, exist_ok=True)
  print("| size | params | arrays | state (GB) | digest (s) | digest (GB/s) | "
        "save plain (s) | save verified (s) | save overhead | "
        "restore plain (s) | restore verified (s) | restore overhead |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for size in args.size.split(","):
    r = bench(size, args.vocab, args.seq_len, args.repeats, root)
    print(f"| {r['size']} | {r['params'] / 1e6:.1f}M | {r['arrays']} | "
          f"{r['gb']:.2f} | {r['digest_s']:.2f} | {r['gb'] / r['digest_s']:.2f} | "
          f"{r['save_plain']:.2f} | {r['save_verified']:.2f} | "
          f"{overhead(r['save_verified'], r['save_plain'])} | "
          f"{r['restore_plain']:.2f} | {r['restore_verified']:.2f} | "
          f"{overhead(r['restore_verified'], r['restore_plain'])} |", flush=True)


if __name__ == "__main__":
  main()
