"""ImageNet evaluation preprocessing of one image, as the official Perceiver IO does it.

The official evaluation (deepmind-research `perceiver/train/dataset.py`): take the
centred square crop of side `int(224 / (224 + 32) * min(H, W))` from the uint8
image, resize it to 224 x 224 with `tf.image.resize(..., BICUBIC)` (float32 out,
not clipped), then normalise with the ImageNet mean/std given in 0..255 units.

The resize is a numpy port of that op. With the default antialias=False,
`tf.image.resize` BICUBIC runs TF's `ResizeBicubic` kernel with
half_pixel_centers=True (tensorflow/core/kernels/image/resize_bicubic_op.cc):
output pixel `o` samples the input at `x = (o + 0.5) * in / out - 0.5`, from the
four pixels `floor(x) - 1 .. floor(x) + 2`, weighted by the Keys cubic kernel
(a = -0.5) looked up in a 1024-step table; taps that fall outside the image get
weight zero and the remaining ones are rescaled to sum to one. The same rule holds
when shrinking and enlarging: the kernel is never widened, so unlike PIL's bicubic
it does not antialias. The result matches TF up to float32 rounding. PIL is used
only to decode files. (The official colab differs: cv2 INTER_CUBIC on uint8.)
"""

import functools
import io
import os

import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

# Pixel values stay in 0..255 until normalised, so the constants are scaled too.
IMAGENET_MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)


# TF tabulates the kernel at this many steps per pixel and rounds each sampling
# offset to the nearest step (`kTableSize` in resize_bicubic_op.cc).
_TABLE_SIZE = 1024


@functools.cache
def _keys_cubic_table() -> np.ndarray:
  """[_TABLE_SIZE + 1, 2] float32: the Keys kernel (a = -0.5) at t and t + 1, t = i / 1024."""
  a = -0.5
  t = np.arange(_TABLE_SIZE + 1, dtype=np.float64) / _TABLE_SIZE
  near = ((a + 2) * t - (a + 3)) * t * t + 1  # |distance| in [0, 1]
  u = t + 1
  far = ((a * u - 5 * a) * u + 8 * a) * u - 4 * a  # |distance| in [1, 2]
  return np.stack([near, far], axis=-1).astype(np.float32)


