"""Tests for perceiver_jax/data/flow_augment.py on pairs whose flow is known by construction.

A pair is frame 1 and frame2 = np.roll(frame1, (dy, dx)), so the flow is (dx, dy) at every
pixel: frame2[y + dy, x + dx] == frame1[y, x]. Each spatial step must keep that relation with
the flow it returns. With integer flow and a crop of the whole sample it holds exactly even
for noise images; after a scale by 2 it holds exactly away from the borders when the image is
periodic (np.roll then has no seam); after an arbitrary scale and stretch it holds up to the
bilinear error of a smooth image, far below the error of a wrong flow.
"""

import colorsys
import dataclasses

import numpy as np
import pytest

from perceiver_jax.data import flow_augment as fa

SIZE = (32, 48)  # the tests' training crop (h, w)
# Geometry only: no jitter, no scale, no flips; tests switch on what they check.
PLAIN = fa.AugmentConfig(
  scale_prob=0.0,
  stretch_prob=0.0,
  flip_lr_prob=0.0,
  flip_ud_prob=0.0,
  brightness=0.0,
  contrast=0.0,
  saturation=0.0,
  hue=0.0,
)


def _noise(rng, height, width):
  return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _periodic(rng, height, width):
  """A smooth uint8 image, periodic over its size: a few low-frequency waves per channel."""
  y, x = np.mgrid[0:height, 0:width]
  image = np.full((height, width, 3), 128.0)
  for a, b in ((1, 0), (0, 1), (1, 1), (1, -1)):
    phase = rng.uniform(0, 2 * np.pi, 3)
    image += rng.uniform(15, 30, 3) * np.cos(2 * np.pi * (a * y / height + b * x / width))[
      ..., None
    ] * np.cos(phase) + 25 * np.sin(2 * np.pi * (a * y / height + b * x / width))[
      ..., None
    ] * np.sin(phase)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _shifted(frame1, dx, dy, valid=None):
  """The pair (frame1, frame1 moved by (dx, dy)) with its constant flow."""
  height, width = frame1.shape[:2]
  flow = np.broadcast_to(np.float32([dx, dy]), (height, width, 2)).copy()
  return {
    "frame1": frame1,
    "frame2": np.roll(frame1, (dy, dx), axis=(0, 1)),
    "flow": flow,
    "valid": np.ones((height, width), bool) if valid is None else valid,
  }


def _bilinear_at(image, x, y):
  x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
  x1, y1 = np.minimum(x0 + 1, image.shape[1] - 1), np.minimum(y0 + 1, image.shape[0] - 1)
  tx, ty = (x - x0)[..., None], (y - y0)[..., None]
  top = image[y0, x0] * (1 - tx) + image[y0, x1] * tx
  bottom = image[y1, x0] * (1 - tx) + image[y1, x1] * tx
  return top * (1 - ty) + bottom * ty


def _warp_residual(out, flow=None, margin=2):
  """|frame2(p + flow(p)) - frame1(p)| [N, 3] over the valid pixels p that are, and whose
  targets are, at least `margin` pixels inside the crop; frame 2 is sampled bilinearly."""
  flow = out["flow"] if flow is None else flow
  height, width = out["valid"].shape
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  tx, ty = x + flow[..., 0], y + flow[..., 1]
  lo, hi_x, hi_y = margin, width - 1 - margin, height - 1 - margin
  keep = out["valid"] & (x >= lo) & (x <= hi_x) & (y >= lo) & (y <= hi_y)
  keep &= (tx >= lo) & (tx <= hi_x) & (ty >= lo) & (ty <= hi_y)
  assert keep.sum() > 100, "too few pixels to check"
  warped = _bilinear_at(out["frame2"].astype(np.float64), tx[keep], ty[keep])
  return np.abs(warped - out["frame1"][keep])


