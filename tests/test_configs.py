"""Every config in configs/ loads, validates and builds its model."""

import glob
import importlib
import os

import jax
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import common
from perceiver_jax import model
from perceiver_jax import train

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "..", "configs")
EXPERIMENTS = sorted(
  os.path.basename(p)[:-3]
  for p in glob.glob(os.path.join(CONFIG_DIR, "*.py"))
  if not os.path.basename(p).startswith(("_", "common"))
)
ARGS = {
  "imagenet": [
    *(f"variant={v}" for v in ("perceiver_ff", "perceiver_ff_permuted", "perceiver_learned")),
    *(f"variant={v}" for v in ("io_fourier", "io_conv", "io_learned", "testing")),
    "variant=io_conv,runlocal",
    "variant=perceiver_ff,runlocal",
  ],
  "fashion_mnist": [
    None,
    "runlocal",
    "prep=pixels,permuted",
    "permuted,runlocal",
    "model=fmnist_convnet_ff,permuted",
    "model=fmnist_transformer_ff",
  ],
  "audioset": [
    *(f"variant={v}" for v in ("audio_raw", "audio_mel", "video", "audio_video")),
    "variant=audio_mel_video",
    "variant=audio_mel_video,runlocal",
  ],
  "modelnet40": [None, "format=off", "runlocal"],
  "flow": [None, "runlocal", "mini"],
  "kinetics_autoencoding": [None, "latents=392", "latents=196", "runlocal", "mini,latents=16"],
}


