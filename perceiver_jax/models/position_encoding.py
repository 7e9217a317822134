"""Position encodings: Fourier features and trainable (learned) encodings.

Fourier features follow the Perceiver papers and the official release: positions in
[-1, 1] per index dimension (`linspace` with both endpoints), K bands per dimension
spaced linearly from 1 to `max_resolution / 2` (the Nyquist frequency), features
`[pos (d), sin(pi f x) (d*K, dimension-major), cos(pi f x) (d*K)]`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from collections.abc import Sequence

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from perceiver_jax.models import precision


def build_linear_positions(
  index_dims: Sequence[int], output_range: tuple[float, float] = (-1.0, 1.0)
) -> jax.Array:
  """Grid of positions, [*index_dims, len(index_dims)], each axis `linspace(lo, hi, n)`."""
  axes = [jnp.linspace(*output_range, num=n, endpoint=True, dtype=jnp.float32) for n in index_dims]
  return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1)


def num_fourier_channels(
  num_dims: int, num_bands: int, concat_pos: bool = True, sine_only: bool = False
) -> int:
  """Width of `fourier_features` for `num_dims` index dimensions."""
  return num_dims * num_bands * (1 if sine_only else 2) + (num_dims if concat_pos else 0)


def fourier_features(
  pos: jax.Array,
  num_bands: int,
  max_resolution: Sequence[float],
  concat_pos: bool = True,
  sine_only: bool = False,
) -> jax.Array:
  """Fourier features of positions.

  Args:
    pos: [..., d] positions, nominally in [-1, 1].
    num_bands: K, frequency bands per dimension.
    max_resolution: d values; band frequencies run from 1 to max_resolution / 2.
    concat_pos: prepend the raw positions.
    sine_only: drop the cosines.

  Returns:
    [..., num_fourier_channels(d, K, concat_pos, sine_only)].
  """
  num_dims = pos.shape[-1]
  if len(max_resolution) != num_dims:
    raise ValueError(
      f"max_resolution {tuple(max_resolution)} has {len(max_resolution)} entries "
      f"for positions with {num_dims} dimensions"
    )
  bands = jnp.stack(
    [jnp.linspace(1.0, res / 2, num=num_bands, endpoint=True) for res in max_resolution]
  ).astype(pos.dtype)  # [d, K]
  scaled = (pos[..., :, None] * bands).reshape(*pos.shape[:-1], num_dims * num_bands)
  features = [jnp.sin(jnp.pi * scaled)]
  if not sine_only:
    features.append(jnp.cos(jnp.pi * scaled))
  if concat_pos:
    features.insert(0, pos)
  return jnp.concatenate(features, axis=-1)


def fourier_position_encoding(
  index_dims: Sequence[int],
  batch_size: int,
  num_bands: int,
  max_resolution: Sequence[float] | None = None,
  concat_pos: bool = True,
  sine_only: bool = False,
  pos: jax.Array | None = None,
) -> jax.Array:
  """Fourier features for a grid (`pos=None`) or for explicit positions.

  Args:
    index_dims: the grid shape, e.g. (224, 224); its length is d.
    batch_size: B.
    num_bands: K.
    max_resolution: defaults to `index_dims`.
    concat_pos: prepend the raw positions.
    sine_only: drop the cosines.
    pos: optional [B, N, d] explicit positions (point clouds, subsampled outputs).

  Returns:
    [B, N, C] with N = prod(index_dims) for a grid.
  """
  if pos is None:
    # The grid is the same for every example: its features are computed once and broadcast.
    pos = grid_positions(index_dims)
  elif pos.shape[-1] != len(index_dims):
    raise ValueError(
      f"positions have {pos.shape[-1]} dimensions, index_dims {tuple(index_dims)} has "
      f"{len(index_dims)}"
    )
  features = fourier_encoder(index_dims, num_bands, max_resolution, concat_pos, sine_only)(pos)
  return jnp.broadcast_to(features, (batch_size, *features.shape[1:]))


def grid_positions(index_dims: Sequence[int]) -> jax.Array:
  """The grid's positions, flattened: [1, prod(index_dims), len(index_dims)]."""
  return build_linear_positions(index_dims).reshape(1, -1, len(index_dims))


