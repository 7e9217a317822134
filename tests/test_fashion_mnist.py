"""Tests for perceiver_jax/data/fashion_mnist.py: IDX parsing, load_split, download, real data."""

import gzip
import hashlib
import io
import os
import struct

import numpy as np
import pytest

from perceiver_jax.data import fashion_mnist as fm

_CODES = {np.dtype("u1"): 0x08, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D}


def idx_bytes(array: np.ndarray) -> bytes:
  """The exact IDX encoding of `array`: magic, big-endian sizes, big-endian data."""
  code = _CODES[array.dtype]
  header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
  return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data: bytes) -> str:
  path = str(path)
  with open(path, "wb") as f:
    f.write(gzip.compress(data) if path.endswith(".gz") else data)
  return path


def write_split(data_dir, split, images, labels, gz=False):
  suffix = ".gz" if gz else ""
  images_name, labels_name = fm.FILES[split]
  write(data_dir / (images_name + suffix), idx_bytes(images))
  write(data_dir / (labels_name + suffix), idx_bytes(labels))


def tiny_split(n=5, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, n).astype(np.uint8)
  return images, labels


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
@pytest.mark.parametrize("dtype", ["u1", "i2", "i4", "f4"])
def test_read_idx_round_trip(tmp_path, name, dtype):
  values = np.arange(24).reshape(2, 3, 4)
  # Negative values wider than a byte, so a sign or byte-order slip shows.
  array = (values if dtype == "u1" else (values - 12) * 1000).astype(dtype)
  result = fm.read_idx(write(tmp_path / name, idx_bytes(array)))
  assert result.dtype == array.dtype and result.dtype.isnative
  np.testing.assert_array_equal(result, array)


GOOD = idx_bytes(np.arange(6, dtype=np.uint8).reshape(2, 3))
CORRUPTIONS = {
  "bad magic": (b"\x01" + GOOD[1:], "bad IDX magic"),
  "empty": (b"", "bad IDX magic"),
  "dtype code": (GOOD[:2] + b"\x07" + GOOD[3:], "unsupported IDX dtype code 0x07"),
  "short header": (GOOD[:6], "truncated IDX header"),
  "truncated": (GOOD[:-1], "truncated data"),
  "trailing": (GOOD + b"\x00", "1 bytes of trailing garbage"),
  # 65536**4 = 2**64 items: a product in int64 wraps to 0 and would match the 0 data bytes.
  "overflowing dims": (
    bytes([0, 0, 0x08, 4]) + struct.pack(">4I", *[65536] * 4),
    r"truncated data, header \(65536, 65536, 65536, 65536\) promises 18446744073709551616 bytes",
  ),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
@pytest.mark.parametrize("name", ["x.idx", "x.idx.gz"])
def test_read_idx_rejects_corruption(tmp_path, case, name):
  data, message = CORRUPTIONS[case]
  path = write(tmp_path / name, data)
  with pytest.raises(ValueError, match=message) as info:
    fm.read_idx(path)
  assert path in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
  "data", [b"not gzip at all", gzip.compress(GOOD)[:-6]], ids=["not_gzip", "cut_gzip"]
)
def test_read_idx_rejects_corrupt_gzip(tmp_path, data):
  path = str(tmp_path / "x.idx.gz")
  with open(path, "wb") as f:
    f.write(data)
  with pytest.raises(ValueError, match="corrupt gzip") as info:
    fm.read_idx(path)
  assert path in str(info.value)


def test_read_idx_missing_file(tmp_path):
  with pytest.raises(ValueError, match="x.idx: file not found"):
    fm.read_idx(str(tmp_path / "x.idx"))


@pytest.mark.parametrize("gz", [False, True])
def test_load_split_from_data_dir(tmp_path, gz):
  images, labels = tiny_split()
  write_split(tmp_path, "test", images, labels, gz=gz)
  got_images, got_labels = fm.load_split("test", str(tmp_path))
  assert got_images.dtype == np.uint8 and got_images.shape == (5, 28, 28)
  assert got_labels.dtype == np.int32
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)


def test_load_split_validates(tmp_path):
  images, labels = tiny_split()
  write_split(tmp_path, "train", images, labels[:4])
  with pytest.raises(ValueError, match="4 labels but .* has 5 images"):
    fm.load_split("train", str(tmp_path))
  write_split(tmp_path, "train", images, np.array([0, 1, 10, 2, 3], np.uint8))
  with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: label 10 at index 2"):
    fm.load_split("train", str(tmp_path))
  write_split(tmp_path, "train", np.zeros((5, 28, 27), np.uint8), labels)
  with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: expected uint8 \[N, 28, 28\]"):
    fm.load_split("train", str(tmp_path))
  with pytest.raises(ValueError, match="split='val'"):
    fm.load_split("val", str(tmp_path))


