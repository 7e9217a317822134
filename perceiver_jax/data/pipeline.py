"""In-memory datasets: numpy arrays batched in the shared training order, and prefetching.

Every function takes `arrays`, a dict of numpy arrays sharing their leading (example)
dimension N, and yields dicts with the same keys. `batch_size` is the global batch over all
processes; each process yields its local share batch_size // process_count, reshaped to
`[*shape_prefix, ...]`, e.g. shape_prefix=(jax.local_device_count(), per_device) for pmap.
Training batches follow `contract.TrainOrder`, so they are a pure function of (seed, step).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Sequence

import ml_collections
import numpy as np

from perceiver_jax.data import contract

Batch = dict[str, np.ndarray]


def _num_examples(arrays: Batch) -> int:
  """The shared leading dimension N of all arrays."""
  if not arrays:
    raise ValueError("arrays is empty: need at least one array")
  sizes = {key: len(value) for key, value in arrays.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f"arrays disagree on the number of examples: {sizes}")
  return next(iter(sizes.values()))


def train_batches(
  arrays: Batch,
  batch_size: int,
  *,
  seed: int,
  start_step: int = 0,
  process_index: int = 0,
  process_count: int = 1,
  shape_prefix: Sequence[int] | None = None,
) -> Iterator[Batch]:
  """Infinite shuffled training batches in `contract.TrainOrder`, from global step `start_step`.

  Yields:
    {key: [*shape_prefix, ...]} with prod(shape_prefix) == batch_size // process_count.
  """
  order = contract.TrainOrder(_num_examples(arrays), batch_size, seed, process_index, process_count)
  _, prefix = contract.local_shape(batch_size, process_count, shape_prefix)
  contract.check_start_step(start_step)
  # Validation above runs at call time; the generator below only on first next().
  return _train_iter(arrays, order, start_step, prefix)


def _train_iter(arrays, order, start_step, prefix) -> Iterator[Batch]:
  for step in itertools.count(start_step):
    indices = order.local_indices(step)
    yield {key: value[indices].reshape(*prefix, *value.shape[1:]) for key, value in arrays.items()}


def eval_batches(
  arrays: Batch,
  batch_size: int,
  *,
  process_index: int = 0,
  process_count: int = 1,
  shape_prefix: Sequence[int] | None = None,
) -> Iterator[Batch]:
  """One pass over this process's evaluation shard, in order.

  Every process yields the same number of batches (that of the largest shard). Missing
  examples are zero-filled and flagged by `mask`; summing `mask`-weighted metrics over all
  processes counts each of the N examples exactly once.

  Yields:
    {key: [*shape_prefix, ...], 'mask': float32 [*shape_prefix]} (1 real, 0 padding).
  """
  if "mask" in arrays:
    raise ValueError("arrays already has a 'mask' key, which eval_batches adds")
  num_examples = _num_examples(arrays)
  local, prefix = contract.local_shape(batch_size, process_count, shape_prefix)
  indices = contract.padded_eval_indices(num_examples, local, process_index, process_count)
  return _eval_iter(arrays, indices, local, prefix)


def _eval_iter(arrays, indices, local, prefix) -> Iterator[Batch]:
  for start in range(0, len(indices), local):
    batch_indices = indices[start : start + local]
    real = batch_indices >= 0
    batch = {}
    for key, value in arrays.items():
      padded = np.zeros((local, *value.shape[1:]), value.dtype)
      padded[real] = value[batch_indices[real]]
      batch[key] = padded.reshape(*prefix, *value.shape[1:])
    batch["mask"] = real.astype(np.float32).reshape(prefix)
    yield batch


def in_memory_data(
  config: ml_collections.ConfigDict,
  facts: contract.ModelFacts,
  train: Batch,
  test: Batch,
  *,
  prepare: Callable[[Batch], Batch],
  augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
  process_index: int,
  process_count: int,
) -> contract.Data:
  """`contract.Data` over numpy arrays {"inputs", "labels"}.

  Args:
    config: reads seed, batch_size, eval_batch_size.
    facts: the evaluation inputs must carry `facts.eval_windows` windows, if any.
    train, test: the splits; `test["inputs"]` is [N, W, ...] with W = facts.eval_windows > 0.
    prepare: batch -> batch, deterministic (e.g. normalisation), for every batch.
    augment: (one example's inputs, rng) -> inputs, random training augmentation before
      `prepare`; slot j of step k draws from `TrainOrder.rng(AUGMENT_STREAM, k, j)`.
    process_index, process_count: this process and how many share the global batch.
  """
  dataset = f"config.data.name={config.data.name!r}"
  contract.check_split_sizes(_num_examples(train), _num_examples(test), dataset)
  order = contract.TrainOrder(
    _num_examples(train), config.batch_size, config.seed, process_index, process_count
  )
  contract.check_example(
    prepare({key: value[:1] for key, value in test.items()}),
    facts,
    f"{dataset} evaluation",
    windows=facts.eval_windows,
  )

  def augmented(batch: Batch, step: int) -> Batch:
    if augment is None:
      return batch
    inputs = [
      augment(x, order.rng(contract.AUGMENT_STREAM, step, order.first_slot + i))
      for i, x in enumerate(batch["inputs"])
    ]
    return {**batch, "inputs": np.stack(inputs)}

  def local_train_batches(start_step: int, prefix: contract.Prefix) -> Iterator[Batch]:
    _, prefix = contract.local_shape(config.batch_size, process_count, prefix)
    raw = train_batches(
      train,
      config.batch_size,
      seed=config.seed,
      start_step=start_step,
      process_index=process_index,
      process_count=process_count,
    )
    return (
      contract.to_prefix(prepare(augmented(batch, step)), prefix)
      for step, batch in enumerate(raw, start_step)
    )

  def local_eval_batches(prefix: contract.Prefix) -> Iterator[Batch]:
    raw = eval_batches(
      test,
      config.eval_batch_size,
      process_index=process_index,
      process_count=process_count,
      shape_prefix=prefix,
    )
    return map(prepare, raw)

  example = prepare(augmented({key: value[:1] for key, value in train.items()}, 0))
  return contract.Data(
    _num_examples(train), _num_examples(test), local_train_batches, local_eval_batches, example
  )


_END = object()


class _ProducerError:
  """Carries an exception from the producer thread to the consumer."""

  def __init__(self, error: BaseException):
    self.error = error


def prefetch(iterator: Iterator, size: int = 2) -> Iterator:
  """Yields the items of `iterator`, produced up to `size` ahead on a background thread.

  An exception raised by `iterator` is re-raised in the consumer at the point it
  occurred. Closing the returned generator (or dropping it) stops the thread.
  """
  if size < 1:
    raise ValueError(f"size={size} must be >= 1")
  return _prefetch(iterator, size)


def _prefetch(iterator: Iterator, size: int) -> Iterator:
  buffer = queue.Queue(maxsize=size)
  stop = threading.Event()

  def put(item) -> bool:
    # A bounded wait, so a consumer that went away cannot block the thread forever.
    while not stop.is_set():
      try:
        buffer.put(item, timeout=0.05)
        return True
      except queue.Full:
        continue
    return False

  def produce():
    try:
      for item in iterator:
        if not put(item):
          return
      put(_END)
    except BaseException as error:  # Re-raised by the consumer, so nothing is swallowed.
      put(_ProducerError(error))

  thread = threading.Thread(target=produce, name="prefetch", daemon=True)
  thread.start()
  try:
    while True:
      item = buffer.get()
      if item is _END:
        return
      if isinstance(item, _ProducerError):
        raise item.error
      yield item
  finally:
    stop.set()
    thread.join(timeout=5.0)
