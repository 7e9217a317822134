"""experiments/flow/analyze.py: the run's config read back, the global-affine reference, the
background/shapes split and the whole analysis on a `flow_testing` workdir."""

import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from PIL import Image

from configs import flow as flow_config
from perceiver_jax import metrics
from perceiver_jax import model
from perceiver_jax.checkpointing import Checkpointer
from perceiver_jax.data import flow as flow_data
from perceiver_jax.data import flow_procedural
from perceiver_jax.train_step import TrainState

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "experiments" / "flow" / "analyze.py"
OUTPUT = "flow_decoder/~/basic_decoder/output"


@functools.cache
def _analyze():
  spec = importlib.util.spec_from_file_location("flow_analyze", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _scene(**overrides) -> flow_procedural.SceneConfig:
  cfg = flow_procedural.default_config()
  cfg.update(overrides)
  return flow_procedural.scene_config(cfg)


def _epe(pred, true) -> float:
  return float(np.linalg.norm(pred - true, axis=-1).mean())


def test_run_config_reads_back_the_runs_overrides(tmp_path):
  analyze = _analyze()
  config = flow_config.get_config("runlocal")  # another model than mini's: all of it is read
  config.data.procedural_eval_size = (40, 60)
  config.data.procedural.max_shapes = 1
  config.optimizer.learning_rate = 3e-3
  metrics.write_config(str(tmp_path), config)
  got = analyze.run_config(str(tmp_path))
  assert got.to_dict() == config.to_dict()
  assert got.model.input_shape == (2, 32, 48, 3) and got.data.procedural_eval_size == (40, 60)
  with pytest.raises(ValueError, match="no config.json"):
    analyze.run_config(str(tmp_path / "missing"))
  values = json.loads((tmp_path / "config.json").read_text())
  values["data"]["typo"] = 1
  (tmp_path / "config.json").write_text(json.dumps(values))
  with pytest.raises(ValueError, match="^data.typo=1 in config.json"):
    analyze.run_config(str(tmp_path))


def test_global_affine_recovers_the_motion_of_a_pair_without_shapes():
  analyze = _analyze()
  # The default background motion: up to 3 px of translation, 4 degrees, 6% of zoom.
  scene = _scene(max_shapes=0)
  for seed in range(3):
    pair = flow_procedural.make_pair(np.random.default_rng(seed), (48, 64), scene)
    assert np.linalg.norm(pair["flow"], axis=-1).mean() > 1.0
    flow = analyze.global_affine_flow(pair["frame1"], pair["frame2"])
    assert _epe(flow, pair["flow"]) < 0.1, seed
    # One Lucas-Kanade step, without the Gauss-Newton refinement, is far less precise.
    assert _epe(analyze.global_affine_flow(pair["frame1"], pair["frame2"], 1), pair["flow"]) > 0.2
    assert analyze.dominant_motion_mask(pair["flow"]).all()


def test_dominant_motion_mask_is_the_background():
  analyze = _analyze()
  y, x = np.mgrid[0:40, 0:60].astype(np.float32)
  shapes = 0
  for seed in range(6):
    scene = flow_procedural.draw_scene(np.random.default_rng(seed), (40, 60), _scene())
    background = np.ones((40, 60), bool)
    for layer in scene.layers[1:]:
      background &= ~layer.region.contains(x, y)
    shapes += (~background).sum()
    mask = analyze.dominant_motion_mask(flow_procedural.render(scene)["flow"])
    np.testing.assert_array_equal(mask, background, err_msg=f"seed {seed}")
  assert shapes > 500  # the seeds draw shapes in view


def _workdir(root: pathlib.Path):
  """A finished `flow_testing` run: config.json (3 held-out pairs of 40 x 60, 4 tiles each),
  checkpoints of steps 3 and 7 (a random output layer: a flow of a few pixels that differs
  between pixels), metrics.jsonl and final.json."""
  config = flow_config.get_config("runlocal")
  config.data.procedural_eval_pairs = 3
  workdir = str(root / "run")
  metrics.write_config(workdir, config)
  forward = model.build_model(config.model)
  states = {}
  for step in (3, 7):
    params, state = forward.init(
      jax.random.PRNGKey(step), model.dummy_inputs(config.model), is_training=True
    )
    shape = params[OUTPUT]["w"].shape
    params[OUTPUT] = {
      "w": jax.random.normal(jax.random.PRNGKey(step + 1), shape),
      "b": np.array([1.0, -2.0], np.float32),
    }
    states[step] = TrainState(
      np.asarray(step, np.int32),
      params,
      state,
      optax.adam(1e-3).init(params),
      jax.random.PRNGKey(0),
    )
  with Checkpointer(os.path.join(workdir, "checkpoints"), save_every_steps=1) as checkpoints:
    for step, train_state in states.items():
      checkpoints.save(step, train_state)
  writer = metrics.MetricWriter(workdir)
  for step, train_epe in ((1, 3.0), (2, 2.5), (3, 2.6), (5, 2.4), (7, 2.2)):
    writer.write_scalars(step, {"train/epe": train_epe})
  writer.write_scalars(3, {"eval/epe": 2.9})
  writer.write_scalars(7, {"eval/epe": 2.8})
  writer.close()
  metrics.write_final(workdir, 7, {"eval/epe": 2.8}, seconds=12.5)
  return config, workdir


def test_analysis_of_a_run(tmp_path):
  analyze = _analyze()
  config, workdir = _workdir(tmp_path)
  results_dir = tmp_path / "results"
  results = analyze.analyze(workdir, str(results_dir), num_examples=2)
  assert json.loads((results_dir / "results.json").read_text()) == results
  assert results["checkpoint_step"] == 7 and results["training_seconds"] == 12.5
  assert results["eval_epe_curve"] == [[3, 2.9], [7, 2.8]]
  assert results["eval_size"] == [40, 60] and results["tiles_per_pair"] == 4
  methods = results["methods"]
  # The model path is the trainer's tiled evaluation, and not the zero flow.
  np.testing.assert_allclose(results["model_epe"], results["evaluate_epe"], rtol=1e-5)
  analyze.check_evaluate(results)
  with pytest.raises(ValueError, match="differs from"):
    analyze.check_evaluate({**results, "evaluate_epe": 1.001 * results["evaluate_epe"]})
  assert abs(results["model_epe"] - methods["zero_flow"]["all"]["epe"]) > 0.1
  # Zero flow scores the mean length of the true flow.
  source = flow_data.pair_source(config.data, "eval", (32, 48))
  lengths = [np.linalg.norm(source.load(i)["flow"], axis=-1) for i in range(3)]
  np.testing.assert_allclose(results["mean_flow_length"], np.mean(lengths), rtol=1e-6)
  for scores in methods.values():
    assert scores["all"]["count"] == 3 * 40 * 60
    assert scores["background"]["count"] + scores["shapes"]["count"] == 3 * 40 * 60
  assert 0 < results["background_fraction"] < 1
  assert methods["global_affine"]["background"]["epe"] < methods["zero_flow"]["background"]["epe"]
  table = analyze.summary_table(results)
  assert "| global affine (Lucas-Kanade) |" in table and "Perceiver IO (flow_testing)" in table
  # Figures of the documented size (pixels = inches x 100 dpi).
  assert Image.open(results_dir / "flow_examples.png").size == (1300, 450)
  assert Image.open(results_dir / "learning_curve.png").size == (700, 400)


def test_script_fails_in_one_line_without_a_run(tmp_path):
  result = subprocess.run(
    [sys.executable, str(SCRIPT), f"--workdir={tmp_path}", f"--results_dir={tmp_path}"],
    cwd=REPO,
    env={**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"},
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
    f"error: --workdir={str(tmp_path)!r}: no config.json; not a training workdir"
  )
  assert not (tmp_path / "results.json").exists()
