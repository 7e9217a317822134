"""Optical-flow training augmentation: photometric jitter, random scale, flips, random crop.

Flow networks are trained on random crops of a fixed size (h, w) of augmented pairs, as
FlowNet, PWC-Net and RAFT do: spatial augmentation that changes the geometry (and with it
the flow) and photometric augmentation that changes only the colours. `augment` applies,
in this order, each step a pure function of the sample and the numpy Generator it gets:

1. Photometric jitter (colour jitter in the torchvision sense, as RAFT uses it): brightness
   (multiply by b), contrast (blend with the mean grey level, factor c), saturation (blend
   with the grey image, factor s), hue (rotate the HSV hue by a fraction of the circle), in
   a random order, each factor drawn uniformly from [max(0, 1 - x), 1 + x] (hue: from
   [-hue, hue]) and the image clipped to [0, 255] after each. By default both frames get the
   same function, applied to the pair as one image (the contrast mean is the pair's); with
   probability `asymmetric_prob` each frame draws its own. Jitter changes no flow.
2. Scale: with probability `scale_prob`, a log2 scale s ~ U[min_log2_scale, max_log2_scale]
   for both axes, times independent stretches 2^U[-max_log2_stretch, max_log2_stretch] per
   axis with probability `stretch_prob`; each axis is then enlarged if needed to at least
   crop + `MARGIN` pixels. Frames are resized bilinearly (half-pixel centres, edge pixels
   replicated, no antialiasing, like OpenCV's INTER_LINEAR that RAFT uses). Flow is resized
   by `resize_flow`, its u multiplied by new_width / W and v by new_height / H: dense flow
   (every pixel valid) bilinearly; sparse flow (KITTI) by moving each valid pixel to its
   rounded position in the new grid, never interpolating across invalid pixels.
3. Flips: left-right with `flip_lr_prob` (u negated), up-down with `flip_ud_prob` (v negated).
4. A crop of the training size at a uniformly drawn offset (`random_crop`).

`flow_backward` (frame 2 to frame 1: procedural data, `NAME_backward.flo`) goes through the
same scale, flips and crop, with its mask `valid_backward` where the sample has one (without
it the backward flow counts as dense). With `enabled=False` only the crop is applied.

The defaults are RAFT's colour jitter (0.4, 0.4, 0.4, hue 0.5 / 3.14: up to 57 degrees either
way) and flip probabilities, and its scale/stretch probabilities (0.8, 0.8) and stretch
(2^+-0.2). RAFT's scale ranges are per stage: FlyingChairs [-0.1, 1.0], FlyingThings
[-0.4, 0.8], Sintel [-0.2, 0.6], KITTI [-0.2, 0.4]; the default [-0.2, 0.5] lies between
the last two. RAFT draws asymmetric jitter with probability 0.2; the default here is 0.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import ml_collections
import numpy as np

from perceiver_jax.data import flow_formats

# Pixels beyond the crop that the scaled image keeps on each axis (RAFT's 8), so that the
# crop offset is still random after the smallest scale.
MARGIN = 8
# ITU-R BT.601 luma weights, the grey level of the contrast and saturation jitter.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_SPATIAL_KEYS = ("frame1", "frame2", "flow", "valid", "flow_backward", "valid_backward")
_PROBS = ("scale_prob", "stretch_prob", "flip_lr_prob", "flip_ud_prob", "asymmetric_prob")


def _fail(field: str, value, why: str):
  raise ValueError(f"config.data.augment.{field}={value!r}: {why}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """`config.data.augment`, validated (see the module docstring for each field)."""

  enabled: bool = True
  min_log2_scale: float = -0.2
  max_log2_scale: float = 0.5
  scale_prob: float = 0.8
  max_log2_stretch: float = 0.2
  stretch_prob: float = 0.8
  flip_lr_prob: float = 0.5
  flip_ud_prob: float = 0.1
  brightness: float = 0.4
  contrast: float = 0.4
  saturation: float = 0.4
  hue: float = 0.5 / 3.14  # fraction of the hue circle, in [0, 0.5]
  asymmetric_prob: float = 0.0

  def __post_init__(self):
    if not isinstance(self.enabled, bool):
      _fail("enabled", self.enabled, "must be True or False")
    for name in (f.name for f in dataclasses.fields(self) if f.name != "enabled"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        _fail(name, value, "must be a finite number")
    for name in _PROBS:
      if not 0.0 <= getattr(self, name) <= 1.0:
        _fail(name, getattr(self, name), "must be in [0, 1]")
    if self.min_log2_scale > self.max_log2_scale:
      _fail("min_log2_scale", self.min_log2_scale, f"exceeds max_log2_scale={self.max_log2_scale}")
    for name in ("max_log2_stretch", "brightness", "contrast", "saturation"):
      if getattr(self, name) < 0:
        _fail(name, getattr(self, name), "must be >= 0")
    if not 0.0 <= self.hue <= 0.5:
      _fail("hue", self.hue, "must be in [0, 0.5] (a fraction of the hue circle)")


def default_config() -> ml_collections.ConfigDict:
  """`config.data.augment` with every field at its default."""
  return ml_collections.ConfigDict({f.name: f.default for f in dataclasses.fields(AugmentConfig)})


def augment_config(cfg: ml_collections.ConfigDict) -> AugmentConfig:
  """The validated `config.data.augment`; ValueError naming a bad, missing or unknown field."""
  expected = [f.name for f in dataclasses.fields(AugmentConfig)]
  unknown = sorted(set(cfg) - set(expected))
  if unknown:
    _fail(unknown[0], cfg[unknown[0]], "not a field of config.data.augment")
  missing = [name for name in expected if name not in cfg]
  if missing:
    raise ValueError(f"config.data.augment.{missing[0]}: missing")
  return AugmentConfig(**{name: cfg[name] for name in expected})


# --- Resizing --------------------------------------------------------------------------------


def _linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(lower index, upper index, upper weight) [out_size] of a half-pixel-centred linear resize."""
  x = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
  x = np.clip(x, 0.0, in_size - 1)
  lower = np.floor(x).astype(np.int64)
  upper = np.minimum(lower + 1, in_size - 1)
  return lower, upper, (x - lower).astype(np.float32)


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """[H, W, C] -> [height, width, C] float32, bilinear with half-pixel centres and edge
  replication (OpenCV's INTER_LINEAR, `tf.image.resize` BILINEAR without antialiasing).
  Each output is a convex combination of inputs, so values stay in the input's range."""
  image = np.asarray(image, np.float32)
  lo, hi, t = _linear_taps(image.shape[0], height)
  rows = image[lo] * (1 - t)[:, None, None] + image[hi] * t[:, None, None]  # [height, W, C]
  lo, hi, t = _linear_taps(image.shape[1], width)
  return rows[:, lo] * (1 - t)[None, :, None] + rows[:, hi] * t[None, :, None]


