"""ImageNet classification with the Perceiver and Perceiver IO.

Argument: `variant=NAME`, one of
  perceiver_ff, perceiver_ff_permuted, perceiver_learned   (Perceiver paper, Tables 1-2)
  io_fourier, io_conv, io_learned                          (Perceiver IO, released models)
  testing                                                  (tiny, 32x32 inputs)

Inspect a model:
  python -m perceiver_jax.summary --config=configs/imagenet.py:variant=io_fourier
Classify an image with a released Perceiver IO checkpoint:
  python -m perceiver_jax.predict --config=configs/imagenet.py:variant=io_fourier \
      --checkpoint=imagenet_fourier_position_encoding.pystate --input=cat.jpg
Every field can be overridden, e.g. `--config.model.attention_chunk_size=4096`.

Machine: any; both commands run on a CPU. `summary` takes seconds and prints the parameter
totals (io_fourier 48,440,627, io_conv 48,646,522, io_learned 62,255,848: the released
checkpoints'; perceiver_ff 44,912,254). With the released checkpoints, `predict` uses
models with 79.0% (io_fourier), 82.1% (io_conv) and 72.7% (io_learned) ImageNet top-1
(Perceiver IO paper). This config holds the models only; the ImageNet training recipes and
input pipeline are not part of it yet.
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="io_fourier")
  config = ml_collections.ConfigDict()
  config.variant = arg.variant
  config.seed = 0
  config.model = registry.get_model_config(arg.variant)
  return config
