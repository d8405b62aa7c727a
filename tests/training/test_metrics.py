"""Console and MFU reporting of the training metrics (no timing, no jit)."""

import io

from lm.training import metrics


def test_mfu_above_one_warns_once_and_is_not_reported():
  warned = []
  meter = metrics.MfuMeter(2e12, measured=True, warn=warned.append)
  assert meter(5e11) == 0.25
  assert meter(3e12) is None           # 150% of the peak: the peak is wrong
  assert meter(5e11) is None           # and every later ratio is suspect
  assert meter(4e12) is None
  assert len(warned) == 1
  assert "150% of the matmul peak measured at start-up (2 TFLOP/s)" in warned[0]
  assert "--config.peak_tflops=" in warned[0]
  given = []
  meter = metrics.MfuMeter(1e9, measured=False, warn=given.append)
  assert meter(1e9) == 1.0 and meter(2e9) is None
  assert len(given) == 1 and "config.peak_tflops=0.001, which is below" in given[0]
  assert metrics.MfuMeter(0.0, measured=True, warn=given.append)(1e9) is None


def _frames(text):
  return [f for f in text.split("\r") if f.strip()]


def test_progress_bar_shows_the_loss_just_logged():
  out = io.StringIO()
  bar = metrics.ProgressBar(100, 0, tty=True, file=out)
  bar.update(10, 10, {"loss": 4.0, "tokens_per_second": 900.0, "mfu": 0.5})
  assert "loss=4.000" in _frames(out.getvalue())[-1]
  bar.update(20, 10, {"loss": 2.5, "tokens_per_second": 1000.0})
  last = _frames(out.getvalue())[-1]
  assert "20/100" in last and "loss=2.500" in last and "mfu" not in last
  bar.close()


def test_plain_lines_when_not_a_terminal(capsys):
  bar = metrics.ProgressBar(200, 0, tty=False)
  bar.update(20, 20, {"loss": 3.12345, "tokens_per_second": 7100.4,
                      "mfu": 0.123, "learning_rate": 1e-3, "grad_norm": 0.8123})
  bar.update(40, 20, {"loss": 3.0, "tokens_per_second": 7000.0})
  bar.message("step 40: eval loss 3.1")
  bar.close()
  quiet = metrics.ProgressBar(200, 0, tty=True, quiet=True)   # not process 0
  quiet.update(60, 20, {"loss": 2.0, "tokens_per_second": 1.0})
  quiet.message("step 60: eval loss 2.0")
  quiet.close()
  assert capsys.readouterr().out.splitlines() == [
      "step 20/200: loss 3.1235, 7,100 tok/s, mfu 12.3%, lr 1.00e-03, "
      "grad norm 0.812",
      "step 40/200: loss 3.0000, 7,000 tok/s",
      "step 40: eval loss 3.1"]
