"""Orbax checkpoints: train state, data position and resolved config together.

Layout: `WORKDIR/checkpoints/<step>/{state,data,config}`. Saves are async;
the manager keeps the latest `keep` steps plus the best one by an eval
metric (eval loss for pretraining, the task's main metric for fine-tuning).
Restores take the target shardings, so a checkpoint lands on whatever mesh
the current run uses.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from lm.errors import LmError

class Checkpointer:
  """Checkpoints of one workdir.

  Keeps the latest `keep` steps plus the best one by `best_metric` (an
  eval metric name such as "eval_loss" or "eval_accuracy"; `best_mode`
  "min" or "max").
  """

  def __init__(self, workdir: str, *, keep: int = 2, async_save: bool = True,
               best_metric: str = "eval_loss", best_mode: str = "min"):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.best_metric, self.best_mode = best_metric, best_mode
    policy = ocp.checkpoint_managers.AnyPreservationPolicy([
        ocp.checkpoint_managers.LatestN(n=keep),
        ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda m: m[best_metric],
            reverse=best_mode == "min", n=1,
            keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=async_save,
        # best_fn makes Orbax write each step's metrics, so the best step is
        # still known after a restart; retention is the policy above.
        best_fn=lambda m: m[best_metric], best_mode=best_mode,
        create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": ocp.JsonCheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler()})

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def best_step(self) -> int | None:
    """The kept step with the best `best_metric` (None if none has it)."""
    scored = []
    for step in self.manager.all_steps():
      m = self.manager.metrics(step)
      if m and self.best_metric in m:
        value = float(m[self.best_metric])
        scored.append((value if self.best_mode == "min" else -value, step))
    return min(scored)[1] if scored else None

  def save(self, step: int, state, data_state: dict, config: dict,
           metrics: dict | None = None, force: bool = False) -> bool:
    """Saves `step`; `metrics` (eval metrics of this step, or None) rank it
    for the best-checkpoint policy when they hold `best_metric`."""
    metrics = ({k: float(v) for k, v in metrics.items()}
               if metrics and self.best_metric in metrics else None)
    return self.manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            config=ocp.args.JsonSave(config)),
        metrics=metrics, force=force)

  def read_config(self, step: int) -> dict:
    """The resolved config stored with `step` (no arrays are read)."""
    return self.manager.restore(
        step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]

  def restore(self, step: int, abstract_state, shardings) -> tuple[Any, dict]:
    """(state, data_state) for `step`, placed with `shardings`."""
    target = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
        abstract_state, shardings)
    try:
      out = self.manager.restore(
          step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(target),
              data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise LmError(f"checkpoint {self.directory}/{step} does not match the "
                    f"model being trained ({first[:200]}); use a new --workdir "
                    "or the config that wrote it.") from None
    return out["state"], out["data"]

  def restore_unsharded(self, step: int) -> tuple[Any, dict]:
    """(state tree, data_state) onto this process's first device, whatever
    mesh or process count wrote it: for tools and tests."""
    meta = self.manager.item_metadata(step)["state"]
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta,
        is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
    out = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                      data=ocp.args.JsonRestore()))
    return out["state"], out["data"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
