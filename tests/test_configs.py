"""Every config in configs/ loads, validates and builds its model."""

import glob
import importlib
import os

import jax
import pytest

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
  "imagenet": ["variant=io_fourier", "variant=perceiver_ff", "variant=testing"],
  "fashion_mnist": [None, "runlocal", "prep=pixels,permuted", "permuted,runlocal"],
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
  assert default.optimizer.name == "adamw" and default.num_epochs == 4.5
  pixels = fashion_mnist.get_config("prep=pixels,permuted")
  assert (pixels.model.input.prep_type, pixels.model.input.spatial_downsample) == ("pixels", 1)
  assert pixels.model.input.permute_pixels
  # Fourier features follow the input grid: 7x7 patches or 28x28 pixels, never aliased.
  assert tuple(default.model.input.fourier.max_resolution) == ()
  with pytest.raises(ValueError, match=r"config argument prep='conv': expected one of"):
    fashion_mnist.get_config("prep=conv")
