"""ImageNet (ILSVRC2012) input pipeline: TFDS `imagenet2012` array_record files, read with grain.

Data: the TFDS `imagenet2012` dataset prepared in array_record format under
`config.data.data_dir` (`<data_dir>/imagenet2012/5.1.0/`; scripts/build_imagenet.py builds
it from the ImageNet tars, with or without TensorFlow, through data/prepare/imagenet.py).
Records are read with random access through `tfds.data_source`, which needs no TensorFlow;
the JPEG bytes are decoded here with PIL, so a corrupt image can be skipped (training) or
named (evaluation).

Training batches follow `contract.TrainOrder`, so they are a pure function of
(config.seed, step) whatever the number of processes. Slot j of step k is augmented with
the order's AUGMENT_STREAM generator of (k, j): crop, flip, RandAugment. Consecutive slots
(2i, 2i+1) form a pair that is mixed with itself, MixUp for even i and CutMix for odd i (so
half of each batch each), with the MIX_STREAM generator of (k, i). A corrupt image is
skipped: its slot takes the next example of the epoch's order instead, and the skips are
counted and logged. A resumed run therefore sees exactly the batches of an uninterrupted one.

Shapes: training {"inputs": float32 [*prefix, S, S, 3] (normalised with the ImageNet mean
and std), "labels": float32 [*prefix, K] (soft, when MixUp or CutMix is on) or int32
[*prefix]}; evaluation adds "mask": float32 [*prefix], and its labels are int32.
S = config.data.image_size (the model's facts must say (S, S, 3)), K = facts.num_classes.

`config.data` fields (configs/imagenet.py sets and documents them): data_dir, tfds_name,
train_split, eval_split, num_eval_examples, image_size, crop_area_range,
crop_ratio_range, randaugment_layers, randaugment_magnitude, mixup_alpha, cutmix_alpha,
num_workers, num_threads, prefetch_batches.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging

from perceiver_jax.data import augment
from perceiver_jax.data import contract
from perceiver_jax.data import image_ops
from perceiver_jax.data import randaugment
from perceiver_jax.data import tfds_split

# How many following records a corrupt training image may be replaced by before giving up.
_MAX_SKIPS = 100


def _fail(field: str, value, message: str):
  raise ValueError(f"config.{field}={value!r}: {message}")


def validate(
  config: ml_collections.ConfigDict, facts: contract.ModelFacts, process_count: int = 1
) -> None:
  """One-line errors naming the field and its value for impossible settings."""
  cfg = config.data
  size = cfg.image_size
  if tuple(facts.input_shapes) != (size, size, 3):
    _fail("data.image_size", size, f"the model takes inputs of shape {facts.input_shapes}")
  if facts.eval_windows:
    raise ValueError(f"eval_windows={facts.eval_windows}: ImageNet evaluates one view per image")
  for field in ("randaugment_layers", "num_workers", "prefetch_batches", "num_eval_examples"):
    if cfg[field] < 0:
      _fail(f"data.{field}", cfg[field], "must be >= 0")
  if cfg.num_threads < 1:
    _fail("data.num_threads", cfg.num_threads, "must be >= 1")
  if not 0 <= cfg.randaugment_magnitude <= randaugment.MAX_LEVEL:
    _fail("data.randaugment_magnitude", cfg.randaugment_magnitude, "must be in [0, 10]")
  for field in ("mixup_alpha", "cutmix_alpha"):
    if cfg[field] < 0:
      _fail(f"data.{field}", cfg[field], "must be >= 0 (0 disables it)")
  low, high = cfg.crop_area_range
  if not 0 < low <= high <= 1:
    _fail("data.crop_area_range", tuple(cfg.crop_area_range), "must satisfy 0 < low <= high <= 1")
  if config.batch_size % process_count:
    _fail("batch_size", config.batch_size, f"must be a multiple of the {process_count} processes")
  if _mixing(cfg) and (config.batch_size // process_count) % 2:
    _fail("batch_size", config.batch_size, "MixUp/CutMix pairs need an even per-process batch")


def _mixing(cfg: ml_collections.ConfigDict) -> bool:
  return cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return np.eye(num_classes, dtype=np.float32)[labels]


class CorruptImageError(ValueError):
  """A record whose image bytes do not decode."""


class Split:
  """Random access to one split's records; opened lazily so that it pickles to workers."""

  def __init__(self, cfg: ml_collections.ConfigDict, split: str):
    name = cfg.tfds_name
    where, self.num_examples = tfds_split.check_split(
      name, split, cfg.data_dir, "build them with scripts/build_imagenet.py"
    )
    self.name = f"{where}:{split}"
    self._args = (name, split, cfg.data_dir)
    self._source = None

  def __len__(self) -> int:
    return self.num_examples

  def __getstate__(self):
    return {**self.__dict__, "_source": None}

  def record(self, index: int) -> tuple[bytes, int, str]:
    """(encoded image, label, file name) of record `index`."""
    if self._source is None:
      name, split, data_dir = self._args
      self._source = tfds_split.open_source(
        name, split, data_dir, decoders={"image": tfds.decode.SkipDecoding()}
      )
    record = self._source[int(index)]
    file_name = record.get("file_name", b"")
    file_name = file_name.decode() if isinstance(file_name, bytes) else str(file_name)
    return record["image"], int(record["label"]), file_name

  def decode(self, index: int, num_classes: int) -> tuple[np.ndarray, int]:
    """([H, W, 3] uint8, label) of record `index`.

    Raises CorruptImageError naming the record if the image cannot be decoded, and
    ValueError if the label is not in [0, num_classes).
    """
    data, label, file_name = self.record(index)
    name = f"{self.name} record {index} ({file_name})"
    if not 0 <= label < num_classes:
      raise ValueError(f"{name} has label {label}, not in [0, {num_classes}) (model.num_classes)")
    try:
      return image_ops.decode_image(data, name), label
    except ValueError as error:
      raise CorruptImageError(str(error)) from None


