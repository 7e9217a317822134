"""`python -m perceiver_jax.flow` and `tools.flow_inference` on the tiny `flow_testing` model.

Frames of 45 x 70 against tiles of 32 x 48 with the default overlap of 20: 3 x 2 = 6 tiles
(row origins 0, 12, 13; column origins 0, 22), so a batch of 4 leaves a padded last chunk.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import flow as flow_config
from perceiver_jax import model
from perceiver_jax import official_format
from perceiver_jax import registry
from perceiver_jax.data import flow as flow_data
from perceiver_jax.data import flow_formats
from perceiver_jax.tasks import flow as flow_task
from perceiver_jax.tools import flow_colors
from perceiver_jax.tools import flow_inference
from perceiver_jax.tools import flow_tiles

REPO = os.path.join(os.path.dirname(__file__), "..")
CONFIG = "configs/flow.py:runlocal"
TILE = (32, 48)
OUTPUT = "flow_decoder/~/basic_decoder/output"


def _init(seed: int, random_output: bool):
  """flow_testing params; `random_output` replaces the zero-initialised output projection so
  the flow differs from pixel to pixel (a few pixels in size)."""
  cfg = registry.get_model_config("flow_testing")
  forward = model.build_model(cfg)
  init = jax.jit(lambda key, x: forward.init(key, x, is_training=True))
  params, state = init(jax.random.PRNGKey(seed), model.dummy_inputs(cfg, 1))
  if random_output:
    shape = params[OUTPUT]["w"].shape
    params[OUTPUT] = {
      "w": jax.random.normal(jax.random.PRNGKey(seed + 1), shape),
      "b": np.array([1.0, -2.0], np.float32),
    }
  return forward, params, state


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  forward, params, state = _init(0, random_output=True)
  path = str(tmp_path_factory.mktemp("ckpt") / "flow.pystate")
  official_format.save_official_pickle(path, params, bare=True)
  return path, forward, params, state


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
  """Freshly initialised params: the zero output projection predicts zero flow."""
  forward, params, state = _init(3, random_output=False)
  path = str(tmp_path_factory.mktemp("fresh") / "flow.pystate")
  official_format.save_official_pickle(path, params, bare=True)
  return path, forward, params, state


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
  """Two 45 x 70 PNG frames, a 40 x 70 one and a 20 x 70 one; their paths and pixels."""
  root = tmp_path_factory.mktemp("frames")
  rng = np.random.default_rng(0)
  pixels = {}
  for name, height in (("a", 45), ("b", 45), ("short", 40), ("tiny", 20)):
    pixels[name] = rng.integers(0, 256, (height, 70, 3), dtype=np.uint8)
    Image.fromarray(pixels[name]).save(root / f"{name}.png")
  return {name: str(root / f"{name}.png") for name in pixels}, pixels


def _direct(forward, params, state):
  """The model over any number of tiles, not padded: the reference."""
  apply = jax.jit(lambda tiles: forward.apply(params, state, None, tiles, is_training=False)[0])
  return lambda tiles: np.asarray(apply(tiles))


def _run(*args):
  return subprocess.run(
    [sys.executable, "-m", "perceiver_jax.flow", f"--config={CONFIG}", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


def _eval_config(num_pairs: int):
  config = flow_config.get_config("runlocal")
  config.data.procedural_eval_pairs = num_pairs
  return config


def test_model_tile_refuses_other_models():
  assert flow_inference.model_tile(registry.get_model_config("flow_testing")) == TILE
  with pytest.raises(ValueError, match="config.model.modality='image': not an optical-flow"):
    flow_inference.model_tile(registry.get_model_config("testing"))


def test_tile_model_pads_the_last_chunk_and_compiles_once(trained, frames):
  _, forward, params, state = trained
  paths, pixels = frames

  class CountingForward:
    """Counts traces: a jitted function calls `apply` once per compilation."""

    traces = 0

    def apply(self, *args, **kwargs):
      CountingForward.traces += 1
      return forward.apply(*args, **kwargs)

  fn = flow_inference.tile_model(CountingForward(), params, state, batch_size=4)
  flow = flow_inference.predict_pair(fn, pixels["a"], pixels["b"], TILE, 20, 4)
  assert CountingForward.traces == 1  # chunks of 4 and 2 tiles, one shape
  assert len(flow_tiles.tile_origins((45, 70), TILE, 20)) == 6
  a, b = flow_data.normalize(pixels["a"]), flow_data.normalize(pixels["b"])
  want = flow_tiles.run_tiled(_direct(forward, params, state), a, b, TILE, 20, 6)
  assert flow.shape == (45, 70, 2) and flow.dtype == np.float32
  assert np.std(flow) > 0.1  # a real field, not a constant
  np.testing.assert_allclose(flow, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="got 5 tiles; this model runs 1 to batch_size=4"):
    fn(np.zeros((5, 2, *TILE, 3), np.float32))
  with pytest.raises(ValueError, match="batch_size=0: must be at least 1"):
    flow_inference.tile_model(forward, params, state, batch_size=0)


def test_read_pair_reads_frames_and_names_each_problem(frames, tmp_path):
  paths, pixels = frames
  frame1, frame2 = flow_inference.read_pair(paths["a"], paths["b"], TILE)
  np.testing.assert_array_equal(frame1, pixels["a"])
  np.testing.assert_array_equal(frame2, pixels["b"])
  with pytest.raises(
    ValueError, match=r"differ in size: .*a.png is 45 x 70, .*short.png is 40 x 70"
  ):
    flow_inference.read_pair(paths["a"], paths["short"], TILE)
  with pytest.raises(ValueError, match=r"frames of 20 x 70 .* smaller than one tile .*, 32 x 48"):
    flow_inference.read_pair(paths["tiny"], paths["tiny"], TILE)
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"not an image")
  with pytest.raises(ValueError, match="broken.png: unreadable frame"):
    flow_inference.read_pair(str(broken), paths["b"], TILE)
  with pytest.raises(ValueError, match="missing.png: unreadable frame"):
    flow_inference.read_pair(paths["a"], str(tmp_path / "missing.png"), TILE)


def test_write_outputs_kitti_png_and_all_or_nothing(tmp_path):
  rng = np.random.default_rng(1)
  flow = rng.uniform(-30, 30, (5, 7, 2)).astype(np.float32)
  flow_inference.write_outputs(flow, str(tmp_path / "flow.png"), str(tmp_path / "colour.png"))
  decoded, valid = flow_formats.read_kitti_flow(str(tmp_path / "flow.png"))
  assert valid.all()
  np.testing.assert_allclose(decoded, flow, atol=0.5 / 64 + 1e-6)  # 1/64 px steps
  colour = np.asarray(Image.open(tmp_path / "colour.png"))
  np.testing.assert_array_equal(colour, flow_colors.flow_to_rgb(flow))
  # A failing write leaves an existing output as it was and no temporary file behind.
  old = tmp_path / "old.flo"
  old.write_bytes(b"old")
  flow[2, 3, 0] = np.nan
  with pytest.raises(ValueError, match="the flow has 1 non-finite values; nothing written"):
    flow_inference.write_outputs(flow, str(old), str(tmp_path / "new.png"))
  assert old.read_bytes() == b"old"
  assert sorted(os.listdir(tmp_path)) == ["colour.png", "flow.png", "old.flo"]
  with pytest.raises(ValueError, match=r"--output='flow.npy': expected a .flo"):
    flow_inference.check_output_paths("flow.npy")
  with pytest.raises(ValueError, match=r"--visualize='v.jpg': expected a .png"):
    flow_inference.check_output_paths("flow.flo", "v.jpg")


def _zero_flow_metrics(source: flow_data.PairSource) -> dict[str, float]:
  """The metrics of a zero-flow prediction, straight from the generated pairs: the end-point
  error of every pixel is its true flow's length."""
  lengths, per_image = [], []
  for i in range(source.num_pairs):
    sample = source.load(i)
    length = np.hypot(sample["flow"][..., 0], sample["flow"][..., 1])[sample["valid"]]
    lengths.append(length.astype(np.float64))
    per_image.append(length.mean())
  lengths = np.concatenate(lengths)
  metrics = {f"eval/outliers_{n}px": np.mean(lengths > n) for n in (1, 3, 5)}
  return {
    **metrics,
    "eval/epe": lengths.mean(),
    "eval/epe_per_image": np.mean(per_image),
    "eval/fl_all": np.mean(lengths > 3.0),  # > 3 px and > 5% of itself
    "eval/pairs": source.num_pairs,
    "eval/count": lengths.size,
  }


