"""Optical flow of any frame pair, and evaluation of a flow checkpoint, with tiled inference.

  python -m perceiver_jax.flow --config=configs/flow.py --checkpoint=optical_flow.pystate \
      --frame1=A.png --frame2=B.png --output=flow.flo [--visualize=flow.png] [--batch_size=N]
  python -m perceiver_jax.flow --config=configs/flow.py --checkpoint=optical_flow.pystate \
      --evaluate --config.data.eval_set=sintel_final --config.data.eval_dir=/data/MPI-Sintel

A flow model sees frame pairs of one size, its tile (368 x 496 released,
`config.model.input_shape[1:3]`). A pair of any size of at least one tile is normalised to
[-1, 1] (`data.flow.normalize`), cut into overlapping tiles (`tools.flow_tiles`, at least
`overlap` pixels in common, `config.data.tile_overlap` = 20 by default), the tiles go
through the jitted model `batch_size` at a time, and their flows are stitched back into one
field in pixels [H, W, 2]. The model is compiled once: the last, smaller chunk of tiles is
padded to the batch size.

Outputs: a Middlebury `.flo`, or a KITTI 16-bit flow PNG where the path ends in `.png`
(1/64 pixel steps, components clipped to +-512), and optionally the colour-coded flow
(`tools.flow_colors`) as an 8-bit PNG. Every output is written to a temporary file first
and renamed into place only once all of them are complete, so a failure leaves nothing.

`--evaluate` runs the trainer's own tiled evaluation (`data.flow.EvalTiles` batches into
`tasks.flow`'s evaluator) over `config.data`'s evaluation split, on one process.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from collections.abc import Iterator

import haiku as hk
import jax
import ml_collections
import numpy as np
from PIL import Image

from perceiver_jax import tasks
from perceiver_jax.data import flow as flow_data
from perceiver_jax.data import flow_formats
from perceiver_jax.tools import flow_colors
from perceiver_jax.tools import flow_tiles

TileFn = Callable[[np.ndarray], np.ndarray]
FLOW_SUFFIXES = (".flo", ".png")


def model_tile(model_cfg: ml_collections.ConfigDict) -> tuple[int, int]:
  """The (height, width) of the frames a flow model takes; ValueError for another model."""
  if model_cfg.modality != "flow":
    raise ValueError(
      f"config.model.modality={model_cfg.modality!r}: not an optical-flow model "
      "(use configs/flow.py)"
    )
  return int(model_cfg.input_shape[1]), int(model_cfg.input_shape[2])


def tile_model(
  forward: hk.TransformedWithState, params: hk.Params, state: hk.State, batch_size: int
) -> TileFn:
  """The model as a function of tile pairs [t, 2, h, w, 3] (t <= batch_size) -> flows
  [t, h, w, 2] float32 numpy, for `flow_tiles.run_tiled`.

  The forward pass is jitted once for [batch_size, 2, h, w, 3]: a smaller chunk is padded
  with zero tiles, whose flows are dropped. Params and state go to the default device once.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}: must be at least 1")
  params, state = jax.device_put((params, state))
  apply = jax.jit(lambda p, s, x: forward.apply(p, s, None, x, is_training=False)[0])

  def fn(tiles: np.ndarray) -> np.ndarray:
    tiles = np.asarray(tiles, np.float32)
    count = len(tiles)
    if not 1 <= count <= batch_size:
      raise ValueError(f"got {count} tiles; this model runs 1 to batch_size={batch_size}")
    padded = np.zeros((batch_size, *tiles.shape[1:]), np.float32)
    padded[:count] = tiles
    return np.asarray(apply(params, state, padded), np.float32)[:count]

  return fn