def test_default_config_round_trips_and_matches_the_dataclass():
  cfg = fa.default_config()
  assert fa.augment_config(cfg) == fa.AugmentConfig()
  assert cfg.hue == pytest.approx(0.5 / 3.14) and cfg.asymmetric_prob == 0.0
  assert (cfg.min_log2_scale, cfg.max_log2_scale, cfg.flip_lr_prob) == (-0.2, 0.5, 0.5)


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("flip_lr_prob", 1.5, "config.data.augment.flip_lr_prob=1.5: must be in [0, 1]"),
    ("scale_prob", -0.1, "config.data.augment.scale_prob=-0.1: must be in [0, 1]"),
    ("min_log2_scale", 0.6, "config.data.augment.min_log2_scale=0.6: exceeds max_log2_scale"),
    ("hue", 0.6, "config.data.augment.hue=0.6: must be in [0, 0.5]"),
    ("brightness", -0.4, "config.data.augment.brightness=-0.4: must be >= 0"),
    ("max_log2_stretch", -1.0, "config.data.augment.max_log2_stretch=-1.0: must be >= 0"),
    ("saturation", float("nan"), "config.data.augment.saturation=nan: must be a finite"),
  ],
)
def test_config_validation_names_field_and_value(field, value, message):
  cfg = fa.default_config()
  cfg[field] = value
  with pytest.raises(ValueError) as error:
    fa.augment_config(cfg)
  assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_config_types_are_checked_without_a_config_dict():
  with pytest.raises(ValueError, match=r"^config\.data\.augment\.contrast='0\.4': must be a fin"):
    fa.AugmentConfig(contrast="0.4")
  with pytest.raises(ValueError, match=r"^config\.data\.augment\.enabled=1: must be True or"):
    fa.AugmentConfig(enabled=1)


def test_config_refuses_unknown_and_missing_fields():
  cfg = fa.default_config()
  cfg.flip_prob = 0.5
  with pytest.raises(ValueError, match=r"^config\.data\.augment\.flip_prob=0\.5: not a field"):
    fa.augment_config(cfg)
  cfg = fa.default_config()
  del cfg["hue"]
  with pytest.raises(ValueError, match=r"^config\.data\.augment\.hue: missing$"):
    fa.augment_config(cfg)


def test_random_crop_is_a_window_at_every_offset():
  rng = np.random.default_rng(0)
  sample = _shifted(_noise(rng, 35, 50), 1, 2)
  sample["valid"] = rng.random((35, 50)) < 0.5
  seen = set()
  for _ in range(200):
    out = fa.random_crop(sample, SIZE, rng)
    assert out["frame1"].shape == (*SIZE, 3) and out["flow"].shape == (*SIZE, 2)
    assert out["frame1"].dtype == np.uint8 and out["valid"].dtype == bool
    # The offset is where frame 1's first row and column sit in the sample.
    top, left = next(
      (t, s)
      for t in range(4)
      for s in range(3)
      if np.array_equal(out["frame1"], sample["frame1"][t : t + 32, s : s + 48])
    )
    for key in ("frame2", "flow", "valid"):
      np.testing.assert_array_equal(out[key], sample[key][top : top + 32, left : left + 48])
    seen.add((top, left))
  assert seen == {(t, s) for t in range(4) for s in range(3)}  # 35 - 32 + 1 by 50 - 48 + 1


@pytest.mark.parametrize("height, width", [(31, 64), (40, 47)])
def test_too_small_sample_is_refused_naming_both_sizes(height, width):
  sample = _shifted(np.zeros((height, width, 3), np.uint8), 0, 0)
  message = f"sample of {height}x{width} is smaller than the crop 32x48"
  for call in (
    lambda: fa.random_crop(sample, SIZE, np.random.default_rng(0)),
    lambda: fa.augment(sample, SIZE, np.random.default_rng(0), fa.AugmentConfig()),
  ):
    with pytest.raises(ValueError, match=f"^{message}$"):
      call()


def test_bad_crop_and_missing_flow_are_refused():
  rng = np.random.default_rng(0)
  sample = _shifted(_noise(rng, 32, 48), 0, 0)
  with pytest.raises(ValueError, match=r"^crop=\(0, 48\): expected a positive"):
    fa.random_crop(sample, (0, 48), rng)
  with pytest.raises(ValueError, match="sample has no 'flow'"):
    fa.augment({"frame1": sample["frame1"], "frame2": sample["frame2"]}, SIZE, rng, PLAIN)


def test_disabled_is_the_random_crop_alone():
  rng = np.random.default_rng(1)
  sample = _shifted(_noise(rng, 40, 60), 3, -2)
  sample["valid"] = rng.random((40, 60)) < 0.3
  sample["flow_backward"] = -sample["flow"]
  # Every augmentation at its strongest: none of it may apply.
  cfg = dataclasses.replace(
    fa.AugmentConfig(), enabled=False, scale_prob=1.0, flip_lr_prob=1.0, flip_ud_prob=1.0
  )
  for seed in range(5):
    out = fa.augment(sample, SIZE, np.random.default_rng(seed), cfg)
    cropped = fa.random_crop(sample, SIZE, np.random.default_rng(seed))
    assert set(out) == set(cropped) == {"frame1", "frame2", "flow", "valid", "flow_backward"}
    for key in out:
      assert out[key].dtype == (bool if key == "valid" else np.float32)
      np.testing.assert_array_equal(out[key], cropped[key])


