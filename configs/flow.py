"""Optical flow with Perceiver IO (paper Section 4.2): the released model and the paper's recipe.

  python -m perceiver_jax.summary --config=configs/flow.py

In progress: the model is complete (`registry.optical_flow`, 41,057,134 parameters, the
release's module tree, so its checkpoint loads as it is), but its training pieces are not
built yet: the data section names the loader `perceiver_jax/data/flow.py`, which does not
exist yet (so `python -m perceiver_jax.main` refuses this config at `config.data.name`), and
the end-point-error task (loss and metrics) is still to come; `config.task` is a placeholder.

Model (`registry.optical_flow`): frame pairs of 368 x 496 RGB in [-1, 1]; each pixel's 3x3
neighbourhood of both frames (54 values) projected to 64, with 2-D Fourier features (64
bands): 322 channels per pixel; 2,048 x 512 latents, a 1-head cross-attend, 24 self-attends
with 16 heads; the decoder queries are the inputs; flow [368, 496, 2] per pair, the output
divided by 100 as in the release.
Recipe (paper): LAMB, cosine learning-rate decay from 4e-4 (not scaled by the batch), batch
512, 480 epochs on AutoFlow (400k pairs).

Arguments (`--config=configs/flow.py:runlocal`):
  runlocal   the `flow_testing` model (32 x 48 frames), batch 8, 20 steps: a smoke test.
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, runlocal=False)
  config = common.training_defaults()
  config.variant = "optical_flow"
  config.model = registry.get_model_config("optical_flow")
  # Placeholder: the loader of frame pairs and flow (`perceiver_jax/data/flow.py`) is not
  # written yet.
  config.data = dict(name="flow", data_dir="")
  config.batch_size = 512
  config.eval_batch_size = 64
  config.num_epochs = 480.0
  config.optimizer.name = "lamb"
  config.optimizer.learning_rate = 4e-4
  config.optimizer.scale_lr_by_batch = False
  config.optimizer.schedule = "warmup_cosine"  # with no warm-up: cosine from the peak to 0
  config.optimizer.warmup_steps = 0
  if arg.runlocal:
    config.variant = "flow_testing"
    config.model = registry.get_model_config("flow_testing")
    common.tiny_language_run(config)
  return config
