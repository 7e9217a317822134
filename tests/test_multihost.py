"""A 2-process `jax.distributed` run on 127.0.0.1 equals the 1-process run with the same
two devices: same global batches, same gradients, same parameters."""

import os
import socket
import subprocess
import sys

import numpy as np

WORKER = os.path.join(os.path.dirname(__file__), "multihost_worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(worker, args, num_processes, devices_per_process, *, extra_env=None, cwd=None):
  """Runs `python worker *args num_processes index port` in `num_processes` local processes
  that meet at 127.0.0.1:port, each with `devices_per_process` CPU devices; asserts that each
  exits 0."""
  env = {
    **os.environ,
    **(extra_env or {}),
    "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices_per_process}",
  }
  port = _free_port()
  procs = [
    subprocess.Popen(
      [sys.executable, worker, *map(str, args), str(num_processes), str(i), str(port)],
      cwd=cwd,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
    )
    for i in range(num_processes)
  ]
  for p in procs:
    output, _ = p.communicate(timeout=300)
    assert p.returncode == 0, output[-3000:]


def _launch(data_dir, workdir, out, num_processes, devices_per_process):
  launch(WORKER, [data_dir, workdir, out], num_processes, devices_per_process)


def test_two_processes_equal_one_process(data_dir, tmp_path):
  _launch(data_dir, tmp_path / "one", tmp_path / "one.npz", 1, 2)
  _launch(data_dir, tmp_path / "two", tmp_path / "two.npz", 2, 1)
  one, two = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
  assert len(one.files) == len(two.files) > 0
  for key in one.files:
    np.testing.assert_allclose(one[key], two[key], rtol=1e-5, atol=1e-6)
  metrics = (tmp_path / "two" / "metrics.jsonl").read_text()
  assert '"eval/count": 24.0' in metrics  # each test example counted once across processes