@pytest.mark.parametrize("flip_lr, flip_ud", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0)])
def test_flips_mirror_everything_and_negate_the_right_component(flip_lr, flip_ud):
  rng = np.random.default_rng(2)
  dx, dy = 3, -2
  sample = _shifted(_noise(rng, *SIZE), dx, dy)
  cfg = dataclasses.replace(PLAIN, flip_lr_prob=flip_lr, flip_ud_prob=flip_ud)
  out = fa.augment(sample, SIZE, rng, cfg)  # the crop is the whole sample
  sign = np.float32([-1 if flip_lr else 1, -1 if flip_ud else 1])
  np.testing.assert_array_equal(out["flow"], np.broadcast_to(sign * [dx, dy], (*SIZE, 2)))
  # frame2(p + flow) == frame1(p) exactly, with the flipped flow (integer: no interpolation).
  np.testing.assert_array_equal(_warp_residual(out, margin=0), 0.0)
  # Arbitrary flow and a sparse mask move with the pixels.
  sample["flow"] = rng.normal(0, 5, (*SIZE, 2)).astype(np.float32)
  sample["valid"] = rng.random(SIZE) < 0.3
  out = fa.augment(sample, SIZE, rng, cfg)
  axes = tuple(a for a, on in ((1, flip_lr), (0, flip_ud)) if on)
  for key in ("frame1", "frame2", "valid"):
    np.testing.assert_array_equal(out[key], np.flip(sample[key], axes))
  np.testing.assert_array_equal(out["flow"], np.flip(sample["flow"], axes) * sign)


@pytest.mark.parametrize("flip_lr", [0.0, 1.0])
def test_scale_by_two_doubles_the_flow_and_keeps_the_pair_consistent(flip_lr):
  rng = np.random.default_rng(3)
  dx, dy = 2, -1
  sample = _shifted(_noise(rng, 40, 60), dx, dy)
  cfg = dataclasses.replace(
    PLAIN, min_log2_scale=1.0, max_log2_scale=1.0, scale_prob=1.0, flip_lr_prob=flip_lr
  )
  out = fa.augment(sample, SIZE, rng, cfg)
  expected = np.float32([-2 * dx if flip_lr else 2 * dx, 2 * dy])
  np.testing.assert_array_equal(out["flow"], np.broadcast_to(expected, (*SIZE, 2)))
  assert out["valid"].all()
  # Even flow: frame 2 is sampled at pixel centres, so the relation holds up to rounding.
  assert _warp_residual(out).max() < 1e-3
  assert _warp_residual(out, -out["flow"]).mean() > 30  # the opposite flow is far off


def test_random_scale_and_stretch_scale_each_component_by_its_axis():
  rng = np.random.default_rng(4)
  dx, dy = 3, 2
  sample = _shifted(_periodic(rng, 48, 64), dx, dy)
  cfg = dataclasses.replace(PLAIN, scale_prob=1.0, stretch_prob=1.0, max_log2_stretch=0.3)
  ratios = []
  for _ in range(12):
    out = fa.augment(sample, SIZE, rng, cfg)
    u, v = out["flow"][0, 0]
    np.testing.assert_allclose(out["flow"], np.broadcast_to([u, v], (*SIZE, 2)), rtol=1e-5)
    sx, sy = u / dx, v / dy
    # The scaled sample keeps at least MARGIN pixels beyond the crop on each axis.
    assert 2**-0.5 - 1e-6 <= sx <= 2**0.8 + 1e-6 and sx * 64 >= 48 + fa.MARGIN - 0.5
    assert 2**-0.5 - 1e-6 <= sy <= 2**0.8 + 1e-6 and sy * 48 >= 32 + fa.MARGIN - 0.5
    residual = _warp_residual(out).mean()
    swapped = np.broadcast_to(np.float32([dx * sy, dy * sx]), (*SIZE, 2))
    assert residual < 0.3, (sx, sy, residual)  # bilinear error of a smooth image
    assert _warp_residual(out, -out["flow"]).mean() > 10
    if abs(sx - sy) > 0.1:  # the flow of the other axis' scale is measurably worse
      assert _warp_residual(out, swapped).mean() > 5 * residual
    ratios.append(sx / sy)
  assert max(ratios) > 1.1 and min(ratios) < 1 / 1.1  # stretched both ways


