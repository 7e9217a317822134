"""Tile origins, extraction and weighted stitching for tiled flow inference."""

import numpy as np
import pytest

from perceiver_jax.tools import flow_tiles

RELEASE_TILE = (368, 496)


def _spans(origins, tile):
  """Per axis, the sorted distinct tile origins."""
  return sorted({o[0] for o in origins}), sorted({o[1] for o in origins})


@pytest.mark.parametrize(
  "image_size",
  [(368, 496), (436, 1024), (375, 1242), (716, 972), (369, 497), (700, 1000), (1000, 2000)],
)
def test_tiles_cover_the_image_with_the_minimum_overlap(image_size):
  overlap = 20
  origins = flow_tiles.tile_origins(image_size, RELEASE_TILE, overlap)
  assert len(origins) == len(set(origins))
  covered = np.zeros(image_size, bool)
  for y, x in origins:
    assert 0 <= y <= image_size[0] - RELEASE_TILE[0]
    assert 0 <= x <= image_size[1] - RELEASE_TILE[1]
    covered[y : y + RELEASE_TILE[0], x : x + RELEASE_TILE[1]] = True
  assert covered.all()
  for axis, axis_origins in enumerate(_spans(origins, RELEASE_TILE)):
    stride = RELEASE_TILE[axis] - overlap
    # Neighbouring tiles overlap by at least the minimum.
    assert (np.diff(axis_origins) <= stride).all()
    # At the release's stride from 0, the last flush with the border.
    assert axis_origins[:-1] == [k * stride for k in range(len(axis_origins) - 1)]
    assert axis_origins[-1] == image_size[axis] - RELEASE_TILE[axis]
  # The rows-first grid is the product of the per-axis origins.
  ys, xs = _spans(origins, RELEASE_TILE)
  assert origins == [(y, x) for y in ys for x in xs]


def test_release_counts():
  """Sintel (436 x 1024) is 2 x 3 = 6 tiles, as in the paper; KITTI 2 x 3."""
  sintel = flow_tiles.tile_origins((436, 1024), RELEASE_TILE, 20)
  assert _spans(sintel, RELEASE_TILE) == ([0, 68], [0, 476, 528])
  kitti = flow_tiles.tile_origins((375, 1242), RELEASE_TILE, 20)
  assert _spans(kitti, RELEASE_TILE) == ([0, 7], [0, 476, 746])


def test_one_tile_image_and_repeated_last_origin():
  assert flow_tiles.tile_origins(RELEASE_TILE, RELEASE_TILE, 20) == [(0, 0)]
  # 716 = 368 + 348: the release's rule lists origin 348 twice; it is kept once.
  assert flow_tiles.axis_origins(716, 368, 20) == [0, 348]
  assert flow_tiles.axis_origins(10, 4, 0) == [0, 4, 6]


def test_origins_never_run_past_the_border():
  """700 rows: the release's rule gives 0, 348 and 332, the tile at 348 ending at 716 > 700."""
  assert flow_tiles.axis_origins(700, 368, 20) == [0, 332]
  assert flow_tiles.axis_origins(34, 13, 2) == [0, 11, 21]


def test_too_small_images_and_bad_overlaps_are_rejected():
  with pytest.raises(ValueError, match="367 x 496 is smaller than one tile of 368 x 496"):
    flow_tiles.tile_origins((367, 496), RELEASE_TILE, 20)
  with pytest.raises(ValueError, match="400 x 495"):
    flow_tiles.tile_origins((400, 495), RELEASE_TILE, 20)
  with pytest.raises(ValueError, match="min_overlap"):
    flow_tiles.tile_origins((400, 500), RELEASE_TILE, 368)
  with pytest.raises(ValueError, match="min_overlap"):
    flow_tiles.tile_origins((400, 500), RELEASE_TILE, -1)


def test_tile_weights_grow_away_from_the_border():
  weights = flow_tiles.tile_weights((5, 7))
  expected_row2 = [1, 2, 3, 3, 3, 2, 1]
  np.testing.assert_array_equal(weights[2], expected_row2)
  np.testing.assert_array_equal(weights[0], np.ones(7))
  np.testing.assert_array_equal(weights[:, 3], [1, 2, 3, 2, 1])


def test_extract_tiles_cuts_the_pair_at_each_origin():
  rng = np.random.default_rng(0)
  frame1 = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
  frame2 = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
  origins = flow_tiles.tile_origins((9, 11), (4, 6), 1)
  tiles = flow_tiles.extract_tiles(frame1, frame2, origins, (4, 6))
  assert tiles.shape == (len(origins), 2, 4, 6, 3) and tiles.dtype == np.uint8
  for (y, x), pair in zip(origins, tiles, strict=True):
    np.testing.assert_array_equal(pair[0], frame1[y : y + 4, x : x + 6])
    np.testing.assert_array_equal(pair[1], frame2[y : y + 4, x : x + 6])


