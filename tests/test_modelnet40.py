"""Tests for perceiver_jax/data/modelnet40.py on tiny OFF meshes written here."""

import ml_collections
import numpy as np
import pytest

from perceiver_jax.data import contract
from perceiver_jax.data import modelnet40 as mn

CUBE = """OFF
# a unit cube centred at the origin, six quads
8 6 0
-0.5 -0.5 -0.5
0.5 -0.5 -0.5
0.5 0.5 -0.5
-0.5 0.5 -0.5
-0.5 -0.5 0.5
0.5 -0.5 0.5
0.5 0.5 0.5
-0.5 0.5 0.5
4 0 3 2 1
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 1 2 6 5
4 0 4 7 3
"""

# Two disjoint right triangles in the plane z = 0 with areas 1 and 3; the header shares its
# line with the counts, as in some ModelNet40 files.
TWO_TRIANGLES = """OFF6 2 0
0 0 0
2 0 0
0 1 0
10 0 0
13 0 0
10 2 0
3 0 1 2
3 3 4 5
"""


def _write(path, text):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  return str(path)


def test_read_off_triangulates_quads(tmp_path):
  vertices, faces = mn.read_off(_write(tmp_path / "cube.off", CUBE))
  assert vertices.shape == (8, 3) and faces.shape == (12, 3)
  a, b, c = (vertices[faces[:, i]] for i in range(3))
  areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
  np.testing.assert_allclose(areas.sum(), 6.0)  # the cube's surface area


def test_samples_lie_on_the_surface_and_follow_area(tmp_path):
  rng = np.random.default_rng(0)
  points = mn.sample_surface(*mn.read_off(_write(tmp_path / "cube.off", CUBE)), 2000, rng)
  assert points.shape == (2000, 3) and points.dtype == np.float32
  # Every point is on a face of the cube: some coordinate is +-0.5, none beyond.
  assert np.all(np.abs(points) <= 0.5 + 1e-6)
  np.testing.assert_allclose(np.abs(points).max(axis=1), 0.5, atol=1e-6)
  # Each of the six faces gets about a sixth of the points.
  face_of_point = np.argmax(np.abs(points), axis=1) * 2 + (points.max(axis=1) > 0.4999)
  counts = np.bincount(face_of_point, minlength=6)
  assert np.all(np.abs(counts / 2000 - 1 / 6) < 0.04)

  points = mn.sample_surface(*mn.read_off(_write(tmp_path / "t.off", TWO_TRIANGLES)), 8000, rng)
  in_big = points[:, 0] >= 10
  assert abs(in_big.mean() - 0.75) < 0.03  # area 3 of 4
  # Uniform inside a triangle: the mean is the centroid.
  np.testing.assert_allclose(points[in_big].mean(axis=0), [11, 2 / 3, 0], atol=0.05)
  np.testing.assert_allclose(points[~in_big].mean(axis=0), [2 / 3, 1 / 3, 0], atol=0.05)


@pytest.mark.parametrize(
  "text, message",
  [
    ("PLY\n", "not an OFF file"),
    ("OFF\n8 6 0\n0 0 0\n", "truncated or malformed"),
    ("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n", "face index 7 out of range"),
    ("OFF\n3 2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "truncated, header promises 3 vertices, 2"),
  ],
)
def test_bad_off_files_name_the_file(tmp_path, text, message):
  path = _write(tmp_path / "bad.off", text)
  with pytest.raises(ValueError, match=message) as info:
    mn.read_off(path)
  assert path in str(info.value)


def _dataset(root):
  for name in ("bed", "airplane"):
    for split, count in (("train", 2), ("test", 1)):
      for i in range(count):
        _write(root / name / split / f"{name}_{i:04d}.off", CUBE)
  return str(root)


def test_load_split_labels_by_sorted_class_folder(tmp_path):
  root = _dataset(tmp_path / "ModelNet40")
  train = mn.load_split(root, "train", num_points=64)
  assert train["points"].shape == (4, 64, 3)
  assert train["labels"].tolist() == [0, 0, 1, 1]  # airplane before bed
  assert int(train["num_skipped"]) == 0
  again = mn.load_split(root, "train", num_points=64)
  np.testing.assert_array_equal(train["points"], again["points"])  # seeded
  assert mn.load_split(root, "test", num_points=64)["labels"].tolist() == [0, 1]


def test_corrupt_mesh_raises_or_is_skipped_and_counted(tmp_path):
  root = _dataset(tmp_path / "ModelNet40")
  bad = _write(tmp_path / "ModelNet40" / "bed" / "train" / "bed_9999.off", "OFF\n8 6 0\n")
  with pytest.raises(ValueError, match="bed_9999.off: truncated or malformed"):
    mn.load_split(root, "train", num_points=8)
  data = mn.load_split(root, "train", num_points=8, skip_bad=True)
  assert int(data["num_skipped"]) == 1 and len(data["labels"]) == 4
  assert bad


def test_missing_split_and_root(tmp_path):
  root = _dataset(tmp_path / "ModelNet40")
  (tmp_path / "ModelNet40" / "chair").mkdir()
  with pytest.raises(ValueError, match=r"missing split folder .*chair/train"):
    mn.load_split(root, "train")
  with pytest.raises(ValueError, match="is not a directory"):
    mn.load_split(str(tmp_path / "nope"), "train")
  with pytest.raises(ValueError, match="unknown split 'val'"):
    mn.load_split(root, "val")


def test_random_scale_then_normalize_centres_into_the_unit_cube():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(3, 500, 3)) * 5 + 7
  scaled = mn.random_scale(points, rng)
  ratios = scaled / points  # one factor per point, the same for its three coordinates
  np.testing.assert_allclose(ratios, ratios[..., :1] * np.ones(3), rtol=1e-12)
  assert 0.99 <= ratios.min() < ratios.max() <= 1.01
  out = mn.normalize(scaled)
  np.testing.assert_allclose(out.mean(axis=1), 0, atol=1e-5)
  np.testing.assert_allclose(np.abs(out).max(axis=(1, 2)), 1, atol=1e-6)
  # The per-point scaling is at most 1%: close to plain normalisation, but not equal.
  plain = mn.normalize(points)
  assert 0 < np.abs(out - plain).max() < 0.1


