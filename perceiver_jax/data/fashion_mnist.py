"""Fashion-MNIST from the official IDX files: 28x28 uint8 images, 10 classes.

The files come from Debian's `dataset-fashion-mnist` package (installed by
`scripts/setup_data.sh`, found in DEBIAN_DATA_DIR), from any directory holding
the four official files (plain or .gz), or, with `download=True`, from the
official mirror into a directory of your choice.

Checksums. GZ_MD5 are the digests of the .gz files as published in the table of
the upstream README (github.com/zalandoresearch/fashion-mnist#get-the-data; the
same README ships in the Debian package as
/usr/share/doc/dataset-fashion-mnist/README.md.gz, and the table there matches).
Debian re-compresses the files (gzip mtime = the 2020-06-05 package build), so
its .gz digests differ from GZ_MD5; what we verified instead is that the
*decompressed* Debian files match RAW_MD5, the digests of the decompressed
official files that several independent loaders publish (e.g. torchvision-style
`raw_data` lists). So the Debian bytes are the official data.

All failures raise a one-line ValueError naming the file and the problem.

`make_data` is the dataset of the trainer contract (`contract.py`): inputs float32
[*prefix, 28, 28, 1] (`normalize`), labels int32 [*prefix]; no augmentation.
"""

import gzip
import hashlib
import math
import os
import urllib.request
import zlib

import ml_collections
import numpy as np

from perceiver_jax.data import contract
from perceiver_jax.data import pipeline

