"""Tests for perceiver_jax/data/flow_procedural.py: exact flow of procedural frame pairs.

The checks are independent of the renderer: the expected flow of every pixel is recomputed
here from the drawn layers (regions and motions, top-most layer wins), frames are compared to
the layers' textures sampled by a bilinear interpolation written here, and frame 2 warped
back with the flow must match frame 1.
"""

import dataclasses
import re

import numpy as np
import pytest

from perceiver_jax.data import flow_procedural as fp

SIZE = (48, 64)


def _scene_config(**overrides) -> fp.SceneConfig:
  cfg = fp.default_config()
  cfg.update(overrides)
  return fp.scene_config(cfg)


def _bilinear(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """float64 [..., C]: image [H, W, C] at points (x, y) inside [0, W - 1] x [0, H - 1]."""
  height, width = image.shape[:2]
  x0 = np.clip(np.floor(x).astype(int), 0, width - 2)
  y0 = np.clip(np.floor(y).astype(int), 0, height - 2)
  fx, fy = (x - x0)[..., None], (y - y0)[..., None]
  image = image.astype(np.float64)
  top = image[y0, x0] * (1 - fx) + image[y0, x0 + 1] * fx
  bottom = image[y0 + 1, x0] * (1 - fx) + image[y0 + 1, x0 + 1] * fx
  return top * (1 - fy) + bottom * fy


def _pixels(size):
  y, x = np.mgrid[: size[0], : size[1]].astype(np.float64)
  return x, y


def _affine(motion: np.ndarray, x: np.ndarray, y: np.ndarray):
  return (
    motion[0, 0] * x + motion[0, 1] * y + motion[0, 2],
    motion[1, 0] * x + motion[1, 1] * y + motion[1, 2],
  )


def _inverse(motion: np.ndarray) -> np.ndarray:
  full = np.vstack([motion, [0, 0, 1]])
  return np.linalg.inv(full)[:2]


def _texture_at(layer: fp.Layer, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """float64 [..., 3]: the layer's texture at layer coordinates (x, y)."""
  texture = layer.texture.transpose(1, 2, 0)
  return _bilinear(texture, x - layer.origin[0], y - layer.origin[1])


def _expected(scene: fp.Scene, frame: int):
  """(flow [H, W, 2], colour [H, W, 3], layer [H, W]) of frame 1 or 2, pixel by layer."""
  x, y = _pixels(scene.size)
  flow = np.zeros((*scene.size, 2))
  colour = np.zeros((*scene.size, 3))
  seen = np.full(scene.size, -1)
  for index, layer in enumerate(scene.layers):
    if frame == 1:
      ux, uy = x, y
      tx, ty = _affine(layer.motion, x, y)
    else:
      ux, uy = _affine(_inverse(layer.motion), x, y)
      tx, ty = ux, uy
    inside = np.ones(scene.size, bool) if layer.region is None else layer.region.contains(ux, uy)
    flow[inside] = np.stack([tx - x, ty - y], axis=-1)[inside]
    colour[inside] = _texture_at(layer, ux[inside], uy[inside])
    seen[inside] = index
  return flow, colour, seen


def test_pair_shapes_dtypes_and_determinism():
  scene = _scene_config()
  pair = fp.make_pair(np.random.default_rng(3), SIZE, scene)
  expected = dict(
    frame1=(np.uint8, (*SIZE, 3)),
    frame2=(np.uint8, (*SIZE, 3)),
    flow=(np.float32, (*SIZE, 2)),
    flow_backward=(np.float32, (*SIZE, 2)),
    valid=(np.bool_, SIZE),
  )
  assert {k: (v.dtype.type, v.shape) for k, v in pair.items()} == expected
  assert pair["valid"].all()
  again = fp.make_pair(np.random.default_rng(3), SIZE, scene)
  for key in expected:
    np.testing.assert_array_equal(pair[key], again[key])
  other = fp.make_pair(np.random.default_rng(4), SIZE, scene)
  assert np.mean(other["frame1"] != pair["frame1"]) > 0.5
  assert not np.allclose(other["flow"], pair["flow"])


def test_flows_and_frames_follow_the_top_most_layer():
  """Pixel by pixel: the flows are those of the top-most layer seen, the frames its texture."""
  scene_cfg = _scene_config(max_shapes=4)
  shapes_seen = 0
  for seed in range(6):
    scene = fp.draw_scene(np.random.default_rng(seed), SIZE, scene_cfg)
    pair = fp.render(scene)
    for frame, key in ((1, "flow"), (2, "flow_backward")):
      flow, colour, seen = _expected(scene, frame)
      # Float32 versus float64 region tests may disagree on a pixel grazing a boundary.
      wrong = np.any(np.abs(pair[key] - flow) > 1e-3, axis=-1)
      assert wrong.sum() <= 2, (seed, key, wrong.sum())
      np.testing.assert_allclose(pair[key][~wrong], flow[~wrong], atol=1e-3)
      frame_error = np.abs(pair[f"frame{frame}"].astype(float) - colour)[~wrong]
      assert frame_error.max() <= 0.51, (seed, frame, frame_error.max())
      shapes_seen += np.sum(seen > 0)
  assert shapes_seen > 0.05 * 12 * SIZE[0] * SIZE[1]


def test_frame2_warped_back_with_the_flow_matches_frame1():
  scene = _scene_config()
  x, y = _pixels(SIZE)
  errors = {"flow": [], "flow + (1, 0)": [], "zero": []}
  for seed in range(10):
    pair = fp.make_pair(np.random.default_rng(seed), SIZE, scene)
    frame1 = pair["frame1"].astype(np.float64)
    flow = pair["flow"].astype(np.float64)
    tx, ty = x + flow[..., 0], y + flow[..., 1]
    # Targets inside the image (with room for the shifted flow) and not occluded: the
    # backward flow there leads back to p.
    keep = (tx >= 0) & (tx <= SIZE[1] - 2) & (ty >= 0) & (ty <= SIZE[0] - 1)
    back = _bilinear(pair["flow_backward"], tx[keep], ty[keep])
    keep[keep] = np.linalg.norm(flow[keep] + back, axis=-1) < 0.5
    assert keep.mean() > 0.5
    for name, (dx, dy) in (("flow", (0, 0)), ("flow + (1, 0)", (1, 0))):
      warped = _bilinear(pair["frame2"], tx[keep] + dx, ty[keep] + dy)
      errors[name].append(np.abs(warped - frame1[keep]).mean())
    errors["zero"].append(np.abs(pair["frame2"][keep] - frame1[keep]).mean())
  mean = {name: np.mean(values) for name, values in errors.items()}
  assert mean["flow"] < 3.0, mean
  assert mean["flow"] < mean["flow + (1, 0)"] / 3, mean
  assert mean["flow"] < mean["zero"] / 3, mean


def test_translation_only_is_one_constant_flow():
  scene_cfg = _scene_config(max_shapes=0, max_rotation_degrees=0.0, max_log_scale=0.0)
  scene = fp.draw_scene(np.random.default_rng(7), SIZE, scene_cfg)
  (layer,) = scene.layers
  np.testing.assert_array_equal(layer.motion[:, :2], np.eye(2))
  t = layer.motion[:, 2]
  assert 0.5 < np.abs(t).max() <= 3.0
  pair = fp.render(scene)
  np.testing.assert_allclose(pair["flow"], np.broadcast_to(t, (*SIZE, 2)), atol=1e-6)
  np.testing.assert_allclose(pair["flow_backward"], np.broadcast_to(-t, (*SIZE, 2)), atol=1e-6)
  # Frame 2 at q is the texture at q - t, a non-integer position.
  x, y = _pixels(SIZE)
  np.testing.assert_allclose(pair["frame2"], _texture_at(layer, x - t[0], y - t[1]), atol=0.51)

  # An integer translation (towards 0 from the drawn one, inside the texture): frame 2 is
  # frame 1 shifted by it, exactly.
  tx, ty = np.trunc(t).astype(int)
  assert tx != 0 and ty != 0, (tx, ty)
  motion = np.array([[1.0, 0.0, tx], [0.0, 1.0, ty]])
  pair = fp.render(dataclasses.replace(scene, layers=(dataclasses.replace(layer, motion=motion),)))
  height, width = SIZE
  np.testing.assert_array_equal(
    pair["frame2"][max(ty, 0) : height + min(ty, 0), max(tx, 0) : width + min(tx, 0)],
    pair["frame1"][max(-ty, 0) : height + min(-ty, 0), max(-tx, 0) : width + min(-tx, 0)],
  )
  np.testing.assert_array_equal(pair["flow"], np.broadcast_to([tx, ty], (*SIZE, 2)))


def test_forward_and_backward_flows_agree_on_the_background():
  scene_cfg = _scene_config(max_shapes=0, max_rotation_degrees=10.0, max_log_scale=0.1)
  x, y = _pixels(SIZE)
  for seed in range(4):
    pair = fp.make_pair(np.random.default_rng(seed), SIZE, scene_cfg)
    flow = pair["flow"].astype(np.float64)
    assert np.ptp(flow[..., 0]) > 0.5  # rotation or zoom: not one translation
    tx, ty = x + flow[..., 0], y + flow[..., 1]
    inside = (tx >= 0) & (tx <= SIZE[1] - 1) & (ty >= 0) & (ty <= SIZE[0] - 1)
    assert inside.mean() > 0.7
    # Backward flow is affine in q, which bilinear interpolation reproduces exactly.
    back = _bilinear(pair["flow_backward"], tx[inside], ty[inside])
    np.testing.assert_allclose(back, -flow[inside], atol=1e-4)


def test_frames_have_contrast():
  scene = _scene_config()
  frames = np.stack(
    [fp.make_pair(np.random.default_rng(s), SIZE, scene)["frame1"] for s in range(8)]
  )
  low, high = np.percentile(frames, [2, 98])
  assert low < 64 and high > 192, (low, high)
  assert np.mean([f.std() for f in frames]) > 25


def test_default_config():
  scene = fp.scene_config(fp.default_config())
  assert scene == fp.SceneConfig(
    max_translation=3.0,
    max_rotation_degrees=4.0,
    max_log_scale=0.06,
    max_shapes=3,
    shape_max_translation=4.0,
    shape_max_rotation_degrees=6.0,
    shape_max_log_scale=0.05,
    shape_size=(0.12, 0.3),
    texture_octaves=5,
  )


@pytest.mark.parametrize(
  "field, value, requirement",
  [
    ("max_shapes", -1, "must be >= 0"),
    ("max_translation", -1.0, "must be in [0, 100.0]"),
    ("max_rotation_degrees", 90.0, "must be in [0, 45.0]"),
    ("shape_max_log_scale", float("nan"), "must be in [0, 0.5]"),
    ("shape_size", (0.3, 0.1), "must be (low, high) with 0 < low <= high <= 1"),
    ("shape_size", (0.0, 0.1), "must be (low, high) with 0 < low <= high <= 1"),
    ("shape_size", (0.1, 0.2, 0.3), "must be (low, high) with 0 < low <= high <= 1"),
    ("texture_octaves", 0, "must be in [1, 8]"),
  ],
)
def test_config_errors(field, value, requirement):
  cfg = fp.default_config()
  cfg[field] = value
  message = f"config.data.procedural.{field}={value!r}: {requirement}"
  with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
    fp.scene_config(cfg)
