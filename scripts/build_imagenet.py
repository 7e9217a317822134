"""Prepares ImageNet (ILSVRC2012) for training: the TFDS `imagenet2012` dataset, array_record.

  python scripts/build_imagenet.py --manual_dir=~/imagenet_tars \
      --data_dir=~/tensorflow_datasets [--backend=auto|tensorflow|python]

`--manual_dir` holds ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar (register at
https://image-net.org/download-images); the splits whose tar is there are built into
`<data_dir>/imagenet2012/5.1.0/`. Backends:
  tensorflow  TFDS's own builder; needs TensorFlow (`pip install -e .[tf]`). The same as
              `tfds build imagenet2012 --manual_dir=... --data_dir=... --file_format=array_record`.
  python      the same dataset (name, version, features, label order, one record per image)
              written without TensorFlow by perceiver_jax/data/imagenet_build.py.
  auto        tensorflow when it is installed, else python.
Either takes hours for the 1.28M training images (one process, disk-bound) and needs
about 150 GB free in `--data_dir` plus TFDS's temporary shuffle buckets.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from absl import app
from absl import flags

from perceiver_jax.data import imagenet_build

_MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "Directory holding the ImageNet tars.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory to write.")
_BACKEND = flags.DEFINE_enum(
  "backend", "auto", ["auto", "tensorflow", "python"], "Which builder writes the dataset."
)
_VALIDATION_LABELS = flags.DEFINE_string(
  "validation_labels",
  None,
  "python backend: one synset per line for the validation images in sorted file-name order "
  "(default: the file tensorflow-datasets ships).",
)
flags.mark_flags_as_required(["manual_dir", "data_dir"])


def main(argv):
  del argv
  manual_dir = os.path.expanduser(_MANUAL_DIR.value)
  data_dir = os.path.expanduser(_DATA_DIR.value)
  tars = [imagenet_build.TRAIN_TAR, imagenet_build.VAL_TAR]
  if not any(os.path.isfile(os.path.join(manual_dir, tar)) for tar in tars):
    sys.exit(f"error: {manual_dir} holds neither {tars[0]} nor {tars[1]}")
  backend = _BACKEND.value
  if backend == "auto":
    backend = "tensorflow" if importlib.util.find_spec("tensorflow") else "python"
  if backend == "tensorflow":
    if not importlib.util.find_spec("tensorflow"):
      sys.exit("error: --backend=tensorflow needs TensorFlow: pip install -e .[tf]")
    path = imagenet_build.build_with_tensorflow(manual_dir, data_dir)
  else:
    path = imagenet_build.build(manual_dir, data_dir, _VALIDATION_LABELS.value)
  print(f"ImageNet ({backend} backend) written to {path}")


if __name__ == "__main__":
  app.run(main)
