"""Runs `python -m perceiver_jax.main` in a subprocess, as a user would, from the repository."""

import os
import pathlib
import subprocess
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent  # holds configs/


def run_main(config: str, workdir, *flags: str, num_devices: int | None = None):
  """`--config=configs/CONFIG --workdir=WORKDIR FLAGS...` on CPU; returns the CompletedProcess.

  The child sees the test session's 8 CPU devices unless `num_devices` says otherwise.
  """
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  if num_devices is not None:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
  return subprocess.run(
    [
      sys.executable,
      "-m",
      "perceiver_jax.main",
      f"--config=configs/{config}",
      f"--workdir={workdir}",
      *flags,
    ],
    cwd=REPO_ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