def test_evaluate_fresh_model_scores_the_zero_flow(fresh):
  _, forward, params, state = fresh
  config = _eval_config(3)
  fn = flow_inference.tile_model(forward, params, state, batch_size=5)  # 12 tiles: 3 batches
  got = flow_inference.evaluate(fn, config, overlap=20, batch_size=5)
  want = _zero_flow_metrics(flow_data.pair_source(config.data, "eval", TILE))
  assert want["eval/epe"] > 0.5  # the generated pairs move
  assert set(got) == set(want)
  for key, value in want.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-5, err_msg=key)


def test_evaluate_equals_the_single_pair_path(trained):
  """With a non-zero model the split's EPE is that of `predict_pair` on each whole pair."""
  _, forward, params, state = trained
  config = _eval_config(2)
  fn = flow_inference.tile_model(forward, params, state, batch_size=3)
  got = flow_inference.evaluate(fn, config, overlap=20, batch_size=3)
  source = flow_data.pair_source(config.data, "eval", TILE)
  epe_sum = count = 0.0
  for i in range(source.num_pairs):
    sample = source.load(i)
    pred = flow_inference.predict_pair(fn, sample["frame1"], sample["frame2"], TILE, 20, 3)
    sums = flow_task.error_sums(pred, sample["flow"], sample["valid"])
    epe_sum, count = epe_sum + float(sums["epe_sum"]), count + float(sums["count"])
  assert got["eval/pairs"] == 2
  np.testing.assert_allclose(got["eval/epe"], epe_sum / count, rtol=1e-5)
  with pytest.raises(ValueError, match="config.task.name='classification'"):
    config.task.name = "classification"
    flow_inference.evaluate(fn, config, overlap=20, batch_size=3)