def fourier_encoder(
  index_dims: Sequence[int],
  num_bands: int,
  max_resolution: Sequence[float] | None = None,
  concat_pos: bool = True,
  sine_only: bool = False,
) -> Callable[[jax.Array], jax.Array]:
  """`encode`: positions [..., d] -> their Fourier features, as `fourier_position_encoding`
  computes them for a grid of `index_dims` (`max_resolution` defaults to `index_dims`).
  `input_array.InputArray` encodes slices of the grid with it."""
  max_resolution = tuple(index_dims) if max_resolution is None else tuple(max_resolution)
  return functools.partial(
    fourier_features,
    num_bands=num_bands,
    max_resolution=max_resolution,
    concat_pos=concat_pos,
    sine_only=sine_only,
  )


class TrainablePositionEncoding(hk.Module):
  """A learned [index_dim, num_channels] array (`pos_embs`), broadcast over the batch.

  Also serves as the Perceiver's latent array and as learned decoder queries.
  """

  def __init__(
    self,
    index_dim: int,
    num_channels: int = 128,
    init_scale: float = 0.02,
    name: str | None = None,
  ):
    super().__init__(name=name)
    self._index_dim = index_dim
    self._num_channels = num_channels
    self._init_scale = init_scale

  def __call__(self, batch_size: int | None) -> jax.Array:
    """Returns [B, index_dim, C], or [index_dim, C] when `batch_size` is None."""
    pos_embs = hk.get_parameter(
      "pos_embs",
      [self._index_dim, self._num_channels],
      init=hk.initializers.TruncatedNormal(stddev=self._init_scale),
    )
    if batch_size is None:
      return pos_embs
    return jnp.broadcast_to(pos_embs[None], (batch_size, *pos_embs.shape))


class PositionEncodingProjector(hk.Module):
  """Linear projection of a position encoding to `output_size` channels."""

  def __init__(self, output_size: int, name: str | None = None):
    super().__init__(name=name)
    self._output_size = output_size

  def __call__(self, pos_enc: jax.Array) -> jax.Array:
    return precision.Linear(self._output_size)(pos_enc)


def build_position_encoding(
  kind: str,
  index_dims: Sequence[int],
  batch_size: int,
  *,
  fourier_kwargs: dict | None = None,
  trainable_kwargs: dict | None = None,
  project_pos_dim: int = -1,
  pos: jax.Array | None = None,
) -> jax.Array:
  """Builds a position encoding, [B, prod(index_dims), C], inside a Haiku transform.

  Args:
    kind: 'fourier' or 'trainable'.
    index_dims: the grid shape.
    batch_size: B.
    fourier_kwargs: `num_bands`, `max_resolution`, `concat_pos`, `sine_only`.
    trainable_kwargs: `num_channels`, `init_scale`.
    project_pos_dim: if positive, project the encoding to this width with a Linear.
    pos: optional [B, N, d] explicit positions (Fourier only).
  """
  if kind == "fourier":
    encoding = fourier_position_encoding(index_dims, batch_size, pos=pos, **(fourier_kwargs or {}))
  elif kind == "trainable":
    if pos is not None:
      raise ValueError("a trainable position encoding cannot take explicit positions")
    encoding = TrainablePositionEncoding(int(np.prod(index_dims)), **(trainable_kwargs or {}))(
      batch_size
    )
  else:
    raise ValueError(f"unknown position encoding type {kind!r}; expected 'fourier' or 'trainable'")
  if project_pos_dim > 0:
    encoding = PositionEncodingProjector(project_pos_dim)(encoding)
  return encoding
