"""Tests for perceiver_jax/data/flow_formats.py and flow_layouts.py on tiny files written here.

The files are written independently of the code under test: `.flo` byte by byte with
`struct`, 16-bit PNGs by a small encoder below that uses all five PNG row filters, frames
with Pillow.
"""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from perceiver_jax.data import flow_formats as ff
from perceiver_jax.data import flow_layouts as fl

DECODERS = ("pillow", "zlib")


def _flo_bytes(flow: np.ndarray) -> bytes:
  """A .flo file, value by value (u then v per pixel, rows top to bottom)."""
  height, width, _ = flow.shape
  out = struct.pack("<f", 202021.25) + struct.pack("<i", width) + struct.pack("<i", height)
  for y in range(height):
    for x in range(width):
      out += struct.pack("<ff", flow[y, x, 0], flow[y, x, 1])
  return out


def _chunk(kind: bytes, payload: bytes) -> bytes:
  crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
  return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png16_bytes(pixels: np.ndarray, depth: int = 16, colour: int = 2) -> bytes:
  """A 16-bit RGB PNG whose row y uses filter y % 5 (None, Sub, Up, Average, Paeth)."""
  height, width, _ = pixels.shape
  rows = np.frombuffer(pixels.astype(">u2").tobytes(), np.uint8).reshape(height, -1)
  rows = rows.astype(np.int64)
  lines = []
  for y in range(height):
    cur = rows[y]
    up = rows[y - 1] if y else np.zeros_like(cur)
    left = np.concatenate([np.zeros(6, np.int64), cur[:-6]])
    upleft = np.concatenate([np.zeros(6, np.int64), up[:-6]])
    pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    kind = y % 5
    pred = [0 * cur, left, up, (left + up) // 2, paeth][kind]
    lines.append(bytes([kind]) + ((cur - pred) % 256).astype(np.uint8).tobytes())
  ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
  return (
    b"\x89PNG\r\n\x1a\n"
    + _chunk(b"IHDR", ihdr)
    + _chunk(b"IDAT", zlib.compress(b"".join(lines)))
    + _chunk(b"IEND", b"")
  )


def _write(path, data: bytes) -> str:
  with open(path, "wb") as f:
    f.write(data)
  return str(path)


def _frame(path, seed: int, size=(6, 8)) -> np.ndarray:
  pixels = np.random.RandomState(seed).randint(0, 256, (*size, 3)).astype(np.uint8)
  Image.fromarray(pixels).save(path)
  return pixels


def _kitti_pixels(flow: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """KITTI encoding by its definition: R = 64 u + 2^15, G = 64 v + 2^15, B = valid."""
  rgb = np.concatenate([flow * 64 + 32768, valid[..., None]], axis=-1)
  return np.where(valid[..., None], rgb, 0).astype(np.uint16)


# ---- .flo ----------------------------------------------------------------------------------


def test_read_flo_matches_bytes_written_with_struct(tmp_path):
  flow = np.random.RandomState(0).normal(0, 30, (3, 5, 2)).astype(np.float32)
  path = _write(tmp_path / "a.flo", _flo_bytes(flow))
  out = ff.read_flo(path)
  assert out.dtype == np.float32 and out.shape == (3, 5, 2)
  np.testing.assert_array_equal(out, flow)  # u, v kept apart, rows not transposed
  assert ff.flo_valid(out).all()


def test_write_flo_is_byte_identical_and_round_trips(tmp_path):
  flow = np.random.RandomState(1).normal(0, 5, (4, 7, 2)).astype(np.float32)
  ff.write_flo(str(tmp_path / "b.flo"), flow)
  assert (tmp_path / "b.flo").read_bytes() == _flo_bytes(flow)
  np.testing.assert_array_equal(ff.read_flo(str(tmp_path / "b.flo")), flow)


def test_flo_unknown_flow_is_invalid():
  flow = np.zeros((2, 3, 2), np.float32)
  flow[0, 1, 0] = 1.5e9
  flow[1, 2, 1] = np.nan
  expected = np.ones((2, 3), bool)
  expected[0, 1] = expected[1, 2] = False
  np.testing.assert_array_equal(ff.flo_valid(flow), expected)


@pytest.mark.parametrize(
  ("data", "message"),
  [
    (struct.pack("<fii", 1.0, 2, 2) + bytes(32), "magic 1.0"),
    (struct.pack("<fii", 202021.25, 2, 2) + bytes(31), "should have 44 bytes, has 43"),
    (struct.pack("<fii", 202021.25, 2, 2) + bytes(40), "should have 44 bytes, has 52"),
    (struct.pack("<fii", 202021.25, 1 << 30, 1 << 30), "absurd .flo size"),
    (struct.pack("<fii", 202021.25, -3, 2), "absurd .flo size -3 x 2"),
    (b"PIEH", "4 bytes"),
  ],
)
def test_bad_flo_gets_one_line_error_naming_the_file(tmp_path, data, message):
  path = _write(tmp_path / "bad.flo", data)
  with pytest.raises(ValueError, match=message) as info:
    ff.read_flo(path)
  assert path in str(info.value) and "\n" not in str(info.value)


def test_write_flo_refuses_wrong_shape(tmp_path):
  with pytest.raises(ValueError, match=r"shape \(4, 4, 3\), expected \[H, W, 2\]"):
    ff.write_flo(str(tmp_path / "c.flo"), np.zeros((4, 4, 3)))


# ---- KITTI 16-bit PNG ----------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("high", [65536, 8])  # small values: ties in the Paeth predictor
def test_png16_reader_undoes_all_five_filters(tmp_path, decoder, high):
  pixels = np.random.RandomState(2).randint(0, high, (10, 24, 3)).astype(np.uint16)
  path = _write(tmp_path / "p.png", _png16_bytes(pixels))
  out = ff.read_png16_rgb(path, decoder=decoder)
  assert out.dtype == np.uint16
  np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("decoder", DECODERS)
def test_read_kitti_flow_values_and_mask(tmp_path, decoder):
  rng = np.random.RandomState(3)
  flow = np.round(rng.uniform(-300, 300, (5, 6, 2)) * 64) / 64  # exactly representable
  valid = rng.rand(5, 6) > 0.3
  path = _write(tmp_path / "000000_10.png", _png16_bytes(_kitti_pixels(flow, valid)))
  out, mask = ff.read_kitti_flow(path, decoder=decoder)
  np.testing.assert_array_equal(mask, valid)
  np.testing.assert_array_equal(out[valid], flow[valid].astype(np.float32))
  assert (out[~valid] == 0).all()


def test_write_kitti_flow_round_trips_with_both_decoders(tmp_path):
  rng = np.random.RandomState(4)
  flow = rng.uniform(-100, 100, (4, 9, 2)).astype(np.float32)
  valid = rng.rand(4, 9) > 0.5
  path = str(tmp_path / "pred.png")
  ff.write_kitti_flow(path, flow, valid)
  for decoder in DECODERS:
    out, mask = ff.read_kitti_flow(path, decoder=decoder)
    np.testing.assert_array_equal(mask, valid)
    np.testing.assert_allclose(out[valid], flow[valid], atol=0.5 / 64 + 1e-6)  # 1/64 px steps
  # Out-of-range components clip to the format's bounds; the default mask is all valid.
  ff.write_kitti_flow(path, np.full((2, 2, 2), [600.0, -600.0], np.float32))
  out, mask = ff.read_kitti_flow(path)
  assert mask.all()
  np.testing.assert_allclose(out[0, 0], [(65535 - 32768) / 64, -512.0])


def test_write_kitti_flow_refuses_nan_at_valid_pixels_only(tmp_path):
  flow = np.zeros((2, 3, 2), np.float32)
  flow[1, 1, 0] = np.nan
  valid = np.ones((2, 3), bool)
  with pytest.raises(ValueError, match="k.png: non-finite flow at 1 valid pixels"):
    ff.write_kitti_flow(str(tmp_path / "k.png"), flow, valid)
  valid[1, 1] = False
  ff.write_kitti_flow(str(tmp_path / "k.png"), flow, valid)
  out, mask = ff.read_kitti_flow(str(tmp_path / "k.png"))
  np.testing.assert_array_equal(mask, valid)
  assert np.isfinite(out).all()


def test_kitti_png_is_what_pillow_sees_at_8_bits(tmp_path):
  """Pillow opens the writer's output as an ordinary PNG (high bytes at 8 bits)."""
  pixels = np.random.RandomState(5).randint(0, 65536, (3, 4, 3)).astype(np.uint16)
  ff.write_png16_rgb(str(tmp_path / "w.png"), pixels)
  with Image.open(tmp_path / "w.png") as image:
    np.testing.assert_array_equal(np.asarray(image), (pixels >> 8).astype(np.uint8))


@pytest.mark.parametrize("decoder", DECODERS)
def test_bad_pngs_get_one_line_errors(tmp_path, decoder):
  good = _png16_bytes(np.ones((2, 2, 3), np.uint16))
  cases = {
    "not a PNG file": b"GIF89a" + bytes(30),
    r"not a 16-bit RGB PNG \(bit depth 8, colour type 2": _png16_bytes(
      np.ones((2, 2, 3), np.uint16), depth=8
    ),
    "truncated PNG": good[:-20],
    "bad CRC": good[:40] + bytes([good[40] ^ 1]) + good[41:],
  }
  for message, data in cases.items():
    path = _write(tmp_path / "bad.png", data)
    with pytest.raises(ValueError, match=message) as info:
      ff.read_kitti_flow(path, decoder=decoder)
    assert path in str(info.value) and "\n" not in str(info.value)


# ---- frames --------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["ppm", "png"])
def test_read_frame_rgb(tmp_path, ext):
  pixels = _frame(tmp_path / f"f.{ext}", seed=6)
  out = ff.read_frame(str(tmp_path / f"f.{ext}"))
  assert out.dtype == np.uint8
  np.testing.assert_array_equal(out, pixels)


def test_read_frame_converts_grey_and_refuses_16_bit_and_garbage(tmp_path):
  Image.fromarray(np.full((2, 3), 77, np.uint8)).save(tmp_path / "g.png")
  np.testing.assert_array_equal(ff.read_frame(str(tmp_path / "g.png")), np.full((2, 3, 3), 77))
  Image.fromarray(np.full((2, 3), 1000, np.uint16)).save(tmp_path / "i16.png")
  with pytest.raises(ValueError, match="i16.png: frame of image mode 'I;16'"):
    ff.read_frame(str(tmp_path / "i16.png"))
  path = _write(tmp_path / "junk.png", b"not an image")
  with pytest.raises(ValueError, match="junk.png: unreadable frame"):
    ff.read_frame(path)


# ---- dataset layouts -----------------------------------------------------------------------


def test_flying_chairs_layout_split_and_values(tmp_path):
  data = tmp_path / "data"
  data.mkdir()
  flows = {}
  for i in (1, 2, 3, 4, 5):
    _frame(data / f"{i:05d}_img1.ppm", seed=i)
    _frame(data / f"{i:05d}_img2.ppm", seed=10 + i)
    flows[i] = np.full((6, 8, 2), [i, -i], np.float32)
    _write(data / f"{i:05d}_flow.flo", _flo_bytes(flows[i]))
  (tmp_path / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n1\n2\n")
  train = fl.flying_chairs_samples(str(tmp_path), "train")
  val = fl.flying_chairs_samples(str(tmp_path), "val")
  assert [os.path.basename(s.frame1) for s in train] == [
    "00001_img1.ppm",
    "00003_img1.ppm",
    "00004_img1.ppm",
  ]
  assert [os.path.basename(s.flow) for s in val] == ["00002_flow.flo", "00005_flow.flo"]
  assert len(fl.flying_chairs_samples(str(tmp_path), "all")) == 5
  loaded = fl.load_sample(val[1])
  np.testing.assert_array_equal(loaded["flow"], flows[5])
  assert loaded["valid"].all() and loaded["frame2"].shape == (6, 8, 3)
  (tmp_path / "FlyingChairs_train_val.txt").write_text("1\n2\n1\n")
  with pytest.raises(ValueError, match=r"FlyingChairs_train_val.txt: 3 labels .*\(5 pairs\)"):
    fl.flying_chairs_samples(str(tmp_path), "train")
  os.remove(data / "00004_img2.ppm")
  with pytest.raises(ValueError, match="00004_img2.ppm: missing file"):
    fl.flying_chairs_samples(str(tmp_path), "all")


def test_sintel_layout_two_scenes(tmp_path):
  for scene, count in (("market_2", 3), ("alley_1", 4)):
    for dstype in ("clean", "final"):
      folder = tmp_path / "training" / dstype / scene
      folder.mkdir(parents=True)
      for i in range(1, count + 1):
        _frame(folder / f"frame_{i:04d}.png", seed=i)
    (tmp_path / "training" / "flow" / scene).mkdir(parents=True)
    for i in range(1, count):
      flow = np.full((6, 8, 2), [i, len(scene)], np.float32)
      _write(tmp_path / "training" / "flow" / scene / f"frame_{i:04d}.flo", _flo_bytes(flow))
    (tmp_path / "test" / "clean" / scene).mkdir(parents=True)
    for i in (1, 2):
      _frame(tmp_path / "test" / "clean" / scene / f"frame_{i:04d}.png", seed=i)
  samples = fl.sintel_samples(str(tmp_path), "training", "final")
  pairs = [
    (s.frame1.split(os.sep)[-2], os.path.basename(s.frame1), os.path.basename(s.frame2))
    for s in samples
  ]
  assert pairs == [
    ("alley_1", "frame_0001.png", "frame_0002.png"),
    ("alley_1", "frame_0002.png", "frame_0003.png"),
    ("alley_1", "frame_0003.png", "frame_0004.png"),
    ("market_2", "frame_0001.png", "frame_0002.png"),
    ("market_2", "frame_0002.png", "frame_0003.png"),
  ]
  assert all(os.sep + "final" + os.sep in s.frame1 for s in samples)
  assert samples[4].flow.endswith(os.path.join("flow", "market_2", "frame_0002.flo"))
  np.testing.assert_array_equal(fl.load_sample(samples[4])["flow"][0, 0], [2, 8])
  test = fl.sintel_samples(str(tmp_path), "test", "clean")
  assert len(test) == 2 and all(s.flow is None and s.valid == fl.VALID_NONE for s in test)
  assert set(fl.load_sample(test[0])) == {"frame1", "frame2"}
  with pytest.raises(ValueError, match="test/final: no such folder"):
    fl.sintel_samples(str(tmp_path), "test", "final")


def test_kitti_layout_occ_noc_and_testing(tmp_path):
  images = tmp_path / "training" / "image_2"
  images.mkdir(parents=True)
  for kind in ("occ", "noc"):
    (tmp_path / "training" / f"flow_{kind}").mkdir()
  valid = np.zeros((6, 8), bool)
  valid[2:, 3:] = True
  for scene in ("000001", "000000"):
    _frame(images / f"{scene}_10.png", seed=1)
    _frame(images / f"{scene}_11.png", seed=2)
    for kind, mask in (("occ", valid), ("noc", valid & (np.arange(8) > 5))):
      pixels = _kitti_pixels(np.full((6, 8, 2), [1.25, -3.5]), mask)
      _write(tmp_path / "training" / f"flow_{kind}" / f"{scene}_10.png", _png16_bytes(pixels))
  samples = fl.kitti_samples(str(tmp_path))
  assert [os.path.basename(s.frame2) for s in samples] == ["000000_11.png", "000001_11.png"]
  loaded = fl.load_sample(samples[0])
  np.testing.assert_array_equal(loaded["valid"], valid)
  np.testing.assert_array_equal(loaded["flow"][3, 4], [1.25, -3.5])
  noc = fl.load_sample(fl.kitti_samples(str(tmp_path), flow="noc")[1])
  assert noc["valid"].sum() == 4 * 2
  (tmp_path / "testing" / "image_2").mkdir(parents=True)
  _frame(tmp_path / "testing" / "image_2" / "000007_10.png", seed=1)
  with pytest.raises(ValueError, match="000007_11.png: missing file"):
    fl.kitti_samples(str(tmp_path), "testing")
  _frame(tmp_path / "testing" / "image_2" / "000007_11.png", seed=1)
  assert fl.kitti_samples(str(tmp_path), "testing")[0].valid == fl.VALID_NONE


def test_pair_folder_and_autoflow(tmp_path):
  folder = tmp_path / "pairs"
  folder.mkdir()
  _frame(folder / "b_1.png", seed=1)
  _frame(folder / "b_2.png", seed=2)
  _write(folder / "b.flo", _flo_bytes(np.ones((6, 8, 2), np.float32)))
  _frame(folder / "a_1.ppm", seed=3)
  _frame(folder / "a_2.ppm", seed=4)
  _frame(folder / "c_1.png", seed=5)
  _frame(folder / "c_2.png", seed=6)
  _write(folder / "c_flow.png", _png16_bytes(_kitti_pixels(np.zeros((6, 8, 2)), np.ones((6, 8)))))
  samples = fl.pair_folder_samples(str(folder))
  assert [os.path.basename(s.frame1) for s in samples] == ["a_1.ppm", "b_1.png", "c_1.png"]
  assert [s.valid for s in samples] == [fl.VALID_NONE, fl.VALID_DENSE, fl.VALID_KITTI]
  assert fl.load_sample(samples[2])["valid"].all()
  _write(folder / "b.flo", _flo_bytes(np.ones((6, 7, 2), np.float32)))
  with pytest.raises(ValueError, match=r"b.flo: flow of \(6, 7\), frames are \(6, 8\)"):
    fl.load_sample(samples[1])
  _write(folder / "c.flo", _flo_bytes(np.ones((6, 8, 2), np.float32)))
  with pytest.raises(ValueError, match="pair 'c' has both c.flo and c_flow.png"):
    fl.pair_folder_samples(str(folder))
  os.remove(folder / "c.flo")
  _frame(folder / "d_1.png", seed=7, size=(5, 8))
  _frame(folder / "d_2.png", seed=8)
  with pytest.raises(ValueError, match=r"d_2.png: frame of \(6, 8, 3\), frame 1 is \(5, 8, 3\)"):
    fl.load_sample(fl.pair_folder_samples(str(folder))[3])

  for index, name in enumerate(("00002", "00001")):
    pair = tmp_path / "auto" / "static_40k_png_1_of_4" / name
    pair.mkdir(parents=True)
    _frame(pair / "im0.png", seed=index)
    _frame(pair / "im1.png", seed=index + 1)
    _write(pair / "forward.flo", _flo_bytes(np.full((6, 8, 2), index, np.float32)))
  auto = fl.autoflow_samples(str(tmp_path / "auto"))
  assert [s.frame1.split(os.sep)[-2:] for s in auto] == [["00001", "im0.png"], ["00002", "im0.png"]]
  assert fl.load_sample(auto[0])["flow"][0, 0, 0] == 1
  os.remove(pair / "im1.png")
  with pytest.raises(ValueError, match="00001: 1 .png and 1 .flo files"):
    fl.autoflow_samples(str(tmp_path / "auto"))


def test_pillow_decoder_is_used_here(tmp_path):
  """The fast path works on this Pillow (falling back to zlib would only be slower)."""
  pixels = np.random.RandomState(9).randint(0, 65536, (5, 4, 3)).astype(np.uint16)
  path = _write(tmp_path / "p.png", _png16_bytes(pixels))
  np.testing.assert_array_equal(ff._decode_png16_pillow(path), pixels)