class _Train:
  """Maps this process's example counter to a prepared example, and batches to model inputs."""

  def __init__(
    self,
    cfg: ml_collections.ConfigDict,
    split: Split,
    order: contract.TrainOrder,
    start_step: int,
    num_classes: int,
  ):
    self.cfg, self.split, self.order = cfg, split, order
    self.start_step, self.num_classes = start_step, num_classes

  def example(self, counter: int) -> dict:
    step, slot = self.order.step_and_slot(self.start_step, counter)
    for skipped in range(_MAX_SKIPS + 1):
      try:
        image, label = self.split.decode(self.order.index(step, slot, skipped), self.num_classes)
        break
      except CorruptImageError as error:
        last_error = error
    else:
      raise ValueError(f"{_MAX_SKIPS + 1} corrupt images in a row, the last: {last_error}")
    rng = self.order.rng(contract.AUGMENT_STREAM, step, slot)
    image = augment.random_resized_crop(
      image,
      rng,
      self.cfg.image_size,
      area_range=tuple(self.cfg.crop_area_range),
      ratio_range=tuple(self.cfg.crop_ratio_range),
    )
    image = augment.random_flip(image, rng)
    if self.cfg.randaugment_layers:
      image = randaugment.randaugment(
        image, rng, self.cfg.randaugment_layers, self.cfg.randaugment_magnitude
      )
    return dict(inputs=image, labels=np.int32(label), skipped=skipped, step=step, slot=slot)

  def finish(self, batch: dict) -> dict:
    """Stacked examples -> {"inputs", "labels", "skipped", "step"}, mixed in pairs."""
    images = image_ops.normalize(batch["inputs"])  # [local, S, S, 3]
    labels = batch["labels"]
    if _mixing(self.cfg):
      labels = _one_hot(labels, self.num_classes)  # [local, K]
      step = int(batch["step"][0])
      for first in range(0, len(images), 2):
        pair = int(batch["slot"][first]) // 2
        kind, alpha = (
          ("mixup", self.cfg.mixup_alpha) if pair % 2 == 0 else ("cutmix", self.cfg.cutmix_alpha)
        )
        rng = self.order.rng(contract.MIX_STREAM, step, pair)
        pick = slice(first, first + 2)
        images[pick], labels[pick] = augment.mix_pair(images[pick], labels[pick], kind, alpha, rng)
    return dict(inputs=images, labels=labels, skipped=batch["skipped"].sum(), step=batch["step"][0])


