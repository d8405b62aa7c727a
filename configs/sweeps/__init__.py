"""Sweep files for `python -m launch.sweep`: each defines `get_sweep()`."""
