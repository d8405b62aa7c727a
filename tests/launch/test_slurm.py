"""launch/slurm.sbatch: the command it runs (printed with LM_DRY_RUN=1) and
its one-line refusals."""

import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "launch", "slurm.sbatch")


def run(*args):
  env = dict(os.environ, LM_DRY_RUN="1", PATH="/usr/bin:/bin",
             SLURM_SUBMIT_DIR="/shared/lm")
  return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True,
                        text=True, timeout=30)


def test_runs_one_training_task_per_node_with_the_overrides():
  r = run("configs/gpt2_small.py", "/shared/runs/gpt2",
          "--config.model.attention_impl=cudnn")
  assert r.returncode == 0 and r.stderr == ""
  assert r.stdout.splitlines() == [
      "+ cd /shared/lm && srun --kill-on-bad-exit=1 python -m launch.train "
      "--config configs/gpt2_small.py --workdir /shared/runs/gpt2 "
      "--config.model.attention_impl=cudnn"]


def test_sbatch_directives_ask_for_a_warning_signal_and_requeue():
  text = open(SCRIPT, encoding="utf-8").read()
  for directive in ("--ntasks-per-node=1", "--signal=TERM@120", "--requeue"):
    assert f"#SBATCH {directive}" in text


def test_bad_arguments_are_one_line():
  for args, word in [((), "config and the workdir"),
                     (("c.py", "w", "--steps=3"), "--steps=3")]:
    r = run(*args)
    assert r.returncode == 2 and r.stdout == ""
    err = r.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and word in err[0]
