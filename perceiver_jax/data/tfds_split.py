"""One split of a TFDS dataset prepared in array_record, checked with one-line errors and read
with random access through `tfds.data_source` (no TensorFlow needed).

Shared by the streamed loaders (imagenet.py, text_tfds.py): a missing dataset, a missing split
or a dataset in another file format fails when the loader is built, naming what is missing.
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds


def resolve_data_dir(data_dir: str) -> str:
  """`data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (user-expanded)."""
  return os.path.expanduser(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets"))


def check_split(name: str, split: str, data_dir: str, build_hint: str) -> tuple[str, int]:
  """(the dataset's version directory, the split's number of records).

  Args:
    name: a TFDS name, e.g. "imagenet2012" or "c4/en:3.1.0".
    split: e.g. "train".
    data_dir: as given to `resolve_data_dir`.
    build_hint: how to build the dataset, appended to the errors (e.g. "build them with ...").

  Raises:
    ValueError (one line) if the dataset, the split or the array_record files are missing.
  """
  data_dir = resolve_data_dir(data_dir)
  root = os.path.join(data_dir, name.split(":")[0])
  versions = (
    sorted(
      v for v in os.listdir(root) if os.path.isfile(os.path.join(root, v, "dataset_info.json"))
    )
    if os.path.isdir(root)
    else []
  )
  if not versions:
    raise ValueError(
      f"no TFDS {name!r} dataset in {root}: expected {root}/<version>/dataset_info.json and "
      f"array_record shards ({build_hint})"
    )
  builder = tfds.builder(name, data_dir=data_dir)
  where = builder.data_dir
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} is not in {where}: it has {sorted(builder.info.splits)}")
  file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
  if file_format != "array_record":
    raise ValueError(
      f"{where} is in {file_format} format; random access needs array_record ({build_hint})"
    )
  return str(where), builder.info.splits[split].num_examples


def open_source(name: str, split: str, data_dir: str, decoders=None):
  """`tfds.data_source` of the split (random access by record index); never downloads."""
  return tfds.data_source(
    name, split=split, data_dir=resolve_data_dir(data_dir), download=False, decoders=decoders
  )