def resize_flow(
  flow: np.ndarray, valid: np.ndarray, new_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
  """Resizes flow [H, W, 2] with its valid mask [H, W] to new_size = (height, width).

  The flow is multiplied by (width / W, height / H), the scale of the grid. Dense flow
  (`valid` all True) is resized bilinearly (`resize_bilinear`) and stays all valid. Sparse
  flow (any pixel invalid, e.g. KITTI) is never interpolated: each valid pixel (x, y) moves
  to the nearest grid point of its scaled position ((x + 0.5) * width / W - 0.5, likewise y),
  taking its scaled flow; every other pixel is invalid, with flow 0. Where shrinking sends
  several points to one pixel, the last in row-major order is kept.
  """
  height, width = new_size
  scale = np.array([width / flow.shape[1], height / flow.shape[0]], np.float32)
  if valid.all():
    return resize_bilinear(flow, height, width) * scale, np.ones((height, width), bool)
  ys, xs = np.nonzero(valid)
  new_x = np.rint((xs + 0.5) * scale[0] - 0.5).astype(np.int64)
  new_y = np.rint((ys + 0.5) * scale[1] - 0.5).astype(np.int64)
  inside = (new_x >= 0) & (new_x < width) & (new_y >= 0) & (new_y < height)
  out = np.zeros((height, width, 2), np.float32)
  out_valid = np.zeros((height, width), bool)
  out[new_y[inside], new_x[inside]] = flow[ys[inside], xs[inside]] * scale
  out_valid[new_y[inside], new_x[inside]] = True
  return out, out_valid


# --- Photometric jitter ----------------------------------------------------------------------


def _shift_hue(rgb: np.ndarray, shift: float) -> np.ndarray:
  """Rotates the HSV hue of RGB [..., 3] by `shift` turns, keeping saturation and value.

  The hue in sixths of a turn (0 red, 2 green, 4 blue) comes from the largest channel; each
  channel of the hue-shifted colour is max - (max - min) * clip(min(k, 4 - k), 0, 1) with
  k = (n + hue) mod 6 and n = 5, 3, 1 for R, G, B (the hexcone model's HSV -> RGB).
  """
  r, g, b = np.moveaxis(rgb, -1, 0)
  high, low = np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)
  delta = high - low
  # Grey pixels (delta 0) have no hue: any value does, as delta zeroes it out below.
  inv = np.float32(1.0) / np.where(delta > 0, delta, np.float32(1.0))
  sixths = np.where(
    high == r, (g - b) * inv, np.where(high == g, 2.0 + (b - r) * inv, 4.0 + (r - g) * inv)
  )
  sixths = sixths + 6.0 * shift
  channels = []
  for n in (5.0, 3.0, 1.0):
    k = (sixths + n) % 6.0
    channels.append(high - delta * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
  return np.stack(channels, axis=-1)


def _draw_jitter(rng: np.random.Generator, cfg: AugmentConfig) -> list[tuple[str, float]]:
  """The jitter operations (name, factor) in the random order they apply."""
  ops = [
    (name, float(rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount)))
    for name, amount in (
      ("brightness", cfg.brightness),
      ("contrast", cfg.contrast),
      ("saturation", cfg.saturation),
    )
  ]
  ops.append(("hue", float(rng.uniform(-cfg.hue, cfg.hue))))
  return [ops[k] for k in rng.permutation(len(ops))]


