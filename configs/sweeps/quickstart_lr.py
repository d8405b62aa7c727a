"""Learning rate × key/value heads for configs/quickstart.py (six runs).

  python -m launch.sweep --config configs/quickstart.py \
      --sweep configs/sweeps/quickstart_lr.py --workdir_root runs/quickstart_lr
"""

from launch import sweep


def get_sweep():
  return sweep.product(**{
      "optimizer.lr": [1e-3, 2e-3, 4e-3],
      "model.num_kv_heads": [1, 4],
  })
