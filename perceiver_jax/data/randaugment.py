"""RandAugment on uint8 images with PIL and numpy.

`randaugment(image, rng, num_layers=4, magnitude=5)` applies `num_layers` operations,
each drawn uniformly from `OPS` and applied with a probability drawn uniformly from
[0.2, 0.8] for that layer. This is the op set and the magnitude mapping of the
EfficientNet RandAugment (`distort_image_with_randaugment` in tensorflow/tpu
`autoaugment.py`), the TF reference implementation of that period. The Perceiver papers
give only RandAugment's (num_layers, magnitude) = (4, 5), so this variant is an assumption.
Magnitudes are on a 0..10 scale, `level = magnitude / 10`:

  op            argument at `level`                      magnitude 5
  AutoContrast  -                                        -
  Equalize      -                                        -
  Invert        -                                        -
  Rotate        +-30 * level degrees                     +-15 degrees
  Posterize     keep int(4 * level) high bits            2 bits
  Solarize      invert pixels >= int(256 * level)        >= 128
  SolarizeAdd   add int(110 * level) to pixels < 128     +55
  Color         blend factor 1.8 * level + 0.1           1.0 (no change)
  Contrast      "                                        1.0 (no change)
  Brightness    "                                        1.0 (no change)
  Sharpness     "                                        1.0 (no change)
  ShearX/Y      +-0.3 * level                            +-0.15
  TranslateX/Y  +-100 * level pixels                     +-50 pixels
  Cutout        grey square of side 2 * int(40 * level)  40 x 40

The four enhancement ops are the identity at magnitude 5: that is how the reference
maps magnitudes, kept so that (4, 5) means what it means there.
Geometric ops and Cutout fill uncovered pixels with grey (128, 128, 128); geometric ops
sample with nearest neighbour. Every function takes and returns [H, W, 3] uint8.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from PIL import ImageEnhance
from PIL import ImageOps

MAX_LEVEL = 10.0
FILL = (128, 128, 128)

Op = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


def _pil(fn: Callable[[Image.Image], Image.Image], image: np.ndarray) -> np.ndarray:
  return np.asarray(fn(Image.fromarray(image)))


def _signed(value: float, rng: np.random.Generator) -> float:
  return value if rng.random() < 0.5 else -value


def auto_contrast(image, level, rng):
  del level, rng
  return _pil(ImageOps.autocontrast, image)


def equalize(image, level, rng):
  del level, rng
  return _pil(ImageOps.equalize, image)


def invert(image, level, rng):
  del level, rng
  return 255 - image


def rotate(image, level, rng):
  degrees = _signed(30.0 * level, rng)
  return _pil(lambda img: img.rotate(degrees, fillcolor=FILL), image)


def posterize(image, level, rng):
  del rng
  shift = 8 - int(4 * level)
  return (image >> shift) << shift


def solarize(image, level, rng):
  del rng
  threshold = int(256 * level)
  return np.where(image < threshold, image, 255 - image).astype(np.uint8)


def solarize_add(image, level, rng):
  del rng
  added = np.minimum(image.astype(np.int16) + int(110 * level), 255).astype(np.uint8)
  return np.where(image < 128, added, image)


def _enhance(enhancer) -> Op:
  def op(image, level, rng):
    del rng
    factor = 1.8 * level + 0.1
    return _pil(lambda img: enhancer(img).enhance(factor), image)

  return op


color = _enhance(ImageEnhance.Color)
contrast = _enhance(ImageEnhance.Contrast)
brightness = _enhance(ImageEnhance.Brightness)
sharpness = _enhance(ImageEnhance.Sharpness)


def _affine(image: np.ndarray, coefficients: tuple[float, ...]) -> np.ndarray:
  """Output pixel (x, y) takes input (a x + b y + c, d x + e y + f): PIL's inverse map."""
  height, width = image.shape[:2]
  return _pil(
    lambda img: img.transform((width, height), Image.AFFINE, coefficients, fillcolor=FILL),
    image,
  )


def shear_x(image, level, rng):
  return _affine(image, (1, _signed(0.3 * level, rng), 0, 0, 1, 0))


def shear_y(image, level, rng):
  return _affine(image, (1, 0, 0, _signed(0.3 * level, rng), 1, 0))


def translate_x(image, level, rng):
  # Content moves right by `pixels`: output x reads input x - pixels.
  return _affine(image, (1, 0, -_signed(100.0 * level, rng), 0, 1, 0))


def translate_y(image, level, rng):
  return _affine(image, (1, 0, 0, 0, 1, -_signed(100.0 * level, rng)))


def cutout(image, level, rng):
  """Greys a square of side 2 * int(40 * level) centred at a uniform pixel, clipped."""
  half = int(40 * level)
  height, width = image.shape[:2]
  cy, cx = rng.integers(height), rng.integers(width)
  out = image.copy()
  out[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half] = FILL
  return out


OPS: dict[str, Op] = {
  "AutoContrast": auto_contrast,
  "Equalize": equalize,
  "Invert": invert,
  "Rotate": rotate,
  "Posterize": posterize,
  "Solarize": solarize,
  "Color": color,
  "Contrast": contrast,
  "Brightness": brightness,
  "Sharpness": sharpness,
  "ShearX": shear_x,
  "ShearY": shear_y,
  "TranslateX": translate_x,
  "TranslateY": translate_y,
  "Cutout": cutout,
  "SolarizeAdd": solarize_add,
}
_OP_LIST = tuple(OPS.values())


def randaugment(
  image: np.ndarray, rng: np.random.Generator, num_layers: int = 4, magnitude: float = 5
) -> np.ndarray:
  """[H, W, 3] uint8 -> [H, W, 3] uint8 with `num_layers` random ops of strength `magnitude`.

  A pure function of `image` and the state of `rng`.
  """
  if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an [H, W, 3] uint8 image, got {image.dtype} {image.shape}")
  if not 0 <= magnitude <= MAX_LEVEL:
    raise ValueError(f"magnitude={magnitude} must be in [0, {MAX_LEVEL:g}]")
  level = magnitude / MAX_LEVEL
  for _ in range(num_layers):
    op = _OP_LIST[rng.integers(len(_OP_LIST))]
    probability = rng.uniform(0.2, 0.8)
    if rng.random() < probability:
      image = op(image, level, rng)
  return np.ascontiguousarray(image, dtype=np.uint8)
