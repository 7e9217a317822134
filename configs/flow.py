"""Optical flow with Perceiver IO (paper Section 4.2): the released model and the paper's recipe.

  python -m perceiver_jax.summary --config=configs/flow.py
  python -m perceiver_jax.main --config=configs/flow.py --workdir=W \
      --config.data.train_dir=/data/autoflow --config.data.eval_dir=/data/MPI-Sintel

Model (`registry.optical_flow`): frame pairs of 368 x 496 RGB in [-1, 1]; each pixel's 3x3
neighbourhood of both frames (54 values) projected to 64, with 2-D Fourier features (64
bands): 322 channels per pixel; 2,048 x 512 latents, a 1-head cross-attend, 24 self-attends
with 16 heads; the decoder queries are the inputs; flow [368, 496, 2] per pair in pixels (the
release's output scaling: / 100 in the decoder, x 20 after it).
Recipe (paper): AutoFlow (400k pairs) with augmentation, LAMB, cosine learning-rate decay
from 4e-4 (not scaled by the batch), batch 512, 480 epochs; then a last phase without
augmentation in which each pair is also fed reversed (`--config.data.augment.enabled=False
--config.data.reverse_pairs=True`, from the weights of the first phase through
`--config.pretrained.path`; reversal needs backward flow, see perceiver_jax/data/flow.py).
Task `flow`: the loss is the average end-point error over valid pixels; evaluation on
MPI-Sintel's training pairs (clean pass by default; `--config.data.eval_set=sintel_final`, or
`kitti` with `--config.data.eval_dir` its root) by tiled inference, the code of
`python -m perceiver_jax.flow`.

Arguments (`--config=configs/flow.py:runlocal`):
  runlocal   the `flow_testing` model (32 x 48 frames) on generated pairs, batch 8, 20 steps.
  mini       the miniature of `experiments/flow/` (2 CPU cores): the `flow_mini` layout on
             16 x 24 frames of generated pairs, held-out pairs of 24 x 36 evaluated in 4 tiles.
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry
from perceiver_jax import tasks
from perceiver_jax.data import flow as flow_data


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, runlocal=False, mini=False)
  config = common.training_defaults()
  config.variant = "optical_flow"
  config.model = registry.get_model_config("optical_flow")
  config.task = tasks.default_config("flow")
  config.data = flow_data.default_config()
  config.data.train_set = "autoflow"
  config.data.eval_set = "sintel_clean"
  config.batch_size = 512
  config.eval_batch_size = 64
  config.num_epochs = 480.0
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  config.optimizer.name = "lamb"
  config.optimizer.learning_rate = 4e-4
  config.optimizer.scale_lr_by_batch = False
  config.optimizer.schedule = "warmup_cosine"  # with no warm-up: cosine from the peak to 0
  config.optimizer.warmup_steps = 0
  if arg.runlocal:
    config.variant = "flow_testing"
    config.model = registry.get_model_config("flow_testing")
    config.data.train_set = config.data.eval_set = flow_data.PROCEDURAL
    config.data.procedural_eval_pairs = 8
    config.data.procedural_eval_size = (40, 60)  # more than one tile: evaluation is tiled
    common.tiny_language_run(config)
  if arg.mini:
    # experiments/flow/README.md: the miniature trained on 2 CPU cores.
    config.variant = "flow_mini"
    config.model = registry.get_model_config("flow_mini")
    # Smaller than `flow_mini` so that an hour holds enough steps to leave the zero-flow
    # plateau (experiments/flow/README.md): 16 x 24 frames, 64-channel patches, 64 latents.
    config.model.input_shape = (2, 16, 24, 3)
    config.model.flow.fourier.max_resolution = (16, 24)
    config.model.flow.num_channels = 64
    config.model.num_latents = 64
    config.data.tile_overlap = 4
    config.data.train_set = config.data.eval_set = flow_data.PROCEDURAL
    config.data.augment.enabled = False  # generated pairs: every pair is new
    config.data.procedural.update(
      max_translation=1.0,
      max_rotation_degrees=1.5,
      max_log_scale=0.02,
      shape_max_translation=1.0,
      shape_max_rotation_degrees=3.0,
      shape_max_log_scale=0.03,
      texture_finest_cell=8,
    )
    config.data.procedural_eval_pairs = 64
    config.data.procedural_eval_size = (24, 36)  # 4 tiles of 16 x 24
    config.batch_size = 16
    config.eval_batch_size = 16
    config.num_epochs = 0.0
    config.total_steps = 15_000
    config.log_every_steps = 50
    config.eval_every_steps = 1_000
    config.checkpoint_every_steps = 1_000
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.eps = 1e-8
    config.optimizer.warmup_steps = 200
    config.optimizer.weight_decay = 0.01
  return config
