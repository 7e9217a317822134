"""Trains and evaluates an experiment from a config file.

  python -m perceiver_jax.main --config=configs/fashion_mnist.py --workdir=workdirs/fmnist \
      [--config.optimizer.learning_rate=1e-3]

Rerunning with the same --workdir resumes from its newest checkpoint. Several hosts:
pass --coordinator_address, --num_processes and --process_id (or set the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables).
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

import jax
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from perceiver_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_AUTO_DISTRIBUTED = flags.DEFINE_bool(
  "auto_distributed", False, "Call jax.distributed.initialize() with the cluster's own settings."
)

_LIBRARY_LOGS = flags.DEFINE_bool(
  "library_logs", False, "Also show INFO lines of orbax (several per checkpoint)."
)

# Libraries whose INFO lines drown the training log; their warnings and errors still show.
_QUIET_LIBRARIES = (f"{os.sep}orbax{os.sep}",)


class _QuietLibraryFilter(std_logging.Filter):
  def filter(self, record: std_logging.LogRecord) -> bool:
    if record.levelno >= std_logging.WARNING:
      return True
    return not any(part in record.pathname for part in _QUIET_LIBRARIES)


def _maybe_initialize_distributed() -> None:
  if _AUTO_DISTRIBUTED.value:  # TPU pods and SLURM: JAX reads the topology itself.
    jax.distributed.initialize()
    return
  address = _COORDINATOR.value or os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address:
    return
  num = _NUM_PROCESSES.value or int(os.environ["JAX_NUM_PROCESSES"])
  pid = _PROCESS_ID.value if _PROCESS_ID.value is not None else int(os.environ["JAX_PROCESS_ID"])
  if os.environ.get("JAX_PLATFORMS") == "cpu":
    # Cross-process collectives on CPU need an implementation; accelerators have their own.
    # (Asking JAX for its backend here would initialise it before `distributed`.)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)


def main(argv):
  del argv
  if _CONFIG.value is None or _WORKDIR.value is None:
    sys.exit("error: --config and --workdir are required")
  if not _LIBRARY_LOGS.value:
    logging.get_absl_handler().addFilter(_QuietLibraryFilter())
  _maybe_initialize_distributed()
  logging.info(
    "JAX %s: process %d of %d, %d local devices (%s), %d in all",
    jax.__version__,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.devices()[0].platform,
    jax.device_count(),
  )
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, FloatingPointError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