@pytest.mark.parametrize("split", ["train", "test"])
def test_load_split_rejects_an_empty_split_naming_the_file(tmp_path, split):
  write_split(tmp_path, split, np.zeros((0, 28, 28), np.uint8), np.zeros((0,), np.uint8))
  with pytest.raises(ValueError) as info:
    fm.load_split(split, str(tmp_path))
  images_file = tmp_path / fm.FILES[split][0]
  assert str(info.value) == f"{images_file}: the {split} split holds no examples"


def test_load_split_missing_files_say_how_to_fix(tmp_path):
  with pytest.raises(ValueError, match="not found; install dataset-fashion-mnist"):
    fm.load_split("train", str(tmp_path))


class FakeResponse(io.BytesIO):
  """What urlopen returns: a readable context manager."""


def serve(monkeypatch, files: dict[str, bytes]):
  """Replaces urlopen with one serving `files` by URL, or failing like a machine offline."""
  requested = []

  def urlopen(url, timeout=None):
    requested.append(url)
    name = url.removeprefix(fm.URL_BASE)
    if name not in files:
      raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    return FakeResponse(files[name])

  monkeypatch.setattr(fm.urllib.request, "urlopen", urlopen)
  return requested


def test_download_verifies_and_loads(tmp_path, monkeypatch):
  images, labels = tiny_split()
  files = {
    "t10k-images-idx3-ubyte.gz": gzip.compress(idx_bytes(images)),
    "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_bytes(labels)),
  }
  for name, data in files.items():
    monkeypatch.setitem(fm.GZ_MD5, name, hashlib.md5(data).hexdigest())
  requested = serve(monkeypatch, files)
  got_images, got_labels = fm.load_split("test", str(tmp_path), download=True)
  np.testing.assert_array_equal(got_images, images)
  np.testing.assert_array_equal(got_labels, labels)
  assert requested == [fm.URL_BASE + name for name in files]
  assert sorted(os.listdir(tmp_path)) == sorted(files)
  fm.load_split("test", str(tmp_path), download=True)  # Present now: no second download.
  assert len(requested) == 2


def test_download_checksum_mismatch_deletes_temp(tmp_path, monkeypatch):
  serve(monkeypatch, {"t10k-images-idx3-ubyte.gz": b"tampered bytes"})
  actual = hashlib.md5(b"tampered bytes").hexdigest()
  expected = fm.GZ_MD5["t10k-images-idx3-ubyte.gz"]
  with pytest.raises(
    ValueError, match=f"t10k-images-idx3-ubyte.gz: MD5 mismatch, expected {expected}, got {actual}"
  ):
    fm.load_split("test", str(tmp_path), download=True)
  assert os.listdir(tmp_path) == []


def test_download_without_network_explains(tmp_path, monkeypatch):
  serve(monkeypatch, {})
  with pytest.raises(
    ValueError, match="download failed .* install the Debian package dataset-fashion-mnist"
  ):
    fm.load_split("train", str(tmp_path), download=True)
  assert os.listdir(tmp_path) == []
  with pytest.raises(ValueError, match="download=True needs data_dir"):
    fm.load_split("train", download=True)


@pytest.mark.skipif(
  not os.path.isdir(fm.DEBIAN_DATA_DIR),
  reason=f"{fm.DEBIAN_DATA_DIR} absent: run scripts/setup_data.sh (dataset-fashion-mnist)",
)
def test_real_debian_data():
  for split, count in (("train", 60000), ("test", 10000)):
    images, labels = fm.load_split(split)
    assert images.shape == (count, 28, 28) and labels.shape == (count,)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [count // 10] * 10)
    assert 0 < images.mean() < 255
  # Debian re-gzips the files, so it is the decompressed bytes that match the official ones.
  for name, digest in fm.RAW_MD5.items():
    with gzip.open(os.path.join(fm.DEBIAN_DATA_DIR, name + ".gz")) as f:
      assert hashlib.md5(f.read()).hexdigest() == digest, name
  # The package ships the upstream README; its table must list our official .gz digests.
  readme = "/usr/share/doc/dataset-fashion-mnist/README.md.gz"
  if os.path.exists(readme):  # Docs may be excluded (dpkg path-exclude) on slim images.
    with gzip.open(readme, "rt", encoding="utf-8") as f:
      text = f.read()
    for name, digest in fm.GZ_MD5.items():
      assert f"`{name}`" in text and f"`{digest}`" in text, name
