"""Builds the TFDS `imagenet2012` dataset (array_record) from the ImageNet tars.

`scripts/build_imagenet.py` is its command line.

TFDS's own builder (`tfds build imagenet2012`) needs TensorFlow. `build()` here writes the
same dataset with TFDS's generic writer: name `imagenet2012`, version 5.1.0, features
{"image": JPEG bytes, "label": ClassLabel over the 1000 synsets in sorted order,
"file_name": text}, one example per image keyed by its file name. So the result sits where
`tfds.data_source("imagenet2012", data_dir=...)` (and perceiver_jax/data/imagenet.py)
looks, in the same record format as the TensorFlow build. As the TFDS builder does, the few
CMYK JPEGs and the one PNG in the training set are re-encoded as RGB JPEGs (quality 100,
here with PIL).

Inputs (the files from https://image-net.org/download-images):
  ILSVRC2012_img_train.tar  a tar of 1000 tars `nXXXXXXXX.tar`, each of that class's JPEGs.
  ILSVRC2012_img_val.tar    50,000 JPEGs `ILSVRC2012_val_XXXXXXXX.JPEG`.
  validation labels         one synset per line, for the validation images in sorted name
                            order; by default the file TFDS ships
                            (tensorflow_datasets/datasets/imagenet2012/validation_labels.txt).
"""

from __future__ import annotations

import importlib.util
import io
import os
import tarfile
from collections.abc import Iterator

from absl import logging
from PIL import Image

from perceiver_jax.data import imagenet_classes

TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
VERSION = "5.1.0"


def default_validation_labels() -> str:
  """Path of the validation labels file that tensorflow-datasets ships."""
  import tensorflow_datasets as tfds

  return os.fspath(tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt"))


def _as_rgb_jpeg(data: bytes, name: str = "") -> bytes:
  """The image bytes unchanged if they are an RGB or greyscale JPEG, else re-encoded as one.

  Bytes that cannot be read are stored as they are, with a warning: the loader skips
  (training) or names (evaluation) such a record.
  """
  try:
    with Image.open(io.BytesIO(data)) as image:
      if image.format == "JPEG" and image.mode in ("RGB", "L"):
        return data
      out = io.BytesIO()
      image.convert("RGB").save(out, "JPEG", quality=100)
      return out.getvalue()
  except (OSError, SyntaxError, ValueError) as error:
    logging.warning("storing unreadable image %s as it is: %s", name, error)
    return data


def _tar_files(fileobj) -> Iterator[tuple[str, bytes]]:
  """(base name, bytes) of each regular file in a tar stream, in stored order."""
  with tarfile.open(fileobj=fileobj, mode="r|") as tar:
    for member in tar:
      if member.isfile():
        yield os.path.basename(member.name), tar.extractfile(member).read()


def train_examples(path: str) -> Iterator[tuple[str, dict]]:
  """(key, example) of every training image; the label is the inner tar's synset."""
  synsets = set(imagenet_classes.imagenet_synsets())
  with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as outer:
    for member in outer:
      if not member.isfile():
        continue
      synset = os.path.basename(member.name).removesuffix(".tar")
      if synset not in synsets:
        raise ValueError(f"{path}: member {member.name!r} is not a '<synset>.tar' of ImageNet-1k")
      for name, data in _tar_files(outer.extractfile(member)):
        yield name, {"image": _as_rgb_jpeg(data, name), "label": synset, "file_name": name}


def validation_examples(path: str, labels_path: str) -> Iterator[tuple[str, dict]]:
  """(key, example) of every validation image, labelled from `labels_path`."""
  with open(labels_path) as f:
    labels = f.read().split()
  with open(path, "rb") as f:
    names = sorted(os.path.basename(m.name) for m in tarfile.open(fileobj=f) if m.isfile())
  if len(names) != len(labels):
    raise ValueError(f"{labels_path} has {len(labels)} labels but {path} has {len(names)} images")
  label_of = dict(zip(names, labels, strict=True))
  with open(path, "rb") as f:
    for name, data in _tar_files(f):
      yield name, {"image": _as_rgb_jpeg(data, name), "label": label_of[name], "file_name": name}


def _builder_class():
  """A TFDS builder named imagenet2012 whose examples come from the tars, not TensorFlow."""
  import tensorflow_datasets as tfds

  class Imagenet2012(tfds.core.GeneratorBasedBuilder):
    """ImageNet 2012 (ILSVRC 2012), the features and version of TFDS's builder."""

    VERSION = tfds.core.Version(VERSION)
    # No checksums or metadata files belong to this builder; TFDS would look for them
    # next to the module, with an import that fails in some environments.
    code_path = None

    def __init__(self, *, manual_dir: str, validation_labels: str, **kwargs):
      self._manual_dir = manual_dir
      self._validation_labels = validation_labels
      super().__init__(**kwargs)

    def _info(self):
      features = tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(names=imagenet_classes.imagenet_synsets()),
          "file_name": tfds.features.Text(),
        }
      )
      return tfds.core.DatasetInfo(
        builder=self,
        features=features,
        supervised_keys=("image", "label"),
        homepage="https://image-net.org/",
      )

    def _split_generators(self, dl_manager):
      del dl_manager
      splits = {}
      train = os.path.join(self._manual_dir, TRAIN_TAR)
      val = os.path.join(self._manual_dir, VAL_TAR)
      if os.path.exists(train):
        splits["train"] = self._generate_examples(train_examples(train))
      if os.path.exists(val):
        splits["validation"] = self._generate_examples(
          validation_examples(val, self._validation_labels)
        )
      if not splits:
        raise ValueError(f"neither {train} nor {val} exists: expected the ImageNet tars there")
      return splits

    def _generate_examples(self, examples):
      yield from examples

  return Imagenet2012


