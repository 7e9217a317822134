"""The datasets the trainer loads by `config.data.name`, behind one interface.

`load(config, process_index=, process_count=)` returns a `Data`: the number of training
examples, a training-batch iterator factory, an evaluation-pass factory and one example
batch. Batches are numpy dicts, ready for the model:
  "inputs"  float32 [*prefix, ...], or a dict of such arrays for multimodal inputs;
  "labels"  int32 [*prefix] class ids, or float32 [*prefix, K] (MixUp/CutMix soft labels,
            multi-hot AudioSet labels);
  "mask"    (evaluation only) float32 [*prefix], 0 on padding rows.
prefix = (local_devices, per_device) is this process's share of the global batch. With
`config.data.eval_windows = W > 0` (AudioSet) evaluation inputs carry a window axis,
[*prefix, W, ...], and the trainer averages scores over the windows.

Training batches are a pure function of (config.seed, step): a resumed run sees the batches
an uninterrupted one would, and a step's global batch does not depend on the process count.

In-memory datasets (Fashion-MNIST, ModelNet40) use `pipeline.train_batches`/`eval_batches`
plus a per-batch host function; ImageNet and AudioSet stream from array_record files
(`imagenet.make_data`, `audioset.make_data`).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from collections.abc import Iterator

import ml_collections
import numpy as np

from perceiver_jax.data import fashion_mnist
from perceiver_jax.data import modelnet40
from perceiver_jax.data import pipeline

# Mean and standard deviation of the Fashion-MNIST training pixels, in [0, 1] units.
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530

Batch = dict
Prefix = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Data:
  """A dataset as the trainer sees it (see the module docstring for the batch layout).

  Attributes:
    num_train_examples: global size of the training split (epochs -> steps).
    train_batches: (start_step, prefix) -> infinite iterator of this process's training
      batches from global step `start_step` on.
    eval_batches: prefix -> one pass over this process's share of the evaluation split;
      every process yields the same number of batches and each example is counted once.
    example: one training batch with prefix (1,), used to initialise the model.
  """

  num_train_examples: int
  train_batches: Callable[[int, Prefix], Iterator[Batch]]
  eval_batches: Callable[[Prefix], Iterator[Batch]]
  example: Batch


def in_memory_data(
  config: ml_collections.ConfigDict,
  train: dict[str, np.ndarray],
  test: dict[str, np.ndarray],
  prepare_train: Callable[[Batch, int], Batch],
  prepare_eval: Callable[[Batch], Batch],
  *,
  process_index: int,
  process_count: int,
) -> Data:
  """`Data` over numpy arrays {"inputs", "labels"} with host-side batch functions.

  `prepare_train(batch, step)` may draw random augmentation from (config.seed, step), which
  keeps training a pure function of the step; `prepare_eval(batch)` is deterministic.
  """

  def train_batches(start_step: int, prefix: Prefix) -> Iterator[Batch]:
    raw = pipeline.train_batches(
      train,
      config.batch_size,
      seed=config.seed,
      start_step=start_step,
      process_index=process_index,
      process_count=process_count,
      shape_prefix=prefix,
    )
    return (prepare_train(batch, step) for step, batch in enumerate(raw, start_step))

  def eval_batches(prefix: Prefix) -> Iterator[Batch]:
    raw = pipeline.eval_batches(
      test,
      config.eval_batch_size,
      process_index=process_index,
      process_count=process_count,
      shape_prefix=prefix,
    )
    return map(prepare_eval, raw)

  example = prepare_train({key: value[:1] for key, value in train.items()}, 0)
  return Data(len(train["labels"]), train_batches, eval_batches, example)


def step_rng(seed: int, step: int, process_index: int) -> np.random.Generator:
  """The host random stream for one step's augmentation on one process."""
  return np.random.default_rng((seed, step, process_index))


