"""Optical-flow files on disk: Middlebury `.flo`, KITTI 16-bit flow PNGs, and frames.

Conventions shared by the flow code: a flow field is float32 [H, W, 2] in pixels, channel 0
the horizontal component u (x, to the right), channel 1 the vertical component v (y, down);
a valid mask is bool [H, W]; a frame is uint8 [H, W, 3] RGB.

- `.flo` (Middlebury; FlyingChairs, MPI-Sintel, AutoFlow): little-endian float32 magic
  202021.25, int32 width, int32 height, then float32 [H, W, 2] row-major. Values above 1e9
  in magnitude mark unknown flow (Middlebury's convention): `flo_valid` masks them out.
- KITTI 2015 flow PNG (`flow_occ`, `flow_noc`, and the submission format): 16-bit RGB,
  u = (R - 2^15) / 64, v = (G - 2^15) / 64, valid = B > 0.

Pillow decodes 16-bit RGB PNGs only down to 8 bits per channel. `read_png16_rgb` therefore
lets Pillow's C decoder undo the PNG row filters twice, once keeping each sample's high byte
and once its low byte, and has a pure numpy + zlib decoder (`decoder="zlib"`) for the case
where a Pillow release stops exposing that; both are tested on files using all five PNG
row filters.
"""

from __future__ import annotations

import os
import struct
import zlib

import numpy as np
from PIL import Image

FLO_MAGIC = 202021.25
# Largest side accepted in a flow file: larger headers are corrupt, not images (a check made
# before anything is allocated).
MAX_SIDE = 1 << 15
UNKNOWN_FLOW = 1e9
KITTI_SCALE = 64.0
KITTI_OFFSET = 2.0**15
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _check_flow(flow: np.ndarray, path: str) -> np.ndarray:
  flow = np.asarray(flow)
  if flow.ndim != 3 or flow.shape[-1] != 2 or 0 in flow.shape:
    raise ValueError(f"{path}: flow of shape {flow.shape}, expected [H, W, 2]")
  if max(flow.shape[:2]) > MAX_SIDE:
    raise ValueError(f"{path}: flow of shape {flow.shape} has a side above {MAX_SIDE}")
  return flow.astype(np.float32)


def read_flo(path: str) -> np.ndarray:
  """The flow float32 [H, W, 2] of a Middlebury `.flo` file."""
  with open(path, "rb") as f:
    header = f.read(12)
    if len(header) < 12:
      raise ValueError(f"{path}: not a .flo file ({len(header)} bytes, the header has 12)")
    magic, width, height = struct.unpack("<fii", header)
    if magic != FLO_MAGIC:
      raise ValueError(f"{path}: not a .flo file (magic {magic!r}, expected {FLO_MAGIC})")
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
      raise ValueError(f"{path}: absurd .flo size {width} x {height} (sides 1..{MAX_SIDE})")
    expected = 12 + 8 * width * height
    size = os.fstat(f.fileno()).st_size
    if size != expected:
      raise ValueError(
        f"{path}: .flo of {width} x {height} should have {expected} bytes, has {size}"
      )
    data = np.frombuffer(f.read(), "<f4")
  return data.reshape(height, width, 2).astype(np.float32)


def write_flo(path: str, flow: np.ndarray) -> None:
  """Writes float [H, W, 2] flow as a Middlebury `.flo` file."""
  flow = _check_flow(flow, path)
  height, width, _ = flow.shape
  with open(path, "wb") as f:
    f.write(struct.pack("<fii", FLO_MAGIC, width, height))
    f.write(flow.astype("<f4").tobytes())


def flo_valid(flow: np.ndarray) -> np.ndarray:
  """bool [H, W]: pixels whose flow [H, W, 2] is finite and not marked unknown (> 1e9)."""
  return np.all(np.isfinite(flow) & (np.abs(flow) < UNKNOWN_FLOW), axis=-1)


def _png_chunks(data: bytes, path: str):
  """(type, payload) of each chunk of PNG bytes, CRCs checked."""
  if not data.startswith(PNG_SIGNATURE):
    raise ValueError(f"{path}: not a PNG file (starts {data[:8]!r})")
  pos = len(PNG_SIGNATURE)
  while pos < len(data):
    if pos + 8 > len(data):
      raise ValueError(f"{path}: truncated PNG (chunk header at byte {pos})")
    (length,) = struct.unpack(">I", data[pos : pos + 4])
    kind = data[pos + 4 : pos + 8]
    end = pos + 12 + length
    if end > len(data):
      raise ValueError(f"{path}: truncated PNG ({kind!r} chunk of {length} bytes at byte {pos})")
    payload = data[pos + 8 : end - 4]
    (crc,) = struct.unpack(">I", data[end - 4 : end])
    if zlib.crc32(kind + payload) & 0xFFFFFFFF != crc:
      raise ValueError(f"{path}: corrupt PNG (bad CRC in the {kind!r} chunk at byte {pos})")
    yield kind, payload
    if kind == b"IEND":
      return
    pos = end
  raise ValueError(f"{path}: truncated PNG (no IEND chunk)")


