"""Synthetic ImageNet JPEGs in the release's tar layout, as the TFDS builder reads them."""

import io

import numpy as np
from PIL import Image

from perceiver_jax.data.prepare import imagenet as imagenet_prepare
from perceiver_jax.tools import synthetic_imagenet


def test_synthetic_jpeg_is_an_imagenet_sized_rgb_jpeg():
  data = synthetic_imagenet.synthetic_jpeg(np.random.default_rng(0))
  with Image.open(io.BytesIO(data)) as image:
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (500, 375))
  assert 30_000 < len(data) < 300_000  # ImageNet's JPEGs average about 110 KiB


def test_train_tar_is_what_the_builder_reads(tmp_path):
  sizes = synthetic_imagenet.write_train_tar(str(tmp_path), num_images=6, num_classes=3)
  examples = list(imagenet_prepare.train_examples(str(tmp_path / imagenet_prepare.TRAIN_TAR)))
  assert len(examples) == len(sizes) == 6
  labels = [example["label"] for _, example in examples]
  assert labels == sorted(labels) and len(set(labels)) == 3
  assert [len(example["image"]) for _, example in examples] == sizes