def test_stitching_a_constant_and_a_smooth_field():
  image_size, tile = (23, 31), (8, 12)
  origins = flow_tiles.tile_origins(image_size, tile, 3)
  constant = np.full((len(origins), *tile, 2), [1.5, -2.25], np.float32)
  stitched = flow_tiles.stitch(constant, origins, image_size)
  np.testing.assert_allclose(stitched, np.broadcast_to(constant[0, 0, 0], stitched.shape))
  rows, cols = np.mgrid[: image_size[0], : image_size[1]].astype(np.float32)
  field = np.stack([np.sin(cols / 5) * 3, np.cos(rows / 4) + cols / 10], -1)
  tiles = np.stack([field[y : y + tile[0], x : x + tile[1]] for y, x in origins])
  np.testing.assert_allclose(flow_tiles.stitch(tiles, origins, image_size), field, atol=1e-5)


def test_stitching_weights_overlapping_tiles():
  """Two 1 x 4 tiles of a 1 x 6 image, overlapping on columns 2-3: flows 0 and 10."""
  origins = [(0, 0), (0, 2)]
  flows = np.zeros((2, 1, 4, 1), np.float32)
  flows[1] = 10.0
  stitched = flow_tiles.stitch(flows, origins, (1, 6))[0, :, 0]
  # Weights along a 1-row tile are all 1 (the row border is everywhere): a plain mean.
  np.testing.assert_allclose(stitched, [0, 0, 5, 5, 10, 10])
  flows = np.zeros((2, 3, 4, 1), np.float32)
  flows[1] = 10.0
  stitched = flow_tiles.stitch(flows, origins, (3, 6))[1, :, 0]
  # Middle row: tile weights [1, 2, 2, 1]; column 2 is 2 (tile 0) vs 1 (tile 1).
  np.testing.assert_allclose(stitched, [0, 0, 10 / 3, 20 / 3, 10, 10], rtol=1e-6)


def test_stitch_rejects_mismatches():
  with pytest.raises(ValueError, match="one per origin"):
    flow_tiles.stitch(np.zeros((3, 4, 4, 2)), [(0, 0)], (4, 4))
  with pytest.raises(ValueError, match="does not fit"):
    flow_tiles.stitch(np.zeros((1, 4, 4, 2)), [(1, 0)], (4, 4))
  with pytest.raises(ValueError, match="uncovered"):
    flow_tiles.stitch(np.zeros((1, 4, 4, 2)), [(0, 0)], (4, 6))


@pytest.mark.parametrize("batch_size", [1, 2, 4, 100])
def test_run_tiled_reproduces_the_coordinate_field(batch_size):
  """Frames carry each pixel's (x, y); a fake model returns the first frame's (x, y)."""
  height, width, tile = 21, 34, (8, 13)
  rows, cols = np.mgrid[:height, :width].astype(np.float32)
  frame1 = np.stack([cols, rows, np.zeros_like(rows)], -1)  # [H, W, 3]
  frame2 = frame1 + 1000
  calls = []

  def fake_fn(pairs):
    calls.append(len(pairs))
    assert pairs.shape[1:] == (2, *tile, 3)
    np.testing.assert_array_equal(pairs[:, 1], pairs[:, 0] + 1000)
    return pairs[:, 0, :, :, :2]

  flow = flow_tiles.run_tiled(fake_fn, frame1, frame2, tile, overlap=2, batch_size=batch_size)
  assert flow.shape == (height, width, 2) and flow.dtype == np.float32
  np.testing.assert_allclose(flow[..., 0], cols, atol=1e-4)
  np.testing.assert_allclose(flow[..., 1], rows, atol=1e-4)
  num_tiles = len(flow_tiles.tile_origins((height, width), tile, 2))
  assert sum(calls) == num_tiles and max(calls) <= batch_size
  assert len(calls) == -(-num_tiles // batch_size)


def test_run_tiled_rejects_bad_inputs():
  frame = np.zeros((10, 12, 3), np.uint8)

  def fn(pairs):
    return np.zeros((len(pairs), 8, 8, 2), np.float32)

  with pytest.raises(ValueError, match=r"\(10, 12, 3\) and \(10, 13, 3\)"):
    flow_tiles.run_tiled(fn, frame, np.zeros((10, 13, 3), np.uint8), (8, 8), 2, 4)
  with pytest.raises(ValueError, match="10 x 12 is smaller than one tile of 11 x 8"):
    flow_tiles.run_tiled(fn, frame, frame, (11, 8), 2, 4)
  with pytest.raises(ValueError, match="batch_size"):
    flow_tiles.run_tiled(fn, frame, frame, (8, 8), 2, 0)
  with pytest.raises(ValueError, match=r"returned \(1, 8, 8\)"):
    flow_tiles.run_tiled(lambda p: np.zeros((1, 8, 8)), frame, frame, (8, 8), 2, 4)