def _h5(path, data, label):
  import h5py

  path.parent.mkdir(parents=True, exist_ok=True)
  with h5py.File(path, "w") as f:
    f.create_dataset("data", data=data)
    f.create_dataset("label", data=label)


def _hdf5_release(root, rng):
  """Two train shards and one test shard in the release's layout, with its listed paths."""
  shards = {
    "train": [(5, "ply_data_train0.h5"), (3, "ply_data_train1.h5")],
    "test": [(4, "ply_data_test0.h5")],
  }
  for split, files in shards.items():
    listed = []
    for count, name in files:
      data = rng.normal(size=(count, 16, 3)).astype(np.float32)
      label = rng.integers(0, 40, size=(count, 1)).astype(np.uint8)
      _h5(root / name, data, label)
      listed.append(f"data/modelnet40_ply_hdf5_2048/{name}")
    (root / f"{split}_files.txt").write_text("\n".join(listed) + "\n")
  return str(root)


def test_hdf5_release_loads_in_listed_order(tmp_path):
  import h5py

  root = _hdf5_release(tmp_path / "modelnet40_ply_hdf5_2048", np.random.default_rng(0))
  train = mn.load_hdf5_split(root, "train")
  assert train["points"].shape == (8, 16, 3) and train["points"].dtype == np.float32
  assert train["labels"].shape == (8,) and train["labels"].dtype == np.int32
  with h5py.File(f"{root}/ply_data_train1.h5") as f:
    np.testing.assert_array_equal(train["points"][5:], f["data"][:])
    np.testing.assert_array_equal(train["labels"][5:], f["label"][:, 0])
  assert mn.load_hdf5_split(root, "test")["points"].shape == (4, 16, 3)


def test_hdf5_bad_input(tmp_path):
  root = tmp_path / "m"
  _hdf5_release(root, np.random.default_rng(0))
  with pytest.raises(ValueError, match="missing file list"):
    mn.load_hdf5_split(str(tmp_path), "train")
  (root / "ply_data_test0.h5").write_bytes(b"not hdf5 at all")
  with pytest.raises(ValueError, match=r"ply_data_test0.h5: unreadable HDF5"):
    mn.load_hdf5_split(str(root), "test")
  _h5(root / "ply_data_test0.h5", np.zeros((2, 16, 3), np.float32), np.array([[3], [40]]))
  with pytest.raises(ValueError, match=r"label 40 out of range \[0, 40\)"):
    mn.load_hdf5_split(str(root), "test")
  _h5(root / "ply_data_test0.h5", np.zeros((2, 16, 2), np.float32), np.array([[3], [4]]))
  with pytest.raises(ValueError, match=r"`data` has shape \(2, 16, 2\)"):
    mn.load_hdf5_split(str(root), "test")
  (root / "ply_data_train1.h5").unlink()
  with pytest.raises(ValueError, match="ply_data_train1.h5' listed in .* does not exist"):
    mn.load_hdf5_split(str(root), "train")


def test_make_data_checks_the_model_facts_before_reading_files():
  config = ml_collections.ConfigDict(
    dict(seed=0, batch_size=4, eval_batch_size=4, data=dict(num_points=256, data_dir="/nowhere"))
  )
  with pytest.raises(
    ValueError, match=r"config.data.num_points=256: the model takes inputs of shape \(2048, 3\)"
  ):
    mn.make_data(config, contract.ModelFacts((2048, 3), 40), process_index=0, process_count=1)