def _png16_header(data: bytes, path: str) -> tuple[int, int, bytes]:
  """(height, width, joined IDAT payloads) of a non-interlaced 16-bit RGB PNG, every chunk
  checked; a one-line error for any other file."""
  chunks = list(_png_chunks(data, path))
  kind, ihdr = chunks[0]
  if kind != b"IHDR" or len(ihdr) != 13:
    raise ValueError(f"{path}: corrupt PNG (first chunk {kind!r}, expected IHDR)")
  width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
  if depth != 16 or colour != 2:
    raise ValueError(
      f"{path}: not a 16-bit RGB PNG (bit depth {depth}, colour type {colour}; KITTI flow "
      "needs 16, 2)"
    )
  if interlace:
    raise ValueError(f"{path}: interlaced 16-bit PNG, not supported")
  if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
    raise ValueError(f"{path}: absurd PNG size {width} x {height} (sides 1..{MAX_SIDE})")
  return height, width, b"".join(payload for kind, payload in chunks if kind == b"IDAT")


def _unfilter(raw: bytes, height: int, width: int, path: str) -> np.ndarray:
  """uint8 [H, W * 6] scanlines of filtered PNG rows (1 filter byte each), filters undone."""
  stride = width * 6
  rows = np.frombuffer(raw, np.uint8).reshape(height, stride + 1)
  out = np.zeros((height, stride), np.uint8)
  prev = np.zeros(stride, np.int32)
  for y in range(height):
    kind, line = int(rows[y, 0]), rows[y, 1:].astype(np.int32)
    if kind == 0:
      cur = line
    elif kind == 1:  # Sub: adds the byte one pixel (6 bytes) left: a running sum.
      cur = np.cumsum(line.reshape(width, 6), axis=0).reshape(-1) % 256
    elif kind == 2:  # Up
      cur = (line + prev) % 256
    elif kind in (3, 4):  # Average, Paeth: sequential along the row.
      cur = np.zeros(stride, np.int32)
      left, upleft = np.zeros(6, np.int32), np.zeros(6, np.int32)
      for x in range(0, stride, 6):
        up = prev[x : x + 6]
        if kind == 3:
          pred = (left + up) // 2
        else:
          pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
          pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        left = (line[x : x + 6] + pred) % 256
        cur[x : x + 6], upleft = left, up
    else:
      raise ValueError(f"{path}: corrupt PNG (filter type {kind} on row {y})")
    out[y] = cur
    prev = cur
  return out


def _decode_png16_zlib(idat: bytes, height: int, width: int, path: str) -> np.ndarray:
  expected = height * (1 + width * 6)
  try:
    inflater = zlib.decompressobj()
    raw = inflater.decompress(idat, expected)  # bounded: a zlib bomb stops here
  except zlib.error as e:
    raise ValueError(f"{path}: corrupt PNG image data ({e})") from None
  if len(raw) != expected:
    raise ValueError(f"{path}: truncated PNG image data ({len(raw)} of {expected} bytes)")
  scan = _unfilter(raw, height, width, path)
  return scan.reshape(height, width, 3, 2).astype(np.uint16) @ np.array([256, 1], np.uint16)


def _decode_png16_pillow(path: str) -> np.ndarray | None:
  """The samples, or None where this Pillow does not describe the PNG as one zip tile."""
  halves = []
  for rawmode in ("RGB;16B", "RGB;16L"):  # big-endian samples: 16B keeps high bytes, 16L low
    with Image.open(path) as image:
      tiles = image.tile
      if len(tiles) != 1 or not hasattr(tiles[0], "_replace") or tiles[0][3] != "RGB;16B":
        return None
      image.tile = [tiles[0]._replace(args=rawmode)]
      halves.append(np.asarray(image, np.uint16))
  return halves[0] * 256 + halves[1]