class _Eval:
  """Maps a position in this process's padded shard to a prepared example (-1: padding)."""

  def __init__(self, split: Split, indices: np.ndarray, image_size: int, num_classes: int):
    self.split, self.indices = split, indices
    self.image_size, self.num_classes = image_size, num_classes

  def example(self, position: int) -> dict:
    index = int(self.indices[position])
    if index < 0:  # padding
      inputs = np.zeros((self.image_size, self.image_size, 3), np.float32)
      return dict(inputs=inputs, labels=np.int32(0), mask=np.float32(0))
    image, label = self.split.decode(index, self.num_classes)
    inputs = image_ops.preprocess_for_eval(image, self.image_size)
    return dict(inputs=inputs, labels=np.int32(label), mask=np.float32(1.0))


def _iterate(dataset: grain.MapDataset, cfg: ml_collections.ConfigDict) -> Iterator[dict]:
  """Iterates a MapDataset of batches in order, with threads and optional worker processes."""
  options = grain.ReadOptions(
    num_threads=cfg.num_threads, prefetch_buffer_size=cfg.prefetch_batches
  )
  batches = dataset.to_iter_dataset(options)
  if cfg.num_workers:
    batches = batches.mp_prefetch(
      grain.MultiprocessingOptions(
        num_workers=cfg.num_workers, per_worker_buffer_size=cfg.prefetch_batches
      )
    )
  return iter(batches)


def make_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  *,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """The ImageNet `contract.Data` of this process (see the module docstring)."""
  contract.check_process(process_index, process_count)
  validate(config, facts, process_count)
  cfg = config.data
  train_split = Split(cfg, cfg.train_split)
  eval_split = Split(cfg, cfg.eval_split)
  if len(train_split) < config.batch_size:
    _fail("batch_size", config.batch_size, f"exceeds the {len(train_split)} training examples")
  order = contract.TrainOrder(
    len(train_split), config.batch_size, config.seed, process_index, process_count
  )
  num_eval = min(len(eval_split), cfg.num_eval_examples or len(eval_split))

  def train_batches(start_step: int, prefix: contract.Prefix) -> Iterator[dict]:
    _, prefix = contract.local_shape(config.batch_size, process_count, prefix)
    contract.check_start_step(start_step)
    train = _Train(cfg, train_split, order, start_step, facts.num_classes)
    examples = grain.MapDataset.range(0, sys.maxsize).map(train.example)
    batches = examples.batch(order.local, drop_remainder=True).map(train.finish)
    return _train_iter(_iterate(batches, cfg), prefix)

  def eval_batches(prefix: contract.Prefix) -> Iterator[dict]:
    eval_local, prefix = contract.local_shape(config.eval_batch_size, process_count, prefix)
    indices = contract.padded_eval_indices(num_eval, eval_local, process_index, process_count)
    evaluator = _Eval(eval_split, indices, cfg.image_size, facts.num_classes)
    examples = grain.MapDataset.range(0, len(indices)).map(evaluator.example)
    batches = examples.batch(eval_local)
    return (contract.to_prefix(batch, prefix) for batch in _iterate(batches, cfg))

  # The first example of step 0, unmixed: the model only needs its shapes and dtypes.
  first = _Train(cfg, train_split, order, 0, facts.num_classes).example(0)
  label = np.asarray(first["labels"])[None]  # [1]
  example = {
    "inputs": image_ops.normalize(first["inputs"][None]),  # [1, S, S, 3]
    "labels": _one_hot(label, facts.num_classes) if _mixing(cfg) else label,
  }
  return contract.Data(
    num_train_examples=len(train_split),
    num_eval_examples=num_eval,
    train_batches=train_batches,
    eval_batches=eval_batches,
    example=example,
  )


def _train_iter(batches: Iterator[dict], prefix: tuple[int, ...]) -> Iterator[dict]:
  skipped_total = 0
  for batch in batches:
    skipped = int(batch.pop("skipped"))
    step = int(batch.pop("step"))
    if skipped:
      skipped_total += skipped
      logging.warning(
        "ImageNet training: %d corrupt image(s) skipped at step %d, %d since this iterator began",
        skipped,
        step,
        skipped_total,
      )
    yield contract.to_prefix(batch, prefix)
