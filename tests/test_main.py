"""Tests of `perceiver_jax/main.py`, run as a user runs it (`python -m perceiver_jax.main` in a
subprocess): every error ends in one line `error: ...` naming the file, flag or field, with a
non-zero exit and no traceback; a write that fails during training stops the run at once."""

import errno
import os
import subprocess
import sys

import main_runner
import pytest

CONFIG = "fashion_mnist.py:runlocal"
ENOSPC = f"[Errno {errno.ENOSPC}] {os.strerror(errno.ENOSPC)}"


def assert_one_line_error(result, exit_code: int, line: str) -> None:
  assert result.returncode == exit_code, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  assert result.stderr.splitlines()[-1] == f"error: {line}"


@pytest.mark.parametrize(
  "config, flags, line",
  [
    (
      "missing.py",
      (),
      "--config=configs/missing.py: [Errno 2] No such file or directory: 'configs/missing.py'",
    ),
    (
      CONFIG,
      ("--config.optimizer.learning_rat=1e-3",),
      "--config.optimizer.learning_rat: the config has no field 'learning_rat'"
      " (did you mean 'learning_rate'?)",
    ),
    (
      CONFIG,
      ("--config.optimizer.learning_rate=fast",),
      "flag --config.optimizer.learning_rate=fast: could not convert string to float: 'fast'",
    ),
    (
      "fashion_mnist.py:prep=dots",
      (),
      "flag --config=configs/fashion_mnist.py:prep=dots: Error whilst parsing config file:"
      " ValueError: config argument prep='dots': expected one of ('patches', 'pixels')",
    ),
  ],
  ids=["missing_file", "typo_field", "bad_value", "bad_config_argument"],
)
def test_config_errors_are_one_line_exit_2(tmp_path, config, flags, line):
  result = main_runner.run_main(config, tmp_path / "run", *flags, num_devices=1)
  assert_one_line_error(result, 2, line)
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
  "flag, line",
  [
    (
      "--config.num_epochs=nan",
      "config.num_epochs=nan: needs a finite num_epochs > 0 or total_steps > 0",
    ),
    (
      "--config.optimizer.learning_rate=inf",
      "config.optimizer.learning_rate=inf: must be finite",
    ),
  ],
)
def test_non_finite_config_values_are_refused(tmp_path, flag, line):
  result = main_runner.run_main(CONFIG, tmp_path / "run", "--config.total_steps=0", flag)
  assert_one_line_error(result, 1, line)


def test_a_start_up_write_failure_is_one_line(tmp_path):
  (tmp_path / "file").write_text("")
  workdir = tmp_path / "file" / "run"  # cannot be created: its parent is a file
  result = main_runner.run_main(CONFIG, workdir, num_devices=1)
  assert_one_line_error(result, 1, f"[Errno {errno.ENOTDIR}] Not a directory: '{workdir}'")


# The trainer's command line with a disk that fills after the first record (the header) of the
# TensorBoard event file. (A full disk at a metrics.jsonl write: tests/test_metrics.py.)
_FULL_DISK_RUN = """
import errno, os
from tensorboardX import record_writer
from perceiver_jax import main

def enospc(*args):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

real_write, records = record_writer.RecordWriter.write, []

def write(self, data):
  records.append(data)
  if len(records) > 1:
    enospc()
  real_write(self, data)

record_writer.RecordWriter.write = write
main.run()
"""


def test_a_full_disk_during_training_stops_the_run_with_one_line(data_dir, tmp_path):
  workdir = tmp_path / "run"
  env = {
    **os.environ,
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
  }
  # A timeout: before the fix a failed TensorBoard write hung the trainer for ever.
  result = subprocess.run(
    [
      sys.executable,
      "-c",
      _FULL_DISK_RUN,
      f"--config=configs/{CONFIG}",
      f"--workdir={workdir}",
      f"--config.data.data_dir={data_dir}",
      "--config.batch_size=16",
      "--config.eval_batch_size=16",
      "--config.total_steps=20",
      "--config.log_every_steps=1",
    ],
    cwd=main_runner.REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=240,
  )
  (path,) = (workdir / "tensorboard").glob("events.out.tfevents.*")
  assert_one_line_error(result, 1, f"{ENOSPC}: '{path}'")
  assert not (workdir / "final.json").exists()