def _apply_jitter(images: np.ndarray, ops: list[tuple[str, float]]) -> np.ndarray:
  """Jitters float RGB [..., 3] in [0, 255], treated as one image (one contrast mean)."""
  for name, factor in ops:
    if name == "hue":
      if factor != 0.0:
        images = _shift_hue(images, factor)
      continue
    if factor == 1.0:
      continue
    if name == "brightness":
      images = images * factor
    else:
      # Channel by channel (not a matrix product) so that equal pixels stay equal.
      grey = images[..., 0] * _LUMA[0] + images[..., 1] * _LUMA[1] + images[..., 2] * _LUMA[2]
      base = grey.mean() if name == "contrast" else grey[..., None]
      images = factor * images + (1.0 - factor) * base
    images = np.clip(images, 0.0, 255.0)
  return images.astype(np.float32)


def photometric_jitter(
  frame1: np.ndarray, frame2: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
  """Colour-jittered float32 copies of two [H, W, 3] frames in [0, 255] (step 1 above)."""
  pair = np.stack([frame1, frame2]).astype(np.float32)  # [2, H, W, 3]
  if rng.random() < cfg.asymmetric_prob:
    first, second = _draw_jitter(rng, cfg), _draw_jitter(rng, cfg)
    return _apply_jitter(pair[0], first), _apply_jitter(pair[1], second)
  pair = _apply_jitter(pair, _draw_jitter(rng, cfg))
  return pair[0], pair[1]


# --- Geometry --------------------------------------------------------------------------------


def _check_size(sample: dict, crop: tuple[int, int]) -> None:
  height, width = sample["frame1"].shape[:2]
  if len(crop) != 2 or min(crop) < 1:
    raise ValueError(f"crop={tuple(crop)}: expected a positive (height, width)")
  if height < crop[0] or width < crop[1]:
    raise ValueError(f"sample of {height}x{width} is smaller than the crop {crop[0]}x{crop[1]}")


def random_crop(sample: dict, crop: tuple[int, int], rng: np.random.Generator) -> dict:
  """The crop [crop[0], crop[1]] at a uniformly drawn offset of the sample's frames, flow,
  valid, flow_backward and valid_backward (those present; other entries unchanged; dtypes
  kept). ValueError naming both sizes if the sample is smaller than the crop."""
  _check_size(sample, crop)
  height, width = sample["frame1"].shape[:2]
  top = int(rng.integers(height - crop[0] + 1))
  left = int(rng.integers(width - crop[1] + 1))
  window = (slice(top, top + crop[0]), slice(left, left + crop[1]))
  return {k: v[window] if k in _SPATIAL_KEYS else v for k, v in sample.items()}


def _scaled_size(
  size: tuple[int, int], crop: tuple[int, int], rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[int, int] | None:
  """The (height, width) to resize to, or None to keep the size (step 2 above)."""
  if rng.random() >= cfg.scale_prob:
    return None
  log_scale = rng.uniform(cfg.min_log2_scale, cfg.max_log2_scale)
  log_y = log_x = log_scale
  if rng.random() < cfg.stretch_prob:
    log_y += rng.uniform(-cfg.max_log2_stretch, cfg.max_log2_stretch)
    log_x += rng.uniform(-cfg.max_log2_stretch, cfg.max_log2_stretch)
  return (
    max(round(size[0] * 2.0**log_y), crop[0] + MARGIN),
    max(round(size[1] * 2.0**log_x), crop[1] + MARGIN),
  )


def _flip(sample: dict, axis: int) -> dict:
  """Mirrors the spatial entries along `axis` (1: left-right, 0: up-down); the flow component
  along that axis (u for 1, v for 0) changes sign."""
  sign = np.array([-1.0, 1.0] if axis == 1 else [1.0, -1.0], np.float32)
  out = {}
  for key, value in sample.items():
    if key in _SPATIAL_KEYS:
      value = np.flip(value, axis=axis)
      if key in ("flow", "flow_backward"):
        value = value * sign
    out[key] = value
  return out


def augment(
  sample: dict, crop: tuple[int, int], rng: np.random.Generator, cfg: AugmentConfig
) -> dict:
  """One training example of size crop = (h, w) from a `flow_layouts.load_sample` dict.

  Args:
    sample: frame1, frame2 uint8 [H, W, 3]; flow float32 [H, W, 2]; valid bool [H, W];
      optionally flow_backward float32 [H, W, 2] and its valid_backward bool [H, W].
    crop: the training size (h, w); H >= h and W >= w, else ValueError.
    rng: every random draw comes from it.
    cfg: `augment_config(config.data.augment)`.

  Returns:
    frame1, frame2 float32 [h, w, 3] in [0, 255]; flow float32 [h, w, 2]; valid bool [h, w];
    flow_backward float32 [h, w, 2] and valid_backward bool [h, w] if the sample has them.
  """
  for key in ("frame1", "frame2", "flow", "valid"):
    if key not in sample:
      raise ValueError(f"sample has no {key!r} (keys {sorted(sample)}): augment needs it")
  _check_size(sample, crop)
  out = {k: sample[k] for k in _SPATIAL_KEYS if k in sample}
  out["frame1"], out["frame2"] = (np.asarray(out[k], np.float32) for k in ("frame1", "frame2"))
  if cfg.enabled:
    out = _augment_full_size(out, crop, rng, cfg)
  out = random_crop(out, crop, rng)
  dtypes = {"valid": bool, "valid_backward": bool}
  return {k: np.ascontiguousarray(v, dtypes.get(k, np.float32)) for k, v in out.items()}


def _augment_full_size(
  out: dict, crop: tuple[int, int], rng: np.random.Generator, cfg: AugmentConfig
) -> dict:
  """Steps 1-3 of `augment` (jitter, scale, flips) on float32 frames."""
  out["frame1"], out["frame2"] = photometric_jitter(out["frame1"], out["frame2"], rng, cfg)
  new_size = _scaled_size(out["frame1"].shape[:2], crop, rng, cfg)
  if new_size is not None:
    for key in ("frame1", "frame2"):
      out[key] = resize_bilinear(out[key], *new_size)
    out["flow"], out["valid"] = resize_flow(out["flow"], out["valid"], new_size)
    if "flow_backward" in out:
      known = out.get("valid_backward", np.ones(out["flow_backward"].shape[:2], bool))
      out["flow_backward"], known = resize_flow(out["flow_backward"], known, new_size)
      if "valid_backward" in out:
        out["valid_backward"] = known
  if rng.random() < cfg.flip_lr_prob:
    out = _flip(out, axis=1)
  if rng.random() < cfg.flip_ud_prob:
    out = _flip(out, axis=0)
  return out


def reverse(sample: dict) -> dict:
  """The pair fed backwards: frames swapped, flow and flow_backward swapped, and their masks.

  `valid` becomes the sample's `valid_backward` if it has one, else where the backward flow
  is known (`flow_formats.flo_valid`: all True for procedural data); `valid_backward`
  becomes `valid`. Unknown backward flow becomes 0. ValueError without flow_backward.
  """
  if "flow_backward" not in sample:
    raise ValueError(f"sample has no 'flow_backward' (keys {sorted(sample)}): cannot reverse it")
  backward = np.asarray(sample["flow_backward"], np.float32)
  valid = sample.get("valid_backward")
  valid = flow_formats.flo_valid(backward) if valid is None else np.asarray(valid, bool)
  return {
    **sample,
    "frame1": sample["frame2"],
    "frame2": sample["frame1"],
    "flow": np.where(valid[..., None], backward, 0.0).astype(np.float32),
    "valid": valid,
    "flow_backward": sample["flow"],
    "valid_backward": sample["valid"],
  }
