"""AudioSet multi-label classification with the Perceiver (paper Sec. 4.2, Table 3).

  python scripts/prepare_audioset.py ... --output_dir=DATA   (see that script)
  python -m perceiver_jax.main --config=configs/audioset.py:variant=audio_video \
      --config.data.data_dir=DATA --workdir=workdirs/audioset_av

Argument `variant=NAME` (inputs of one 1.28 s window: count x width; parameters; paper mAP):
  audio_raw        480 raw-audio patches of 128 samples at 48 kHz x 257       107,419,677  38.3
  audio_mel        4,800 log-mel values (120 frames x 40 bins) x 131          106,706,769  38.4
  video            12,544 2x8x8 patches of 32 x 224 x 224 frames x 579        109,818,577  25.8
  audio_video      raw audio + video: 13,024 inputs padded to 583             109,853,923  43.5
  audio_mel_video  mel + video: 17,344 inputs padded to 583                   109,854,049  43.2
`runlocal` shrinks the model and the run to a smoke test (still the full input sizes).

From the paper: 2 cross-attends, each followed by a latent Transformer of 8 self-attends, no
weight sharing (2 blocks), mean-pool + Linear head, 527 classes, sigmoid cross-entropy, mAP,
100 epochs, training on 32-frame windows, evaluation averaging 16 windows per clip, video
dropout 0.3, learned modality paddings (4 for video), SpecAugment on mel inputs.
Assumptions (not stated in the paper): the ImageNet model's latent array (512 x 1024), heads
(1 per cross-attend, 8 per self-attend) and widening factor 1; the Perceiver IO optimizer
recipe (LAMB, lr 5e-4 x batch / 256 flat for half the run then cosine to 0, weight decay
0.1, clip 10) at batch 512; the Fourier bands (raw 64 over the 480 patches, mel 32 per axis,
video 32 per axis, each up to its grid's Nyquist frequency); the mel layout (hop 512 =
10.67 ms, window 1,024, 40 bins from 20 Hz to 24 kHz) and SpecAugment sizes (2 time masks of
up to 12 frames, 2 frequency masks of up to 8 bins).
Machine, wall time and measured mAP: not run yet (the full set needs a TPU/GPU pod).
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry
from perceiver_jax import tasks
from perceiver_jax.data import audioset

VARIANTS = {
  # variant: (modalities, audio prep)
  "audio_raw": (("audio",), "raw"),
  "audio_mel": (("audio",), "mel"),
  "video": (("video",), "raw"),
  "audio_video": (("audio", "video"), "raw"),
  "audio_mel_video": (("audio", "video"), "mel"),
}


def model_config(variant: str) -> ml_collections.ConfigDict:
  """The `config.model` section of a variant: the paper's AudioSet Perceiver."""
  if variant not in VARIANTS:
    raise ValueError(f"config argument variant={variant!r}: expected one of {tuple(VARIANTS)}")
  modalities, audio_prep = VARIANTS[variant]
  cfg = registry.base_config("audio_video", num_classes=audioset.NUM_CLASSES)
  cfg.audio_video.modalities = modalities
  cfg.audio_video.audio.prep = audio_prep
  cfg.audio_video.audio.num_bands = 64 if audio_prep == "raw" else 32
  cfg.num_blocks = 2
  cfg.num_cross_attends = 2  # one before each block
  cfg.num_self_attends_per_block = 8
  cfg.share_cross_attend_weights = False
  cfg.share_latent_block_weights = False
  cfg.decoder.type = "projection"
  return cfg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, variant="audio_video", runlocal=False)
  config = common.training_defaults()
  config.variant = arg.variant
  config.model = model_config(arg.variant)
  config.task = tasks.default_config("multi_label")  # sigmoid cross-entropy, mAP
  config.task.eval_windows = 16
  config.data = dict(
    name="audioset",
    data_dir="",  # the shards of scripts/prepare_audioset.py
    train_splits=("balanced_train", "unbalanced_train"),  # the paper's 1.7M clips
    eval_split="eval",
    fps=25,
    sample_rate=48_000,
    random_flip=True,
    num_threads=16,
    prefetch_examples=256,
  )
  config.batch_size = 512
  config.eval_batch_size = 32  # x 16 windows = 512 windows per step, as many as in training
  config.num_epochs = 100.0
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 2000
  if arg.runlocal:
    common.shrink_for_local_run(config)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.model.num_latent_channels = 64
    config.model.num_self_attend_heads = 4
    config.data.num_threads = 2
    config.data.prefetch_examples = 8
  return config