@pytest.mark.parametrize(
  "name, arg", [(n, a) for n in EXPERIMENTS for a in ARGS.get(n, [None, "runlocal"])]
)
def test_config_loads_validates_and_builds(name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  if "optimizer" in config:  # a training config
    train.validate_config(config)
  else:
    model.validate_model_config(config.model)
  params, _ = model.param_shapes(config.model)
  assert model.count_params(params) > 0
  assert jax.tree.leaves(params)


def _leaves(cfg: ml_collections.ConfigDict, prefix: str = ""):
  for key, value in cfg.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


@pytest.mark.parametrize(
  "name, arg", [(n, a) for n in EXPERIMENTS for a in ARGS.get(n, [None, "runlocal"])]
)
def test_every_model_field_can_be_overridden_from_the_command_line(name, arg):
  """`--config.model.x.y=<its value>` for every leaf of config.model, parsed by
  ml_collections' config_flags as main.py does, leaves the config unchanged and builds."""
  path = os.path.join(CONFIG_DIR, f"{name}.py") + (f":{arg}" if arg else "")
  expected = importlib.import_module(f"configs.{name}").get_config(arg)
  overrides = [f"--config.model.{field}={value}" for field, value in _leaves(expected.model)]
  overrides.append("--config.model.dropout_prob=0.25")  # the overrides are applied, in order
  expected.model.dropout_prob = 0.25
  argv = ["prog", f"--config={path}", *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
  flag_values(argv)
  config = flag_values.config
  assert config.model.to_dict() == expected.model.to_dict()
  model.validate_model_config(config.model)
  params, _ = model.param_shapes(config.model)
  assert model.count_params(params) > 0


def test_parse_arg_types_and_errors():
  arg = common.parse_arg("variant=io_conv,runlocal,steps=5", variant="x", runlocal=False, steps=1)
  assert (arg.variant, arg.runlocal, arg.steps) == ("io_conv", True, 5)
  with pytest.raises(ValueError, match="unknown config argument 'nope'"):
    common.parse_arg("nope=1", variant="x")
  with pytest.raises(ValueError, match=r"config argument steps='five' is not a int"):
    common.parse_arg("steps=five", steps=1)
  with pytest.raises(ValueError, match="is not a boolean"):
    common.parse_arg("runlocal=maybe", runlocal=False)


def test_fashion_mnist_arguments():
  from configs import fashion_mnist

  default = fashion_mnist.get_config(None)
  assert (default.model.input.prep_type, default.model.input.spatial_downsample) == ("patches", 4)
  assert not default.model.input.permute_pixels
  assert default.optimizer.name == "adamw" and default.num_epochs == 5.0
  # 100 warm-up steps to 3e-3, then cosine to 0 at the last of the 2,340 steps (60,000 / 128
  # rounded down per epoch), with label smoothing 0.1.
  from perceiver_jax import optimizer

  schedule = optimizer.learning_rate_schedule(
    default.optimizer, total_steps=2340, steps_per_epoch=468, batch_size=128
  )
  assert float(schedule(0)) == 0.0
  assert float(schedule(50)) == pytest.approx(1.5e-3, rel=1e-5)
  assert float(schedule(100)) == pytest.approx(3e-3, rel=1e-5)
  assert float(schedule(2340)) == pytest.approx(0.0, abs=1e-9)
  assert default.task.label_smoothing == 0.1
  # runlocal (a smoke test of a few steps, whatever total_steps a test sets) has none.
  assert fashion_mnist.get_config("runlocal").optimizer.warmup_steps == 0
  pixels = fashion_mnist.get_config("prep=pixels,permuted")
  assert (pixels.model.input.prep_type, pixels.model.input.spatial_downsample) == ("pixels", 1)
  assert pixels.model.input.permute_pixels
  # Fourier features follow the input grid: 7x7 patches or 28x28 pixels, never aliased.
  assert tuple(default.model.input.fourier.max_resolution) == ()
  with pytest.raises(ValueError, match=r"config argument prep='conv': expected one of"):
    fashion_mnist.get_config("prep=conv")
  with pytest.raises(ValueError, match=r"prep='pixels' applies to model=fashion_mnist only"):
    fashion_mnist.get_config("model=fmnist_vit_ff,prep=pixels")
  with pytest.raises(ValueError, match=r"model='io_conv' is not a 28x28x1, 10-class model"):
    fashion_mnist.get_config("model=io_conv")


def test_imagenet_recipes():
  from configs import imagenet

  perceiver = imagenet.get_config("variant=perceiver_ff")
  opt = perceiver.optimizer
  assert (opt.name, opt.learning_rate, opt.scale_lr_by_batch) == ("lamb", 0.004, False)
  assert (opt.schedule, tuple(opt.decay_epochs), opt.decay_factor) == ("step", (84, 102, 114), 0.1)
  assert perceiver.num_epochs == 120 and perceiver.data.randaugment_layers == 4
  assert perceiver.data.mixup_alpha == perceiver.data.cutmix_alpha == 0
  io = imagenet.get_config("variant=io_conv")
  opt = io.optimizer
  assert (opt.name, opt.learning_rate, opt.scale_lr_by_batch) == ("lamb", 5e-4, True)
  assert (opt.schedule, opt.weight_decay, opt.clip_global_norm) == ("constant_cosine", 0.1, 10)
  assert (io.num_epochs, io.batch_size, io.task.label_smoothing) == (110, 1024, 0.1)
  assert (io.data.mixup_alpha, io.data.randaugment_magnitude) == (0.2, 5)
  assert io.model.input.prep_type == "conv"
  local = imagenet.get_config("variant=io_fourier,runlocal")
  assert local.total_steps == 20 and local.data.num_eval_examples == 2 * local.eval_batch_size
  assert imagenet.get_config(None).variant == "io_fourier"
  with pytest.raises(ValueError, match=r"variant='resnet': expected one of"):
    imagenet.get_config("variant=resnet")


def test_audioset_recipe():
  from configs import audioset

  config = audioset.get_config("variant=audio_video")
  model_cfg = config.model
  assert config.task.name == "multi_label" and config.task.eval_windows == 16
  assert config.num_epochs == 100
  assert (model_cfg.num_blocks, model_cfg.num_cross_attends) == (2, 2)
  assert model_cfg.num_self_attends_per_block == 8 and model_cfg.num_classes == 527
  assert not model_cfg.share_latent_block_weights and not model_cfg.share_cross_attend_weights
  assert model_cfg.audio_video.video_dropout == 0.3 and model_cfg.decoder.type == "projection"
  with pytest.raises(ValueError, match=r"variant='speech': expected one of"):
    audioset.get_config("variant=speech")
