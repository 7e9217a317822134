"""Procedural optical-flow pairs with exact ground truth: textured layers in affine motion.

Scene model. A scene is a stack of layers drawn bottom to top:
- layer 0, the background, covers the whole plane;
- layers 1.. are shapes: an ellipse, possibly cut by up to three straight chords (discs,
  ellipses, D-shapes, rounded polygons), whose region R_l is given in frame-1 coordinates.
Each layer has a texture T_l, a continuous colour function of layer coordinates (which are
frame-1 pixel coordinates (x, y)), and a motion from frame 1 to frame 2, the similarity
  A_l(p) = c_l + s_l Rot(theta_l) (p - c_l) + t_l
(rotation by theta about the centre c, isotropic zoom s, then translation t). The background's
centre is a random point of the image, a shape's centre is its own.

Rendering. Frame 1 shows at pixel p the top-most layer l with p in R_l, in colour T_l(p).
Frame 2 shows at pixel q the top-most layer l with A_l^{-1}(q) in R_l, in colour
T_l(A_l^{-1}(q)). The flow is therefore analytic, occlusions included:
  forward  flow(p) = A_l(p) - p        for the layer l seen at p in frame 1,
  backward flow(q) = A_l^{-1}(q) - q   for the layer l seen at q in frame 2,
in the convention of `flow_formats` (float32 [H, W, 2], (u, v) = (right, down) in pixels).
Every pixel's flow is known, also for points that leave the image or become hidden, so
`valid` is all True (as in Sintel).

Textures. A texture is the bilinear interpolation of a grid of colours with 1-pixel spacing,
so it is a continuous function that frame 2 samples exactly at non-integer positions (and
frame 1, at integer positions, reads the grid itself). The grid holds
- multi-octave value noise: random values on grids of cells 2, 4, ..., 2^K pixels, summed
  coarse to fine by exact factor-2 linear refinement (refining a piecewise-bilinear function
  on a grid whose cells divide the old ones leaves it unchanged, so this is exactly the sum of
  the bilinearly interpolated octaves), three colour channels drawn independently;
- sharp structure: the zero level sets of two further smooth noise fields, each passed through
  a steep clip, make random curved edges about 2 pixels wide in random colours.
Each channel is then stretched: its mean -+ 2 standard deviations cover a random range of at
least 40% of 0..255 (clipped to 0..255). Neither flat nor periodic, every layer with its own
draw: flow is locally identifiable, up to the aperture problem along edges.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections
import numpy as np

# Shapes are ellipses with the minor semi-axis this fraction range of the major one, cut by
# up to this many chords at this fraction range of the ellipse's support (the centre stays in).
_ASPECT = (0.5, 1.0)
_MAX_CUTS = 3
_CUT_DEPTH = (0.3, 0.9)
# Value noise amplitude of an octave of cell c is (c / coarsest)^_SLOPE for colour channels;
# the two edge fields use only cells >= 4 with amplitude proportional to c (smooth contours).
_SLOPE = 0.5
_NUM_EDGE_FIELDS = 2
# The clipped level sets change colour over about this many pixels.
_EDGE_WIDTH = 2.0
# Each channel of a texture maps its mean -+ _STRETCH standard deviations to [low, high] * 255,
# low and high drawn in these ranges.
_STRETCH = 2.0
_LOW = (0.0, 0.3)
_HIGH = (0.7, 1.0)


def default_config() -> ml_collections.ConfigDict:
  """The fields of `config.data.procedural` (see the module docstring for the scene model)."""
  return ml_collections.ConfigDict(
    dict(
      # Background motion: translation per axis in pixels, rotation about a random point of
      # the image in degrees, |log| of the zoom factor; each uniform in [-max, max].
      max_translation=3.0,
      max_rotation_degrees=4.0,
      max_log_scale=0.06,
      # 0..max_shapes (uniformly) independently moving shapes in front of the background.
      max_shapes=3,
      # Shape motion about the shape's centre, each uniform in [-max, max].
      shape_max_translation=4.0,
      shape_max_rotation_degrees=6.0,
      shape_max_log_scale=0.05,
      # Range of the major semi-axis of a shape, as a fraction of the image's shorter side.
      shape_size=(0.12, 0.3),
      # Octaves of value noise in every texture: cells 2, 4, ..., 2^texture_octaves pixels.
      texture_octaves=5,
      # The finest cell that gets noise (a power of 2, at most 2^texture_octaves); the edges
      # are this many pixels wide. Larger: smoother textures, locally easier to match.
      texture_finest_cell=2,
    )
  )


@dataclasses.dataclass(frozen=True)
class SceneConfig:
  """`config.data.procedural`, validated (fields as in `default_config`)."""

  max_translation: float
  max_rotation_degrees: float
  max_log_scale: float
  max_shapes: int
  shape_max_translation: float
  shape_max_rotation_degrees: float
  shape_max_log_scale: float
  shape_size: tuple[float, float]
  texture_octaves: int
  texture_finest_cell: int = 2


# The largest value of each motion field: beyond these a pair is no longer "a few pixels" of
# motion, and the background's texture grows with the motion.
_MOTION_BOUNDS = dict(
  max_translation=100.0,
  max_rotation_degrees=45.0,
  max_log_scale=0.5,
  shape_max_translation=100.0,
  shape_max_rotation_degrees=45.0,
  shape_max_log_scale=0.5,
)


def scene_config(cfg: ml_collections.ConfigDict) -> SceneConfig:
  """The validated `SceneConfig` of `config.data.procedural`; one-line errors otherwise."""

  def fail(field: str, value, message: str):
    raise ValueError(f"config.data.procedural.{field}={value!r}: {message}")

  for field, bound in _MOTION_BOUNDS.items():
    if not 0 <= cfg[field] <= bound:  # NaN fails too
      fail(field, cfg[field], f"must be in [0, {bound}]")
  if cfg.max_shapes < 0:
    fail("max_shapes", cfg.max_shapes, "must be >= 0")
  size = tuple(cfg.shape_size)
  if len(size) != 2 or not 0 < size[0] <= size[1] <= 1:
    fail("shape_size", size, "must be (low, high) with 0 < low <= high <= 1")
  if not 1 <= cfg.texture_octaves <= 8:
    fail("texture_octaves", cfg.texture_octaves, "must be in [1, 8]")
  finest = cfg.texture_finest_cell
  if finest not in [2**k for k in range(1, cfg.texture_octaves + 1)]:
    fail("texture_finest_cell", finest, f"must be a power of 2 in [2, {2**cfg.texture_octaves}]")
  return SceneConfig(
    **{field: float(cfg[field]) for field in _MOTION_BOUNDS},
    max_shapes=int(cfg.max_shapes),
    shape_size=(float(size[0]), float(size[1])),
    texture_octaves=int(cfg.texture_octaves),
    texture_finest_cell=int(cfg.texture_finest_cell),
  )


@dataclasses.dataclass(frozen=True)
class Region:
  """The ellipse (u - centre)^T quad (u - centre) <= 1 cut by normals @ (u - centre) <= offsets.

  centre [2], quad [2, 2], normals [K, 2], offsets [K], half_extent [2]: the half width and
  half height of the ellipse's bounding box. Points u = (x, y) in layer coordinates.
  """

  centre: np.ndarray
  quad: np.ndarray
  normals: np.ndarray
  offsets: np.ndarray
  half_extent: np.ndarray

  def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """bool [...]: which points (x [...], y [...]) lie in the region."""
    dx = x - self.centre[0]
    dy = y - self.centre[1]
    q = self.quad
    inside = q[0, 0] * dx * dx + 2 * q[0, 1] * dx * dy + q[1, 1] * dy * dy <= 1
    for (nx, ny), offset in zip(self.normals, self.offsets, strict=True):
      inside &= nx * dx + ny * dy <= offset
    return inside

  def box(self) -> tuple[np.ndarray, np.ndarray]:
    """(x [4], y [4]): the corners of the region's bounding box."""
    (cx, cy), (hx, hy) = self.centre, self.half_extent
    return cx + hx * np.array([-1, 1, -1, 1]), cy + hy * np.array([-1, -1, 1, 1])


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of a scene.

  region: None for the background (the whole plane), else the shape's region.
  motion: float64 [2, 3], frame 1 to frame 2: A(p) = motion[:, :2] @ p + motion[:, 2].
  texture: float32 [3, h, w] in [0, 255], channels first; grid point [:, i, j] sits at layer
    coordinates (x, y) = origin + (j, i), and the texture is bilinear in between.
  """

  region: Region | None
  motion: np.ndarray
  texture: np.ndarray
  origin: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Scene:
  """A drawn scene: the image size (H, W) and the layers, bottom (background) first."""

  size: tuple[int, int]
  layers: tuple[Layer, ...]


def _similarity(centre, angle: float, log_scale: float, translation) -> np.ndarray:
  """float64 [2, 3]: p -> centre + exp(log_scale) Rot(angle) (p - centre) + translation."""
  cos, sin = math.cos(angle), math.sin(angle)
  matrix = math.exp(log_scale) * np.array([[cos, -sin], [sin, cos]])
  offset = np.asarray(centre) + np.asarray(translation) - matrix @ np.asarray(centre)
  return np.concatenate([matrix, offset[:, None]], axis=1)


def _invert(affine: np.ndarray) -> np.ndarray:
  matrix = np.linalg.inv(affine[:, :2])
  return np.concatenate([matrix, -(matrix @ affine[:, 2])[:, None]], axis=1)


def _apply(affine: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The affine map [2, 3] at points (x, y) (broadcast), as (x', y') of the dtype of x and y."""
  # Written out (numpy's matmul of [N, 2] by [2, 2] is many times slower), with Python float
  # coefficients, which keep float32 points float32.
  (a, b, c), (d, e, f) = affine.tolist()
  return a * x + b * y + c, d * x + e * y + f


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
  """float64 [2, 3]: the affine map p -> outer(inner(p))."""
  out = outer[:, :2] @ inner
  out[:, 2] += outer[:, 2]
  return out


