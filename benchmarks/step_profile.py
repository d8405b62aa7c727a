"""Where the train step's milliseconds go: a profile of `lm`'s jitted train
step, by part of the model and pass, on this machine.

  pip install xprof    # reads the profiler's trace; not a dependency of lm
  python benchmarks/step_profile.py [--shape small|d384] [--steps 5]

Builds the step of `benchmarks/vs_torch.py` (GPT-2 layout, float32, AdamW,
random tokens over 2,048 pieces; `small` is 4 layers x 128 at T 64, B 12),
traces `--steps` steps with `jax.profiler`, and sums the time of every XLA
kernel by the `op_name` the compiler kept for it: forward or backward
(`transpose(jvp(...))`) of attention, MLP, norms, the embedding and head;
the loss; the optimizer update and the step's norms. It prints one row per
group (ms per step summed over the CPU's worker threads, share, kernels per
step), then the wall time per step and how much of the threads' time was
spent between kernels (dispatch and waiting), which no kernel row shows.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

_PARTS = (("attention_norm", "norms"), ("mlp_norm", "norms"),
          ("final_norm", "norms"), ("attention", "attention"),
          ("mlp", "MLP"), ("token_embed", "embedding and head"),
          ("position_embed", "embedding and head"))
_FRAMEWORK = ("ThreadpoolListener", "ThunkExecutor", "SlinkyThreadPool", "$",
              "PjitFunction", "end: ")   # "end: X" closes async kernel X


def group(op_name: str) -> str:
  """The row an XLA kernel's `op_name` belongs to."""
  if "DecoderLM" in op_name:
    part = next((label for key, label in _PARTS if key in op_name), "other")
    return ("backward " if "transpose(jvp(" in op_name else "forward ") + part
  if "jvp(" in op_name:
    return "loss (forward and backward)"
  return "optimizer update and step norms"


def op_names(hlo_text: str) -> dict:
  """Instruction name -> op_name, from the compiled module's text."""
  out = {}
  for line in hlo_text.splitlines():
    m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"", line)
    if m:
      out[m.group(1)] = m.group(2)
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shape", default="small", choices=["small", "d384"])
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--top", type=int, default=0,
                 help="also list the N kernels with the most time, with the "
                 "source op and the HLO instruction XLA ran")
  args = p.parse_args()
  try:
    from xprof.convert import raw_to_tool_data  # pylint: disable=g-import-not-at-top
  except ImportError:
    sys.exit("benchmarks/step_profile.py reads the trace with xprof; install "
             "it with `pip install xprof` and run again.")
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import vs_torch  # pylint: disable=g-import-not-at-top
  run, tokens, _, parts = vs_torch.lm_step(vs_torch.SHAPES[args.shape],
                                          with_parts=True)
  run(3)
  start = time.perf_counter()
  run(10)
  wall_ms = (time.perf_counter() - start) / 10 * 1e3
  train_fn, state, batch, mesh, rules = parts
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    hlo = train_fn.jitted.lower(state(), batch).compile().as_text()
  names = op_names(hlo)
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp)
    run(args.steps)
    jax.profiler.stop_trace()
    planes = glob.glob(os.path.join(tmp, "**", "*.xplane.pb"), recursive=True)
    trace = json.loads(raw_to_tool_data.xspace_to_tool_data(
        planes, "trace_viewer", {})[0])
  events = trace["traceEvents"]
  threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in events
             if e.get("ph") == "M" and e.get("name") == "thread_name"}
  busy, count = collections.defaultdict(float), collections.Counter()
  per_thread = collections.defaultdict(float)
  per_kernel = collections.defaultdict(float)
  for e in events:
    thread = threads.get((e.get("pid"), e.get("tid")), "")
    if e.get("ph") != "X" or not thread.startswith("tf_XLA"):
      continue
    if e["name"].startswith(_FRAMEWORK):
      continue
    row = group(names[e["name"]]) if e["name"] in names else (
        "copies and runtime ops without a source op")
    busy[row] += e["dur"] / 1e3 / args.steps
    per_kernel[e["name"]] += e["dur"] / 1e3 / args.steps
    count[row] += 1
    per_thread[thread] += e["dur"] / 1e3 / args.steps
  total = sum(busy.values())
  shape = vs_torch.SHAPES[args.shape]
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; shape "
        f"{args.shape} ({shape['layers']} layers x {shape['width']}, T "
        f"{shape['seq']}, B {shape['batch']}); {args.steps} traced steps")
  print("| part | kernel ms per step (all threads) | share | kernels per "
        "step |")
  print("|---|---|---|---|")
  for row, ms in sorted(busy.items(), key=lambda kv: -kv[1]):
    print(f"| {row} | {ms:.2f} | {100 * ms / total:.1f}% | "
          f"{count[row] // args.steps} |")
  workers = [t for t, ms in per_thread.items() if ms > 0.05 * wall_ms]
  idle = len(workers) * wall_ms - sum(per_thread[t] for t in workers)
  print(f"\nwall {wall_ms:.2f} ms per step ({tokens / wall_ms * 1e3:,.0f} "
        f"tokens/s, untraced); {len(workers)} worker threads ran kernels for "
        f"{total:.2f} ms in all; {idle:.2f} thread-ms per step "
        f"({100 * idle / (len(workers) * wall_ms):.0f}%) passed between "
        "kernels")
  if args.top:
    lines = {m.group(1): line.strip() for line in hlo.splitlines()
             for m in [re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)] if m}
    print("\n| kernel | ms per step (all threads) | source op | HLO |")
    print("|---|---|---|---|")
    for name, ms in sorted(per_kernel.items(), key=lambda kv: -kv[1])[:args.top]:
      print(f"| {name} | {ms:.2f} | {names.get(name, '')[-90:]} | "
            f"{lines.get(name, '')[:160]} |")


if __name__ == "__main__":
  main()
