"""Kinetics clips for the multimodal autoencoder: video, audio and label of one window.

`make_data(config, facts, *, process_index, process_count)` gives the batches of the trainer
contract (`contract.py`) for a model of modality 'audio_video_label', whose
`facts.input_shapes` are {"audio": (S,), "image": (T, H, H, 3), "label": (K,)} (the release
calls the video 'image'). Every batch holds
  inputs  {"audio": float32 [*prefix, S] in [-1, 1], "image": float32 [*prefix, T, H, H, 3]
          in [0, 1], "label": float32 [*prefix, K] one-hot};
  labels  {"class": int32 [*prefix]}, and in training also the output points to decode,
          drawn at random per example (the paper's training decodes a random subset):
          "image_points" int32 [*prefix, config.data.train_points.image] flat indices of
          pixels (t, y, x) and "audio_points" int32 [*prefix, train_points.audio] indices of
          audio patches, distinct, below the model's `facts.output_points`.
Sources (`config.data.source`):
  records     the shards of `scripts/prepare_kinetics.py` (the AudioSet record format:
              frames at 25 fps as JPEG, audio at 48 kHz): training takes one random window of
              T frames and the audio of the same span, a random H x H crop and a left-right
              flip with probability 1/2 (`random_flip`); evaluation the window at the
              clip's middle, centre crop. Windows are those of `data.audioset.window`.
  procedural  generated clips (`data.av_procedural`: moving shapes with synchronised tones),
              `procedural.num_train` / `num_eval` of them, each a function of
              (config.seed, split, index), so no files are needed.
Training examples follow `contract.TrainOrder`; slot j of step k draws its window, crop, flip
and output points from the AUGMENT_STREAM generator of (k, j), so a resumed run is exact.

`config.data` fields: name ("kinetics"), source, data_dir, train_split ("train"),
eval_split ("validate"), fps, sample_rate (of the records, checked against each one),
train_points {image, audio}, random_flip, procedural {num_train, num_eval}, num_threads,
prefetch_examples.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import ml_collections
import numpy as np

from perceiver_jax.data import audioset
from perceiver_jax.data import av_procedural
from perceiver_jax.data import contract

SOURCES = ("records", "procedural")
MODALITIES = ("audio", "image", "label")
_EVAL_SEED_OFFSET = 1_000_003  # generated evaluation clips never repeat training ones


def default_config() -> ml_collections.ConfigDict:
  """`config.data` for Kinetics-700-2020 records at the release's rates."""
  return ml_collections.ConfigDict(
    dict(
      name="kinetics",
      source="records",
      data_dir="",  # the shards of scripts/prepare_kinetics.py
      train_split="train",
      eval_split="validate",
      fps=25,
      sample_rate=48_000,
      train_points=dict(image=512, audio=32),  # 512 pixels, 32 patches = 512 audio samples
      random_flip=True,
      procedural=dict(num_train=10_000, num_eval=256),
      num_threads=16,
      prefetch_examples=64,
    )
  )


def _fail(field: str, value, message: str):
  raise ValueError(f"config.data.{field}={value!r}: {message}")


def _spec(data: ml_collections.ConfigDict, facts: contract.ModelFacts) -> audioset.WindowSpec:
  shapes = facts.input_shapes
  if not isinstance(shapes, dict) or set(shapes) != set(MODALITIES):
    raise ValueError(f"Kinetics gives inputs keyed by {MODALITIES}; the model takes {shapes}")
  frames, size, width, channels = shapes["image"]
  (samples,) = shapes["audio"]
  if (width, channels) != (size, 3):
    raise ValueError(f"image input {shapes['image']}: Kinetics gives [T, H, H, 3] windows")
  if shapes["label"] != (facts.num_classes,):
    raise ValueError(f"label input {shapes['label']}: expected ({facts.num_classes},) one-hot")
  if data.source not in SOURCES:
    _fail("source", data.source, f"expected one of {SOURCES}")
  if samples % frames:
    raise ValueError(f"audio input of {samples} samples is not a whole number per frame ({frames})")
  per_frame = samples // frames
  if data.source == "records" and data.sample_rate != per_frame * data.fps:
    _fail(
      "sample_rate",
      data.sample_rate,
      f"the model's {samples} samples per {frames} frames at {data.fps} fps need "
      f"{per_frame * data.fps} Hz",
    )
  limits = facts.output_points or {}
  if not {"image", "audio"} <= set(limits):
    raise ValueError(f"output points {limits}: Kinetics trains a decoder of image and audio points")
  for modality in ("image", "audio"):
    if not 1 <= data.train_points[modality] <= limits[modality]:
      _fail(
        f"train_points.{modality}",
        data.train_points[modality],
        f"must be in [1, {limits[modality]}] (the model's {modality} points)",
      )
  return audioset.WindowSpec(
    modalities=("audio", "video"),
    window_frames=frames,
    window_samples=samples,
    image_size=size,
    samples_per_frame=per_frame,
    num_classes=facts.num_classes,
    unit_range=True,
  )


def _example(audio: np.ndarray, image: np.ndarray, label: int, num_classes: int) -> dict:
  one_hot = np.zeros(num_classes, np.float32)
  if label >= 0:
    one_hot[label] = 1.0
  return {
    "inputs": {
      "audio": audio.astype(np.float32),
      "image": image.astype(np.float32),
      "label": one_hot,
    },
    "labels": {"class": np.int32(label)},
  }


