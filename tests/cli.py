"""Running the project's entry points as a user would: `python -m MODULE`."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
  """`python -m module args...` from the project root on CPU, with its exit
  status, stdout and stderr. Example: cli("launch.predict", "--help")."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)
