"""ImageNet training augmentation: Inception-style random crops, flips, MixUp and CutMix.

Per example (uint8 in, uint8 out): `random_resized_crop` then `random_flip`, then
RandAugment (perceiver_jax/data/randaugment.py). Per batch (float32): `mix_pairs`, the
Perceiver IO recipe's MixUp on half of the batch and CutMix on the other half. Every
function is a pure function of its inputs and the state of the numpy Generator it gets.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def sample_crop(
  height: int,
  width: int,
  rng: np.random.Generator,
  *,
  area_range: tuple[float, float] = (0.08, 1.0),
  ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
  attempts: int = 10,
  size: int = 224,
  crop_padding: int = 32,
) -> tuple[int, int, int, int]:
  """An Inception-style crop box (top, left, crop_height, crop_width) of an H x W image.

  Up to `attempts` times, draw an area fraction uniformly from `area_range` and an aspect
  ratio (width / height) log-uniformly from `ratio_range`; the first box that fits is
  placed uniformly at random. If none fits, fall back to the evaluation crop: the centred
  square of side int(size / (size + crop_padding) * min(H, W)).
  """
  area = height * width
  log_ratio = (math.log(ratio_range[0]), math.log(ratio_range[1]))
  for _ in range(attempts):
    target = area * rng.uniform(*area_range)
    ratio = math.exp(rng.uniform(*log_ratio))
    crop_w = round(math.sqrt(target * ratio))
    crop_h = round(math.sqrt(target / ratio))
    if 0 < crop_w <= width and 0 < crop_h <= height:
      top = int(rng.integers(height - crop_h + 1))
      left = int(rng.integers(width - crop_w + 1))
      return top, left, crop_h, crop_w
  side = max(1, int(size / (size + crop_padding) * min(height, width)))
  return (height - side + 1) // 2, (width - side + 1) // 2, side, side


def random_resized_crop(
  image: np.ndarray, rng: np.random.Generator, size: int = 224, **crop_kwargs
) -> np.ndarray:
  """[H, W, 3] uint8 -> [size, size, 3] uint8: a `sample_crop` box, bicubic-resized.

  The resize is PIL's bicubic (antialiased when shrinking), which is fast on uint8; the
  evaluation path keeps TF's exact non-antialiased resize (image_ops.py).
  """
  top, left, crop_h, crop_w = sample_crop(*image.shape[:2], rng, size=size, **crop_kwargs)
  box = (left, top, left + crop_w, top + crop_h)
  return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC, box=box))


def random_flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Mirrors [H, W, C] left-right with probability 1/2."""
  return image[:, ::-1] if rng.random() < 0.5 else image


def cutmix_box(
  height: int, width: int, lam: float, rng: np.random.Generator
) -> tuple[int, int, int, int]:
  """CutMix's box (top, bottom, left, right) for mixing weight `lam`, clipped to the image.

  Its unclipped sides are int(H * sqrt(1 - lam)) and int(W * sqrt(1 - lam)) around a
  uniformly drawn centre, so it covers about 1 - lam of the image before clipping.
  """
  cut = math.sqrt(1.0 - lam)
  cut_h, cut_w = int(height * cut), int(width * cut)
  cy, cx = int(rng.integers(height)), int(rng.integers(width))
  top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
  left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
  return top, bottom, left, right


def mix_pair(
  images: np.ndarray,
  labels: np.ndarray,
  kind: str,
  alpha: float,
  rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
  """Mixes two examples with each other, in place of both.

  Args:
    images: float32 [2, H, W, C].
    labels: float32 [2, K] (one-hot or soft).
    kind: "mixup": both become lam * self + (1 - lam) * other, lam ~ Beta(alpha, alpha);
      "cutmix": both get the other's pixels inside one `cutmix_box`, and lam becomes the
      fraction of their own pixels left. alpha == 0 leaves the pair unchanged.
    rng: draws lam (and the box).

  Returns:
    (images [2, H, W, C], labels [2, K]): each label is lam * own + (1 - lam) * other's,
    so the label mass of each class equals the share of pixels it contributes.
  """
  if alpha <= 0:
    return images, labels
  lam = float(rng.beta(alpha, alpha))
  swapped_images, swapped_labels = images[::-1], labels[::-1]
  if kind == "mixup":
    mixed = lam * images + (1.0 - lam) * swapped_images
  elif kind == "cutmix":
    height, width = images.shape[1:3]
    top, bottom, left, right = cutmix_box(height, width, lam, rng)
    mixed = images.copy()
    mixed[:, top:bottom, left:right] = swapped_images[:, top:bottom, left:right]
    lam = 1.0 - (bottom - top) * (right - left) / (height * width)
  else:
    raise ValueError(f"kind={kind!r}: expected 'mixup' or 'cutmix'")
  return mixed.astype(np.float32), (lam * labels + (1.0 - lam) * swapped_labels).astype(np.float32)
