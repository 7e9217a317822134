"""Prepares ImageNet (ILSVRC2012) for training: the TFDS `imagenet2012` dataset, array_record.

  python scripts/build_imagenet.py --manual_dir=~/imagenet_tars \
      --data_dir=~/tensorflow_datasets [--backend=auto|tensorflow|python]

`--manual_dir` holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (register at
https://image-net.org/download-images); the splits whose tar is there are built into
`<data_dir>/imagenet2012/5.1.0/`. Backends:
  tensorflow  TFDS's own builder; needs TensorFlow (`pip install -e .[tf]`). The same as
              `tfds build imagenet2012 --manual_dir=... --data_dir=... --file_format=array_record`.
  python      the same dataset (name, version, features, label order, one record per image)
              written without TensorFlow by perceiver_jax/data/prepare/imagenet.py.
  auto        tensorflow when it is installed, else python.
Either takes hours for the 1.28M training images (one process, disk-bound) and needs
about 150 GB free in `--data_dir` plus TFDS's temporary shuffle buckets.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags

from perceiver_jax.data.prepare import imagenet

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Directory holding the ImageNet tars.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory to write.")
_BACKEND = flags.DEFINE_enum("backend", "auto", imagenet.BACKENDS, "Which builder writes it.")
_VALIDATION_LABELS = flags.DEFINE_string(
  "validation_labels",
  None,
  "python backend: one synset per line for the validation images in sorted file-name order "
  "(default: the file tensorflow-datasets ships).",
)
flags.mark_flags_as_required(["manual_dir", "data_dir"])


def main(argv):
  del argv
  try:
    path, backend = imagenet.prepare(
      _MANUAL_DIR.value,
      _DATA_DIR.value,
      backend=_BACKEND.value,
      validation_labels=_VALIDATION_LABELS.value,
    )
  except ValueError as error:
    sys.exit(f"error: {error}")
  print(f"ImageNet ({backend} backend) written to {path}")


if __name__ == "__main__":
  app.run(main)
