"""AudioSet: the segment lists, the prepared record format and the training/eval input pipeline.

Preparation (`scripts/prepare_audioset.py`) turns the official segment CSVs and downloaded
clips into array_record shards `DATA_DIR/<split>-NNNNN.array_record`, one record per clip
(`encode_example`): mono audio at 48 kHz as int16, video frames at 25 fps as JPEG (shorter
side resized, 256 by default), and the label indices. `<split>` is the CSV name without
`_segments`: balanced_train, unbalanced_train, eval.

`make_data(config, process_index=, process_count=)` reads them with grain (a MapDataset over
an ArrayRecordDataSource, decoded on `config.data.num_threads` threads) and yields the batches
of the trainer contract (`perceiver_jax.data.datasets`):
  training  per example one random window aligned across modalities: `video.num_frames`
            frames (32 = 1.28 s at 25 fps) starting at frame f and the audio samples of the
            same 1.28 s, starting at sample f * 48000 / 25 (61,440 samples). Video: one random
            `image_size` crop (224) per window, the same for every frame, flipped left-right
            with probability 1/2, ImageNet mean/std normalisation. Epoch e visits the
            examples in the permutation np.random.default_rng((seed, e)); the example at
            global position g of the run draws its window and crop from default_rng((seed,
            g)); so step s's global batch is a pure function of (seed, s), for any process
            count, and a resumed run is exact.
  eval      `eval_windows` (16) windows per clip, starts evenly spaced from the first frame to
            the last full window (centre crop, no flip): inputs [*prefix, 16, ...].
Labels are multi-hot float32 [*prefix, 527]. Inputs are one array for a single modality, or
{"audio": [..., 61440], "video": [..., 32, 224, 224, 3]} (float32) for both.
Clips shorter than a window are padded: audio with silence, video by repeating the last frame.

`config.data` fields:
  name              "audioset"
  data_dir          the folder of prepared shards
  train_splits      shard prefixes read for training, e.g. ("balanced_train", "unbalanced_train")
  eval_split        the shard prefix evaluated, "eval"
  fps, sample_rate  of the prepared records (25, 48000); checked against each record
  eval_windows      windows averaged per evaluation clip (16 in the paper)
  random_flip       flip training videos left-right with probability 1/2
  num_threads       decoding threads per process
  prefetch_examples decoded examples kept ready per process
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import io
import os
from collections.abc import Iterator

import ml_collections
import numpy as np

from perceiver_jax.data import image_ops

NUM_CLASSES = 527
FPS = 25
SAMPLE_RATE = 48_000
# The official CSVs start with this many comment lines ("# Segments csv created ...").
_SEGMENT_FIELDS = 4


@dataclasses.dataclass(frozen=True)
class Segment:
  """One row of a segment CSV: a 10 s (or shorter) piece of a YouTube video."""

  ytid: str
  start_seconds: float
  end_seconds: float
  labels: tuple[int, ...]


def read_class_indices(path: str) -> dict[str, int]:
  """`class_labels_indices.csv` (header `index,mid,display_name`) -> {mid: index}."""
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  if not rows or [c.strip() for c in rows[0][:2]] != ["index", "mid"]:
    raise ValueError(f"{path}:1: expected the header 'index,mid,display_name'")
  indices = {}
  for line, row in enumerate(rows[1:], start=2):
    if not row:
      continue
    try:
      index, mid = int(row[0]), row[1].strip()
    except (ValueError, IndexError):
      raise ValueError(f"{path}:{line}: expected 'index,mid,display_name', got {row!r}") from None
    if index != len(indices) or mid in indices:
      raise ValueError(f"{path}:{line}: index {index} / mid {mid!r} out of order or repeated")
    indices[mid] = index
  return indices


def read_segments(path: str, class_indices: dict[str, int]) -> list[Segment]:
  """A segment CSV: '#' comment lines, then `YTID, start_seconds, end_seconds, "mid1,mid2"`.

  A malformed line raises ValueError naming the file and the line number.
  """
  segments = []
  with open(path, newline="", encoding="utf-8") as f:
    for line, row in enumerate(csv.reader(f, skipinitialspace=True), start=1):
      if not row or row[0].startswith("#"):
        continue
      if len(row) != _SEGMENT_FIELDS:
        raise ValueError(
          f"{path}:{line}: expected 4 fields 'YTID, start, end, \"labels\"', got {len(row)}"
        )
      ytid, start, end, mids = (field.strip() for field in row)
      try:
        start_s, end_s = float(start), float(end)
      except ValueError:
        raise ValueError(f"{path}:{line}: start/end {start!r}, {end!r} are not numbers") from None
      if not ytid or not 0 <= start_s < end_s:
        raise ValueError(f"{path}:{line}: bad segment {ytid!r} [{start_s}, {end_s})")
      unknown = [m for m in mids.split(",") if m not in class_indices]
      if unknown or not mids:
        raise ValueError(f"{path}:{line}: unknown label mid(s) {unknown or [mids]}")
      labels = tuple(sorted({class_indices[m] for m in mids.split(",")}))
      segments.append(Segment(ytid, start_s, end_s, labels))
  return segments


def split_name(csv_path: str) -> str:
  """`.../balanced_train_segments.csv` -> `balanced_train`."""
  return os.path.basename(csv_path).removesuffix(".csv").removesuffix("_segments")


def encode_example(
  segment: Segment, audio: np.ndarray, jpeg_frames: list[bytes], *, fps: int, sample_rate: int
) -> bytes:
  """One record: an .npz (no pickles) of the clip's audio int16 [S], JPEG frames and labels."""
  lengths = np.array([len(frame) for frame in jpeg_frames], np.int64)
  buffer = io.BytesIO()
  np.savez(
    buffer,
    ytid=np.array(segment.ytid),
    start_seconds=np.array(segment.start_seconds),
    labels=np.array(segment.labels, np.int32),
    audio=np.asarray(audio, np.int16),
    jpeg=np.frombuffer(b"".join(jpeg_frames), np.uint8),
    jpeg_offsets=np.concatenate([[0], np.cumsum(lengths)]),
    fps=np.array(fps),
    sample_rate=np.array(sample_rate),
  )
  return buffer.getvalue()


