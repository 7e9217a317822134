"""Tests for perceiver_jax/models/position_encoding.py (Fourier parity with a NumPy reference
lives in test_reference_parity.py)."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perceiver_jax.models import position_encoding


def test_linear_positions_grid():
  pos = position_encoding.build_linear_positions((3, 5))
  assert pos.shape == (3, 5, 2)
  np.testing.assert_allclose(pos[:, 0, 0], [-1.0, 0.0, 1.0])
  np.testing.assert_allclose(pos[0, :, 1], [-1.0, -0.5, 0.0, 0.5, 1.0])


@pytest.mark.parametrize(
  "dims, bands, concat_pos, sine_only, expected",
  [
    (2, 64, True, False, 258),
    (3, 64, True, False, 387),
    (1, 32, False, True, 32),
    (2, 4, True, False, 18),
  ],
)
def test_channel_counts(dims, bands, concat_pos, sine_only, expected):
  assert position_encoding.num_fourier_channels(dims, bands, concat_pos, sine_only) == expected
  enc = position_encoding.fourier_position_encoding(
    (4,) * dims, 2, bands, concat_pos=concat_pos, sine_only=sine_only
  )
  assert enc.shape == (2, 4**dims, expected)


def test_explicit_positions_equal_the_grid_at_grid_points():
  """Irregular inputs (point clouds) use explicit coordinates; on grid points they agree."""
  grid = position_encoding.fourier_position_encoding((4, 6), 2, 8, max_resolution=(10, 10))
  pos = position_encoding.build_linear_positions((4, 6)).reshape(1, 24, 2).repeat(2, 0)
  explicit = position_encoding.fourier_position_encoding((4, 6), 2, 8, (10, 10), pos=pos)
  np.testing.assert_allclose(explicit, grid, atol=1e-6)


def test_point_cloud_positions_with_max_frequency():
  points = jax.random.uniform(jax.random.PRNGKey(0), (2, 100, 3), minval=-1, maxval=1)
  enc = position_encoding.fourier_position_encoding(
    (2048, 1, 1), 2, 64, max_resolution=(1120, 1120, 1120), pos=points
  )
  assert enc.shape == (2, 100, 387)
  np.testing.assert_array_equal(enc[..., :3], points)
  # The highest band of the x coordinate is 560 cycles over [-1, 1]: sin(560 pi x).
  np.testing.assert_allclose(enc[..., 3 + 63], jnp.sin(560 * jnp.pi * points[..., 0]), atol=2e-3)


def test_wrong_position_dimensions_raise():
  with pytest.raises(ValueError, match="positions have 2 dimensions, index_dims"):
    position_encoding.fourier_position_encoding((4, 4, 4), 1, 2, pos=jnp.zeros((1, 8, 2)))
  with pytest.raises(ValueError, match="max_resolution"):
    position_encoding.fourier_features(jnp.zeros((8, 2)), 2, (4,))


def test_trainable_encoding_init_scale_and_projection():
  def fn():
    return position_encoding.build_position_encoding(
      "trainable",
      (50, 40),
      3,
      trainable_kwargs=dict(num_channels=16, init_scale=0.5),
      project_pos_dim=8,
    )

  t = hk.transform(fn)
  params = t.init(jax.random.PRNGKey(0))
  pos_embs = params["trainable_position_encoding"]["pos_embs"]
  assert pos_embs.shape == (2000, 16)
  assert 0.4 < float(jnp.std(pos_embs)) < 0.5  # truncated normal at 2 std shrinks the std
  assert float(jnp.max(jnp.abs(pos_embs))) <= 2 * 0.5
  out = t.apply(params, None)
  assert out.shape == (3, 2000, 8)
  assert params["position_encoding_projector/linear"]["w"].shape == (16, 8)


def test_unknown_kind_raises():
  with pytest.raises(ValueError, match="unknown position encoding type 'sinusoid'"):
    position_encoding.build_position_encoding("sinusoid", (4,), 1)