def test_cli_writes_the_tiled_flow_and_its_colour_coding(trained, frames, tmp_path):
  path, forward, params, state = trained
  paths, pixels = frames
  out, picture = tmp_path / "out" / "flow.flo", tmp_path / "out" / "flow.png"
  result = _run(
    f"--checkpoint={path}",
    f"--frame1={paths['a']}",
    f"--frame2={paths['b']}",
    f"--output={out}",
    f"--visualize={picture}",
    "--batch_size=4",
  )
  assert result.returncode == 0, result.stderr
  a, b = flow_data.normalize(pixels["a"]), flow_data.normalize(pixels["b"])
  want = flow_tiles.run_tiled(_direct(forward, params, state), a, b, TILE, 20, 6)
  flow = flow_formats.read_flo(str(out))
  np.testing.assert_allclose(flow, want, rtol=1e-5, atol=1e-5)
  colour = np.asarray(Image.open(picture))
  assert colour.shape == (45, 70, 3)
  np.testing.assert_array_equal(colour, flow_colors.flow_to_rgb(flow))
  (line,) = result.stdout.splitlines()
  largest = np.hypot(want[..., 0], want[..., 1]).max()
  assert line.startswith("45 x 70: 6 tiles of 32 x 48 on cpu, max |flow| ")
  assert f"max |flow| {largest:.3f} px" in line and line.endswith(f" s -> {out}")


def test_cli_error_is_one_line_and_writes_nothing(trained, frames, tmp_path):
  path = trained[0]
  paths, _ = frames
  result = _run(
    f"--checkpoint={path}",
    f"--frame1={paths['a']}",
    f"--frame2={paths['short']}",
    f"--output={tmp_path / 'flow.flo'}",
    f"--visualize={tmp_path / 'flow.png'}",
  )
  assert result.returncode == 1
  (line,) = result.stderr.splitlines()
  assert line.startswith("error: the frames differ in size: ")
  assert "is 45 x 70" in line and "is 40 x 70" in line
  assert result.stdout == "" and os.listdir(tmp_path) == []


def test_cli_evaluate_prints_and_writes_the_metrics(fresh, tmp_path):
  path = fresh[0]
  metrics_path = tmp_path / "metrics.json"
  result = _run(
    f"--checkpoint={path}",
    "--evaluate",
    "--config.data.procedural_eval_pairs=3",
    "--batch_size=5",
    f"--metrics_json={metrics_path}",
  )
  assert result.returncode == 0, result.stderr
  printed = dict(line.split(" ") for line in result.stdout.splitlines())
  written = json.loads(metrics_path.read_text())
  want = _zero_flow_metrics(flow_data.pair_source(_eval_config(3).data, "eval", TILE))
  assert set(printed) == set(written) == set(want)
  for key, value in want.items():
    np.testing.assert_allclose(written[key], value, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(float(printed[key]), value, rtol=1e-5, err_msg=key)