def normalize_fashion_mnist(images: np.ndarray) -> np.ndarray:
  """uint8 [..., 28, 28] images -> float32 [..., 28, 28, 1], zero mean and unit variance."""
  images = images.astype(np.float32) / 255.0
  return ((images - FASHION_MNIST_MEAN) / FASHION_MNIST_STD)[..., None]


def _fashion_mnist(config, *, process_index: int, process_count: int) -> Data:
  """uint8 [28, 28] images -> `normalize_fashion_mnist`."""
  data_dir = config.data.data_dir or None
  splits = {}
  for split in ("train", "test"):
    images, labels = fashion_mnist.load_split(split, data_dir, download=config.data.download)
    splits[split] = {"inputs": images, "labels": labels}

  def prepare(batch: Batch) -> Batch:
    return {**batch, "inputs": normalize_fashion_mnist(batch["inputs"])}

  return in_memory_data(
    config,
    splits["train"],
    splits["test"],
    lambda batch, step: prepare(batch),
    prepare,
    process_index=process_index,
    process_count=process_count,
  )


def _modelnet40(config, *, process_index: int, process_count: int) -> Data:
  """Point clouds [P, 3] float32: the paper's augmentation in training, normalised in eval.

  `config.data.format` is "hdf5" (the 2,048-point release: `data_dir` holds
  train_files.txt/test_files.txt) or "off" (the raw meshes: `data_dir/<class>/{train,test}/
  *.off`, sampled once to `num_points` points per object by area).
  """
  cfg = config.data
  expected = tuple(config.model.input_shape)
  if expected != (cfg.num_points, 3):  # checked before any file is read
    raise ValueError(
      f"config.model.input_shape={expected}: the data gives ({cfg.num_points}, 3) per object"
    )
  splits = {}
  for split in ("train", "test"):
    if cfg.format == "hdf5":
      arrays = modelnet40.load_hdf5_split(cfg.data_dir, split)
    elif cfg.format == "off":
      arrays = modelnet40.load_split(
        cfg.data_dir, split, num_points=cfg.num_points, seed=config.seed, skip_bad=cfg.skip_bad
      )
    else:
      raise ValueError(f"config.data.format={cfg.format!r}: expected 'hdf5' or 'off'")
    points = arrays["points"][:, : cfg.num_points]
    if points.shape[1] != cfg.num_points:
      raise ValueError(
        f"config.data.num_points={cfg.num_points}: the {split} data has only {points.shape[1]}"
        " points per object"
      )
    splits[split] = {"inputs": points, "labels": arrays["labels"]}

  def prepare_train(batch: Batch, step: int) -> Batch:
    rng = step_rng(config.seed, step, process_index)
    return {**batch, "inputs": modelnet40.augment(batch["inputs"], rng)}

  def prepare_eval(batch: Batch) -> Batch:
    return {**batch, "inputs": modelnet40.normalize(batch["inputs"]).astype(np.float32)}

  return in_memory_data(
    config,
    splits["train"],
    splits["test"],
    prepare_train,
    prepare_eval,
    process_index=process_index,
    process_count=process_count,
  )


def _streamed(module_name: str):
  """A dataset whose module (and its dependencies) is imported only when it is used."""

  def make_data(config, *, process_index: int, process_count: int) -> Data:
    module = importlib.import_module(f"perceiver_jax.data.{module_name}")
    return module.make_data(config, process_index=process_index, process_count=process_count)

  return make_data


_MAKERS = {
  "fashion_mnist": _fashion_mnist,
  "modelnet40": _modelnet40,
  "imagenet": _streamed("imagenet"),
  "audioset": _streamed("audioset"),
}
DATASETS = tuple(_MAKERS)


def load(config: ml_collections.ConfigDict, *, process_index: int = 0, process_count: int = 1):
  """The `Data` of `config.data.name` for this process."""
  name = config.data.name
  if name not in _MAKERS:
    raise ValueError(f"config.data.name={name!r}: expected one of {DATASETS}")
  return _MAKERS[name](config, process_index=process_index, process_count=process_count)
