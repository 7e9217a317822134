"""Multimodal autoencoding of Kinetics-700-2020 with Perceiver IO (paper Section 4.3, Table 4).

  python -m perceiver_jax.summary --config=configs/kinetics_autoencoding.py
  python scripts/prepare_kinetics.py --csv=train.csv --csv=validate.csv --clips_dir=CLIPS \
      --output_dir=DATA
  python -m perceiver_jax.main --config=configs/kinetics_autoencoding.py \
      --config.data.data_dir=DATA --workdir=workdirs/kinetics_ae
  python -m perceiver_jax.autoencode --config=configs/kinetics_autoencoding.py \
      --checkpoint=video_autoencoding_checkpoint.pystate --input=clip.mp4 --output=recon.mp4

Model (`registry.multimodal_autoencoding`, the release's tree: 19,858,855 parameters): 16
frames of 224 x 224 in [0, 1] as 1x4x4 patches (50,176 inputs), 30,720 audio samples at 48
kHz as 16-sample patches (1,920) and the one-hot label (700), each with its Fourier features,
padded to 704 channels; 784 x 512 latents, a 1-head cross-attend, 8 self-attends (8 heads);
one decoder for all three (queries padded to 1,026 channels, 512 output channels) and the
release's postprocessors. The label is masked (replaced by its learned mask token) half of
the time in training and always at evaluation.
Recipe: the paper's batch 1,024, learning rate 1e-3, a random subset of each example's output
points per step (512 pixels and 32 audio patches, i.e. 512 audio samples, plus the label:
`config.data.train_points`), loss 0.03 L1(video) + 1 L1(audio) + 0.0001 CE(label) (task
`multimodal_autoencoding`). Not stated in the paper, chosen here: LAMB (the optimizer of the
paper's other Perceiver IO recipes) with weight decay 0.1 and a cosine decay to 0 without
warm-up, 100 epochs, training windows at a random time, a random 224 crop of frames stored at
256 (prepared by scripts/prepare_kinetics.py) and a random flip.
Evaluation: each validation clip's middle window reconstructed whole in 128 decoder calls (as
the release's colab): video and audio PSNR, top-1/top-5 of the masked label. The paper
(Table 4): audio / video PSNR / top-1 at 784 latents (88x compression) 26.97 / 24.37 / 10.2%,
392 (176x) 25.33 / 24.27 / 8.6%, 196 (352x) 14.15 / 23.21 / 11.5%. Compression = video
inputs x input width / (latents x latent width): 50,176 x 704 / (784 x 512) = 88.
Machine, wall time and measured PSNR of the full recipe: not run (it needs an accelerator pod).

Arguments (`--config=configs/kinetics_autoencoding.py:latents=392,runlocal`):
  latents=N  784 (released, 88x), 392 (176x) or 196 (352x): the paper's compression settings.
  runlocal   the `multimodal_testing` layout on generated clips: 20 steps, a smoke test.
  mini       the miniature of `experiments/multimodal_autoencoding/`, on 2 CPU cores: 8 frames
             of 32 x 32 and 2,048 audio samples (256 per frame) of generated clips (moving
             shapes with synchronised tones, `data.av_procedural`), 10 classes; `latents=N`
             then sets its latent count (64 channels each).
"""

from __future__ import annotations

import ml_collections

from configs import common
from perceiver_jax import registry
from perceiver_jax import tasks
from perceiver_jax.data import kinetics

PAPER_LATENTS = (784, 392, 196)


def mini_model(num_latents: int) -> ml_collections.ConfigDict:
  """The miniature's model: the released layout at 8 x 32 x 32 frames and 2,048 samples."""
  cfg = registry.get_model_config("multimodal_testing")
  section = cfg.audio_video_label
  section.audio.update(num_samples=2048, num_bands=32, max_resolution=(2048,))
  section.image.update(num_frames=8, image_size=32, num_bands=8, max_resolution=(8, 8, 8))
  section.queries.update(
    audio_num_bands=32,
    audio_max_resolution=(2048,),
    image_num_bands=8,
    image_max_resolution=(8, 8, 8),
    label_channels=64,
    output_channels=64,
  )
  cfg.num_latents = num_latents
  cfg.num_latent_channels = 64
  cfg.num_self_attends_per_block = 4
  cfg.num_self_attend_heads = 4
  return cfg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, latents=0, runlocal=False, mini=False)
  config = common.training_defaults()
  config.variant = "multimodal_autoencoding"
  config.model = registry.get_model_config("multimodal_autoencoding")
  config.task = tasks.default_config("multimodal_autoencoding")
  config.data = kinetics.default_config()
  config.batch_size = 1024
  config.eval_batch_size = 64
  config.num_epochs = 100.0
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 1_000
  config.optimizer.name = "lamb"
  config.optimizer.learning_rate = 1e-3
  config.optimizer.scale_lr_by_batch = False
  config.optimizer.schedule = "warmup_cosine"  # with no warm-up: cosine from the peak to 0
  config.optimizer.warmup_steps = 0
  config.optimizer.weight_decay = 0.1
  if arg.latents and not arg.mini and arg.latents not in PAPER_LATENTS:
    raise ValueError(f"config argument latents={arg.latents}: expected one of {PAPER_LATENTS}")
  if arg.latents and not arg.mini:
    config.model.num_latents = arg.latents
  if arg.runlocal:
    config.variant = "multimodal_testing"
    config.model = registry.get_model_config("multimodal_testing")
    config.data.source = "procedural"
    config.data.procedural.update(num_train=64, num_eval=8)
    config.task.eval_chunks = 4
    common.tiny_language_run(config)
  if arg.mini:
    # experiments/multimodal_autoencoding/README.md: the miniature trained on 2 CPU cores.
    config.variant = "multimodal_mini"
    config.model = mini_model(arg.latents or 64)
    config.data.source = "procedural"
    config.data.procedural.update(num_train=50_000, num_eval=256)
    config.data.train_points.update(image=512, audio=32)
    config.task.eval_chunks = 4
    # Video weighs as much as audio here (the paper: 0.03 and 1): at the paper's weights the
    # miniature's video stayed at the constant-colour level for its first 1,000 steps
    # (experiments/multimodal_autoencoding/README.md). The label at 0.01 (the paper: 0.0001).
    config.task.update(image_weight=1.0, audio_weight=1.0, label_weight=0.01)
    config.batch_size = 32
    config.eval_batch_size = 32
    config.num_epochs = 0.0
    config.total_steps = 4_000
    config.log_every_steps = 100
    config.eval_every_steps = 1_000
    config.checkpoint_every_steps = 1_000
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3
    config.optimizer.eps = 1e-8
    config.optimizer.warmup_steps = 200
    config.optimizer.weight_decay = 0.01
  return config