_IDENTITY = np.eye(2, 3)


def _draw_motion(rng: np.random.Generator, centre, translation, degrees, log_scale):
  return _similarity(
    centre,
    math.radians(degrees) * rng.uniform(-1, 1),
    log_scale * rng.uniform(-1, 1),
    translation * rng.uniform(-1, 1, 2),
  )


def _draw_region(rng: np.random.Generator, size: tuple[int, int], scene: SceneConfig) -> Region:
  height, width = size
  centre = rng.uniform((0, 0), (width - 1, height - 1))
  major = rng.uniform(*scene.shape_size) * min(height, width)
  axes = np.array([major, major * rng.uniform(*_ASPECT)])
  angle = rng.uniform(0, math.pi)
  rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
  quad = rot @ np.diag(axes**-2) @ rot.T
  # The support of the ellipse in direction n is sqrt(n^T (rot diag(axes^2) rot^T) n).
  spread = rot @ np.diag(axes**2) @ rot.T
  cuts = rng.uniform(0, 2 * math.pi, rng.integers(0, _MAX_CUTS + 1))
  normals = np.stack([np.cos(cuts), np.sin(cuts)], axis=-1)
  support = np.sqrt(np.einsum("ki,ij,kj->k", normals, spread, normals))
  offsets = rng.uniform(*_CUT_DEPTH, len(cuts)) * support
  return Region(centre, quad, normals, offsets, np.sqrt(np.diag(spread)))