def decode_example(record: bytes) -> dict:
  """The inverse of `encode_example`: {ytid, labels, audio int16 [S], frames [bytes], ...}."""
  with np.load(io.BytesIO(record), allow_pickle=False) as npz:
    arrays = {key: npz[key] for key in npz.files}
  offsets, jpeg = arrays.pop("jpeg_offsets"), arrays.pop("jpeg").tobytes()
  arrays["frames"] = [jpeg[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
  arrays["ytid"] = str(arrays["ytid"])
  return arrays


def eval_window_starts(num_frames: int, window: int, count: int) -> np.ndarray:
  """`count` window start frames, evenly spaced from 0 to the last full window's start."""
  return np.round(np.linspace(0, max(num_frames - window, 0), count)).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class _Spec:
  """What the model reads: modalities and one window's size, from config.model.audio_video."""

  modalities: tuple[str, ...]
  window_frames: int
  window_samples: int
  image_size: int
  samples_per_frame: int
  num_classes: int


def _spec(config: ml_collections.ConfigDict) -> _Spec:
  av, data = config.model.audio_video, config.data
  if data.sample_rate % data.fps:
    raise ValueError(f"config.data.sample_rate={data.sample_rate}: not a multiple of fps")
  per_frame = data.sample_rate // data.fps
  frames, samples = av.video.num_frames, av.audio.num_samples
  if frames * per_frame != samples:
    raise ValueError(
      f"config.model.audio_video.audio.num_samples={samples}: {frames} frames at {data.fps} fps"
      f" last {frames * per_frame} samples at {data.sample_rate} Hz"
    )
  if data.eval_windows < 1:
    raise ValueError(f"config.data.eval_windows={data.eval_windows}: must be at least 1")
  return _Spec(
    modalities=tuple(sorted(av.modalities)),
    window_frames=frames,
    window_samples=samples,
    image_size=av.video.image_size,
    samples_per_frame=per_frame,
    num_classes=config.model.num_classes,
  )


def _window(
  example: dict,
  start: int,
  spec: _Spec,
  rng: np.random.Generator | None,
  random_flip: bool,
  decoded: dict[int, np.ndarray],
) -> dict[str, np.ndarray]:
  """One aligned window from frame `start`: {"audio": [S] float32, "video": [T, H, W, 3]}.

  With `rng`, a random crop (and a flip with probability 1/2 if `random_flip`); else the centre.
  `decoded` caches decoded frames by index across the windows of one clip.
  """
  out = {}
  if "audio" in spec.modalities:
    audio = example["audio"][start * spec.samples_per_frame :][: spec.window_samples]
    audio = np.pad(audio.astype(np.float32) / 32768.0, (0, spec.window_samples - len(audio)))
    out["audio"] = audio
  if "video" in spec.modalities:
    frames = example["frames"]
    if not frames:
      raise ValueError(f"record {example['ytid']}: no video frames (prepared with --no_video?)")
    video = []
    for i in range(start, start + spec.window_frames):
      i = min(i, len(frames) - 1)  # past the end of a short clip the last frame repeats
      if i not in decoded:
        decoded[i] = image_ops.decode_image(frames[i], example["ytid"])
      video.append(decoded[i])
    video = np.stack(video)
    height, width, size = video.shape[1], video.shape[2], spec.image_size
    if min(height, width) < size:
      raise ValueError(f"record {example['ytid']}: frames {height}x{width} smaller than {size}")
    if rng is None:
      top, left = (height - size) // 2, (width - size) // 2
    else:
      top, left = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    video = video[:, top : top + size, left : left + size]
    if rng is not None and random_flip and rng.random() < 0.5:
      video = video[:, :, ::-1]
    out["video"] = image_ops.normalize(video)
  return out


def _multi_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  hot = np.zeros(num_classes, np.float32)
  hot[labels] = 1.0
  return hot


def _inputs(windows: dict[str, np.ndarray], spec: _Spec):
  return windows[spec.modalities[0]] if len(spec.modalities) == 1 else windows


def _check_record(example: dict, data: ml_collections.ConfigDict) -> dict:
  if int(example["fps"]) != data.fps or int(example["sample_rate"]) != data.sample_rate:
    raise ValueError(
      f"record {example['ytid']}: prepared at {int(example['fps'])} fps and "
      f"{int(example['sample_rate'])} Hz, config.data expects {data.fps} fps, {data.sample_rate}"
    )
  return example


def _num_frames(example: dict, spec: _Spec) -> int:
  """The clip's length in frames (from the audio where there is no video)."""
  return max(len(example["frames"]), -(-len(example["audio"]) // spec.samples_per_frame))


def prepare_train(example: dict, rng: np.random.Generator, spec: _Spec, random_flip: bool) -> dict:
  """A random aligned window, crop and flip of one decoded record: {"inputs", "labels"}."""
  start = int(rng.integers(0, max(_num_frames(example, spec) - spec.window_frames, 0) + 1))
  windows = _window(example, start, spec, rng, random_flip, decoded={})
  return {
    "inputs": _inputs(windows, spec),
    "labels": _multi_hot(example["labels"], spec.num_classes),
  }


def prepare_eval(example: dict, spec: _Spec, num_windows: int) -> dict:
  """`num_windows` evenly spaced centre-crop windows: inputs [W, ...], labels [527]."""
  starts = eval_window_starts(_num_frames(example, spec), spec.window_frames, num_windows)
  decoded = {}  # overlapping windows share frames: decode each once
  windows = [_window(example, int(s), spec, None, False, decoded) for s in starts]
  stacked = {m: np.stack([w[m] for w in windows]) for m in spec.modalities}
  return {
    "inputs": _inputs(stacked, spec),
    "labels": _multi_hot(example["labels"], spec.num_classes),
  }


def _zero_eval_example(spec: _Spec, num_windows: int) -> dict:
  """A padding row: zero inputs [W, ...] and labels, mask 0."""
  shapes = {
    "audio": (num_windows, spec.window_samples),
    "video": (num_windows, spec.window_frames, spec.image_size, spec.image_size, 3),
  }
  zeros = {m: np.zeros(shapes[m], np.float32) for m in spec.modalities}
  labels = np.zeros(spec.num_classes, np.float32)
  return {"inputs": _inputs(zeros, spec), "labels": labels, "mask": np.float32(0.0)}


def shard_paths(data_dir: str, split: str) -> list[str]:
  paths = sorted(glob.glob(os.path.join(data_dir, f"{split}-*.array_record")))
  if not paths:
    raise ValueError(f"config.data.data_dir={data_dir!r}: no {split}-*.array_record shards")
  return paths


def make_data(config: ml_collections.ConfigDict, *, process_index: int, process_count: int):
  """The trainer's `datasets.Data` for AudioSet (see the module docstring)."""
  import grain  # noqa: PLC0415 (only the streamed datasets need it)

  from perceiver_jax.data import datasets  # noqa: PLC0415 (datasets imports this module lazily)
  from perceiver_jax.data import pipeline  # noqa: PLC0415

  data, spec = config.data, _spec(config)
  train_paths = [p for split in data.train_splits for p in shard_paths(data.data_dir, split)]
  train_source = grain.sources.ArrayRecordDataSource(train_paths)
  eval_source = grain.sources.ArrayRecordDataSource(shard_paths(data.data_dir, data.eval_split))
  num_train, batch_size = len(train_source), config.batch_size
  if batch_size % process_count or config.eval_batch_size % process_count:
    raise ValueError(f"config.batch_size={batch_size}: not a multiple of {process_count} processes")
  local = batch_size // process_count
  examples_per_epoch = num_train // batch_size * batch_size
  if examples_per_epoch == 0:
    raise ValueError(f"config.batch_size={batch_size}: more than the {num_train} training clips")
  options = grain.ReadOptions(
    num_threads=data.num_threads, prefetch_buffer_size=data.prefetch_examples
  )

  @functools.lru_cache(maxsize=2)
  def permutation(epoch: int) -> np.ndarray:
    return np.random.default_rng((config.seed, epoch)).permutation(num_train)

  def train_example(position: int) -> dict:
    """The example at global position `position` of the run (step * batch_size + i)."""
    epoch, offset = divmod(position, examples_per_epoch)
    example = _check_record(decode_example(train_source[int(permutation(epoch)[offset])]), data)
    rng = np.random.default_rng((config.seed, position))
    return prepare_train(example, rng, spec, data.random_flip)

  def local_to_global(k: int) -> int:
    step, i = divmod(k, local)
    return step * batch_size + process_index * local + i

  def train_batches(start_step: int, prefix: tuple[int, ...]) -> Iterator[dict]:
    _, prefix = pipeline.local_shape(batch_size, process_count, prefix)
    ds = grain.MapDataset.range(start_step * local, 2**62).map(local_to_global).map(train_example)
    ds = ds.batch(local).map(functools.partial(pipeline.to_prefix, prefix=prefix))
    return iter(ds.to_iter_dataset(options))

  def eval_example(index: int) -> dict:
    if index < 0:  # padding
      return _zero_eval_example(spec, data.eval_windows)
    example = _check_record(decode_example(eval_source[index]), data)
    return {**prepare_eval(example, spec, data.eval_windows), "mask": np.float32(1.0)}

  def eval_batches(prefix: tuple[int, ...]) -> Iterator[dict]:
    local_eval, prefix = pipeline.local_shape(config.eval_batch_size, process_count, prefix)
    indices = pipeline.padded_eval_indices(
      len(eval_source), local_eval, process_index, process_count
    )
    ds = grain.MapDataset.source(indices.tolist()).map(eval_example).batch(local_eval)
    return iter(
      ds.map(functools.partial(pipeline.to_prefix, prefix=prefix)).to_iter_dataset(options)
    )

  return datasets.Data(num_train, train_batches, eval_batches, _stack1(train_example(0)))


def _stack1(example: dict) -> dict:
  """Adds a leading batch axis of 1 to every leaf."""
  return {
    key: {k: v[None] for k, v in value.items()} if isinstance(value, dict) else value[None]
    for key, value in example.items()
  }
