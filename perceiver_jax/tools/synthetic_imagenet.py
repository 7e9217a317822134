"""Synthetic ImageNet training JPEGs in the release's tar layout, to time the input pipeline
without the real data.

The layout is the one `perceiver_jax/data/prepare/imagenet.py` reads: `ILSVRC2012_img_train.tar`
holds one tar `nXXXXXXXX.tar` per class, each of that class's `nXXXXXXXX_i.JPEG` files.
"""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
from PIL import Image

from perceiver_jax.data import imagenet_classes
from perceiver_jax.data.prepare import imagenet as imagenet_prepare


def synthetic_jpeg(rng: np.random.Generator, height: int = 375, width: int = 500) -> bytes:
  """Smooth colour fields plus noise, JPEG quality 90: about the size and decoding cost of an
  ImageNet JPEG (500 x 375 is the release's most common size)."""
  coarse = rng.integers(0, 256, (height // 24 + 1, width // 24 + 1, 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
  noisy = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
  out = io.BytesIO()
  Image.fromarray(noisy).save(out, "JPEG", quality=90)
  return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_train_tar(root: str, num_images: int, num_classes: int = 4, seed: int = 0) -> list[int]:
  """Writes `root/ILSVRC2012_img_train.tar` with `num_images // num_classes` synthetic JPEGs
  for each of the first `num_classes` synsets; returns the JPEGs' sizes in bytes."""
  rng = np.random.default_rng(seed)
  sizes = []
  with tarfile.open(os.path.join(root, imagenet_prepare.TRAIN_TAR), "w") as outer:
    for synset in imagenet_classes.imagenet_synsets()[:num_classes]:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as tar:
        for i in range(num_images // num_classes):
          data = synthetic_jpeg(rng)
          sizes.append(len(data))
          _add(tar, f"{synset}_{i}.JPEG", data)
      _add(outer, f"{synset}.tar", inner.getvalue())
  return sizes
