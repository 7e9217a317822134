"""ModelNet40 in its two standard formats, and the Perceiver paper's point-cloud augmentation.

The HDF5 release with 2,048 points per object (modelnet40_ply_hdf5_2048):
  ROOT/train_files.txt, ROOT/test_files.txt   one .h5 path per line
  ROOT/ply_data_train0.h5, ...                datasets `data` [N, 2048, 3], `label` [N, 1]
`load_hdf5_split` reads it (h5py is imported only there).

The raw meshes (ModelNet40.zip):
  ROOT/<class>/train/<class>_0001.off
  ROOT/<class>/test/<class>_0627.off
Classes are the sorted folder names (40 of them: airplane ... xbox), labels their indices.

`read_off` parses one mesh, `sample_surface` draws points uniformly over its surface (each
triangle chosen with probability proportional to its area, then a uniform point inside it),
and `load_split` does both for every mesh of a split.

`make_data` is the dataset of the trainer contract (`contract.py`): inputs float32
[*prefix, P, 3], labels int32 [*prefix]. Training applies the paper's augmentation,
`random_scale` (each point scaled by a factor in [0.99, 1.01]) then `normalize` (zero mean,
unit cube); evaluation `normalize` alone.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np
from absl import logging

from perceiver_jax.data import contract
from perceiver_jax.data import pipeline

NUM_CLASSES = 40
SPLITS = ("train", "test")


def read_off(path: str) -> tuple[np.ndarray, np.ndarray]:
  """Vertices [V, 3] float64 and triangles [F, 3] int64 of an OFF file.

  Polygons with more than three corners are split into a fan of triangles. The header may
  share its line with the counts (`OFF490 518 0`), as in some ModelNet40 files.
  """
  with open(path, "rb") as f:
    text = f.read().decode("ascii", errors="replace")
  lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
  lines = [line for line in lines if line]
  if not lines or not lines[0].startswith("OFF"):
    raise ValueError(f"{path}: not an OFF file (first line {lines[0][:40] if lines else ''!r})")
  rest = lines[0][3:].strip()
  body = lines[1:] if not rest else [rest, *lines[1:]]
  try:
    num_vertices, num_faces = (int(v) for v in body[0].split()[:2])
    vertices = np.array([body[1 + i].split()[:3] for i in range(num_vertices)], np.float64)
    triangles = []
    for line in body[1 + num_vertices : 1 + num_vertices + num_faces]:
      values = [int(v) for v in line.split()]
      corners = values[1 : 1 + values[0]]
      if len(corners) != values[0] or values[0] < 3:
        raise ValueError("bad face")
      triangles.extend((corners[0], corners[i], corners[i + 1]) for i in range(1, len(corners) - 1))
  except (ValueError, IndexError):
    raise ValueError(f"{path}: truncated or malformed OFF data") from None
  if len(body) < 1 + num_vertices + num_faces:
    raise ValueError(
      f"{path}: truncated, header promises {num_vertices} vertices, {num_faces} faces"
    )
  if vertices.shape != (num_vertices, 3) or not np.all(np.isfinite(vertices)):
    raise ValueError(f"{path}: vertices are not {num_vertices} finite xyz triples")
  faces = np.array(triangles, np.int64).reshape(-1, 3)
  if faces.size == 0:
    raise ValueError(f"{path}: no faces")
  if faces.min() < 0 or faces.max() >= num_vertices:
    raise ValueError(f"{path}: face index {faces.max()} out of range for {num_vertices} vertices")
  return vertices, faces


def sample_surface(
  vertices: np.ndarray, faces: np.ndarray, num_points: int, rng: np.random.Generator
) -> np.ndarray:
  """`num_points` points [num_points, 3] uniformly distributed over the mesh's surface area."""
  a, b, c = (vertices[faces[:, i]] for i in range(3))
  areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
  total = areas.sum()
  if not total > 0:
    raise ValueError("mesh has zero surface area")
  chosen = rng.choice(len(faces), size=num_points, p=areas / total)
  # Uniform in a triangle: u, v in [0, 1), reflected into the lower half of the square.
  u, v = rng.random((2, num_points, 1))
  flip = u + v > 1
  u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
  a, b, c = a[chosen], b[chosen], c[chosen]
  return (a + u * (b - a) + v * (c - a)).astype(np.float32)


def class_names(root: str) -> list[str]:
  if not os.path.isdir(root):
    raise ValueError(f"ModelNet40 root {root!r} is not a directory")
  names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
  if not names:
    raise ValueError(f"ModelNet40 root {root!r} has no class folders")
  return names


