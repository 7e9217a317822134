"""ModelNet40 end to end: the point-cloud processor, and two training steps through
`python -m perceiver_jax.main` on tiny datasets written here in both release formats."""

import json

import h5py
import haiku as hk
import jax
import jax.numpy as jnp
import main_runner
import numpy as np
import pytest
from test_modelnet40 import CUBE

from configs import modelnet40 as modelnet40_config
from perceiver_jax import model
from perceiver_jax import registry
from perceiver_jax.data import datasets
from perceiver_jax.models import position_encoding
from perceiver_jax.models import preprocessors

# A tetrahedron: a second shape, so the two classes differ.
TETRAHEDRON = """OFF
4 4 0
0 0 0
1 0 0
0 1 0
0 0 1
3 0 1 2
3 0 1 3
3 0 2 3
3 1 2 3
"""


def write_hdf5_release(root, num_train=12, num_test=5, num_points=300, seed=0):
  """The HDF5 release's layout: file lists with paths as the release writes them."""
  rng = np.random.default_rng(seed)
  root.mkdir(parents=True, exist_ok=True)
  for split, count in (("train", num_train), ("test", num_test)):
    names = []
    for shard, size in enumerate((count - count // 2, count // 2)):
      name = f"ply_data_{split}{shard}.h5"
      with h5py.File(root / name, "w") as f:
        f["data"] = rng.normal(size=(size, num_points, 3)).astype(np.float32)
        f["label"] = rng.integers(0, 40, size=(size, 1)).astype(np.uint8)
      names.append(f"data/modelnet40_ply_hdf5_2048/{name}")
    (root / f"{split}_files.txt").write_text("\n".join(names) + "\n")
  return root


def write_off_release(root, per_class=4):
  for name, mesh in (("airplane", CUBE), ("bathtub", TETRAHEDRON)):
    for split in ("train", "test"):
      folder = root / name / split
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(per_class):
        (folder / f"{name}_{i:04d}.off").write_text(mesh)
  return root


def run_main(config_arg, workdir, *overrides):
  return main_runner.run_main(
    f"modelnet40.py:{config_arg}",
    workdir,
    "--config.total_steps=2",
    "--config.batch_size=8",  # a multiple of the 8 CPU devices the tests run with
    "--config.eval_batch_size=8",
    *overrides,
  )


def test_point_cloud_processor_features_and_positions():
  fourier = dict(num_bands=4, max_resolution=(6.0, 6.0, 6.0), concat_pos=True, sine_only=False)
  points = jax.random.uniform(jax.random.PRNGKey(0), (2, 10, 3), minval=-1, maxval=1)
  run = hk.transform(
    lambda x: preprocessors.PointCloudPreprocessor(fourier_kwargs=fourier)(x, is_training=True)
  )
  inputs, without_pos = run.apply({}, None, points)
  assert inputs.shape == (2, 10, 3 + 3 + 2 * 3 * 4)
  np.testing.assert_array_equal(without_pos, points)
  np.testing.assert_array_equal(inputs[..., :3], points)
  expected = position_encoding.fourier_features(points, **fourier)
  np.testing.assert_allclose(inputs[..., 3:], expected, rtol=1e-6)
  # Highest band: frequency max_resolution / 2 = 3, i.e. sin(3 pi x) for x.
  np.testing.assert_allclose(inputs[..., 3 + 3 + 3], np.sin(3 * np.pi * points[..., 0]), atol=1e-5)


def test_point_cloud_model_is_invariant_to_point_order():
  cfg = modelnet40_config.get_config("runlocal").model
  forward = model.build_model(cfg)
  points = jax.random.uniform(jax.random.PRNGKey(1), (2, *cfg.input_shape), minval=-1, maxval=1)
  params, state = forward.init(jax.random.PRNGKey(0), points, is_training=True)
  # The head starts at zero (as released); perturb every weight so the logits differ.
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
  noise = [0.05 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
  params = jax.tree.unflatten(treedef, [x + n for x, n in zip(leaves, noise, strict=True)])
  logits, _ = forward.apply(params, state, None, points, is_training=False)
  order = np.random.default_rng(0).permutation(cfg.input_shape[0])
  shuffled, _ = forward.apply(params, state, None, points[:, order], is_training=False)
  assert logits.shape == (2, 40)
  np.testing.assert_allclose(shuffled, logits, rtol=1e-4, atol=1e-5)
  assert not np.allclose(logits[0], logits[1])


def test_paper_model_shapes():
  cfg = registry.get_model_config("modelnet40")
  assert model.input_channels(cfg) == 3 + 3 + 2 * 3 * 64  # 390
  params, _ = model.param_shapes(cfg)
  # From first principles: two cross-attends with their own weights (the second is the first
  # of the shared set), one shared block of 6 self-attends, the latents and a 40-way head.
  d, c = 1024, 390
  linear = lambda i, o: i * o + o  # noqa: E731
  cross = 2 * d + 2 * c + linear(d, c) + 2 * linear(c, c) + linear(c, d) + 2 * d + 2 * linear(d, d)
  self_attend = 4 * d + 4 * linear(d, d) + 2 * linear(d, d)
  expected = 512 * d + 2 * cross + 6 * self_attend + linear(d, 40)
  assert model.count_params(params) == expected == 44_793_844
  config = modelnet40_config.get_config(None)
  assert (config.batch_size, config.total_steps) == (512, 50_000)
  assert (config.optimizer.name, config.optimizer.schedule) == ("lamb", "constant")
  assert config.optimizer.learning_rate == 1e-3 and not config.optimizer.scale_lr_by_batch


def test_validation_names_the_field():
  cfg = registry.get_model_config("modelnet40")
  cfg.points.fourier.max_resolution = (2240, 2240)
  with pytest.raises(
    ValueError, match=r"config.model.points.fourier.max_resolution=\(2240, 2240\)"
  ):
    model.validate_model_config(cfg)
  cfg = registry.get_model_config("modelnet40")
  cfg.input_shape = (2048, 6)
  with pytest.raises(ValueError, match=r"config.model.input_shape=\(2048, 6\)"):
    model.validate_model_config(cfg)


def test_training_batches_are_augmented_and_eval_normalised(tmp_path):
  config = modelnet40_config.get_config("runlocal")
  config.data.data_dir = str(write_hdf5_release(tmp_path / "h5", num_points=256))
  config.batch_size = config.eval_batch_size = 4
  facts = datasets.ModelFacts(model.input_shapes(config.model), config.model.num_classes)
  data = datasets.load(config, facts)
  assert data.num_train_examples == 12
  first = next(data.train_batches(0, (1, 4)))
  again = next(data.train_batches(0, (1, 4)))
  np.testing.assert_array_equal(first["inputs"], again["inputs"])  # a pure function of the step
  assert first["inputs"].shape == (1, 4, 256, 3) and first["inputs"].dtype == np.float32
  np.testing.assert_allclose(first["inputs"].mean(axis=2), 0, atol=1e-5)
  np.testing.assert_allclose(np.abs(first["inputs"]).max(axis=(2, 3)), 1, rtol=1e-5)
  evals = list(data.eval_batches((1, 4)))
  assert sum(b["mask"].sum() for b in evals) == 5
  # Evaluation applies no random scaling: normalising twice changes nothing.
  np.testing.assert_allclose(evals[0]["inputs"].mean(axis=2), 0, atol=1e-5)


def test_wrong_number_of_points_is_named(tmp_path):
  config = modelnet40_config.get_config("runlocal")
  config.data.data_dir = str(write_hdf5_release(tmp_path / "h5", num_points=100))
  facts = datasets.ModelFacts(model.input_shapes(config.model), config.model.num_classes)
  with pytest.raises(ValueError, match=r"config.data.num_points=256: the train data has only 100"):
    datasets.load(config, facts)


def test_two_steps_through_main_hdf5(tmp_path):
  root = write_hdf5_release(tmp_path / "modelnet40_ply_hdf5_2048", num_points=256)
  result = run_main("runlocal", tmp_path / "run", f"--config.data.data_dir={root}")
  assert result.returncode == 0, result.stderr[-3000:]
  final = json.loads((tmp_path / "run" / "final.json").read_text())
  assert final["step"] == 2 and final["eval/count"] == 5
  assert 0.0 <= final["eval/top1"] <= 1.0 and np.isfinite(final["eval/loss"])


def test_two_steps_through_main_off_meshes_skipping_a_corrupt_one(tmp_path):
  root = write_off_release(tmp_path / "ModelNet40")
  (root / "bathtub" / "train" / "bathtub_9999.off").write_text("OFF\n8 6 0\n0 0 0\n")  # truncated
  result = run_main("format=off,runlocal", tmp_path / "run", f"--config.data.data_dir={root}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "skipped 1 unreadable meshes" in result.stderr
  assert "bathtub_9999.off" in result.stderr
  final = json.loads((tmp_path / "run" / "final.json").read_text())
  assert final["step"] == 2 and final["eval/count"] == 8


def test_missing_data_dir_is_a_one_line_error(tmp_path):
  missing = tmp_path / "nowhere"
  result = run_main("runlocal", tmp_path / "run", f"--config.data.data_dir={missing}")
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error:") and str(missing) in last, result.stderr[-2000:]
  assert not (tmp_path / "run" / "final.json").exists()


def test_points_dtype_is_kept_in_the_processor():
  fourier = dict(num_bands=2, max_resolution=(4.0, 4.0, 4.0), concat_pos=True, sine_only=False)
  run = hk.transform(
    lambda x: preprocessors.PointCloudPreprocessor(fourier_kwargs=fourier)(x, is_training=False)
  )
  inputs, _ = run.apply({}, None, jnp.zeros((1, 5, 3), jnp.bfloat16))
  assert inputs.dtype == jnp.bfloat16
