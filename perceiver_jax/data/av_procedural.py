"""Generated audio-visual clips with known content: moving shapes that sound as they move.

A clip of class c (of K) shows one shape of class c's form and colour moving in a straight
line over a textured background and bouncing off the frame's edges, and its sound is class
c's tone (its pitch fixed by the class, starting in phase), louder the further right the
shape is, with a short click at each bounce. So video, audio and label share structure: the
label fixes the shape, the colour and the pitch, and the motion drives both the pictures and
the loudness, frame by frame.

`make_clip(rng, ...)` draws one clip: {"image": float32 [T, H, W, 3] in [0, 1], "audio":
float32 [T * samples_per_frame] in [-1, 1], "label": int}. Everything is a function of the
generator's state, so a clip is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np

# Shapes drawn by class: c % len(SHAPES).
SHAPES = ("square", "disc", "diamond", "cross", "ring")


def _class_colour(label: int, num_classes: int) -> np.ndarray:
  """A saturated RGB colour [3] spread around the hue circle by class."""
  hue = (label * 0.618034) % 1.0  # golden-ratio steps keep neighbouring classes apart
  phases = hue + np.array([0.0, 1 / 3, 2 / 3])
  return np.clip(0.5 + 0.5 * np.cos(2 * np.pi * phases), 0.05, 0.95)


def _shape_mask(kind: str, yy: np.ndarray, xx: np.ndarray, radius: float) -> np.ndarray:
  """Soft coverage [H, W] in [0, 1] of a shape of `radius` pixels centred at the origin of
  the offsets yy, xx."""
  if kind == "square":
    distance = np.maximum(np.abs(yy), np.abs(xx))
  elif kind == "disc":
    distance = np.hypot(yy, xx)
  elif kind == "diamond":
    distance = (np.abs(yy) + np.abs(xx)) / np.sqrt(2)
  elif kind == "cross":
    distance = np.minimum(
      np.maximum(np.abs(yy), 3 * np.abs(xx)), np.maximum(3 * np.abs(yy), np.abs(xx))
    )
  else:  # ring
    distance = radius + np.abs(np.hypot(yy, xx) - 0.7 * radius) * 2.5 - 0.5 * radius
  return np.clip(radius - distance + 0.5, 0.0, 1.0)


def _bounce(start: float, velocity: float, steps: np.ndarray, low: float, high: float):
  """Positions [T] of a point moving at `velocity` and reflecting off [low, high], and a
  bool [T] that is True at the frames where it bounced."""
  span = high - low
  unfolded = (start - low) + velocity * steps
  folded = np.mod(unfolded, 2 * span)
  position = low + np.where(folded > span, 2 * span - folded, folded)
  laps = np.floor(unfolded / span)
  bounced = np.concatenate([[False], np.diff(laps) != 0])
  return position, bounced


def make_clip(
  rng: np.random.Generator,
  *,
  num_frames: int,
  image_size: int,
  samples_per_frame: int,
  sample_rate: int,
  num_classes: int,
  label: int | None = None,
) -> dict:
  """One generated clip (see the module docstring); `label` None draws the class."""
  if label is None:
    label = int(rng.integers(num_classes))
  size, steps = image_size, np.arange(num_frames, dtype=np.float64)
  radius = size * rng.uniform(0.12, 0.2)
  low, high = radius, size - 1 - radius
  speed = size * rng.uniform(0.03, 0.08)
  angle = rng.uniform(0, 2 * np.pi)
  ys, y_bounce = _bounce(rng.uniform(low, high), speed * np.sin(angle), steps, low, high)
  xs, x_bounce = _bounce(rng.uniform(low, high), speed * np.cos(angle), steps, low, high)

  # Background: a smooth two-colour gradient with a gentle texture, fixed over the clip.
  grid = np.arange(size, dtype=np.float64)
  yy, xx = np.meshgrid(grid, grid, indexing="ij")
  direction = rng.uniform(0, 2 * np.pi)
  ramp = (np.cos(direction) * xx + np.sin(direction) * yy) / size
  ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
  dark, light = rng.uniform(0.05, 0.35, 3), rng.uniform(0.4, 0.7, 3)
  frequency = rng.uniform(1.0, 3.0, 2) * 2 * np.pi / size
  texture = 0.05 * np.sin(frequency[0] * xx + rng.uniform(0, 6.3)) * np.sin(frequency[1] * yy)
  background = dark + ramp[..., None] * (light - dark) + texture[..., None]

  colour = _class_colour(label, num_classes)
  kind = SHAPES[label % len(SHAPES)]
  frames = np.empty((num_frames, size, size, 3), np.float32)
  for t in range(num_frames):
    cover = _shape_mask(kind, yy - ys[t], xx - xs[t], radius)[..., None]
    frames[t] = np.clip(background * (1 - cover) + colour * cover, 0.0, 1.0)

  # Sound: the class's tone, starting in phase, louder as the shape moves right.
  # Low tones (a period of 30 to 250 samples), so that a patch of audio is smooth.
  tone_hz = sample_rate * (0.004 + 0.03 * label / max(num_classes - 1, 1))
  total = num_frames * samples_per_frame
  frame_of_sample = np.arange(total) / samples_per_frame  # fractional frame index
  loudness = 0.25 + 0.5 * np.interp(frame_of_sample, steps, (xs - low) / max(high - low, 1e-6))
  audio = loudness * np.sin(2 * np.pi * tone_hz * np.arange(total) / sample_rate)
  clicks = np.flatnonzero(y_bounce | x_bounce)
  click_length = max(samples_per_frame // 4, 1)
  for t in clicks:
    start = t * samples_per_frame
    envelope = np.exp(-np.arange(click_length) / (click_length / 4))
    audio[start : start + click_length] += 0.2 * envelope[: total - start]
  return {
    "image": frames,
    "audio": np.clip(audio, -1.0, 1.0).astype(np.float32),
    "label": label,
  }