def load_split(
  root: str, split: str, *, num_points: int = 2048, seed: int = 0, skip_bad: bool = False
) -> dict[str, np.ndarray]:
  """{"points": [N, num_points, 3] float32, "labels": [N] int32} for every mesh of `split`.

  A corrupt mesh raises a ValueError naming the file, or with `skip_bad=True` is left out and
  counted (the count and the first such file are logged, and returned as "num_skipped").
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  rng = np.random.default_rng(seed)
  points, labels, skipped = [], [], []
  for label, name in enumerate(class_names(root)):
    folder = os.path.join(root, name, split)
    if not os.path.isdir(folder):
      raise ValueError(f"missing split folder {folder}")
    for file in sorted(f for f in os.listdir(folder) if f.endswith(".off")):
      path = os.path.join(folder, file)
      try:
        points.append(sample_surface(*read_off(path), num_points, rng))
      except ValueError as e:
        if not skip_bad:
          raise ValueError(f"{e}" if path in str(e) else f"{path}: {e}") from None
        skipped.append(path)
        continue
      labels.append(label)
  if skipped:
    logging.warning(
      "ModelNet40 %s: skipped %d unreadable meshes, e.g. %s", split, len(skipped), skipped[0]
    )
  if not points:
    raise ValueError(f"no readable meshes in split {split!r} under {root}")
  return {
    "points": np.stack(points),
    "labels": np.array(labels, np.int32),
    "num_skipped": np.array(len(skipped)),
  }


def _resolve_listed_path(root: str, listed: str) -> str:
  """The release lists paths like `data/modelnet40_ply_hdf5_2048/ply_data_train0.h5`: take the
  path as given if it exists (absolute, or relative to ROOT), else its file name inside ROOT."""
  for candidate in (
    listed,
    os.path.join(root, listed),
    os.path.join(root, os.path.basename(listed)),
  ):
    if os.path.isfile(candidate):
      return candidate
  raise ValueError(f"file {listed!r} listed in {root} does not exist")


def load_hdf5_split(root: str, split: str) -> dict[str, np.ndarray]:
  """{"points": [N, P, 3] float32, "labels": [N] int32} from the HDF5 release's `split`."""
  import h5py  # only this format needs it

  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  listing = os.path.join(root, f"{split}_files.txt")
  if not os.path.isfile(listing):
    raise ValueError(f"missing file list {listing}")
  with open(listing) as f:
    files = [_resolve_listed_path(root, line.strip()) for line in f if line.strip()]
  if not files:
    raise ValueError(f"{listing} lists no files")
  points, labels = [], []
  for path in files:
    try:
      with h5py.File(path, "r") as h5:
        data, label = np.asarray(h5["data"], np.float32), np.asarray(h5["label"])
    except (OSError, KeyError) as e:
      raise ValueError(f"{path}: unreadable HDF5 ({str(e).splitlines()[0]})") from None
    if data.ndim != 3 or data.shape[-1] != 3:
      raise ValueError(f"{path}: `data` has shape {data.shape}, expected [N, points, 3]")
    label = label.reshape(-1)
    if label.shape[0] != data.shape[0]:
      raise ValueError(f"{path}: {label.shape[0]} labels for {data.shape[0]} objects")
    if label.size and (label.min() < 0 or label.max() >= NUM_CLASSES):
      raise ValueError(f"{path}: label {int(label.max())} out of range [0, {NUM_CLASSES})")
    if not np.all(np.isfinite(data)):
      raise ValueError(f"{path}: `data` holds NaN or infinity")
    points.append(data)
    labels.append(label.astype(np.int32))
  if len({p.shape[1] for p in points}) != 1:
    raise ValueError(f"{listing}: files hold different numbers of points per object")
  return {"points": np.concatenate(points), "labels": np.concatenate(labels)}


def normalize(points: np.ndarray) -> np.ndarray:
  """Zero mean, then scaled so the largest absolute coordinate is 1 (the cube [-1, 1]^3).

  `points` is [..., P, 3]; each cloud is normalised on its own.
  """
  centred = points - points.mean(axis=-2, keepdims=True)
  extent = np.abs(centred).max(axis=(-2, -1), keepdims=True)
  return centred / np.where(extent > 0, extent, 1.0)


def random_scale(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """The paper's training augmentation before `normalize`: each point's coordinates scaled by
  one factor drawn uniformly from [0.99, 1.01]. `points` is [..., P, 3]."""
  return points * rng.uniform(0.99, 1.01, size=(*points.shape[:-1], 1))


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """The trainer's `contract.Data`.

  `config.data.format` is "hdf5" (the 2,048-point release: `data_dir` holds
  train_files.txt/test_files.txt) or "off" (the raw meshes: `data_dir/<class>/{train,test}/
  *.off`, sampled once to `num_points` points per object by area, skipping unreadable meshes
  with `skip_bad`).
  """
  cfg = config.data
  if tuple(facts.input_shapes) != (cfg.num_points, 3):  # checked before any file is read
    raise ValueError(
      f"config.data.num_points={cfg.num_points}: the model takes inputs of shape "
      f"{facts.input_shapes}, the data gives ({cfg.num_points}, 3) per object"
    )
  splits = {}
  for split in SPLITS:
    if cfg.format == "hdf5":
      arrays = load_hdf5_split(cfg.data_dir, split)
    elif cfg.format == "off":
      arrays = load_split(
        cfg.data_dir, split, num_points=cfg.num_points, seed=config.seed, skip_bad=cfg.skip_bad
      )
    else:
      raise ValueError(f"config.data.format={cfg.format!r}: expected 'hdf5' or 'off'")
    points = arrays["points"][:, : cfg.num_points]
    if points.shape[1] != cfg.num_points:
      raise ValueError(
        f"config.data.num_points={cfg.num_points}: the {split} data has only {points.shape[1]}"
        " points per object"
      )
    splits[split] = {"inputs": points, "labels": arrays["labels"]}

  def prepare(batch: dict) -> dict:
    return {**batch, "inputs": normalize(batch["inputs"]).astype(np.float32)}

  return pipeline.in_memory_data(
    config,
    facts,
    splits["train"],
    splits["test"],
    prepare=prepare,
    augment=random_scale,
    process_index=process_index,
    process_count=process_count,
  )
