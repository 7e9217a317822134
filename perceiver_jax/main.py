"""Trains and evaluates an experiment from a config file.

  python -m perceiver_jax.main --config=configs/fashion_mnist.py --workdir=workdirs/fmnist \
      [--config.optimizer.learning_rate=1e-3]

Rerunning with the same --workdir resumes from its newest checkpoint. Several hosts:
pass --coordinator_address, --num_processes and --process_id (or set the
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID environment variables).

Errors end in one line on stderr, `error: ...`, naming the file, flag or config field:
exit status 2 for a bad command line or config file (including what the config library
raises while it loads the file and applies the --config.* flags), 1 for a failure during
the run (an impossible config value, bad data, a non-finite loss, a full disk or another
OSError).
"""

from __future__ import annotations

import logging as std_logging
import os
import re
import sys

import jax
import ml_collections
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from perceiver_jax import host_memory
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


def _flag_value(argv: list[str], name: str) -> str:
  """The value of `--name=value` in `argv`, or "" if it is not given in that form."""
  prefixes = (f"--{name}=", f"-{name}=")
  return next((arg.split("=", 1)[1] for arg in argv if arg.startswith(prefixes)), "")


def _error_chain(error: BaseException) -> list[BaseException]:
  chain = [error]
  while chain[-1].__cause__ or chain[-1].__context__:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  return chain


def _unknown_field(error: Exception, argv: list[str]) -> str | None:
  """The line for a --config.a.b flag that names no field of the config, or None.

  ml_collections raises a KeyError (inside an AttributeError) that holds only the last name.
  """
  chain = _error_chain(error)
  key = chain[-1].args[0] if isinstance(chain[-1], KeyError) and chain[-1].args else None
  flag = next(
    (
      arg.lstrip("-").split("=", 1)[0]
      for arg in argv
      if re.match(r"-{1,2}config\.", arg) and key in arg.split("=", 1)[0].split(".")
    ),
    None,
  )
  if not isinstance(key, str) or flag is None:
    return None
  hint = re.search(r'Did you mean "(\w+)"', " ".join(str(e) for e in chain))
  return f"--{flag}: the config has no field {key!r}" + (
    f" (did you mean {hint.group(1)!r}?)" if hint else ""
  )


def _config_error_line(error: Exception, argv: list[str]) -> str:
  """One line for an error raised while the config file and the --config flags were parsed."""
  if isinstance(error, (AttributeError, KeyError)):
    line = _unknown_field(error, argv)
    if line:
      return line
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  # A config file's own error comes as "flag --config=...: Error whilst parsing config
  # file:" and a traceback whose last line is the error.
  message = " ".join(lines[:1] + lines[-1:] if len(lines) > 1 else lines) or repr(error)
  if isinstance(error, flags.Error):
    return message
  return f"--config={_flag_value(argv, 'config')}: {message}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, but a bad flag or config file ends in `error: <one line>`, exit 2.

  The config file is user code, so any exception while it is loaded and overridden is a
  config error. ml_collections defers the error of a config file it cannot read until the
  config is first used, so that is checked here too.
  """
  try:
    rest = flags.FLAGS(argv)
    config = _CONFIG.value
    if config is not None and not isinstance(config, ml_collections.ConfigDict):
      try:
        config.lock()  # raises the deferred load error
      except OSError as e:
        raise OSError(str(e.__cause__ or e).splitlines()[-1].strip()) from None
  except Exception as e:  # every error here is reported as one line
    print(f"error: {_config_error_line(e, argv)}", file=sys.stderr)
    sys.exit(2)
  return rest


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
  except (ValueError, FloatingPointError, OSError) as e:
    # An OSError from the trainer names its file (the metrics writer makes sure of that).
    sys.exit("error: " + " ".join(str(e).splitlines()))


def run() -> None:
  """The command line: `main` with `parse_flags`."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  host_memory.use_retained_memory()  # first: it restarts the process once
  run()