def read_png16_rgb(path: str, *, decoder: str = "pillow") -> np.ndarray:
  """uint16 [H, W, 3] samples of a 16-bit RGB PNG.

  `decoder="pillow"` (fast) falls back to "zlib" (numpy, slower on Average/Paeth rows) where
  Pillow's internals differ from what it expects.
  """
  with open(path, "rb") as f:
    data = f.read()
  height, width, idat = _png16_header(data, path)
  try:
    if decoder not in ("pillow", "zlib"):
      raise ValueError(f"decoder={decoder!r}: expected 'pillow' or 'zlib'")
    pixels = _decode_png16_pillow(path) if decoder == "pillow" else None
    if pixels is None:
      pixels = _decode_png16_zlib(idat, height, width, path)
  except (OSError, SyntaxError) as e:  # Pillow's errors for broken image data
    raise ValueError(f"{path}: corrupt PNG ({e})") from None
  return pixels


def write_png16_rgb(path: str, pixels: np.ndarray) -> None:
  """Writes uint16 [H, W, 3] as a 16-bit RGB PNG (no row filters, zlib level 6)."""
  pixels = np.asarray(pixels)
  if pixels.ndim != 3 or pixels.shape[-1] != 3 or pixels.dtype != np.uint16:
    raise ValueError(f"{path}: pixels {pixels.dtype} {pixels.shape}, expected uint16 [H, W, 3]")
  height, width, _ = pixels.shape
  rows = pixels.astype(">u2").reshape(height, width * 3).view(np.uint8)
  raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

  def chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

  ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
  with open(path, "wb") as f:
    f.write(PNG_SIGNATURE + chunk(b"IHDR", ihdr))
    f.write(chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def read_kitti_flow(path: str, *, decoder: str = "pillow") -> tuple[np.ndarray, np.ndarray]:
  """Flow float32 [H, W, 2] and valid bool [H, W] of a KITTI flow PNG.

  Invalid pixels (B = 0) get flow 0.
  """
  pixels = read_png16_rgb(path, decoder=decoder).astype(np.float32)
  valid = pixels[..., 2] > 0
  flow = (pixels[..., :2] - KITTI_OFFSET) / KITTI_SCALE
  return np.where(valid[..., None], flow, 0.0).astype(np.float32), valid


def write_kitti_flow(path: str, flow: np.ndarray, valid: np.ndarray | None = None) -> None:
  """Writes flow [H, W, 2] (valid bool [H, W], default all) as a KITTI flow PNG.

  Components are rounded to 1/64 pixel and clipped to the format's range (-512, 512); invalid
  pixels are written as zeros, as KITTI's ground truth has them.
  """
  flow = _check_flow(flow, path)
  valid = np.ones(flow.shape[:2], bool) if valid is None else np.asarray(valid, bool)
  if valid.shape != flow.shape[:2]:
    raise ValueError(f"{path}: valid mask {valid.shape} for flow {flow.shape}")
  bad = int(np.sum(~np.all(np.isfinite(flow), axis=-1) & valid))
  if bad:
    raise ValueError(f"{path}: non-finite flow at {bad} valid pixels, cannot encode")
  flow = np.where(valid[..., None], flow, 0.0)
  encoded = np.clip(np.round(flow * KITTI_SCALE + KITTI_OFFSET), 0, 65535)
  pixels = np.concatenate([encoded, valid[..., None].astype(np.float32)], axis=-1)
  write_png16_rgb(path, np.where(valid[..., None], pixels, 0).astype(np.uint16))


def read_frame(path: str) -> np.ndarray:
  """A frame (`.ppm`, `.png`, `.jpg`, ...) as uint8 [H, W, 3] RGB.

  Greyscale, palette and RGBA files are converted to RGB; 16-bit and float images are refused
  (their scaling to 8 bits is ambiguous).
  """
  try:
    with Image.open(path) as image:
      if image.mode not in ("RGB", "RGBA", "L", "LA", "P", "1"):
        raise ValueError(f"{path}: frame of image mode {image.mode!r}, expected 8-bit RGB")
      return np.asarray(image.convert("RGB"), np.uint8)
  except (OSError, SyntaxError) as e:  # Pillow's errors for unreadable files
    raise ValueError(f"{path}: unreadable frame ({e})") from None


def frame_size(path: str) -> tuple[int, int]:
  """(height, width) of a frame file, from its header (nothing decoded)."""
  try:
    with Image.open(path) as image:
      width, height = image.size
  except (OSError, SyntaxError) as e:
    raise ValueError(f"{path}: unreadable frame ({e})") from None
  return height, width
