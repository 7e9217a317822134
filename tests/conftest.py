"""Test configuration: CPU only, with 8 host devices for the pmap tests.

Both variables must be set before JAX initialises its backends.
"""

import gzip
import os
import struct

import numpy as np
import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
  ).strip()


def _write_idx(path, array):
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(root, num_train: int, num_test: int) -> str:
  """IDX files of `num_train` training and `num_test` test images under `root`, labels in
  [0, 10). Class-dependent brightness makes the task learnable in a few steps."""
  rng = np.random.default_rng(0)
  for prefix, n in (("train", num_train), ("t10k", num_test)):
    labels = rng.integers(0, 10, n)
    images = rng.integers(0, 60, (n, 28, 28)) + labels[:, None, None] * 19
    _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
    _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
  return str(root)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """64 training and 24 test images in the IDX format."""
  return write_fashion_mnist(tmp_path_factory.mktemp("fmnist"), 64, 24)
