"""The folder layouts of the optical-flow datasets: lists of samples in a deterministic order.

Each function returns `FlowSample`s (paths of frame 1, frame 2 and the ground-truth flow,
and where the valid mask comes from); `load_sample` reads one into arrays (see
`flow_formats` for the shapes). The layouts, as the datasets are distributed:

FlyingChairs (`flying_chairs_samples`):
  ROOT/data/00001_img1.ppm, 00001_img2.ppm, 00001_flow.flo, ... (22,872 pairs)
  ROOT/FlyingChairs_train_val.txt   one line per pair in index order: 1 = train, 2 = val
MPI-Sintel (`sintel_samples`):
  ROOT/training/{clean,final}/<scene>/frame_0001.png, ...   consecutive frames form pairs
  ROOT/training/flow/<scene>/frame_0001.flo, ...            flow from frame i to i + 1
  ROOT/test/{clean,final}/<scene>/...                       no flow
KITTI 2015 (`kitti_samples`):
  ROOT/training/image_2/000000_10.png, 000000_11.png, ...   frames 10 and 11 of 200 scenes
  ROOT/training/flow_occ/000000_10.png (all pixels), flow_noc/ (non-occluded only)
  ROOT/testing/image_2/...                                  no flow
A folder of pairs (`pair_folder_samples`), this project's convention for users' data:
  ROOT/NAME_1.EXT, ROOT/NAME_2.EXT (EXT one of png, ppm, jpg, jpeg, the same for both),
  optionally ROOT/NAME.flo (Middlebury) or ROOT/NAME_flow.png (KITTI encoding), and with
  either, ROOT/NAME_backward.flo, the flow from frame 2 to frame 1 (for reversed pairs).
AutoFlow (`autoflow_samples`): its release documents no on-disk layout. Its archives
  (`static_40k_png_{1..4}_of_4`) are read by public loaders as one folder per pair holding
  two PNG frames and one `.flo`; this function reads that, unverified against the archives.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

from perceiver_jax.data import flow_formats

# Where a sample's valid mask comes from.
VALID_DENSE = "dense"  # every pixel of a `.flo` except unknown flow (> 1e9)
VALID_KITTI = "kitti"  # the third channel of a KITTI flow PNG
VALID_NONE = "none"  # no ground truth (test splits, pairs without flow)
FRAME_EXTENSIONS = ("png", "ppm", "jpg", "jpeg")


class FlowSample(NamedTuple):
  """One pair: frame paths, flow path (None without ground truth), valid-mask source, and
  the backward flow (frame 2 to frame 1, `.flo`) where the dataset has it."""

  frame1: str
  frame2: str
  flow: str | None
  valid: str
  flow_backward: str | None = None


def load_sample(sample: FlowSample) -> dict[str, np.ndarray]:
  """frame1, frame2 uint8 [H, W, 3]; with ground truth also flow float32 [H, W, 2], valid bool
  [H, W], and flow_backward float32 [H, W, 2] with valid_backward bool [H, W] where the sample
  has backward flow. Frames of different
  sizes, or flow of another size, are refused."""
  frame1, frame2 = flow_formats.read_frame(sample.frame1), flow_formats.read_frame(sample.frame2)
  if frame1.shape != frame2.shape:
    raise ValueError(f"{sample.frame2}: frame of {frame2.shape}, frame 1 is {frame1.shape}")
  out = {"frame1": frame1, "frame2": frame2}
  if sample.valid == VALID_NONE:
    return out
  if sample.valid == VALID_KITTI:
    flow, valid = flow_formats.read_kitti_flow(sample.flow)
  elif sample.valid == VALID_DENSE:
    flow = flow_formats.read_flo(sample.flow)
    valid = flow_formats.flo_valid(flow)
    flow = np.where(valid[..., None], flow, 0.0).astype(np.float32)
  else:
    raise ValueError(f"{sample.flow}: unknown valid-mask source {sample.valid!r}")
  if flow.shape[:2] != frame1.shape[:2]:
    raise ValueError(f"{sample.flow}: flow of {flow.shape[:2]}, frames are {frame1.shape[:2]}")
  out = {**out, "flow": flow, "valid": valid}
  if sample.flow_backward is not None:
    backward = flow_formats.read_flo(sample.flow_backward)
    if backward.shape[:2] != frame1.shape[:2]:
      raise ValueError(
        f"{sample.flow_backward}: flow of {backward.shape[:2]}, frames are {frame1.shape[:2]}"
      )
    known = flow_formats.flo_valid(backward)
    out["flow_backward"] = np.where(known[..., None], backward, 0.0).astype(np.float32)
    out["valid_backward"] = known
  return out


def _listdir(path: str, what: str) -> list[str]:
  if not os.path.isdir(path):
    raise ValueError(f"{path}: no such folder ({what})")
  return sorted(os.listdir(path))


def _need(path: str) -> str:
  if not os.path.isfile(path):
    raise ValueError(f"{path}: missing file")
  return path


def flying_chairs_samples(root: str, split: str = "train") -> list[FlowSample]:
  """FlyingChairs pairs of `split` ("train", "val" or "all"), in index order."""
  if split not in ("train", "val", "all"):
    raise ValueError(f"split={split!r}: expected 'train', 'val' or 'all'")
  data = os.path.join(root, "data")
  indices = sorted(
    m.group(1)
    for name in _listdir(data, "FlyingChairs")
    if (m := re.fullmatch(r"(\d+)_img1\.ppm", name))
  )
  if not indices:
    raise ValueError(f"{data}: no NNNNN_img1.ppm frames (FlyingChairs)")
  samples = [
    FlowSample(
      _need(os.path.join(data, f"{i}_img1.ppm")),
      _need(os.path.join(data, f"{i}_img2.ppm")),
      _need(os.path.join(data, f"{i}_flow.flo")),
      VALID_DENSE,
    )
    for i in indices
  ]
  if split == "all":
    return samples
  split_file = os.path.join(root, "FlyingChairs_train_val.txt")
  with open(_need(split_file)) as f:
    labels = f.read().split()
  if len(labels) != len(samples) or not set(labels) <= {"1", "2"}:
    raise ValueError(
      f"{split_file}: {len(labels)} labels in {sorted(set(labels))[:4]}, expected one 1 or 2 "
      f"per pair ({len(samples)} pairs)"
    )
  wanted = "1" if split == "train" else "2"
  return [s for s, label in zip(samples, labels, strict=True) if label == wanted]


def sintel_samples(root: str, split: str = "training", dstype: str = "clean") -> list[FlowSample]:
  """MPI-Sintel pairs of `split` ("training", "test") and pass `dstype` ("clean", "final"),
  by scene then frame; consecutive frames of a scene form a pair."""
  if split not in ("training", "test") or dstype not in ("clean", "final"):
    raise ValueError(f"split={split!r}, dstype={dstype!r}: expected training/test, clean/final")
  frames_root = os.path.join(root, split, dstype)
  samples = []
  for scene in _listdir(frames_root, "MPI-Sintel"):
    folder = os.path.join(frames_root, scene)
    if not os.path.isdir(folder):
      continue
    frames = [n for n in _listdir(folder, "a Sintel scene") if re.fullmatch(r"frame_\d+\.png", n)]
    for first, second in zip(frames, frames[1:], strict=False):
      if split == "test":
        flow, valid = None, VALID_NONE
      else:
        flow = _need(os.path.join(root, split, "flow", scene, first[:-4] + ".flo"))
        valid = VALID_DENSE
      samples.append(
        FlowSample(os.path.join(folder, first), os.path.join(folder, second), flow, valid)
      )
  if not samples:
    raise ValueError(f"{frames_root}: no pairs of frame_NNNN.png frames (MPI-Sintel)")
  return samples


def kitti_samples(root: str, split: str = "training", flow: str = "occ") -> list[FlowSample]:
  """KITTI 2015 pairs (frames 10 and 11) of `split` ("training", "testing"), by scene;
  training flow from `flow_occ` (all pixels) or `flow_noc` (non-occluded), `flow`="occ"/"noc"."""
  if split not in ("training", "testing") or flow not in ("occ", "noc"):
    raise ValueError(f"split={split!r}, flow={flow!r}: expected training/testing, occ/noc")
  images = os.path.join(root, split, "image_2")
  scenes = [
    m.group(1) for n in _listdir(images, "KITTI") if (m := re.fullmatch(r"(\d+)_10\.png", n))
  ]
  if not scenes:
    raise ValueError(f"{images}: no NNNNNN_10.png frames (KITTI 2015)")
  samples = []
  for scene in scenes:
    if split == "testing":
      flow_path, valid = None, VALID_NONE
    else:
      flow_path = _need(os.path.join(root, split, f"flow_{flow}", f"{scene}_10.png"))
      valid = VALID_KITTI
    frame2 = _need(os.path.join(images, f"{scene}_11.png"))
    samples.append(FlowSample(os.path.join(images, f"{scene}_10.png"), frame2, flow_path, valid))
  return samples


def pair_folder_samples(root: str) -> list[FlowSample]:
  """The pairs NAME_1.EXT / NAME_2.EXT of a folder, by NAME, with NAME.flo or NAME_flow.png
  as ground truth where present (see the module docstring)."""
  names = _listdir(root, "folder of pairs")
  pattern = re.compile(r"(.+)_1\.(" + "|".join(FRAME_EXTENSIONS) + r")", re.IGNORECASE)
  samples = []
  for name in names:
    m = pattern.fullmatch(name)
    if not m:
      continue
    stem, ext = m.groups()
    frame2 = _need(os.path.join(root, f"{stem}_2.{ext}"))
    flo, png = os.path.join(root, f"{stem}.flo"), os.path.join(root, f"{stem}_flow.png")
    if os.path.isfile(flo) and os.path.isfile(png):
      raise ValueError(f"{flo}: pair {stem!r} has both {stem}.flo and {stem}_flow.png")
    flow, valid = (flo, VALID_DENSE) if os.path.isfile(flo) else (None, VALID_NONE)
    if os.path.isfile(png):
      flow, valid = png, VALID_KITTI
    backward = os.path.join(root, f"{stem}_backward.flo")
    backward = backward if flow is not None and os.path.isfile(backward) else None
    samples.append(FlowSample(os.path.join(root, name), frame2, flow, valid, backward))
  if not samples:
    raise ValueError(f"{root}: no NAME_1.EXT / NAME_2.EXT pairs ({', '.join(FRAME_EXTENSIONS)})")
  return samples


def autoflow_samples(root: str) -> list[FlowSample]:
  """AutoFlow pairs under `root`: every folder (recursively, in sorted path order) holding
  exactly two `.png` frames (frame 1 first by name) and one `.flo` (see the module
  docstring: AutoFlow's layout is not documented)."""
  samples = []
  for folder, dirs, files in os.walk(root):
    dirs.sort()
    pngs = sorted(n for n in files if n.lower().endswith(".png"))
    flos = [n for n in files if n.lower().endswith(".flo")]
    if len(pngs) == 2 and len(flos) == 1:
      paths = [os.path.join(folder, n) for n in (*pngs, *flos)]
      samples.append(FlowSample(*paths, VALID_DENSE))
    elif pngs or flos:
      raise ValueError(
        f"{folder}: {len(pngs)} .png and {len(flos)} .flo files, an AutoFlow pair has 2 and 1"
      )
  if not samples:
    raise ValueError(f"{root}: no AutoFlow pair folders (two .png and one .flo each)")
  return samples
