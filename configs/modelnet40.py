"""ModelNet40 point-cloud classification with the Perceiver (paper Section 4.3, Table 4).

  python -m perceiver_jax.main --config=configs/modelnet40.py \
      --config.data.data_dir=/data/modelnet40_ply_hdf5_2048 --workdir=workdirs/modelnet40

Arguments (`--config=configs/modelnet40.py:format=off,runlocal`):
  format=hdf5  (default) the 2,048-point HDF5 release: DATA_DIR holds train_files.txt and
               test_files.txt listing ply_data_{train,test}N.h5 (`data` [N, 2048, 3] float32,
               `label` [N, 1]).
  format=off   the raw meshes, DATA_DIR/<class>/{train,test}/*.off (ModelNet40.zip): each
               mesh is sampled once, uniformly by surface area, to 2,048 points. Unreadable
               meshes are skipped, counted and logged (`--config.data.skip_bad=False` makes
               them an error instead).
  runlocal     20 steps of a smaller model: a smoke test.

Model (`registry.modelnet40`): each point's xyz are its features and the positions of 3-D
Fourier features (64 bands, maximum frequency 1120): 2,048 inputs of 390 channels; 512 x 1024
latents, 2 interleaved cross-attends, 2 weight-shared blocks of 6 self-attends, mean-pool
head: 44,793,844 parameters. Recipe (paper): LAMB at a constant 1e-3, batch 512, 50,000
steps; training points are scaled per point by a factor in [0.99, 1.01], then zero-centred
and scaled to the unit cube (test points only centred and scaled). Weight decay and clipping
are not given by the paper; this config keeps the project defaults (0.1 on kernels, clip 10).
Expect 85.7% test top-1 (paper Table 4) on an accelerator; the batch of 512 clouds of 2,048
points needs several accelerators or `--config.model.attention_chunk_size`/`remat`.
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry

FORMATS = ("hdf5", "off")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, format="hdf5", runlocal=False)
  if arg.format not in FORMATS:
    raise ValueError(f"config argument format={arg.format!r}: expected one of {FORMATS}")
  config = common.training_defaults()
  config.variant = "modelnet40"
  config.model = registry.get_model_config("modelnet40")
  config.data = dict(
    name="modelnet40",
    data_dir="",
    format=arg.format,
    num_points=2048,
    # format=off: skip (and count) unreadable meshes rather than stop.
    skip_bad=True,
  )
  config.batch_size = 512
  config.eval_batch_size = 512
  config.total_steps = 50_000
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 2_500
  config.optimizer.name = "lamb"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.scale_lr_by_batch = False
  config.optimizer.schedule = "constant"
  if arg.runlocal:
    common.shrink_for_local_run(config)
    config.data.num_points = 256
    config.model.input_shape = (256, 3)
    config.model.num_latent_channels = 64
    config.model.num_self_attend_heads = 4
  return config
