"""Tests for perceiver_jax/workdir_lock.py: one training run per workdir."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from main_runner import REPO_ROOT
from main_runner import run_main

from perceiver_jax import workdir_lock


def test_second_holder_is_refused_naming_the_first(tmp_path):
  with workdir_lock.hold(str(tmp_path)):
    with pytest.raises(workdir_lock.WorkdirInUseError) as e:
      with workdir_lock.hold(str(tmp_path)):
        pass
    with workdir_lock.hold(str(tmp_path), enabled=False):  # processes other than 0
      pass
  holder = f"pid {os.getpid()} on host {socket.gethostname()}"
  assert str(e.value).startswith(f"workdir {tmp_path} is in use by {holder} (lock file ")
  with workdir_lock.hold(str(tmp_path)):  # released at the end of the first
    pass


def _flags(data_dir, total_steps):
  return (
    f"--config.data.data_dir={data_dir}",
    f"--config.total_steps={total_steps}",
    "--config.batch_size=16",
    "--config.eval_batch_size=16",
  )


def test_two_runs_on_one_workdir(data_dir, tmp_path):
  workdir = tmp_path / "run"
  first = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "perceiver_jax.main",
      "--config=configs/fashion_mnist.py:runlocal",
      f"--workdir={workdir}",
      *_flags(data_dir, 1_000_000),
    ],
    cwd=REPO_ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  try:
    lock = workdir / workdir_lock.LOCK_FILE
    deadline = time.monotonic() + 120
    while not (lock.exists() and f"pid {first.pid} " in lock.read_text()):
      assert first.poll() is None and time.monotonic() < deadline, "the first run never locked"
      time.sleep(0.2)
    second = run_main("fashion_mnist.py:runlocal", workdir, *_flags(data_dir, 2))
    assert second.returncode == 1
    assert (
      second.stderr.strip()
      .splitlines()[-1]
      .startswith(
        f"error: workdir {workdir} is in use by pid {first.pid} on host {socket.gethostname()}"
      )
    )
    assert "Traceback" not in second.stderr
    assert not (workdir / "checkpoints" / "2").exists()
  finally:
    first.send_signal(signal.SIGKILL)
    first.wait()
  third = run_main("fashion_mnist.py:runlocal", workdir, *_flags(data_dir, 1))
  assert third.returncode == 0, third.stderr[-2000:]
  assert (workdir / "final.json").exists()
