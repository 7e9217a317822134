"""The standard optical-flow colour coding (Baker et al., the Middlebury flow benchmark).

A flow vector's direction picks a hue on a wheel of 55 colours built from six ramps between
the primaries and secondaries (red-yellow 15, yellow-green 6, green-cyan 4, cyan-blue 11,
blue-magenta 13, magenta-red 6); its magnitude, divided by the largest magnitude (or a given
one), sets the saturation: zero flow is white, a unit vector the full wheel colour, and vectors
beyond the given maximum are darkened to 75%.

Directions in image coordinates (u right, v down), at full magnitude:
  +u (right): red (255, 0, 0); +v (down): orange-yellow (255, ~229, 0);
  -u (left): cyan-blue (0, ~209, 255); -v (up): blue-violet (~88, 0, 255).
"""

from __future__ import annotations

import numpy as np

# Segment lengths of the wheel, in order: red->yellow, yellow->green, green->cyan,
# cyan->blue, blue->magenta, magenta->red.
_SEGMENTS = (15, 6, 4, 11, 13, 6)


def color_wheel() -> np.ndarray:
  """The 55 wheel colours, [55, 3] float64 in [0, 255], starting at red."""
  # Each segment ramps one channel up or down between two of the six corners.
  corners = [(255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255), (0, 0, 255), (255, 0, 255)]
  rows = []
  for index, length in enumerate(_SEGMENTS):
    start = np.array(corners[index], np.float64)
    end = np.array(corners[(index + 1) % len(corners)], np.float64)
    # The ramp's step is floor(255 * i / length), as in the benchmark's colour code.
    ramp = np.floor(255 * np.arange(length) / length)[:, None]  # [length, 1]
    rows.append(start + np.sign(end - start) * ramp)
  return np.concatenate(rows)


def flow_to_rgb(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
  """Colour-codes a flow field.

  Args:
    flow: [H, W, 2] flow (u horizontal, v vertical), finite.
    max_magnitude: the magnitude shown at full saturation; None: the field's largest
      magnitude (an all-zero field is all white).

  Returns:
    [H, W, 3] uint8 RGB.
  """
  flow = np.asarray(flow, np.float64)
  if flow.ndim != 3 or flow.shape[-1] != 2:
    raise ValueError(f"flow must be [H, W, 2], got shape {flow.shape}")
  if not np.all(np.isfinite(flow)):
    raise ValueError(f"flow has {np.size(flow) - np.isfinite(flow).sum()} non-finite values")
  if max_magnitude is not None and not (np.isfinite(max_magnitude) and max_magnitude > 0):
    raise ValueError(f"max_magnitude must be positive and finite, got {max_magnitude}")
  # Adding 0.0 turns -0.0 into +0.0, so a purely horizontal vector always lands on the
  # wheel's start (red for +u) rather than its wrap-around end.
  u, v = flow[..., 0] + 0.0, flow[..., 1] + 0.0
  radius = np.hypot(u, v)  # [H, W]
  scale = radius.max(initial=0.0) if max_magnitude is None else float(max_magnitude)
  if scale > 0:
    radius = radius / scale
  wheel = color_wheel() / 255  # [55, 3]
  num_colors = len(wheel)
  # Angle measured from -u, so +u maps to position 0 (and num_colors - 1 on the far side).
  position = (np.arctan2(-v, -u) / np.pi + 1) / 2 * (num_colors - 1)  # [H, W]
  lower = np.floor(position).astype(np.int64)
  upper = (lower + 1) % num_colors
  frac = (position - lower)[..., None]
  color = (1 - frac) * wheel[lower] + frac * wheel[upper]  # [H, W, 3]
  inside = (radius <= 1)[..., None]
  color = np.where(inside, 1 - radius[..., None] * (1 - color), color * 0.75)
  return np.floor(255 * color).astype(np.uint8)
