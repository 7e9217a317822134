"""AudioSet: the prepared record format and the training/evaluation input pipeline.

Preparation (`perceiver_jax.data.prepare.audioset`, run by `scripts/prepare_audioset.py`) turns
the official segment CSVs and downloaded clips into array_record shards
`DATA_DIR/<split>-NNNNN.array_record`, one record per clip (`encode_example`): mono audio at
48 kHz as int16, video frames at 25 fps as JPEG (shorter side resized, 256 by default), and
the label indices. `<split>` is the CSV name without `_segments`: balanced_train,
unbalanced_train, eval.

`make_data(config, facts, *, process_index, process_count)` reads them with grain (a
MapDataset over an ArrayRecordDataSource, decoded on `config.data.num_threads` threads) and
yields the batches of the trainer contract (`contract.py`). The model's facts say what to
read: `facts.input_shapes` is a dict keyed by modality, {"audio": (S,)} and/or
{"video": (T, H, H, 3)}, and every batch's "inputs" is a dict with the same keys.
  training  per example one random window aligned across modalities: T frames (32 = 1.28 s
            at 25 fps) starting at frame f and the audio samples of the same 1.28 s, starting
            at sample f * 48000 / 25 (S = 61,440 samples). Video: one random H x H crop (224)
            per window, the same for every frame, flipped left-right with probability 1/2,
            ImageNet mean/std normalisation. Examples follow `contract.TrainOrder`, and slot j
            of step k draws its window, crop and flip from the order's AUGMENT_STREAM
            generator of (k, j); so step k's global batch is a pure function of (seed, k), for
            any process count, and a resumed run is exact.
  eval      `facts.eval_windows` (16) windows per clip, starts evenly spaced from the first
            frame to the last full window (centre crop, no flip): inputs [*prefix, 16, ...].
Labels are multi-hot float32 [*prefix, K] (K = facts.num_classes, 527). Clips shorter than a
window are padded: audio with silence, video by repeating the last frame.

`config.data` fields:
  name              "audioset"
  data_dir          the folder of prepared shards
  train_splits      shard prefixes read for training, e.g. ("balanced_train", "unbalanced_train")
  eval_split        the shard prefix evaluated, "eval"
  fps, sample_rate  of the prepared records (25, 48000); checked against each record
  random_flip       flip training videos left-right with probability 1/2
  num_threads       decoding threads per process
  prefetch_examples decoded examples kept ready per process
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import io
import os
from collections.abc import Iterator
from collections.abc import Sequence

import ml_collections
import numpy as np

from perceiver_jax.data import contract
from perceiver_jax.data import image_ops

NUM_CLASSES = 527
FPS = 25
SAMPLE_RATE = 48_000
MODALITIES = ("audio", "video")


def encode_example(
  ytid: str,
  start_seconds: float,
  labels: Sequence[int],
  audio: np.ndarray,
  jpeg_frames: list[bytes],
  *,
  fps: int,
  sample_rate: int,
) -> bytes:
  """One record: an .npz (no pickles) of the clip's audio int16 [S], JPEG frames and labels."""
  lengths = np.array([len(frame) for frame in jpeg_frames], np.int64)
  buffer = io.BytesIO()
  np.savez(
    buffer,
    ytid=np.array(ytid),
    start_seconds=np.array(start_seconds),
    labels=np.array(labels, np.int32),
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
class WindowSpec:
  """What the model reads: modalities and one window's size, from the model's facts.

  `unit_range`: video values in [0, 1] (the autoencoder's) instead of ImageNet-normalised.
  """

  modalities: tuple[str, ...]
  window_frames: int
  window_samples: int
  image_size: int
  samples_per_frame: int
  num_classes: int
  unit_range: bool = False


def _spec(data: ml_collections.ConfigDict, facts: contract.ModelFacts) -> WindowSpec:
  shapes = facts.input_shapes
  if not isinstance(shapes, dict) or not shapes or not set(shapes) <= set(MODALITIES):
    raise ValueError(
      f"AudioSet gives inputs keyed by modality {MODALITIES}; the model takes {shapes}"
    )
  if data.sample_rate % data.fps:
    raise ValueError(f"config.data.sample_rate={data.sample_rate}: not a multiple of fps")
  per_frame = data.sample_rate // data.fps
  frames = samples = size = 0
  if "video" in shapes:
    frames, size, width, channels = shapes["video"]
    if (width, channels) != (size, 3):
      raise ValueError(f"video input {shapes['video']}: AudioSet gives [T, H, H, 3] windows")
  if "audio" in shapes:
    (samples,) = shapes["audio"]
    frames = frames or samples // per_frame
  if frames < 1 or (samples and frames * per_frame != samples):
    raise ValueError(
      f"audio input of {samples} samples: a window of {frames} frames at {data.fps} fps lasts "
      f"{frames * per_frame} samples at {data.sample_rate} Hz"
    )
  if facts.eval_windows < 1:
    raise ValueError(f"eval_windows={facts.eval_windows}: AudioSet evaluates at least 1 window")
  return WindowSpec(
    modalities=tuple(sorted(shapes)),
    window_frames=frames,
    window_samples=frames * per_frame,
    image_size=size,
    samples_per_frame=per_frame,
    num_classes=facts.num_classes,
  )


def window(
  example: dict,
  start: int,
  spec: WindowSpec,
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
    out["video"] = (
      video.astype(np.float32) / 255.0 if spec.unit_range else image_ops.normalize(video)
    )
  return out


def _multi_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  hot = np.zeros(num_classes, np.float32)
  hot[labels] = 1.0
  return hot


def check_record(example: dict, data: ml_collections.ConfigDict) -> dict:
  if int(example["fps"]) != data.fps or int(example["sample_rate"]) != data.sample_rate:
    raise ValueError(
      f"record {example['ytid']}: prepared at {int(example['fps'])} fps and "
      f"{int(example['sample_rate'])} Hz, config.data expects {data.fps} fps, {data.sample_rate}"
    )
  return example


def num_frames(example: dict, spec: WindowSpec) -> int:
  """The clip's length in frames (from the audio where there is no video)."""
  return max(len(example["frames"]), -(-len(example["audio"]) // spec.samples_per_frame))


def prepare_train(
  example: dict, rng: np.random.Generator, spec: WindowSpec, random_flip: bool
) -> dict:
  """A random aligned window, crop and flip of one decoded record: {"inputs", "labels"}."""
  start = int(rng.integers(0, max(num_frames(example, spec) - spec.window_frames, 0) + 1))
  windows = window(example, start, spec, rng, random_flip, decoded={})
  return {
    "inputs": windows,
    "labels": _multi_hot(example["labels"], spec.num_classes),
  }


def prepare_eval(example: dict, spec: WindowSpec, num_windows: int) -> dict:
  """`num_windows` evenly spaced centre-crop windows: inputs [W, ...], labels [527]."""
  starts = eval_window_starts(num_frames(example, spec), spec.window_frames, num_windows)
  decoded = {}  # overlapping windows share frames: decode each once
  windows = [window(example, int(s), spec, None, False, decoded) for s in starts]
  stacked = {m: np.stack([w[m] for w in windows]) for m in spec.modalities}
  return {
    "inputs": stacked,
    "labels": _multi_hot(example["labels"], spec.num_classes),
  }


def _zero_eval_example(spec: WindowSpec, num_windows: int) -> dict:
  """A padding row: zero inputs [W, ...] and labels, mask 0."""
  shapes = {
    "audio": (num_windows, spec.window_samples),
    "video": (num_windows, spec.window_frames, spec.image_size, spec.image_size, 3),
  }
  zeros = {m: np.zeros(shapes[m], np.float32) for m in spec.modalities}
  labels = np.zeros(spec.num_classes, np.float32)
  return {"inputs": zeros, "labels": labels, "mask": np.float32(0.0)}


def shard_paths(data_dir: str, split: str) -> list[str]:
  paths = sorted(glob.glob(os.path.join(data_dir, f"{split}-*.array_record")))
  if not paths:
    raise ValueError(f"config.data.data_dir={data_dir!r}: no {split}-*.array_record shards")
  return paths


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """The trainer's `contract.Data` for AudioSet (see the module docstring)."""
  import grain  # noqa: PLC0415 (only the streamed datasets need it)

  data, spec = config.data, _spec(config.data, facts)
  train_paths = [p for split in data.train_splits for p in shard_paths(data.data_dir, split)]
  train_source = grain.sources.ArrayRecordDataSource(train_paths)
  eval_source = grain.sources.ArrayRecordDataSource(shard_paths(data.data_dir, data.eval_split))
  order = contract.TrainOrder(
    len(train_source), config.batch_size, config.seed, process_index, process_count
  )
  contract.local_shape(config.eval_batch_size, process_count, None)
  options = grain.ReadOptions(
    num_threads=data.num_threads, prefetch_buffer_size=data.prefetch_examples
  )

  def train_example(step: int, slot: int) -> dict:
    example = check_record(decode_example(train_source[order.index(step, slot)]), data)
    rng = order.rng(contract.AUGMENT_STREAM, step, slot)
    return prepare_train(example, rng, spec, data.random_flip)

  def train_batches(start_step: int, prefix: contract.Prefix) -> Iterator[dict]:
    _, prefix = contract.local_shape(config.batch_size, process_count, prefix)
    contract.check_start_step(start_step)
    ds = grain.MapDataset.range(0, 2**62).map(
      lambda counter: train_example(*order.step_and_slot(start_step, counter))
    )
    ds = ds.batch(order.local).map(functools.partial(contract.to_prefix, prefix=prefix))
    return iter(ds.to_iter_dataset(options))

  def eval_example(index: int) -> dict:
    if index < 0:  # padding
      return _zero_eval_example(spec, facts.eval_windows)
    example = check_record(decode_example(eval_source[index]), data)
    return {**prepare_eval(example, spec, facts.eval_windows), "mask": np.float32(1.0)}

  def eval_batches(prefix: contract.Prefix) -> Iterator[dict]:
    local_eval, prefix = contract.local_shape(config.eval_batch_size, process_count, prefix)
    indices = contract.padded_eval_indices(
      len(eval_source), local_eval, process_index, process_count
    )
    ds = grain.MapDataset.source(indices.tolist()).map(eval_example).batch(local_eval)
    return iter(
      ds.map(functools.partial(contract.to_prefix, prefix=prefix)).to_iter_dataset(options)
    )

  example = stack1(train_example(0, order.first_slot))
  return contract.Data(len(train_source), len(eval_source), train_batches, eval_batches, example)


def stack1(tree: dict) -> dict:
  """Adds a leading batch axis of 1 to every leaf of a nested dict."""
  return {
    key: stack1(value) if isinstance(value, dict) else np.asarray(value)[None]
    for key, value in tree.items()
  }
