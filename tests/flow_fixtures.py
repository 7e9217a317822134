"""Tiny optical-flow datasets written in each standard on-disk layout, from generated pairs.

Every writer takes a root folder, the number of pairs and the frame size, and writes real
files in that dataset's format (PPM/PNG frames, Middlebury `.flo`, KITTI 16-bit flow PNGs),
with the generated pairs' exact flow (`flow_procedural`).
"""

import os

import numpy as np
from PIL import Image

from perceiver_jax.data import flow_formats
from perceiver_jax.data import flow_procedural

SCENE = flow_procedural.scene_config(flow_procedural.default_config())


def pairs(count: int, size: tuple[int, int], seed: int = 0) -> list[dict]:
  return [
    flow_procedural.make_pair(np.random.default_rng((seed, i)), size, SCENE) for i in range(count)
  ]


def _save(path: str, frame: np.ndarray) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(frame).save(path)
  return path


def _flo(path: str, flow: np.ndarray) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  flow_formats.write_flo(path, flow)
  return path


def flying_chairs(root: str, count: int, size, split=None) -> list[dict]:
  """ROOT/data/NNNNN_img{1,2}.ppm, NNNNN_flow.flo and FlyingChairs_train_val.txt (`split`:
  one 1 (train) or 2 (val) per pair; default: all train but the last)."""
  samples = pairs(count, size)
  for i, s in enumerate(samples, start=1):
    _save(os.path.join(root, "data", f"{i:05d}_img1.ppm"), s["frame1"])
    _save(os.path.join(root, "data", f"{i:05d}_img2.ppm"), s["frame2"])
    _flo(os.path.join(root, "data", f"{i:05d}_flow.flo"), s["flow"])
  split = split or [1] * (count - 1) + [2]
  with open(os.path.join(root, "FlyingChairs_train_val.txt"), "w") as f:
    f.write("\n".join(str(v) for v in split) + "\n")
  return samples


def sintel(root: str, size, scenes=("alley_1", "bamboo_2", "market_2")) -> list[dict]:
  """ROOT/training/{clean,final}/<scene>/frame_000{1,2}.png and training/flow/<scene>/
  frame_0001.flo: a scene of two frames (one pair, its exact flow) per name in `scenes`."""
  samples = pairs(len(scenes), size, seed=10)
  for scene, s in zip(scenes, samples, strict=True):
    for dstype in ("clean", "final"):
      _save(os.path.join(root, "training", dstype, scene, "frame_0001.png"), s["frame1"])
      _save(os.path.join(root, "training", dstype, scene, "frame_0002.png"), s["frame2"])
    _flo(os.path.join(root, "training", "flow", scene, "frame_0001.flo"), s["flow"])
  return samples


def kitti(root: str, count: int, size, valid_fraction: float = 0.3) -> list[dict]:
  """ROOT/training/image_2/NNNNNN_1{0,1}.png and training/flow_occ/NNNNNN_10.png (16-bit
  KITTI flow, valid at a random `valid_fraction` of the pixels, as KITTI's sparse ground
  truth)."""
  samples = pairs(count, size, seed=20)
  rng = np.random.default_rng(3)
  for i, s in enumerate(samples):
    _save(os.path.join(root, "training", "image_2", f"{i:06d}_10.png"), s["frame1"])
    _save(os.path.join(root, "training", "image_2", f"{i:06d}_11.png"), s["frame2"])
    s["valid"] = rng.random(size) < valid_fraction
    path = os.path.join(root, "training", "flow_occ", f"{i:06d}_10.png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    flow_formats.write_kitti_flow(path, s["flow"], s["valid"])
  return samples


def pair_folder(root: str, count: int, size, backward: bool = True) -> list[dict]:
  """ROOT/pairNN_1.png, pairNN_2.png, pairNN.flo and (with `backward`) pairNN_backward.flo."""
  samples = pairs(count, size, seed=30)
  for i, s in enumerate(samples):
    _save(os.path.join(root, f"pair{i:02d}_1.png"), s["frame1"])
    _save(os.path.join(root, f"pair{i:02d}_2.png"), s["frame2"])
    _flo(os.path.join(root, f"pair{i:02d}.flo"), s["flow"])
    if backward:
      _flo(os.path.join(root, f"pair{i:02d}_backward.flo"), s["flow_backward"])
  return samples


def autoflow(root: str, count: int, size) -> list[dict]:
  """ROOT/static_40k_png_1_of_4/NNNN/{im0,im1}.png and forward.flo: a folder per pair."""
  samples = pairs(count, size, seed=40)
  for i, s in enumerate(samples):
    folder = os.path.join(root, "static_40k_png_1_of_4", f"{i:04d}")
    _save(os.path.join(folder, "im0.png"), s["frame1"])
    _save(os.path.join(folder, "im1.png"), s["frame2"])
    _flo(os.path.join(folder, "forward.flo"), s["flow"])
  return samples


WRITERS = {
  "flying_chairs": lambda root, size: flying_chairs(root, 4, size),
  "sintel_clean": lambda root, size: sintel(root, size),
  "kitti": lambda root, size: kitti(root, 3, size),
  "pairs": lambda root, size: pair_folder(root, 3, size),
  "autoflow": lambda root, size: autoflow(root, 3, size),
}
