"""ImageNet classification with the Perceiver and Perceiver IO: models and training recipes.

Argument: `variant=NAME[,runlocal]`, NAME one of
  perceiver_ff, perceiver_ff_permuted, perceiver_learned   (Perceiver paper, Tables 1-2)
  io_fourier, io_conv, io_learned                          (Perceiver IO, released models)
  testing                                                  (tiny, 32x32 inputs)
`runlocal` shrinks the same experiment to a 20-step smoke test (2-block model, batch 32,
512 evaluation images); it still reads the real data.

Train (data: the TFDS `imagenet2012` dataset in array_record format, see
scripts/build_imagenet.py):
  python -m perceiver_jax.main --config=configs/imagenet.py:variant=perceiver_ff \
      --config.data.data_dir=$HOME/tensorflow_datasets --workdir=workdirs/perceiver_ff
Inspect a model:
  python -m perceiver_jax.summary --config=configs/imagenet.py:variant=io_fourier
Classify an image with a released Perceiver IO checkpoint:
  python -m perceiver_jax.predict --config=configs/imagenet.py:variant=io_fourier \
      --checkpoint=imagenet_fourier_position_encoding.pystate --input=cat.jpg
Every field can be overridden, e.g. `--config.model.attention_chunk_size=4096`.

Recipes:
  perceiver_*  the Perceiver paper [P]: LAMB, lr 0.004 (not scaled by batch), divided by 10
               at epochs 84, 102 and 114 of 120; Inception-style crops + RandAugment (4, 5),
               no MixUp/CutMix. [P] does not state the batch size, weight decay, clipping or
               label smoothing: they are Perceiver IO's (1024, 0.1, 10, 0.1).
  io_*         Perceiver IO [PIO]: LAMB, lr 5e-4 x batch/256 (2e-3 at 1024), flat for half of
               the steps then cosine to 0, no warm-up; weight decay 0.1, clip 10, label
               smoothing 0.1, 110 epochs at batch 1024; crops + RandAugment (4, 5), MixUp
               (0.2) on half of each batch and CutMix on the other half.
  Evaluation: centre crop 224/256, TF-exact bicubic resize, ImageNet mean/std.

Machine and expected results: the papers trained on TPUs (64 TPUv3 cores for Perceiver IO);
this project has not run these recipes to the end. Expected top-1 (papers): perceiver_ff
78.0, perceiver_ff_permuted 78.0, perceiver_learned 70.9, io_fourier 79.0, io_conv 82.1,
io_learned 72.7. `summary` prints the parameter totals on any CPU in seconds (io_fourier
48,440,627, io_conv 48,646,522, io_learned 62,255,848: the released checkpoints';
perceiver_ff 44,912,254).
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry

PERCEIVER = ("perceiver_ff", "perceiver_ff_permuted", "perceiver_learned")
PERCEIVER_IO = ("io_fourier", "io_conv", "io_learned")
VARIANTS = (*PERCEIVER, *PERCEIVER_IO, "testing")


def data_config(image_size: int) -> ml_collections.ConfigDict:
  """The `config.data` section read by perceiver_jax/data/imagenet.py."""
  return ml_collections.ConfigDict(
    dict(
      name="imagenet",
      # TFDS data directory holding imagenet2012/<version>/ in array_record format;
      # "" means $TFDS_DATA_DIR, else ~/tensorflow_datasets.
      data_dir="",
      tfds_name="imagenet2012",  # may pin a version: "imagenet2012:5.1.0"
      train_split="train",
      eval_split="validation",
      num_eval_examples=0,  # 0: the whole eval split; n > 0: its first n (smoke tests)
      # Side of the square model input; must match config.model.input_shape.
      image_size=image_size,
      # Inception-style random crop: area fraction and aspect ratio (width / height).
      crop_area_range=(0.08, 1.0),
      crop_ratio_range=(3 / 4, 4 / 3),
      randaugment_layers=4,  # 0 disables RandAugment
      randaugment_magnitude=5.0,  # RandAugment's 0..10 scale
      # MixUp on half of every batch and CutMix on the other half; 0 disables either.
      # With either on, labels are soft: float32 [..., num_classes].
      mixup_alpha=0.2,
      cutmix_alpha=1.0,  # the CutMix paper's value; [PIO] states only MixUp's
      # Host-side preparation: grain worker processes (0: in the training process),
      # threads per process, and batches prepared ahead.
      num_workers=8,
      num_threads=2,
      prefetch_batches=2,
    )
  )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="io_fourier", runlocal=False)
  if arg.variant not in VARIANTS:
    raise ValueError(f"config argument variant={arg.variant!r}: expected one of {VARIANTS}")
  config = common.training_defaults()
  config.variant = arg.variant
  config.model = registry.get_model_config(arg.variant)
  config.data = data_config(config.model.input_shape[0])
  # Shared by both papers' runs (stated by [PIO], not by [P]).
  config.batch_size = 1024
  config.eval_batch_size = 1000
  config.task.label_smoothing = 0.1
  config.optimizer.name = "lamb"
  config.optimizer.weight_decay = 0.1
  config.optimizer.clip_global_norm = 10.0
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 1000
  if arg.variant in PERCEIVER:
    config.num_epochs = 120.0
    config.optimizer.learning_rate = 0.004
    config.optimizer.scale_lr_by_batch = False
    config.optimizer.schedule = "step"
    config.optimizer.decay_epochs = (84, 102, 114)
    config.optimizer.decay_factor = 0.1
    config.data.mixup_alpha = 0.0
    config.data.cutmix_alpha = 0.0
  else:  # Perceiver IO, and the tiny testing model with the same recipe
    config.num_epochs = 110.0
    config.optimizer.learning_rate = 5e-4
    config.optimizer.scale_lr_by_batch = True
    config.optimizer.schedule = "constant_cosine"
    config.optimizer.constant_fraction = 0.5
  if arg.variant == "testing":
    config.batch_size = 8
    config.eval_batch_size = 8
    config.total_steps = 4
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 2
    config.data.num_workers = 0
    config.data.num_threads = 1
  if arg.runlocal:
    common.shrink_for_local_run(config)
    config.data.num_eval_examples = config.eval_batch_size * 2
    config.data.num_workers = 0
  return config