def _upsample2(grid: np.ndarray) -> np.ndarray:
  """[C, 2n - 1, 2m - 1]: grid [C, n, m] refined to half the cell by linear interpolation."""
  channels, n, m = grid.shape
  out = np.empty((channels, 2 * n - 1, 2 * m - 1), grid.dtype)
  out[:, ::2, ::2] = grid
  out[:, ::2, 1::2] = 0.5 * (grid[:, :, :-1] + grid[:, :, 1:])
  out[:, 1::2] = 0.5 * (out[:, :-1:2] + out[:, 2::2])
  return out


def _draw_texture(
  rng: np.random.Generator, height: int, width: int, octaves: int, finest: int = 2
) -> np.ndarray:
  """float32 [3, height, width] in [0, 255]: a texture grid (see the module docstring);
  noise at cells of `finest` pixels and coarser only."""
  cells = 2 ** np.arange(octaves, 0, -1)  # coarse to fine
  # Channels 0..2: colour; 3..: the edge fields, which skip the finest octave.
  amplitude = np.ones((octaves, 3 + _NUM_EDGE_FIELDS), np.float32)
  amplitude[:, :3] = (cells[:, None] / cells[0]) ** _SLOPE
  amplitude[:, 3:] = (cells / cells[0])[:, None]
  shape = (-(-(height - 1) // cells[0]) + 1, -(-(width - 1) // cells[0]) + 1)
  grid = rng.uniform(-1, 1, (amplitude.shape[1], *shape)).astype(np.float32)
  grid *= amplitude[0][:, None, None]
  for level in range(1, octaves):
    grid = _upsample2(grid)
    if cells[level] < finest:
      continue
    noisy = amplitude.shape[1] if cells[level] >= max(4, 2 * finest) else 3
    noise = rng.random((noisy, *grid.shape[1:]), np.float32) - np.float32(0.5)
    grid[:noisy] += noise * (2 * amplitude[level, :noisy])[:, None, None]
  grid = _upsample2(grid)[:, :height, :width]
  colour = grid[:3]
  spread = colour[:, ::4, ::4].std()
  for level in grid[3:]:
    # A steepness that turns the field's typical slope into a -1 -> 1 step of _EDGE_WIDTH px.
    slope = np.mean(np.abs(np.diff(level[::4], axis=-1))) + 1e-6
    width_px = max(_EDGE_WIDTH, float(finest))
    step = np.clip(level * np.float32(2 / (width_px * slope)), -1, 1)
    tint = rng.normal(0, 0.8 * spread, 3).astype(np.float32)
    colour += tint[:, None, None] * step
  # mean -+ _STRETCH standard deviations of each channel go to its random [low, high]; the
  # clip saturates a few texels (still a continuous texture).
  sample = colour[:, ::4, ::4].reshape(3, -1)
  low = rng.uniform(*_LOW, 3) * 255
  high = rng.uniform(*_HIGH, 3) * 255
  scale = (high - low) / (2 * _STRETCH * sample.std(axis=1) + 1e-6)
  shift = (low + high) / 2 - scale * sample.mean(axis=1)
  colour *= scale.astype(np.float32)[:, None, None]
  colour += shift.astype(np.float32)[:, None, None]
  np.clip(colour, 0, 255, out=colour)
  return np.ascontiguousarray(colour)


def _texture_layer(
  rng, region, motion, x: np.ndarray, y: np.ndarray, octaves: int, finest: int = 2
) -> Layer:
  """A layer whose texture covers the points (x [K], y [K]) span, with a margin of a texel."""
  x0, y0 = math.floor(x.min()) - 1, math.floor(y.min()) - 1
  x1, y1 = math.ceil(x.max()) + 1, math.ceil(y.max()) + 1
  texture = _draw_texture(rng, y1 - y0 + 1, x1 - x0 + 1, octaves, finest)
  return Layer(region, motion, texture, (x0, y0))


def draw_scene(rng: np.random.Generator, size: tuple[int, int], scene: SceneConfig) -> Scene:
  """A random scene for frames of `size` (H, W): the background and 0..max_shapes shapes."""
  height, width = size
  motion = _draw_motion(
    rng,
    rng.uniform((0, 0), (width - 1, height - 1)),
    scene.max_translation,
    scene.max_rotation_degrees,
    scene.max_log_scale,
  )
  # The background is seen at the frame-1 points of the image and of A^{-1}(image).
  x = np.array([0, width - 1, 0, width - 1], float)
  y = np.array([0, 0, height - 1, height - 1], float)
  x_back, y_back = _apply(_invert(motion), x, y)
  x, y = np.concatenate([x, x_back]), np.concatenate([y, y_back])
  texture = (scene.texture_octaves, scene.texture_finest_cell)
  layers = [_texture_layer(rng, None, motion, x, y, *texture)]
  for _ in range(rng.integers(0, scene.max_shapes + 1)):
    region = _draw_region(rng, size, scene)
    motion = _draw_motion(
      rng,
      region.centre,
      scene.shape_max_translation,
      scene.shape_max_rotation_degrees,
      scene.shape_max_log_scale,
    )
    layers.append(_texture_layer(rng, region, motion, *region.box(), *texture))
  return Scene((height, width), tuple(layers))


def _window(region: Region, placement: np.ndarray, size: tuple[int, int]):
  """(rows, cols) slices of the image that can show `region` placed by `placement`, or None."""
  height, width = size
  x, y = _apply(placement, *region.box())
  x0, y0 = max(math.floor(x.min()), 0), max(math.floor(y.min()), 0)
  x1, y1 = min(math.ceil(x.max()), width - 1), min(math.ceil(y.max()), height - 1)
  if x1 < x0 or y1 < y0:
    return None
  return slice(y0, y1 + 1), slice(x0, x1 + 1)


def _sample(layer: Layer, x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """float32 [3, ...]: the layer's texture at layer coordinates (x [...], y [...])."""
  width = layer.texture.shape[2]
  x = x - np.float32(layer.origin[0])
  y = y - np.float32(layer.origin[1])
  x0 = np.floor(x)
  y0 = np.floor(y)
  fx = x - x0
  fy = y - y0
  # Exact in float32 below 2^24 texels; mode="clip" only guards memory: the texture's margin
  # keeps every neighbour inside.
  index = (y0 * np.float32(width) + x0).astype(np.intp)
  right, below, diagonal = index + 1, index + width, index + (width + 1)
  out = np.empty((3, *x.shape), np.float32)
  # One channel at a time: gathers from a contiguous 1-D array are the fast ones.
  for channel, values in enumerate(layer.texture.reshape(3, -1)):
    top = values.take(index, mode="clip")
    top += fx * (values.take(right, mode="clip") - top)
    bottom = values.take(below, mode="clip")
    bottom += fx * (values.take(diagonal, mode="clip") - bottom)
    out[channel] = top + fy * (bottom - top)
  return out


def _render_frame(scene: Scene, placements, others) -> tuple[np.ndarray, np.ndarray]:
  """One frame and its flow to the other frame.

  Layer l is seen in this frame at placements[l](u) and in the other one at others[l](u), u
  its layer coordinates. Returns (frame uint8 [H, W, 3], flow float32 [H, W, 2]).
  """
  height, width = scene.size
  frame = np.empty((3, height, width), np.float32)
  flow = np.empty((2, height, width), np.float32)
  for layer, placement, other in zip(scene.layers, placements, others, strict=True):
    if layer.region is None:
      rows, cols = slice(0, height), slice(0, width)
    elif (window := _window(layer.region, placement, scene.size)) is None:
      continue
    else:
      rows, cols = window
    qx = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :]
    qy = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None]
    source = _invert(placement)
    # The flow as one affine map of q, composed in float64: float32 rounding then costs the
    # flow its own relative precision, not that of the coordinates.
    dx, dy = _apply(_compose(other, source) - np.eye(2, 3), qx, qy)
    if np.array_equal(placement, _IDENTITY):
      # Frame 1 sees layer coordinates at integer pixels, where the texture is its grid.
      x0, y0 = layer.origin
      colours = layer.texture[:, rows.start - y0 : rows.stop - y0, cols.start - x0 : cols.stop - x0]
      ux, uy = qx, qy
    else:
      ux, uy = _apply(source, qx, qy)
      colours = None
    if layer.region is None:
      frame[:] = _sample(layer, ux, uy) if colours is None else colours
      flow[0], flow[1] = dx, dy
    else:
      inside = layer.region.contains(ux, uy)
      frame[:, rows, cols][:, inside] = (
        _sample(layer, ux[inside], uy[inside]) if colours is None else colours[:, inside]
      )
      flow[0, rows, cols][inside] = dx[inside]
      flow[1, rows, cols][inside] = dy[inside]
  # + 0.5 then truncation rounds: the texture is in [0, 255].
  frame = (frame + np.float32(0.5)).astype(np.uint8).transpose(1, 2, 0)
  return np.ascontiguousarray(frame), np.ascontiguousarray(flow.transpose(1, 2, 0))


def render(scene: Scene) -> dict[str, np.ndarray]:
  """The frames and exact flows of `scene`.

  Returns a dict with frame1, frame2 uint8 [H, W, 3]; flow (forward) and flow_backward float32
  [H, W, 2]; valid bool [H, W], all True.
  """
  motions = [layer.motion for layer in scene.layers]
  identities = [_IDENTITY] * len(motions)
  frame1, flow = _render_frame(scene, identities, motions)
  frame2, flow_backward = _render_frame(scene, motions, identities)
  return dict(
    frame1=frame1,
    frame2=frame2,
    flow=flow,
    flow_backward=flow_backward,
    valid=np.ones(scene.size, bool),
  )


def make_pair(
  rng: np.random.Generator, size: tuple[int, int], scene: SceneConfig
) -> dict[str, np.ndarray]:
  """A random frame pair of `size` (H, W) with its exact flows (see `render`); deterministic
  given the state of `rng`."""
  return render(draw_scene(rng, size, scene))
