"""`python -m perceiver_jax.predict --config=... --checkpoint=... --input=...`: a model's
top classes for one input (`tools.predict`)."""

from __future__ import annotations

import json
import sys

import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from perceiver_jax import atomic
from perceiver_jax import model
from perceiver_jax.tools import predict as tool

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Model config, e.g. configs/imagenet.py:variant=io_fourier."
)
_CHECKPOINT = flags.DEFINE_string(
  "checkpoint",
  None,
  "Weights in any format: an official pickle, a .safetensors, a transformers folder, a "
  "checkpoint directory or a training workdir.",
)
_INPUT = flags.DEFINE_string(
  "input", None, "Image file (RGB image models), or a .npy in the model's input shape."
)
_OUTPUT = flags.DEFINE_string("output", None, "Optional .npy path for the logits [num_classes].")
_TOP_K = flags.DEFINE_integer("top_k", 5, "Number of classes to print.")


def main(argv):
  del argv
  config = _CONFIG.value
  for name, value in (
    ("config", config),
    ("checkpoint", _CHECKPOINT.value),
    ("input", _INPUT.value),
  ):
    if value is None:
      sys.exit(f"error: --{name} is required")
  try:
    tool.use_stored_model_config(config, _CHECKPOINT.value)
    model.validate_model_config(config.model)
    image = tool.load_input(_INPUT.value, config.model)
    params, state = tool.load_checkpoint(config.model, _CHECKPOINT.value)
  except ValueError as e:
    sys.exit(f"error: {e}")
  logits = tool.predict(config.model, params, state, image)
  if not np.all(np.isfinite(logits)):
    sys.exit(f"error: the model produced non-finite logits for {_INPUT.value!r}")
  result = {
    "input": _INPUT.value,
    "checkpoint": _CHECKPOINT.value,
    f"top{_TOP_K.value}": tool.top_k(logits, tool.class_names(len(logits)), _TOP_K.value),
  }
  print(json.dumps(result, indent=2))
  if _OUTPUT.value:
    with atomic.atomic_write(_OUTPUT.value, "wb") as f:
      np.save(f, logits)


if __name__ == "__main__":
  app.run(main)
