"""End-to-end tests of the command-line tools, `perceiver_jax.predict` and `perceiver_jax.summary`.

Each test runs the real command in a subprocess (each costs a JAX import, ~2 s), against
official-format checkpoints of the tiny `testing` variant written here; the checks of predict's
`.npy` dtypes call `load_input` in-process.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import numpy as np
import pickle_ops
import pytest
import reference_numpy
from PIL import Image
from test_reference_parity import eval_forward
from test_reference_parity import init_perturbed

from configs import modelnet40
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax.data import image_ops
from perceiver_jax.tools import predict as predict_tool

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent  # holds configs/
CONFIG = "--config=configs/imagenet.py:variant=testing"
LATENTS = "perceiver_encoder/~/trainable_position_encoding"


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO_ROOT,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=300,
  )


def predict(*args: str) -> subprocess.CompletedProcess:
  return run_cli("perceiver_jax.predict", CONFIG, *args)


def assert_fails_naming(result: subprocess.CompletedProcess, *names: str) -> None:
  assert result.returncode != 0, result.stdout
  assert "Traceback" not in result.stderr, result.stderr
  for name in names:
    assert name in result.stderr, result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess, path) -> None:
  """The command failed with a single `error: ...` line that names `path`."""
  assert_fails_naming(result, str(path))
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith("error:") and str(path) in last_line, result.stderr


def check_top5(stdout: str, logits: np.ndarray) -> None:
  """The printed top-5 are the classes with the largest saved logits, in order."""
  top5 = json.loads(stdout)["top5"]
  ids = [entry["class_id"] for entry in top5]
  printed_logits = [entry["logit"] for entry in top5]
  assert printed_logits == sorted(printed_logits, reverse=True)
  assert ids == list(np.argsort(-logits, kind="stable")[:5])
  np.testing.assert_allclose(printed_logits, logits[ids], rtol=1e-6)
  probabilities = [entry["probability"] for entry in top5]
  assert all(p > 0 for p in probabilities)
  assert sum(probabilities) <= 1.0 + 1e-6


def tiny_model(num_latents: int | None = None):
  cfg = registry.get_model_config("testing")
  if num_latents is not None:
    cfg.num_latents = num_latents
  params, state = init_perturbed(cfg)
  return cfg, params, state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """(path, model config, params, state) of a perturbed `testing` model, official format."""
  cfg, params, state = tiny_model()
  path = tmp_path_factory.mktemp("ckpt") / "testing.pystate"
  official_format.save_official_pickle(str(path), params, state)
  return path, cfg, params, state


@pytest.fixture(scope="module")
def image_npy(tmp_path_factory):
  image = np.random.default_rng(3).normal(size=(32, 32, 3)).astype(np.float32)
  path = tmp_path_factory.mktemp("inputs") / "image.npy"
  np.save(path, image)
  return path, image


def test_predict_preprocessed_npy(checkpoint, image_npy, tmp_path):
  ckpt, cfg, params, state = checkpoint
  input_path, image = image_npy
  out = tmp_path / "logits.npy"
  result = predict(f"--checkpoint={ckpt}", f"--input={input_path}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  logits = np.load(out)
  assert logits.shape == (cfg.num_classes,)
  check_top5(result.stdout, logits)
  np.testing.assert_allclose(
    logits, eval_forward(cfg, params, state, image[None])[0], rtol=0, atol=1e-5
  )
  np.testing.assert_allclose(
    logits, reference_numpy.reference_forward(params, cfg, image[None])[0], rtol=0, atol=1e-4
  )


def test_predict_png(checkpoint, tmp_path):
  ckpt, cfg, params, state = checkpoint
  pixels = np.random.default_rng(4).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
  input_path = tmp_path / "image.png"
  Image.fromarray(pixels).save(input_path)
  out = tmp_path / "logits.npy"
  result = predict(f"--checkpoint={ckpt}", f"--input={input_path}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  logits = np.load(out)
  check_top5(result.stdout, logits)
  image = image_ops.load_image_for_eval(input_path, size=32)
  np.testing.assert_allclose(
    logits, eval_forward(cfg, params, state, image[None])[0], rtol=0, atol=1e-5
  )


def test_predict_with_config_override(checkpoint, image_npy, tmp_path):
  input_path, image = image_npy
  cfg, params, state = tiny_model(num_latents=8)
  small = tmp_path / "small.pystate"
  official_format.save_official_pickle(str(small), params, state)
  override = "--config.model.num_latents=8"
  out = tmp_path / "logits.npy"
  result = predict(override, f"--checkpoint={small}", f"--input={input_path}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  logits = np.load(out)
  check_top5(result.stdout, logits)
  np.testing.assert_allclose(
    logits, eval_forward(cfg, params, state, image[None])[0], rtol=0, atol=1e-5
  )

  default_ckpt = checkpoint[0]
  result = predict(override, f"--checkpoint={default_ckpt}", f"--input={input_path}")
  assert_fails_naming(result, LATENTS)


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_predict_rejects_mismatched_checkpoint(checkpoint, image_npy, tmp_path, change):
  _, _, params, state = checkpoint
  params = dict(params)
  if change == "missing":
    entry = "classification_decoder/~/basic_decoder/output"
    del params[entry]
  else:
    entry = "perceiver_encoder/~/extra_linear"
    params[entry] = {"w": np.zeros((2, 2), np.float32)}
  path = tmp_path / f"{change}.pystate"
  official_format.save_official_pickle(str(path), params, state)
  result = predict(f"--checkpoint={path}", f"--input={image_npy[0]}")
  assert_fails_naming(result, entry)


def test_predict_missing_checkpoint_file(image_npy, tmp_path):
  path = tmp_path / "no_such.pystate"
  assert_one_line_error(predict(f"--checkpoint={path}", f"--input={image_npy[0]}"), path)


def test_predict_wrong_input_shape(checkpoint, tmp_path):
  path = tmp_path / "small_image.npy"
  np.save(path, np.zeros((16, 16, 3), np.float32))
  assert_one_line_error(predict(f"--checkpoint={checkpoint[0]}", f"--input={path}"), path)


def test_predict_refuses_checkpoint_with_hidden_object_dtype(checkpoint, image_npy, tmp_path):
  # One array of a valid checkpoint, forged: a structured dtype whose object field is hidden
  # by flags 0. c289d05 loaded it, and the cast to float32 dereferenced its bytes: exit 139.
  _, _, params, state = checkpoint
  pos_embs = params[LATENTS]["pos_embs"]
  forged = pickle_ops.array(
    pos_embs.shape, pickle_ops.hidden_object_dtype(), b"\x41" * (8 * pos_embs.size)
  )
  forged_params = {**params, LATENTS: {"pos_embs": pickle_ops.Raw(forged)}}
  path = tmp_path / "forged.pystate"
  path.write_bytes(pickle_ops.dumps({"params": forged_params, "state": state}))
  result = predict(f"--checkpoint={path}", f"--input={image_npy[0]}")
  assert_one_line_error(result, path)
  assert "refusing dtype 'V8'" in result.stderr


def test_predict_16_bit_png_is_scaled_by_its_bit_depth(checkpoint, tmp_path):
  # convert("RGB") clipped every 16-bit value above 255 to white.
  ckpt, cfg, params, state = checkpoint
  grey = np.random.default_rng(5).integers(0, 256, size=(40, 48), dtype=np.uint8)
  path_8, path_16 = tmp_path / "grey8.png", tmp_path / "grey16.png"
  Image.fromarray(grey).save(path_8)
  Image.fromarray(grey.astype(np.uint16) * 257).save(path_16)
  assert Image.open(path_16).mode == "I;16"
  out = tmp_path / "logits.npy"
  result = predict(f"--checkpoint={ckpt}", f"--input={path_16}", f"--output={out}")
  assert result.returncode == 0, result.stderr
  image = image_ops.load_image_for_eval(path_8, size=32)
  np.testing.assert_allclose(
    np.load(out), eval_forward(cfg, params, state, image[None])[0], rtol=0, atol=1e-5
  )


NOT_REAL_NUMBERS = {
  "complex": np.full((32, 32, 3), 1 + 2j, np.complex64),
  "datetime": np.zeros((32, 32, 3), "datetime64[s]"),
  "bool": np.ones((32, 32, 3), bool),
  "string": np.full((32, 32, 3), "1.0"),
}


@pytest.mark.parametrize("kind", NOT_REAL_NUMBERS)
def test_predict_input_refuses_arrays_of_other_than_real_numbers(tmp_path, kind):
  array = NOT_REAL_NUMBERS[kind]
  path = tmp_path / f"{kind}.npy"
  np.save(path, array)
  cfg = registry.get_model_config("testing")
  message = re.escape(f"has dtype {array.dtype}; the model takes real numbers")
  with pytest.raises(ValueError, match=message):
    predict_tool.load_input(str(path), cfg)


def test_predict_input_refuses_object_arrays(tmp_path):
  path = tmp_path / "object.npy"
  np.save(path, np.full((32, 32, 3), None, object), allow_pickle=True)
  cfg = registry.get_model_config("testing")
  with pytest.raises(ValueError, match="cannot read array .*allow_pickle=False"):
    predict_tool.load_input(str(path), cfg)


def test_predict_string_npy_fails_with_one_line(checkpoint, tmp_path):
  path = tmp_path / "strings.npy"
  np.save(path, NOT_REAL_NUMBERS["string"])
  assert_one_line_error(predict(f"--checkpoint={checkpoint[0]}", f"--input={path}"), path)


def test_predict_image_for_a_points_model_names_the_input(tmp_path):
  # c289d05 ended in a Haiku shape error after loading the checkpoint.
  cfg = modelnet40.get_config("runlocal").model
  params, state = model.build_model(cfg).init(
    jax.random.PRNGKey(0), model.dummy_inputs(cfg), is_training=True
  )
  ckpt = tmp_path / "points.pystate"
  official_format.save_official_pickle(str(ckpt), params, state)
  image = tmp_path / "image.png"
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
  config = "--config=configs/modelnet40.py:runlocal"
  result = run_cli("perceiver_jax.predict", config, f"--checkpoint={ckpt}", f"--input={image}")
  assert_one_line_error(result, image)
  assert "the model takes points input of shape (256, 3), not an RGB image" in result.stderr


def test_summary_parameter_totals():
  exact = {"io_fourier": 48440627, "io_conv": 48646522, "io_learned": 62255848}
  for variant in (*exact, "perceiver_ff"):
    result = run_cli("perceiver_jax.summary", f"--config=configs/imagenet.py:variant={variant}")
    assert result.returncode == 0, result.stderr
    last_line = result.stdout.strip().splitlines()[-1]
    if variant in exact:
      assert last_line == f"Total parameters: {exact[variant]}"
    else:
      prefix = "Total parameters: "
      assert last_line.startswith(prefix), last_line
      assert round(int(last_line[len(prefix) :]) / 1e6, 1) == 44.9