def read_pair(path1: str, path2: str, tile: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Two frames uint8 [H, W, 3] of one size, at least `tile` (h, w) on both axes.

  Raises:
    ValueError: one line naming the file(s) and sizes: an unreadable or missing frame,
      frames of different sizes, frames smaller than one tile.
  """
  size1, size2 = flow_formats.frame_size(path1), flow_formats.frame_size(path2)
  if size1 != size2:
    raise ValueError(
      f"the frames differ in size: {path1} is {size1[0]} x {size1[1]}, "
      f"{path2} is {size2[0]} x {size2[1]} (height x width)"
    )
  if size1[0] < tile[0] or size1[1] < tile[1]:
    raise ValueError(
      f"frames of {size1[0]} x {size1[1]} ({path1}) are smaller than one tile of the model, "
      f"{tile[0]} x {tile[1]} (height x width)"
    )
  return flow_formats.read_frame(path1), flow_formats.read_frame(path2)


def predict_pair(
  fn: TileFn,
  frame1: np.ndarray,
  frame2: np.ndarray,
  tile: tuple[int, int],
  overlap: int,
  batch_size: int,
) -> np.ndarray:
  """Flow float32 [H, W, 2] in pixels of two frames [H, W, 3] of values in [0, 255], from the
  tile function `fn` (`tile_model`) over tiles of `tile` overlapping by >= `overlap`."""
  return flow_tiles.run_tiled(
    fn, flow_data.normalize(frame1), flow_data.normalize(frame2), tile, overlap, batch_size
  )


def check_output_paths(output: str, visualize: str | None = None) -> None:
  """ValueError, before any work, for an output path of an unknown format."""
  if not output.lower().endswith(FLOW_SUFFIXES):
    raise ValueError(f"--output={output!r}: expected a .flo (Middlebury) or .png (KITTI) path")
  if visualize is not None and not visualize.lower().endswith(".png"):
    raise ValueError(f"--visualize={visualize!r}: expected a .png path")
  if visualize is not None and os.path.abspath(visualize) == os.path.abspath(output):
    raise ValueError(f"--visualize={visualize!r} is also --output")


@contextlib.contextmanager
def _staged(paths: list[str]) -> Iterator[list[str]]:
  """Yields a temporary path beside each of `paths`; once the block succeeds each is renamed
  over its path, on any error all are removed and `paths` are left untouched."""
  temps = []
  try:
    for path in paths:
      directory = os.path.dirname(os.path.abspath(path))
      os.makedirs(directory, exist_ok=True)
      fd, temp = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
      )
      os.close(fd)
      temps.append(temp)
    yield temps
    for temp, path in zip(temps, paths, strict=True):
      os.replace(temp, path)
  finally:
    for temp in temps:
      if os.path.exists(temp):
        os.unlink(temp)


def write_outputs(flow: np.ndarray, output: str, visualize: str | None = None) -> None:
  """Writes flow [H, W, 2] to `output` (`.flo`, or KITTI `.png`) and, if given, its colour
  coding to `visualize` (`.png`); all or nothing."""
  check_output_paths(output, visualize)
  bad = int(np.size(flow) - np.isfinite(flow).sum())
  if bad:
    raise ValueError(f"the flow has {bad} non-finite values; nothing written")
  paths = [output] if visualize is None else [output, visualize]
  with _staged(paths) as temps:
    if output.lower().endswith(".flo"):
      flow_formats.write_flo(temps[0], flow)
    else:
      flow_formats.write_kitti_flow(temps[0], flow)
    if visualize is not None:
      Image.fromarray(flow_colors.flow_to_rgb(flow)).save(temps[1], format="PNG")


def evaluate(
  fn: TileFn, config: ml_collections.ConfigDict, overlap: int, batch_size: int
) -> dict[str, float]:
  """The metrics of `config.task` on `config.data`'s evaluation split, on this process alone.

  `fn` is the model over `batch_size` tiles (`tile_model`). The split's pairs are cut into
  tiles as the trainer's evaluation cuts them (`flow_data.EvalTiles`), and the task's
  evaluator stitches and scores each pair: {"eval/epe": ..., "eval/pairs": ..., ...}.
  """
  tile = model_tile(config.model)
  if config.task.name != "flow":
    raise ValueError(f"config.task.name={config.task.name!r}: --evaluate needs the 'flow' task")
  task = tasks.get(config.task)
  source = flow_data.pair_source(config.data, "eval", tile)
  rows = flow_data.EvalTiles(source, tile, overlap)
  evaluator = task.evaluator()
  for batch in rows.batches(batch_size, (1, batch_size), 0, 1):
    outputs = fn(batch["inputs"][0])  # [batch_size, h, w, 2]
    evaluator.add(outputs[None], batch)  # the evaluator takes [devices, b, ...]
  return evaluator.result()
