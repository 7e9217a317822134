"""The Middlebury flow colour coding."""

import numpy as np
import pytest

from perceiver_jax.tools import flow_colors


def _color(u, v, max_magnitude=None):
  flow = np.array([[[u, v]]], np.float32)
  return flow_colors.flow_to_rgb(flow, max_magnitude)[0, 0].astype(int)


def test_wheel_has_55_hues_in_the_standard_segments():
  wheel = flow_colors.color_wheel()
  assert wheel.shape == (55, 3)
  # Segment starts: red, yellow, green, cyan, blue, magenta.
  starts = {0: (255, 0, 0), 15: (255, 255, 0), 21: (0, 255, 0), 25: (0, 255, 255)}
  starts.update({36: (0, 0, 255), 49: (255, 0, 255)})
  for index, rgb in starts.items():
    np.testing.assert_array_equal(wheel[index], rgb)
  np.testing.assert_array_equal(wheel[1], (255, 17, 0))  # floor(255 / 15)
  np.testing.assert_array_equal(wheel[54], (255, 0, 43))  # 255 - floor(255 * 5 / 6)


def test_zero_flow_is_white():
  rgb = flow_colors.flow_to_rgb(np.zeros((3, 4, 2), np.float32))
  assert rgb.shape == (3, 4, 3) and rgb.dtype == np.uint8
  assert (rgb == 255).all()


@pytest.mark.parametrize(
  ("u", "v", "expected"),
  [
    (1.0, 0.0, (255, 0, 0)),  # right: the wheel's start, red
    (1.0, -0.0, (255, 0, 0)),  # a signed zero does not jump to the wheel's far end
    (0.0, 1.0, (255, 229, 0)),  # down: halfway between wheel colours 13 and 14
    (-1.0, 0.0, (0, 209, 255)),  # left: wheel colour 27
    (0.0, -1.0, (88, 0, 255)),  # up: halfway between wheel colours 40 and 41
  ],
)
def test_directions_at_full_magnitude(u, v, expected):
  np.testing.assert_allclose(_color(u, v), expected, atol=1)


def test_magnitude_sets_saturation():
  # Half the maximum: halfway from white to the wheel colour.
  flow = np.array([[[4.0, 0.0], [2.0, 0.0], [-2.0, 0.0]]], np.float32)
  rgb = flow_colors.flow_to_rgb(flow).astype(int)[0]
  np.testing.assert_allclose(rgb[0], (255, 0, 0), atol=1)
  np.testing.assert_allclose(rgb[1], (255, 127, 127), atol=1)
  np.testing.assert_allclose(rgb[2], (127, 232, 255), atol=1)
  # The colour depends on flow / max_magnitude only.
  np.testing.assert_array_equal(_color(3.0, 0.0, max_magnitude=6.0), rgb[1])
  np.testing.assert_array_equal(_color(30.0, 0.0, max_magnitude=60.0), rgb[1])
  # Beyond the given maximum: the wheel colour darkened to 75%.
  np.testing.assert_allclose(_color(10.0, 0.0, max_magnitude=5.0), (191, 0, 0), atol=1)


def test_bad_flows_are_rejected():
  flow = np.zeros((2, 2, 2), np.float32)
  flow[1, 1, 0] = np.nan
  with pytest.raises(ValueError, match="1 non-finite"):
    flow_colors.flow_to_rgb(flow)
  flow[1, 1, 0] = np.inf
  with pytest.raises(ValueError, match="non-finite"):
    flow_colors.flow_to_rgb(flow)
  with pytest.raises(ValueError, match=r"\[H, W, 2\], got shape \(2, 2, 3\)"):
    flow_colors.flow_to_rgb(np.zeros((2, 2, 3)))
  with pytest.raises(ValueError, match="max_magnitude"):
    flow_colors.flow_to_rgb(np.zeros((2, 2, 2)), max_magnitude=0.0)