def build(manual_dir: str, data_dir: str, validation_labels: str | None = None) -> str:
  """Writes `<data_dir>/imagenet2012/5.1.0/` from the tars in `manual_dir`; returns that path.

  Builds the splits whose tar is present (train, validation). Needs no TensorFlow.
  """
  import tensorflow_datasets as tfds

  with tfds.core.registered.skip_registration():
    builder_class = _builder_class()
  builder = builder_class(
    manual_dir=manual_dir,
    validation_labels=validation_labels or default_validation_labels(),
    data_dir=data_dir,
    file_format="array_record",
  )
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return os.fspath(builder.data_dir)


def build_with_tensorflow(manual_dir: str, data_dir: str) -> str:
  """Runs TFDS's own imagenet2012 builder (needs TensorFlow: `pip install .[tf]`)."""
  import tensorflow_datasets as tfds

  builder = tfds.builder("imagenet2012", data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return os.fspath(builder.data_dir)


BACKENDS = ("auto", "tensorflow", "python")


def prepare(
  manual_dir: str, data_dir: str, *, backend: str = "auto", validation_labels: str | None = None
) -> tuple[str, str]:
  """Builds the dataset with `backend` ("auto": TensorFlow's builder when TensorFlow is
  installed, else `build`); returns (the dataset's path, the backend used).

  Raises ValueError (one line) when `manual_dir` holds neither tar or TensorFlow is missing.
  """
  if backend not in BACKENDS:
    raise ValueError(f"backend={backend!r}: expected one of {BACKENDS}")
  manual_dir, data_dir = os.path.expanduser(manual_dir), os.path.expanduser(data_dir)
  if not any(os.path.isfile(os.path.join(manual_dir, tar)) for tar in (TRAIN_TAR, VAL_TAR)):
    raise ValueError(f"{manual_dir} holds neither {TRAIN_TAR} nor {VAL_TAR}")
  has_tensorflow = importlib.util.find_spec("tensorflow") is not None
  if backend == "auto":
    backend = "tensorflow" if has_tensorflow else "python"
  if backend == "tensorflow":
    if not has_tensorflow:
      raise ValueError("backend='tensorflow' needs TensorFlow: pip install -e .[tf]")
    return build_with_tensorflow(manual_dir, data_dir), backend
  return build(manual_dir, data_dir, validation_labels), backend