def test_photometric_jitter_is_one_function_for_both_frames():
  rng = np.random.default_rng(5)
  frame = _noise(rng, *SIZE)
  cfg = dataclasses.replace(PLAIN, brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5)
  for _ in range(4):
    out = fa.augment(_shifted(frame, 0, 0), SIZE, rng, cfg)
    np.testing.assert_array_equal(out["frame1"], out["frame2"])
    assert np.abs(out["frame1"] - frame).mean() > 2  # something changed
    assert out["frame1"].min() >= 0 and out["frame1"].max() <= 255
    # A moved pair stays exactly consistent: the jitter acts pixel by pixel, the same on both.
    out = fa.augment(_shifted(frame, 4, 1), SIZE, rng, cfg)
    np.testing.assert_array_equal(_warp_residual(out, margin=0), 0.0)
  asymmetric = dataclasses.replace(cfg, asymmetric_prob=1.0)
  out = fa.augment(_shifted(frame, 0, 0), SIZE, rng, asymmetric)
  assert np.abs(out["frame1"] - out["frame2"]).mean() > 1


def test_brightness_alone_multiplies_by_a_factor_in_range():
  rng = np.random.default_rng(6)
  frame = rng.integers(0, 150, (*SIZE, 3), dtype=np.uint8)
  cfg = dataclasses.replace(PLAIN, brightness=0.4)
  factors = []
  for _ in range(20):
    out = fa.augment(_shifted(frame, 0, 0), SIZE, rng, cfg)
    factor = out["frame1"].sum() / frame.sum()
    np.testing.assert_allclose(out["frame1"], np.minimum(frame * factor, 255), atol=1e-3)
    factors.append(factor)
  assert 0.6 <= min(factors) < 0.9 and 1.1 < max(factors) <= 1.4


@pytest.mark.parametrize("shift", [0.0, 0.25, -0.159, 0.5])
def test_hue_rotation_matches_colorsys(shift):
  rng = np.random.default_rng(7)
  rgb = rng.uniform(0, 255, (300, 3)).astype(np.float32)
  rgb[:6] = [[9, 9, 9], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]]
  out = fa._shift_hue(rgb, shift)
  for pixel, got in zip(rgb, out, strict=True):
    h, s, v = colorsys.rgb_to_hsv(*(pixel / 255.0))
    np.testing.assert_allclose(
      got, np.array(colorsys.hsv_to_rgb((h + shift) % 1, s, v)) * 255, atol=2e-3
    )


def test_resize_flow_sparse_moves_valid_points_and_scales_their_flow():
  rng = np.random.default_rng(8)
  flow = rng.normal(0, 4, (20, 30, 2)).astype(np.float32)
  valid = rng.random((20, 30)) < 0.3
  flow[~valid] = 1e4  # whatever invalid pixels hold must never reach the output
  # Twice the size: point (x, y) lands on (2x, 2y) (rint of 2x + 0.5 rounds half to even).
  out, out_valid = fa.resize_flow(flow, valid, (40, 60))
  expected = np.zeros((40, 60), bool)
  expected[::2, ::2] = valid
  np.testing.assert_array_equal(out_valid, expected)
  np.testing.assert_array_equal(out[::2, ::2][valid], flow[valid] * 2)
  np.testing.assert_array_equal(out[~out_valid], 0.0)
  # Half the width, same height: u halves, v stays; no more points than there were.
  out, out_valid = fa.resize_flow(flow, valid, (20, 15))
  assert 0 < out_valid.sum() <= valid.sum() and np.abs(out).max() < 100
  ys, xs = np.nonzero(out_valid)
  for y, x in zip(ys, xs, strict=True):  # each comes from (2x or 2x + 1, y), 2x + 1 last
    source = 2 * x + 1 if valid[y, 2 * x + 1] else 2 * x
    assert valid[y, source]
    np.testing.assert_array_equal(out[y, x], flow[y, source] * [0.5, 1.0])


def test_resize_flow_dense_is_bilinear_and_scaled():
  y, x = np.mgrid[0:20, 0:30].astype(np.float32)
  flow = np.stack([x, 2 * y], axis=-1)  # linear: bilinear resizing reproduces it inside
  out, out_valid = fa.resize_flow(flow, np.ones((20, 30), bool), (50, 45))
  assert out_valid.shape == (50, 45) and out_valid.all()
  ny, nx = np.mgrid[0:50, 0:45]
  source_x, source_y = (nx + 0.5) * 30 / 45 - 0.5, (ny + 0.5) * 20 / 50 - 0.5
  inside = (source_x >= 0) & (source_x <= 29) & (source_y >= 0) & (source_y <= 19)
  np.testing.assert_allclose(out[..., 0][inside], (source_x * 1.5)[inside], atol=1e-4)
  np.testing.assert_allclose(out[..., 1][inside], (2 * source_y * 2.5)[inside], atol=1e-4)