@functools.lru_cache(maxsize=32)
def bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
  """The [out_size, in_size] matrix of TF's non-antialiased bicubic resize along one axis.

  Row `o` holds the weights of output pixel `o`, as TF's `ResizeBicubic` with
  half_pixel_centers=True computes them (in float32, in the same order): it samples
  the input at `x = (o + 0.5) * in_size / out_size - 0.5`, from the pixels
  `floor(x) - 1 .. floor(x) + 2` weighted by the Keys kernel (a = -0.5) at their
  distance from `x`, with `x - floor(x)` rounded to a 1/1024 step. Pixels outside
  `0 .. in_size - 1` get weight zero (they are not replaced by the edge pixel) and
  the others are divided by their sum. This holds for shrinking and enlarging alike,
  and `in_size == out_size` gives the identity. Read-only: the result is cached.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
  table = _keys_cubic_table()
  scale = np.float32(in_size) / np.float32(out_size)
  x = (np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
  start = np.floor(x).astype(np.int64)
  step = np.rint((x - start.astype(np.float32)) * np.float32(_TABLE_SIZE)).astype(np.int64)
  # Taps start - 1 .. start + 2 lie at distances 1 + d, d, 1 - d, 2 - d from x.
  taps = np.stack(
    [table[step, 1], table[step, 0], table[_TABLE_SIZE - step, 0], table[_TABLE_SIZE - step, 1]],
    axis=-1,
  )  # [out_size, 4]
  index = start[:, None] + np.arange(-1, 3)  # [out_size, 4]
  inside = (index >= 0) & (index < in_size)
  taps = np.where(inside, taps, np.float32(0))
  total = taps[:, 0] + taps[:, 1] + taps[:, 2] + taps[:, 3]
  # TF leaves the weights alone if they sum to (nearly) zero, which this kernel never does.
  usable = np.abs(total) >= np.float32(1000) * np.finfo(np.float32).tiny
  taps = taps * (np.float32(1) / np.where(usable, total, np.float32(1)))[:, None]
  weights = np.zeros((out_size, in_size), np.float32)
  rows = np.broadcast_to(np.arange(out_size)[:, None], index.shape)
  weights[rows[inside], index[inside]] = taps[inside]
  weights.flags.writeable = False
  return weights


def resize_bicubic(image: np.ndarray, height: int, width: int) -> np.ndarray:
  """Resizes [H, W, C] to [height, width, C] float32 like `tf.image.resize` BICUBIC.

  That is TF's default, antialias=False: see `bicubic_weights`. Computed in float64
  as two matrix products, so it matches TF up to float32 rounding; not clipped.
  """
  image = np.asarray(image, np.float64)
  if image.ndim != 3:
    raise ValueError(f"expected an [H, W, C] image, got shape {image.shape}")
  rows = bicubic_weights(image.shape[0], height).astype(np.float64)  # [height, H]
  cols = bicubic_weights(image.shape[1], width).astype(np.float64)  # [width, W]
  resized = np.tensordot(rows, image, axes=1)  # [height, W, C]
  return np.matmul(cols, resized).astype(np.float32)  # [height, width, C]


def normalize(image: np.ndarray) -> np.ndarray:
  """Returns `(image - mean) / std` as float32; image: [..., 3] RGB in 0..255."""
  out = np.array(image, np.float32)  # a copy, normalised in place: no temporaries
  out -= np.asarray(IMAGENET_MEAN_RGB, np.float32)
  out /= np.asarray(IMAGENET_STDDEV_RGB, np.float32)
  return out


def center_crop_and_resize(
  image: np.ndarray, size: int = 224, crop_padding: int = 32
) -> np.ndarray:
  """Takes the padded centre crop of an image and bicubic-resizes it.

  Args:
    image: [H, W, 3] RGB, uint8 or float, values in 0..255.
    size: side of the output square.
    crop_padding: the crop side is `size / (size + crop_padding)` of the
      shorter side (224 / 256 = 0.875, the usual ImageNet eval convention).

  Returns:
    [size, size, 3] float32, 0..255 up to bicubic overshoot: the crop resized
    as `tf.image.resize(crop, (size, size), BICUBIC)` does it without
    antialiasing, which the official pipeline uses (see `resize_bicubic`), and
    not clipped. A crop of side `size` comes back unchanged.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an [H, W, 3] image, got shape {image.shape}")
  height, width = image.shape[:2]
  crop = int(size / (size + crop_padding) * min(height, width))
  if crop < 1:
    raise ValueError(f"image {height}x{width} is too small for a centre crop")
  # The +1 puts an odd leftover pixel on the top/left side, as the official code does.
  top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
  return resize_bicubic(image[top : top + crop, left : left + crop], size, size)


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
  """Decodes an image file to [H, W, 3] uint8 RGB.

  Grayscale, palette, RGBA (alpha dropped) and CMYK images are converted to
  RGB. Raises ValueError naming the path when the file is missing, not an
  image, or corrupt. Truncated files raise too, as long as nothing in the
  process has set `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` (this module does not).
  """
  return _decode(path, repr(os.fspath(path)))


def decode_image(data: bytes, name: str) -> np.ndarray:
  """Decodes encoded image bytes (JPEG, PNG, ...) to [H, W, 3] uint8 RGB, as `load_image`.

  Raises ValueError naming `name` (e.g. a dataset record) when the bytes are not
  an image or are corrupt or truncated.
  """
  return _decode(io.BytesIO(data), name)


def _decode(source, name: str) -> np.ndarray:
  try:
    with Image.open(source) as img:
      img.load()  # Image.open only reads the header; decode everything now.
      if img.mode.startswith("I;16"):  # 16-bit grey: convert("RGB") would clip it at 255.
        grey = (np.asarray(img).astype(np.uint32) * 255 + 32767) // 65535
        return np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)
      return np.asarray(img.convert("RGB"), dtype=np.uint8)
  except FileNotFoundError:
    problem = "no such file"
  except UnidentifiedImageError:
    problem = "not a recognised image format"
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    problem = getattr(e, "strerror", None) or str(e).splitlines()[0] or type(e).__name__
  raise ValueError(f"cannot read image {name}: {problem}")


def preprocess_for_eval(image: np.ndarray, size: int = 224) -> np.ndarray:
  """[H, W, 3] RGB in 0..255 -> [size, size, 3] float32 model input."""
  return normalize(center_crop_and_resize(image, size))


def load_image_for_eval(path: str | os.PathLike[str], size: int = 224) -> np.ndarray:
  """Reads an image file and returns the [size, size, 3] float32 model input."""
  return preprocess_for_eval(load_image(path), size)
