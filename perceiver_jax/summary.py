"""`python -m perceiver_jax.summary --config=...`: a model's parameter table (`tools.summary`)."""

from __future__ import annotations

import sys

from absl import app
from ml_collections import config_flags

from perceiver_jax import model
from perceiver_jax.tools import summary as tool

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/imagenet.py:variant=io_fourier."
)


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    sys.exit("error: --config is required, e.g. --config=configs/imagenet.py:variant=io_fourier")
  try:
    params, state = model.param_shapes(config.model)
  except ValueError as e:
    sys.exit(f"error: {e}")
  total = model.count_params(params)
  print(tool.format_table(params, state))
  print(f"State entries: {model.count_params(state):,}")
  print(f"Parameters: {total / 1e6:.2f}M")
  print(f"Total parameters: {total}")


if __name__ == "__main__":
  app.run(main)