def test_sparse_sample_keeps_only_valid_points_through_augment():
  rng = np.random.default_rng(9)
  dx, dy = 2, 1
  sample = _shifted(_noise(rng, 40, 60), dx, dy, valid=rng.random((40, 60)) < 0.5)
  sample["flow"][~sample["valid"]] = 0.0  # as load_sample leaves invalid KITTI pixels
  cfg = dataclasses.replace(PLAIN, min_log2_scale=1.0, max_log2_scale=1.0, scale_prob=1.0)
  out = fa.augment(sample, SIZE, rng, cfg)
  assert 0.08 < out["valid"].mean() < 0.17  # about 0.5 / 4 after doubling each side
  flow = out["flow"][out["valid"]]
  np.testing.assert_array_equal(flow, np.broadcast_to(np.float32([2 * dx, 2 * dy]), flow.shape))
  np.testing.assert_array_equal(out["flow"][~out["valid"]], 0.0)
  assert _warp_residual(out).max() < 1e-3


def test_flow_backward_follows_the_geometry_and_reverse_swaps_the_pair():
  rng = np.random.default_rng(10)
  sample = _shifted(_noise(rng, 40, 60), 2, -1)
  sample["flow_backward"] = -sample["flow"]
  reversed_sample = fa.reverse(sample)
  np.testing.assert_array_equal(reversed_sample["frame1"], sample["frame2"])
  np.testing.assert_array_equal(reversed_sample["frame2"], sample["frame1"])
  np.testing.assert_array_equal(reversed_sample["flow"], sample["flow_backward"])
  np.testing.assert_array_equal(reversed_sample["flow_backward"], sample["flow"])
  assert reversed_sample["valid"].all() and reversed_sample["valid_backward"].all()
  cfg = dataclasses.replace(
    PLAIN, min_log2_scale=1.0, max_log2_scale=1.0, scale_prob=1.0, flip_lr_prob=1.0
  )
  for pair in (sample, reversed_sample):
    out = fa.augment(pair, SIZE, rng, cfg)
    np.testing.assert_array_equal(out["flow_backward"], -out["flow"])
    assert _warp_residual(out).max() < 1e-3
  np.testing.assert_array_equal(out["flow"][0, 0], [4, 2])  # -(-2 * 2) for u, 2 * 1 for v
  assert out["valid_backward"].all()
  # Unknown backward flow (inf, > 1e9) is invalid once reversed.
  sample["flow_backward"][0, 0] = [np.inf, 0]
  sample["flow_backward"][1, 1] = [0, 2e9]
  valid = fa.reverse(sample)["valid"]
  assert not valid[0, 0] and not valid[1, 1] and valid.sum() == 40 * 60 - 2
  del sample["flow_backward"]
  with pytest.raises(ValueError, match="sample has no 'flow_backward'"):
    fa.reverse(sample)


def test_a_sparse_backward_mask_is_kept_through_augment_and_reverse():
  rng = np.random.default_rng(12)
  sample = _shifted(_noise(rng, 40, 60), 1, 2)
  known = rng.random((40, 60)) < 0.5
  sample["flow_backward"] = np.where(known[..., None], -sample["flow"], 0.0).astype(np.float32)
  sample["valid_backward"] = known
  reversed_sample = fa.reverse(sample)
  np.testing.assert_array_equal(reversed_sample["valid"], known)  # zeros are not flow
  cfg = dataclasses.replace(PLAIN, min_log2_scale=1.0, max_log2_scale=1.0, scale_prob=1.0)
  out = fa.augment(sample, SIZE, rng, cfg)
  assert out["valid"].all() and 0.08 < out["valid_backward"].mean() < 0.17
  np.testing.assert_array_equal(out["flow_backward"][~out["valid_backward"]], 0.0)
  flow = out["flow_backward"][out["valid_backward"]]
  np.testing.assert_array_equal(flow, np.broadcast_to(np.float32([-2, -4]), flow.shape))


def test_augment_is_deterministic_given_the_generator():
  rng = np.random.default_rng(11)
  sample = _shifted(_noise(rng, 50, 70), 1, 1)
  cfg = fa.AugmentConfig(asymmetric_prob=0.5)
  first = fa.augment(sample, SIZE, np.random.default_rng(42), cfg)
  again = fa.augment(sample, SIZE, np.random.default_rng(42), cfg)
  other = fa.augment(sample, SIZE, np.random.default_rng(43), cfg)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first["frame1"], other["frame1"])