def _add_points(example: dict, rng: np.random.Generator, data, limits: dict) -> dict:
  """Adds the training example's random output points (without repeats) to its labels."""
  labels = dict(example["labels"])
  for modality in ("image", "audio"):
    points = rng.choice(limits[modality], data.train_points[modality], replace=False)
    labels[f"{modality}_points"] = np.sort(points).astype(np.int32)
  return {**example, "labels": labels}


def _record_example(example: dict, spec, rng, data, *, train: bool) -> dict:
  label = int(example["labels"][0]) if len(example["labels"]) else -1
  if not 0 <= label < spec.num_classes:
    raise ValueError(
      f"record {example['ytid']}: label {label} outside the model's {spec.num_classes} classes"
    )
  length = audioset.num_frames(example, spec)
  last = max(length - spec.window_frames, 0)
  start = int(rng.integers(0, last + 1)) if train else last // 2
  window = audioset.window(example, start, spec, rng if train else None, data.random_flip, {})
  return _example(window["audio"], window["video"], label, spec.num_classes)


def _generated(seed: int, index: int, spec) -> dict:
  rng = np.random.default_rng((seed, index))
  clip = av_procedural.make_clip(
    rng,
    num_frames=spec.window_frames,
    image_size=spec.image_size,
    samples_per_frame=spec.samples_per_frame,
    sample_rate=spec.samples_per_frame * 25,
    num_classes=spec.num_classes,
  )
  return _example(clip["audio"], clip["image"], clip["label"], spec.num_classes)


def _zero_eval_example(spec) -> dict:
  zeros = _example(
    np.zeros(spec.window_samples),
    np.zeros((spec.window_frames, spec.image_size, spec.image_size, 3)),
    0,
    spec.num_classes,
  )
  return {**zeros, "mask": np.float32(0.0)}


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """The trainer's `contract.Data` for Kinetics clips (see the module docstring)."""
  data, spec = config.data, _spec(config.data, facts)
  if facts.eval_windows:
    raise ValueError(f"eval_windows={facts.eval_windows}: Kinetics evaluates one window per clip")
  import grain  # noqa: PLC0415 (only the streamed datasets need it)

  if data.source == "records":
    train_source = grain.sources.ArrayRecordDataSource(
      audioset.shard_paths(data.data_dir, data.train_split)
    )
    eval_source = grain.sources.ArrayRecordDataSource(
      audioset.shard_paths(data.data_dir, data.eval_split)
    )
    num_train, num_eval = len(train_source), len(eval_source)

    def train_clip(index: int, rng: np.random.Generator) -> dict:
      record = audioset.check_record(audioset.decode_example(train_source[index]), data)
      return _record_example(record, spec, rng, data, train=True)

    def eval_clip(index: int) -> dict:
      record = audioset.check_record(audioset.decode_example(eval_source[index]), data)
      return _record_example(record, spec, None, data, train=False)

  else:
    num_train, num_eval = data.procedural.num_train, data.procedural.num_eval

    def train_clip(index: int, rng: np.random.Generator) -> dict:
      del rng
      return _generated(config.seed, index, spec)

    def eval_clip(index: int) -> dict:
      return _generated(config.seed + _EVAL_SEED_OFFSET, index, spec)

  order = contract.TrainOrder(
    num_train, config.batch_size, config.seed, process_index, process_count
  )
  contract.local_shape(config.eval_batch_size, process_count, None)

  def train_example(step: int, slot: int) -> dict:
    rng = order.rng(contract.AUGMENT_STREAM, step, slot)
    return _add_points(train_clip(order.index(step, slot), rng), rng, data, facts.output_points)

  def eval_example(index: int) -> dict:
    if index < 0:  # padding
      return _zero_eval_example(spec)
    return {**eval_clip(index), "mask": np.float32(1.0)}

  options = grain.ReadOptions(
    num_threads=data.num_threads, prefetch_buffer_size=data.prefetch_examples
  )

  def train_batches(start_step: int, prefix: contract.Prefix) -> Iterator[dict]:
    _, prefix = contract.local_shape(config.batch_size, process_count, prefix)
    contract.check_start_step(start_step)
    ds = grain.MapDataset.range(0, 2**62).map(
      lambda counter: train_example(*order.step_and_slot(start_step, counter))
    )
    ds = ds.batch(order.local).map(functools.partial(contract.to_prefix, prefix=prefix))
    return iter(ds.to_iter_dataset(options))

  def eval_batches(prefix: contract.Prefix) -> Iterator[dict]:
    local_eval, prefix = contract.local_shape(config.eval_batch_size, process_count, prefix)
    indices = contract.padded_eval_indices(num_eval, local_eval, process_index, process_count)
    ds = grain.MapDataset.source(indices.tolist()).map(eval_example).batch(local_eval)
    ds = ds.map(functools.partial(contract.to_prefix, prefix=prefix))
    return iter(ds.to_iter_dataset(options))

  example = audioset.stack1(train_example(0, order.first_slot))
  return contract.Data(num_train, num_eval, train_batches, eval_batches, example)
