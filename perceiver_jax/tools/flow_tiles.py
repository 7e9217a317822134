"""Tiled optical-flow inference: tile origins, tile extraction, weighted stitching.

The released flow model sees frames of one size (368 x 496). A larger pair is cut into
overlapping tiles of that size, each tile pair is run through the model, and the per-tile
flows are averaged back into one field, as the release's colab does:

- Tile origins per axis (`axis_origins`): the multiples of the stride `tile - min_overlap`
  below the image size, each clipped to `size - tile` (so the last tile sits flush with the
  far border), repeats dropped; neighbours overlap by at least `min_overlap`. Sintel
  (436 x 1024) gets 2 x 3 = 6 tiles, as in the paper.
- Stitching weights (`tile_weights`): a pixel of a tile weighs 1 + its distance in pixels to
  the nearest tile border (min over the two axes of min(i + 1, tile - i)), so a tile's border
  pixels count least; the stitched flow is the weighted sum divided by the summed weights.

Model-agnostic numpy: `run_tiled` takes any batched function of tile pairs.
Shapes: frames [H, W, C]; a tile pair batch [T, 2, h, w, C]; per-tile flows [T, h, w, 2];
a flow field [H, W, 2] (u horizontal, v vertical, pixels).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TileFn = Callable[[np.ndarray], np.ndarray]


def _check_size(name: str, value) -> tuple[int, int]:
  """Returns `value` as a pair of positive ints, or raises naming it."""
  size = tuple(int(v) for v in value)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"{name} must be two positive sizes (height, width), got {value!r}")
  return size


def axis_origins(size: int, tile: int, min_overlap: int) -> list[int]:
  """Origins of the tiles covering `size` pixels on one axis, in increasing order.

  The release's rule: the multiples of `tile - min_overlap` below `size`, the last replaced
  by `size - tile` so the last tile ends at the border. Here every origin is clipped to
  `size - tile` and repeats are dropped, which gives the release's origins wherever those are
  valid and differs in two corner cases: where the rule lists the last origin twice (`size -
  tile` a multiple of the stride, e.g. an image of exactly one tile) the release evaluates
  that tile twice, doubling its stitching weight; and where the second-to-last multiple lies
  less than `min_overlap` beyond `size - tile` (700 rows, tiles of 368, overlap 20) the
  release's tile there would run past the border.

  Raises:
    ValueError: if the overlap is negative or not below the tile, or `size < tile`.
  """
  if not 0 <= min_overlap < tile:
    raise ValueError(f"min_overlap must be in [0, tile={tile}), got {min_overlap}")
  if size < tile:
    raise ValueError(f"image size {size} is smaller than the tile size {tile}")
  return sorted({min(origin, size - tile) for origin in range(0, size, tile - min_overlap)})


def tile_origins(
  image_size: tuple[int, int], tile: tuple[int, int], min_overlap: int
) -> list[tuple[int, int]]:
  """(y, x) origins of the tiles covering an image of `image_size` = (H, W), rows first.

  Raises:
    ValueError: naming both sizes if the image is smaller than one tile on either axis.
  """
  height, width = _check_size("image_size", image_size)
  tile_h, tile_w = _check_size("tile", tile)
  if height < tile_h or width < tile_w:
    raise ValueError(
      f"image of {height} x {width} is smaller than one tile of {tile_h} x {tile_w}; "
      "pad or resize it"
    )
  ys = axis_origins(height, tile_h, min_overlap)
  xs = axis_origins(width, tile_w, min_overlap)
  return [(y, x) for y in ys for x in xs]


def _check_pair(frame1: np.ndarray, frame2: np.ndarray) -> None:
  """Raises if the two frames are not [H, W, C] arrays of one shape."""
  if frame1.ndim != 3 or frame1.shape != frame2.shape:
    raise ValueError(
      f"frames must be [H, W, C] of one shape, got {frame1.shape} and {frame2.shape}"
    )


def extract_tiles(
  frame1: np.ndarray, frame2: np.ndarray, origins: list[tuple[int, int]], tile: tuple[int, int]
) -> np.ndarray:
  """Cuts the tile pairs at `origins` out of two [H, W, C] frames: [T, 2, h, w, C]."""
  frame1, frame2 = np.asarray(frame1), np.asarray(frame2)
  _check_pair(frame1, frame2)
  tile_h, tile_w = _check_size("tile", tile)
  pair = np.stack([frame1, frame2])  # [2, H, W, C]
  tiles = [pair[:, y : y + tile_h, x : x + tile_w] for y, x in origins]
  for (y, x), piece in zip(origins, tiles, strict=True):
    if piece.shape[1:3] != (tile_h, tile_w) or y < 0 or x < 0:
      raise ValueError(f"tile at origin {(y, x)} does not fit in frames of {frame1.shape[:2]}")
  return np.stack(tiles)


def tile_weights(tile: tuple[int, int]) -> np.ndarray:
  """Stitching weight of each pixel of a tile: 1 + distance to the nearest border; [h, w]."""
  tile_h, tile_w = _check_size("tile", tile)
  rows = np.arange(tile_h)
  cols = np.arange(tile_w)
  weight_y = np.minimum(rows + 1, tile_h - rows)  # [h]
  weight_x = np.minimum(cols + 1, tile_w - cols)  # [w]
  return np.minimum(weight_y[:, None], weight_x[None, :]).astype(np.float32)


def stitch(
  flows: np.ndarray, origins: list[tuple[int, int]], image_size: tuple[int, int]
) -> np.ndarray:
  """Weighted average of per-tile flows [T, h, w, 2] placed at `origins`: [H, W, 2] float32.

  Raises:
    ValueError: if the number of flows and origins differ, or a pixel is not covered.
  """
  flows = np.asarray(flows, np.float32)
  height, width = _check_size("image_size", image_size)
  if flows.ndim != 4 or flows.shape[0] != len(origins):
    raise ValueError(
      f"flows must be [T={len(origins)}, h, w, C] (one per origin), got {flows.shape}"
    )
  tile_h, tile_w = flows.shape[1:3]
  weights = tile_weights((tile_h, tile_w))[..., None]  # [h, w, 1]
  total = np.zeros((height, width, flows.shape[-1]), np.float64)
  weight_sum = np.zeros((height, width, 1), np.float64)
  for (y, x), flow in zip(origins, flows, strict=True):
    if y < 0 or x < 0 or y + tile_h > height or x + tile_w > width:
      raise ValueError(f"tile at origin {(y, x)} does not fit in an image of {(height, width)}")
    total[y : y + tile_h, x : x + tile_w] += flow * weights
    weight_sum[y : y + tile_h, x : x + tile_w] += weights
  if not np.all(weight_sum > 0):
    raise ValueError(f"the tiles at {origins} leave pixels of {(height, width)} uncovered")
  return (total / weight_sum).astype(np.float32)


def run_tiled(
  fn: TileFn,
  frame1: np.ndarray,
  frame2: np.ndarray,
  tile: tuple[int, int],
  overlap: int,
  batch_size: int,
) -> np.ndarray:
  """Flow of a frame pair of any size >= `tile`, from a model of fixed tile size.

  Args:
    fn: batched model, tile pairs [t, 2, h, w, C] -> flows [t, h, w, 2]; called with
      t <= batch_size (the last chunk may be smaller).
    frame1, frame2: [H, W, C] frames of one shape.
    tile: (h, w), the model's frame size.
    overlap: minimum overlap of neighbouring tiles, in pixels.
    batch_size: tiles per call of `fn`.

  Returns:
    [H, W, 2] float32 flow, the per-tile flows stitched with `tile_weights`.
  """
  frame1, frame2 = np.asarray(frame1), np.asarray(frame2)
  _check_pair(frame1, frame2)
  if batch_size < 1:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  tile = _check_size("tile", tile)
  origins = tile_origins(frame1.shape[:2], tile, overlap)
  pairs = extract_tiles(frame1, frame2, origins, tile)  # [T, 2, h, w, C]
  chunks = []
  for start in range(0, len(pairs), batch_size):
    chunk = pairs[start : start + batch_size]
    flows = np.asarray(fn(chunk))
    if flows.shape[:3] != (len(chunk), *tile) or flows.ndim != 4:
      raise ValueError(
        f"fn must map [t, 2, h, w, C] tiles to [t, h, w, 2] flows; for {chunk.shape} "
        f"it returned {flows.shape}"
      )
    chunks.append(flows)
  return stitch(np.concatenate(chunks), origins, frame1.shape[:2])