CLASS_NAMES = (
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SHAPE = (28, 28)
# Mean and standard deviation of the training pixels, in [0, 1] units.
MEAN = 0.2860
STD = 0.3530

DEBIAN_DATA_DIR = "/usr/share/datasets/fashion-mnist"
URL_BASE = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# split -> (images file, labels file), official names without the .gz suffix.
FILES = {
  "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
  "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# MD5 of the official .gz files (upstream README); used to verify downloads.
GZ_MD5 = {
  "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
  "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
  "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
  "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
# MD5 of the decompressed IDX files; matches the Debian package byte for byte.
RAW_MD5 = {
  "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
  "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
  "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
  "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}

# IDX type codes; multi-byte types are stored big-endian.
_IDX_DTYPES = {
  0x08: np.dtype("u1"),
  0x09: np.dtype("i1"),
  0x0B: np.dtype(">i2"),
  0x0C: np.dtype(">i4"),
  0x0D: np.dtype(">f4"),
  0x0E: np.dtype(">f8"),
}


def read_idx(path: str) -> np.ndarray:
  """Reads one IDX file (gzipped if the name ends in .gz).

  Layout: two zero bytes, a dtype code, the number of dims D, D big-endian int32
  sizes, then exactly prod(sizes) items.

  Returns:
    An array of shape [size_0, ..., size_{D-1}] in native byte order.
  """
  if not os.path.isfile(path):
    raise ValueError(f"{path}: file not found")
  with open(path, "rb") as f:
    raw = f.read()
  if path.endswith(".gz"):
    try:
      raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
      raise ValueError(f"{path}: corrupt gzip data ({err})") from None
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise ValueError(f"{path}: bad IDX magic number {raw[:4].hex() or 'empty'}")
  code, ndim = raw[2], raw[3]
  if code not in _IDX_DTYPES:
    raise ValueError(f"{path}: unsupported IDX dtype code 0x{code:02x}")
  header = 4 + 4 * ndim
  if ndim == 0 or len(raw) < header:
    raise ValueError(f"{path}: truncated IDX header ({len(raw)} bytes, {ndim} dims)")
  shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  dtype = _IDX_DTYPES[code]
  expected = math.prod(shape) * dtype.itemsize  # exact: np.prod would wrap around int64
  actual = len(raw) - header
  if actual < expected:
    raise ValueError(
      f"{path}: truncated data, header {shape} promises {expected} bytes, got {actual}"
    )
  if actual > expected:
    raise ValueError(f"{path}: {actual - expected} bytes of trailing garbage after shape {shape}")
  data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
  return data.astype(dtype.newbyteorder("="))


def _find(data_dir: str, name: str) -> str | None:
  """Path of `name` or `name.gz` in data_dir (plain first), or None."""
  for candidate in (name, name + ".gz"):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  return None


def _md5(path: str) -> str:
  digest = hashlib.md5()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _download(data_dir: str, name: str) -> str:
  """Downloads the official `name`.gz into data_dir; returns its path after the MD5 check."""
  filename = name + ".gz"
  url, path = URL_BASE + filename, os.path.join(data_dir, filename)
  # A temp name keeps a partial or corrupt download from ever looking like the real file.
  tmp = path + ".tmp"
  os.makedirs(data_dir, exist_ok=True)
  try:
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
      for chunk in iter(lambda: response.read(1 << 20), b""):
        out.write(chunk)
  except OSError as err:  # URLError and socket timeouts are OSErrors.
    if os.path.exists(tmp):
      os.remove(tmp)
    raise ValueError(
      f"{url}: download failed ({err}); install the Debian package dataset-fashion-mnist "
      f"(scripts/setup_data.sh) or pass data_dir= pointing at the IDX files"
    ) from None
  actual = _md5(tmp)
  if actual != GZ_MD5[filename]:
    os.remove(tmp)
    raise ValueError(f"{path}: MD5 mismatch, expected {GZ_MD5[filename]}, got {actual}")
  os.replace(tmp, path)
  return path


def load_split(
  split: str, data_dir: str | None = None, *, download: bool = False
) -> tuple[np.ndarray, np.ndarray]:
  """Loads one split of Fashion-MNIST.

  Args:
    split: 'train' (60000 examples) or 'test' (10000 examples).
    data_dir: directory with the official files, plain or .gz; DEBIAN_DATA_DIR if None.
    download: fetch missing files from URL_BASE into data_dir (which must then be given).

  Returns:
    images: uint8 [N, 28, 28]; labels: int32 [N], values in [0, 10).
  """
  if split not in FILES:
    raise ValueError(f"split={split!r}: expected one of {tuple(FILES)}")
  if download and data_dir is None:
    raise ValueError(f"download=True needs data_dir (not the system dir {DEBIAN_DATA_DIR})")
  data_dir = DEBIAN_DATA_DIR if data_dir is None else data_dir
  paths = []
  for name in FILES[split]:
    path = _find(data_dir, name)
    if path is None and download:
      path = _download(data_dir, name)
    if path is None:
      raise ValueError(
        f"{os.path.join(data_dir, name)}[.gz]: not found; install dataset-fashion-mnist "
        f"(scripts/setup_data.sh), pass data_dir=, or pass download=True"
      )
    paths.append(path)
  images_path, labels_path = paths
  images, labels = read_idx(images_path), read_idx(labels_path)
  if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
    raise ValueError(
      f"{images_path}: expected uint8 [N, 28, 28], got {images.dtype} {images.shape}"
    )
  if labels.ndim != 1:
    raise ValueError(f"{labels_path}: expected labels of shape [N], got {labels.shape}")
  if len(images) == 0:
    raise ValueError(f"{images_path}: the {split} split holds no examples")
  if len(images) != len(labels):
    raise ValueError(
      f"{labels_path}: {len(labels)} labels but {images_path} has {len(images)} images"
    )
  bad = (labels < 0) | (labels >= NUM_CLASSES)
  if bad.any():
    index = int(np.argmax(bad))
    raise ValueError(
      f"{labels_path}: label {labels[index]} at index {index} not in [0, {NUM_CLASSES})"
    )
  return images, labels.astype(np.int32)


def normalize(images: np.ndarray) -> np.ndarray:
  """uint8 [..., 28, 28] images -> float32 [..., 28, 28, 1], zero mean and unit variance."""
  images = images.astype(np.float32) / 255.0
  return ((images - MEAN) / STD)[..., None]


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """The trainer's `contract.Data`; `config.data`: data_dir ("" = DEBIAN_DATA_DIR), download."""
  data_dir = config.data.data_dir or None
  splits = {}
  for split in ("train", "test"):
    images, labels = load_split(split, data_dir, download=config.data.download)
    splits[split] = {"inputs": images, "labels": labels}

  def prepare(batch: dict) -> dict:
    return {**batch, "inputs": normalize(batch["inputs"])}

  return pipeline.in_memory_data(
    config,
    facts,
    splits["train"],
    splits["test"],
    prepare=prepare,
    process_index=process_index,
    process_count=process_count,
  )
